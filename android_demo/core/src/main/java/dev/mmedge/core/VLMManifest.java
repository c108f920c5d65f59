package dev.mmedge.core;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A typed view of a generative VLM bundle's manifest ({@code "kind": "vlm"}, docs/bundle-format.md
 * "Generative VLM bundles") that has passed the VLM schema, so every field read here exists and has
 * its type. {@link VLMChecks} checks that its parts agree; {@link #raw()} keeps the JSON tree.
 */
public final class VLMManifest {
    public static final String KIND = "vlm";

    /** The tasks a bundle may hold its own settings for (thresholds.tasks): captions and short answers. */
    public static final List<String> TASKS = Collections.unmodifiableList(Arrays.asList("caption", "answer"));

    /**
     * A generation setting as the thresholds state one: the policy's name (confidence, max_probability,
     * patience or full), its threshold and patience, and the keep ratio; the top-level thresholds' or
     * one task's ({@code thresholds.tasks}, {@code $defs/task_setting}).
     */
    public static class Setting {
        public final String policy;
        public final double threshold;
        public final int patience;
        public final double keepRatio;

        Setting(Map<String, Object> m) {
            policy = (String) m.get("policy");
            threshold = Json.num(m.get("threshold"));
            patience = (int) Json.lng(m.get("patience"));
            keepRatio = Json.num(m.get("keep_ratio"));
        }
    }

    /**
     * {@code thresholds}: the default policy (confidence, max_probability, patience or full), its threshold
     * and patience, keep ratio and kv mode, and the optional settings per task.
     */
    public static final class Thresholds extends Setting {
        /** "copy" or "recompute". */
        public final String kv;
        public final boolean calibrated;
        /**
         * {@code thresholds.tasks}: each task's own setting ("caption", "answer"; in {@link #TASKS} order,
         * unmodifiable), which generate() uses when told the task; empty when the bundle has none.
         */
        public final Map<String, Setting> tasks;

        Thresholds(Map<String, Object> m) {
            super(m);
            kv = (String) m.get("kv");
            calibrated = Boolean.TRUE.equals(m.get("calibrated"));
            Map<String, Setting> byTask = new LinkedHashMap<>();
            Map<String, Object> given = m.get("tasks") instanceof Map ? Json.obj(m.get("tasks")) : Collections.<String, Object>emptyMap();
            for (String task : TASKS) {
                if (given.containsKey(task)) byTask.put(task, new Setting(Json.obj(given.get(task))));
            }
            tasks = Collections.unmodifiableMap(byTask);
        }
    }

    private final Map<String, Object> raw;
    public final String name;
    public final String family;
    /** V: model.vocab_size. */
    public final int vocabSize;
    // tokenizer
    public final String tokenizerFile;
    public final String promptBefore;
    public final String promptAfter;
    public final String captionPrompt;
    public final List<Integer> stopIds;
    public final int maxNewTokens;
    // preprocessing
    /** S: preprocessing.image_size. */
    public final int imageSize;
    /** "lanczos", "bicubic" or "bilinear". */
    public final String resample;
    public final double rescaleFactor;
    public final double[] mean = new double[3];
    public final double[] std = new double[3];
    // layout
    /** The decoder layers of each stage (layout.stage_layers), unmodifiable. */
    public final List<List<Integer>> stageLayers;
    /** G: layout.num_kv_heads. */
    public final int numKvHeads;
    public final int headDim;
    /** P: the static cache's slots, prompt plus generated tokens. */
    public final int maxSlots;
    public final int imageTokenId;
    /** M: visual tokens of one tile before the prefilter. */
    public final int numImageTokens;
    /** The ratios the prefilter was distilled at (any ratio in (0, 1] runs). */
    public final List<Double> keepRatios = new ArrayList<>();
    /** layout.graphs: graph name -> its output names in order. */
    public final Map<String, List<String>> graphs = new LinkedHashMap<>();
    public final List<Manifest.Artifact> artifacts = new ArrayList<>();
    public final Thresholds thresholds;
    public final Map<String, Manifest.FileEntry> files = new LinkedHashMap<>();

    /** The typed view of a manifest that passed the VLM schema. */
    public VLMManifest(Map<String, Object> m) {
        raw = m;
        name = (String) m.get("name");
        Map<String, Object> model = Json.obj(m.get("model"));
        family = model.get("family") instanceof String ? (String) model.get("family") : null;
        vocabSize = (int) Json.lng(model.get("vocab_size"));
        Map<String, Object> tok = Json.obj(m.get("tokenizer"));
        tokenizerFile = (String) tok.get("file");
        promptBefore = (String) tok.get("prompt_before");
        promptAfter = (String) tok.get("prompt_after");
        captionPrompt = (String) tok.get("caption_prompt");
        List<Integer> stops = new ArrayList<>();
        for (Object id : Json.arr(tok.get("stop_ids"))) stops.add((int) Json.lng(id));
        stopIds = Collections.unmodifiableList(stops);
        maxNewTokens = (int) Json.lng(tok.get("max_new_tokens"));
        Map<String, Object> pre = Json.obj(m.get("preprocessing"));
        imageSize = (int) Json.lng(pre.get("image_size"));
        resample = (String) pre.get("resample");
        rescaleFactor = Json.num(pre.get("rescale_factor"));
        for (int c = 0; c < 3; c++) {
            mean[c] = Json.num(Json.arr(pre.get("mean")).get(c));
            std[c] = Json.num(Json.arr(pre.get("std")).get(c));
        }
        Map<String, Object> layout = Json.obj(m.get("layout"));
        List<List<Integer>> stages = new ArrayList<>();
        for (Object s : Json.arr(layout.get("stage_layers"))) {
            List<Integer> layers = new ArrayList<>();
            for (Object l : Json.arr(s)) layers.add((int) Json.lng(l));
            stages.add(Collections.unmodifiableList(layers));
        }
        stageLayers = Collections.unmodifiableList(stages);
        numKvHeads = (int) Json.lng(layout.get("num_kv_heads"));
        headDim = (int) Json.lng(layout.get("head_dim"));
        maxSlots = (int) Json.lng(layout.get("max_slots"));
        imageTokenId = (int) Json.lng(layout.get("image_token_id"));
        numImageTokens = (int) Json.lng(layout.get("num_image_tokens"));
        for (Object r : Json.arr(layout.get("keep_ratios"))) keepRatios.add(Json.num(r));
        for (Map.Entry<String, Object> e : Json.obj(layout.get("graphs")).entrySet()) {
            List<String> outs = new ArrayList<>();
            for (Object o : Json.arr(e.getValue())) outs.add((String) o);
            graphs.put(e.getKey(), Collections.unmodifiableList(outs));
        }
        for (Object a : Json.arr(m.get("artifacts"))) artifacts.add(new Manifest.Artifact(Json.obj(a)));
        thresholds = new Thresholds(Json.obj(m.get("thresholds")));
        for (Map.Entry<String, Object> e : Json.obj(m.get("files")).entrySet()) {
            files.put(e.getKey(), new Manifest.FileEntry(Json.obj(e.getValue())));
        }
    }

    /** The parsed manifest.json as it was read. */
    public Map<String, Object> raw() {
        return raw;
    }

    /** E: the decoder's stages (exits). */
    public int numStages() {
        return stageLayers.size();
    }

    /** The decoder's layers. */
    public int depth() {
        int n = 0;
        for (List<Integer> s : stageLayers) n += s.size();
        return n;
    }

    /** Values in one layer's key (or value) cache: G x P x hd. */
    public int cacheValues() {
        return numKvHeads * maxSlots * headDim;
    }

    /** The layers after stage s (stage_layers[s+1:] concatenated): what fill{s} writes. */
    public List<Integer> laterLayers(int stage) {
        List<Integer> out = new ArrayList<>();
        for (int s = stage + 1; s < stageLayers.size(); s++) out.addAll(stageLayers.get(s));
        return out;
    }

    public static String stepGraph(int stage) {
        return "step" + stage;
    }

    public static String fillGraph(int stage) {
        return "fill" + stage;
    }

    /** The graphs a layout needs: vision, embed, a step per stage, the head, a fill per stage but the last. */
    public static List<String> graphNames(int stages) {
        List<String> out = new ArrayList<>();
        out.add("vision");
        out.add("embed");
        for (int s = 0; s < stages; s++) out.add(stepGraph(s));
        out.add("head");
        for (int s = 0; s < stages - 1; s++) out.add(fillGraph(s));
        return out;
    }

    /** Every path the manifest names, with where it is named (step 7 of the loading checks). */
    public Map<String, String> namedPaths() {
        Map<String, String> named = new LinkedHashMap<>();
        named.put(tokenizerFile, "tokenizer.file");
        for (Manifest.Artifact a : artifacts) {
            if (a.file != null) named.put(a.file, "artifact " + a.kind() + " file");
            if (a.externalData != null) named.put(a.externalData, "artifact " + a.kind() + " external_data");
            for (Map.Entry<String, Manifest.ArtifactStage> e : a.stages.entrySet()) {
                if (e.getValue().file != null) named.put(e.getValue().file, "artifact " + a.kind() + " graph " + e.getKey());
            }
        }
        return named;
    }
}
