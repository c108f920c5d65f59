package dev.mmedge.core;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;

/**
 * Step 6 of loading a captioning bundle (docs/bundle-format.md "Captioning bundles", "What a
 * runtime checks"; mmedge/caption/manifest.py layout_problems): what the caption schema cannot say.
 * The decoder layout, model config, graphs (names, inputs and outputs with shapes and dtypes),
 * artifacts, tokenizer ids and FLOPs table agree with one another, so that a bundle that loads can
 * caption.
 */
public final class CaptionChecks {
    /** The largest key (or value) cache: decoder layers x cache positions x width. */
    public static final long MAX_CACHE_VALUES = 1L << 27;
    private static final String F32 = "float32";
    private static final String I64 = "int64";

    private CaptionChecks() {
    }

    /** One tensor the layout expects: name, shape, dtype. */
    private static final class Spec {
        final String name;
        final long[] shape;
        final String dtype;

        Spec(String name, String dtype, long... shape) {
            this.name = name;
            this.shape = shape;
            this.dtype = dtype;
        }

        boolean matches(Manifest.TensorSpec t) {
            return name.equals(t.name) && Arrays.equals(shape, t.shape) && dtype.equals(t.dtype);
        }

        @Override
        public String toString() {
            return name + " " + Arrays.toString(shape) + " " + dtype;
        }
    }

    /** What the layout says one graph is. */
    private static final class Expected {
        final String kind;
        final Integer stage;
        final Double ratio;
        final List<Integer> layers;
        final List<Spec> inputs;
        final List<Spec> outputs;

        Expected(String kind, Integer stage, Double ratio, List<Integer> layers, List<Spec> inputs, List<Spec> outputs) {
            this.kind = kind;
            this.stage = stage;
            this.ratio = ratio;
            this.layers = layers;
            this.inputs = inputs;
            this.outputs = outputs;
        }
    }

    /** Every problem (at most 50); empty when the manifest is consistent. Assumes it passed the caption schema. */
    public static List<String> consistencyProblems(CaptionManifest m) {
        List<String> p = new ArrayList<>();
        List<Integer> layers = new ArrayList<>();
        for (List<Integer> s : m.stageLayers) layers.addAll(s);
        for (int i = 0; i < layers.size(); i++) {
            if (layers.get(i) != i) {
                p.add("decoder.stage_layers " + m.stageLayers + " must cover layers 0..n-1 in order");
                break;
            }
        }
        int depth = layers.size();
        int h = m.numHeads;
        int hd = m.headDim;
        int d = m.dim;
        int positions = m.maxLen;
        if ((long) h * hd != d) p.add("decoder.num_heads " + h + " x head_dim " + hd + " = " + (long) h * hd + ", not decoder.dim " + d);
        Map<String, Integer> want = new LinkedHashMap<>();
        want.put("decoder_depth", depth);
        want.put("num_heads", h);
        want.put("dim", d);
        want.put("max_len", positions);
        for (Map.Entry<String, Integer> e : want.entrySet()) {
            Object got = m.modelConfig.get(e.getKey());
            if (!Json.isInteger(got) || Json.lng(got) != e.getValue()) {
                p.add("model.config." + e.getKey() + " " + Json.write(got) + " differs from the decoder's " + e.getValue());
            }
        }
        if ((long) depth * positions * d > MAX_CACHE_VALUES) {
            p.add("the key/value cache of " + depth + " layers x " + positions + " positions x " + d + " is over "
                    + MAX_CACHE_VALUES + " values");
        }
        List<Double> ratios = m.keepRatios;
        if (new HashSet<>(ratios).size() != ratios.size()) p.add("keep_ratios repeat a ratio: " + ratios);
        if (!ratios.contains(m.thresholds.keepRatio)) {
            p.add("thresholds.keep_ratio " + m.thresholds.keepRatio + " is not an exported keep ratio");
        }
        if (m.maxLength != positions) p.add("tokenizer.max_length must equal decoder.max_len");
        List<Integer> ids = Arrays.asList(m.padId, m.unkId, m.bosId, m.eosId);
        if (new HashSet<>(ids).size() != 4) p.add("tokenizer pad/unk/bos/eos ids " + ids + " must be four different ids");
        for (int id : ids) {
            if (id >= m.vocabSize) {
                p.add("tokenizer ids " + ids + " must be below model.config.vocab_size " + m.vocabSize);
                break;
            }
        }
        if (!p.isEmpty()) return p;
        p.addAll(graphProblems(m, depth));
        Set<String> names = new TreeSet<>(m.graphs.keySet());
        for (Manifest.Artifact a : m.artifacts) {
            String kind = "artifact " + a.runtime + "/" + a.format + "/" + a.precision;
            if (!new TreeSet<>(a.stages.keySet()).equals(names)) p.add(kind + " does not hold every graph");
            if ("executorch".equals(a.runtime)) {
                for (Map.Entry<String, Manifest.ArtifactStage> e : a.stages.entrySet()) {
                    CaptionManifest.Graph g = m.graphs.get(e.getKey());
                    if (g == null) continue;
                    List<String> outs = new ArrayList<>();
                    for (Manifest.TensorSpec t : g.outputs) outs.add(t.name);
                    if (!outs.equals(e.getValue().outputs)) {
                        p.add(kind + " stage " + e.getKey() + " outputs " + e.getValue().outputs + " differ from the graph's");
                    }
                }
            }
        }
        Set<String> wantRatios = new TreeSet<>();
        for (double r : ratios) wantRatios.add(CaptionManifest.formatG(r));
        if (!new TreeSet<>(m.flops.keySet()).equals(wantRatios)) {
            p.add("flops must give keep ratios " + wantRatios + ", it gives " + new TreeSet<>(m.flops.keySet()));
        }
        int stages = m.numStages();
        for (Map.Entry<String, CaptionManifest.Flops> e : m.flops.entrySet()) {
            CaptionManifest.Flops f = e.getValue();
            if (f.stage.size() != stages || f.head.size() != stages || f.fill.size() != stages) {
                p.add("flops[" + e.getKey() + "] must give " + stages + " stage, head and fill entries");
            }
        }
        return p.size() > 50 ? new ArrayList<>(p.subList(0, 50)) : p;
    }

    private static long[] cache(int n, int length, CaptionManifest m) {
        return new long[] {n, 1, m.numHeads, length, m.headDim};
    }

    /** Each graph the layout needs, with the inputs and outputs decoding feeds and reads. */
    private static List<String> graphProblems(CaptionManifest m, int depth) {
        int stages = m.numStages();
        long s = m.imageSize;
        long patches = (long) (m.imageSize / m.patchSize) * (m.imageSize / m.patchSize);
        Set<String> wantNames = new TreeSet<>();
        for (int i = 0; i < stages - 1; i++) wantNames.add(CaptionManifest.fillGraph(i));
        for (double r : m.keepRatios) {
            wantNames.add(CaptionManifest.encoderGraph(r));
            for (int i = 0; i < stages; i++) wantNames.add(CaptionManifest.stepGraph(i, r));
        }
        List<String> problems = new ArrayList<>();
        if (!new TreeSet<>(m.graphs.keySet()).equals(wantNames)) {
            problems.add("graphs " + first(new TreeSet<>(m.graphs.keySet())) + " != the layout's " + first(wantNames));
            return problems;
        }
        Map<String, Expected> expected = new LinkedHashMap<>();
        for (double r : m.keepRatios) {
            String enc = CaptionManifest.encoderGraph(r);
            List<Manifest.TensorSpec> outs = m.graphs.get(enc).outputs;
            long k = outs.get(0).shape.length == 5 ? outs.get(0).shape[3] : 0;
            if (k < 1 || k > patches) {
                problems.add(enc + " keeps " + k + " visual tokens; the image has " + patches);
                continue;
            }
            expected.put(enc, new Expected("encoder", null, r, new ArrayList<Integer>(),
                    Arrays.asList(new Spec("pixel_values", F32, 1, 3, s, s)),
                    Arrays.asList(new Spec("cross_k", F32, cache(depth, (int) k, m)), new Spec("cross_v", F32, cache(depth, (int) k, m)))));
            for (int i = 0; i < stages; i++) {
                List<Integer> layers = m.stageLayers.get(i);
                int n = layers.size();
                Spec first = i == 0 ? new Spec("token", I64, 1) : new Spec("hidden_in", F32, 1, 1, m.dim);
                expected.put(CaptionManifest.stepGraph(i, r), new Expected("step", i, r, layers,
                        Arrays.asList(first, new Spec("position", I64, 1), new Spec("past_k", F32, cache(n, m.maxLen, m)),
                                new Spec("past_v", F32, cache(n, m.maxLen, m)), new Spec("cross_k", F32, cache(n, (int) k, m)),
                                new Spec("cross_v", F32, cache(n, (int) k, m))),
                        Arrays.asList(new Spec("hidden", F32, 1, 1, m.dim), new Spec("logits", F32, 1, m.vocabSize),
                                new Spec("confidence", F32, 1), new Spec("present_k", F32, cache(n, m.maxLen, m)),
                                new Spec("present_v", F32, cache(n, m.maxLen, m)))));
            }
        }
        for (int i = 0; i < stages - 1; i++) {
            List<Integer> later = m.laterLayers(i);
            int n = later.size();
            expected.put(CaptionManifest.fillGraph(i), new Expected("fill", i, null, later,
                    Arrays.asList(new Spec("hidden_in", F32, 1, 1, m.dim), new Spec("position", I64, 1),
                            new Spec("past_k", F32, cache(n, m.maxLen, m)), new Spec("past_v", F32, cache(n, m.maxLen, m))),
                    Arrays.asList(new Spec("present_k", F32, cache(n, m.maxLen, m)), new Spec("present_v", F32, cache(n, m.maxLen, m)))));
        }
        for (Map.Entry<String, Expected> e : expected.entrySet()) {
            String name = e.getKey();
            Expected x = e.getValue();
            CaptionManifest.Graph g = m.graphs.get(name);
            Map<String, Object> raw = g.raw();
            Object stage = raw.containsKey("stage") ? raw.get("stage") : x.stage;
            Object ratio = raw.containsKey("keep_ratio") ? raw.get("keep_ratio") : x.ratio;
            Object layers = raw.containsKey("layers") ? raw.get("layers") : toJson(x.layers);
            if (!g.kind.equals(x.kind) || !sameNumber(stage, x.stage) || !sameNumber(ratio, x.ratio)
                    || !Json.equal(layers, toJson(x.layers))) {
                problems.add("graph " + name + " is described as " + g.kind + " stage " + shown(stage) + " keep ratio "
                        + shown(ratio) + " layers " + shown(layers) + "; the layout says " + x.kind + " " + x.stage + " "
                        + x.ratio + " " + x.layers);
            }
            if (!matches(g.inputs, x.inputs)) {
                problems.add("graph " + name + " inputs " + brief(g.inputs) + " differ from what decoding uses " + x.inputs);
            }
            if (!matches(g.outputs, x.outputs)) {
                problems.add("graph " + name + " outputs " + brief(g.outputs) + " differ from what decoding uses " + x.outputs);
            }
        }
        return problems;
    }

    private static boolean matches(List<Manifest.TensorSpec> got, List<Spec> want) {
        if (got.size() != want.size()) return false;
        for (int i = 0; i < got.size(); i++) if (!want.get(i).matches(got.get(i))) return false;
        return true;
    }

    /** Both null (JSON null or absent), or the same number. */
    private static boolean sameNumber(Object got, Number want) {
        boolean none = got == null || got == Json.NULL;
        if (none || want == null) return none && want == null;
        return Json.isNumber(got) && Json.num(got) == want.doubleValue();
    }

    private static List<Object> toJson(List<Integer> values) {
        List<Object> out = new ArrayList<>();
        for (int v : values) out.add((long) v);
        return out;
    }

    private static String shown(Object v) {
        return v == null ? "null" : BundleLoader.shortText(Json.write(v), 60);
    }

    private static String brief(List<Manifest.TensorSpec> specs) {
        StringBuilder out = new StringBuilder("[");
        for (Manifest.TensorSpec t : specs) {
            if (out.length() > 1) out.append(", ");
            out.append(t.name).append(' ').append(Arrays.toString(t.shape)).append(' ').append(t.dtype);
        }
        return BundleLoader.shortText(out.append(']').toString(), 160);
    }

    private static String first(Set<String> names) {
        List<String> out = new ArrayList<>(names);
        return (out.size() > 20 ? out.subList(0, 20) : out).toString();
    }
}
