package dev.mmedge.core;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.TreeSet;

/**
 * Step 6 of loading a generative VLM bundle (docs/bundle-format.md "Generative VLM bundles", "What a
 * runtime checks"; mmedge/adapt/vlm_manifest.py layout_problems, in its order): what the VLM schema
 * cannot say. The layout, tokenizer ids, thresholds and artifacts agree with one another, so that a
 * bundle that loads can generate.
 */
public final class VLMChecks {
    /** The largest key (or value) cache: layers x kv heads x slots x head_dim. */
    public static final long MAX_CACHE_VALUES = 1L << 28;
    /** What generation reads of each graph, in order, by the graph name's prefix. */
    static final List<String> VISION = Arrays.asList("visual", "scores");
    static final List<String> EMBED = Collections.singletonList("embeds");
    static final List<String> STEP = Arrays.asList("hidden", "exit_hidden", "confidence", "present_k", "present_v");
    static final List<String> HEAD = Collections.singletonList("logits");
    static final List<String> FILL = Arrays.asList("present_k", "present_v");

    private VLMChecks() {
    }

    /** The outputs generation reads of graph `name` (by its prefix: vision, embed, step, head, fill). */
    static List<String> outputs(String name) {
        if (name.startsWith("vision")) return VISION;
        if (name.startsWith("embed")) return EMBED;
        if (name.startsWith("step")) return STEP;
        if (name.startsWith("head")) return HEAD;
        return FILL;
    }

    /** Every problem (at most 50); empty when the manifest is consistent. Assumes it passed the VLM schema. */
    public static List<String> consistencyProblems(VLMManifest m) {
        List<String> p = new ArrayList<>();
        List<Integer> layers = new ArrayList<>();
        for (List<Integer> s : m.stageLayers) layers.addAll(s);
        for (int i = 0; i < layers.size(); i++) {
            if (layers.get(i) != i) {
                p.add("layout.stage_layers " + m.stageLayers + " must cover layers 0..n-1 in order");
                break;
            }
        }
        List<Double> ratios = m.keepRatios;
        if (new HashSet<>(ratios).size() != ratios.size()) p.add("layout.keep_ratios repeat a ratio: " + ratios);
        if (!ratios.contains(m.thresholds.keepRatio)) {
            p.add("thresholds.keep_ratio " + m.thresholds.keepRatio + " is not one of the keep ratios " + ratios);
        }
        for (Map.Entry<String, VLMManifest.Setting> e : m.thresholds.tasks.entrySet()) {
            if (!ratios.contains(e.getValue().keepRatio)) {
                p.add("thresholds.tasks." + e.getKey() + ".keep_ratio " + e.getValue().keepRatio + " is not one of the keep ratios "
                        + ratios);
            }
        }
        if ((long) layers.size() * m.numKvHeads * m.maxSlots * m.headDim > MAX_CACHE_VALUES) {
            p.add("the key/value cache (" + layers.size() + " layers x " + m.numKvHeads + " heads x " + m.maxSlots + " slots x "
                    + m.headDim + ") is over " + MAX_CACHE_VALUES + " values");
        }
        if (m.numImageTokens >= m.maxSlots) {
            p.add("layout.max_slots " + m.maxSlots + " leaves no room after " + m.numImageTokens + " image tokens");
        }
        if (m.maxNewTokens >= m.maxSlots) {
            p.add("tokenizer.max_new_tokens " + m.maxNewTokens + " must be below layout.max_slots " + m.maxSlots);
        }
        boolean outside = m.imageTokenId >= m.vocabSize;
        for (int id : m.stopIds) outside |= id >= m.vocabSize;
        if (outside) {
            p.add("stop ids " + m.stopIds + " and the image token " + m.imageTokenId + " must be below the vocabulary size "
                    + m.vocabSize);
        }
        if (!p.isEmpty()) return p;
        List<String> want = VLMManifest.graphNames(m.numStages());
        TreeSet<String> have = new TreeSet<>(m.graphs.keySet());
        if (!have.equals(new TreeSet<>(want))) {
            p.add("layout.graphs " + first(have) + " != the layout's " + first(new TreeSet<>(want)) + " (a bundle exported by an "
                    + "earlier mmedge, with a vision graph per keep ratio? export it again)");
            return p;
        }
        for (Map.Entry<String, List<String>> e : m.graphs.entrySet()) {
            if (!e.getValue().equals(outputs(e.getKey()))) {
                p.add("layout.graphs['" + e.getKey() + "'] outputs " + e.getValue() + " differ from what generation reads "
                        + outputs(e.getKey()));
            }
        }
        for (Manifest.Artifact a : m.artifacts) {
            String kind = "artifact " + a.runtime + "/" + a.format + "/" + a.precision;
            if (!new TreeSet<>(a.stages.keySet()).equals(have)) {
                p.add(kind + " does not hold every graph");
            } else if ("executorch".equals(a.runtime)) {
                for (Map.Entry<String, Manifest.ArtifactStage> e : a.stages.entrySet()) {
                    if (!m.graphs.get(e.getKey()).equals(e.getValue().outputs)) {
                        p.add(kind + " method '" + e.getKey() + "' outputs " + e.getValue().outputs + " differ from the layout's "
                                + m.graphs.get(e.getKey()));
                    }
                }
            }
        }
        return p.size() > 50 ? new ArrayList<>(p.subList(0, 50)) : p;
    }

    private static String first(TreeSet<String> names) {
        List<String> out = new ArrayList<>(names);
        return (out.size() > 20 ? out.subList(0, 20) : out).toString();
    }
}
