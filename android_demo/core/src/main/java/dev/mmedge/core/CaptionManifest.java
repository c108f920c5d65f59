package dev.mmedge.core;

import java.math.BigDecimal;
import java.math.MathContext;
import java.math.RoundingMode;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A typed view of a captioning bundle's manifest ({@code "kind": "caption"}, docs/bundle-format.md
 * "Captioning bundles") that has passed the caption schema, so every field read here exists and has
 * its type. {@link CaptionChecks} checks that its parts agree; {@link #raw()} keeps the JSON tree.
 */
public final class CaptionManifest {
    public static final String KIND = "caption";

    /** An entry of {@code graphs}: encoder_k{r}, step{s}_k{r} or fill{s}. */
    public static final class Graph {
        public final String name;
        /** "encoder", "step" or "fill". */
        public final String kind;
        public final List<Manifest.TensorSpec> inputs = new ArrayList<>();
        public final List<Manifest.TensorSpec> outputs = new ArrayList<>();
        private final Map<String, Object> raw;

        Graph(String name, Map<String, Object> m) {
            this.name = name;
            this.raw = m;
            kind = (String) m.get("kind");
            for (Object t : Json.arr(m.get("inputs"))) inputs.add(new Manifest.TensorSpec(Json.obj(t)));
            for (Object t : Json.arr(m.get("outputs"))) outputs.add(new Manifest.TensorSpec(Json.obj(t)));
        }

        /** The graph's entry as the manifest states it (stage, keep_ratio and layers are optional there). */
        public Map<String, Object> raw() {
            return raw;
        }

        public Manifest.TensorSpec output(String outputName) {
            for (Manifest.TensorSpec t : outputs) if (t.name.equals(outputName)) return t;
            return null;
        }
    }

    /**
     * {@code thresholds}: the calibrated defaults, a classifier's (policy: "confidence",
     * "max_probability", "patience" or "full"; its thresholds, patience and keep ratio) and the kv mode.
     */
    public static final class Thresholds extends Manifest.Thresholds {
        /** "copy" or "recompute". */
        public final String kv;
        public final boolean calibrated;

        Thresholds(Map<String, Object> m) {
            super(m);
            kv = (String) m.get("kv");
            calibrated = Boolean.TRUE.equals(m.get("calibrated"));
        }
    }

    /** One keep ratio's entry of {@code flops}. */
    public static final class Flops {
        public final long encoder;
        public final List<Long> stage = new ArrayList<>();
        public final List<Long> head = new ArrayList<>();
        public final List<Long> fill = new ArrayList<>();

        Flops(Map<String, Object> m) {
            encoder = Json.lng(m.get("encoder"));
            for (Object x : Json.arr(m.get("stage"))) stage.add(Json.lng(x));
            for (Object x : Json.arr(m.get("head"))) head.add(Json.lng(x));
            for (Object x : Json.arr(m.get("fill"))) fill.add(Json.lng(x));
        }
    }

    private final Map<String, Object> raw;
    public final String name;
    public final Map<String, Object> modelConfig;
    public final int imageSize;
    public final int patchSize;
    public final int vocabSize;
    // tokenizer
    public final String tokenizerFile;
    /** "word" or "wordpiece". */
    public final String tokenizerKind;
    public final int padId;
    public final int unkId;
    public final int bosId;
    public final int eosId;
    public final int maxLength;
    /** tokenizer.continuing_subword_prefix (kind wordpiece), or null. */
    public final String continuingSubwordPrefix;
    /** tokenizer.max_input_chars_per_word (kind wordpiece), or 0. */
    public final int maxInputCharsPerWord;
    // decoder
    /** The decoder layers of each stage (decoder.stage_layers), unmodifiable. */
    public final List<List<Integer>> stageLayers;
    public final int numHeads;
    public final int headDim;
    /** P: the key/value cache length (decoder.max_len). */
    public final int maxLen;
    /** D: the decoder width (decoder.dim). */
    public final int dim;
    public final List<Double> keepRatios = new ArrayList<>();
    public final Map<String, Graph> graphs = new LinkedHashMap<>();
    public final List<Manifest.Artifact> artifacts = new ArrayList<>();
    /** flops by keep ratio as the manifest keys them ("1", "0.5"). */
    public final Map<String, Flops> flops = new LinkedHashMap<>();
    public final Thresholds thresholds;
    public final Map<String, Manifest.FileEntry> files = new LinkedHashMap<>();

    /** The typed view of a manifest that passed the caption schema. */
    public CaptionManifest(Map<String, Object> m) {
        raw = m;
        name = (String) m.get("name");
        modelConfig = Json.obj(Json.obj(m.get("model")).get("config"));
        imageSize = (int) Json.lng(modelConfig.get("image_size"));
        patchSize = (int) Json.lng(modelConfig.get("patch_size"));
        vocabSize = (int) Json.lng(modelConfig.get("vocab_size"));
        Map<String, Object> tok = Json.obj(m.get("tokenizer"));
        tokenizerFile = (String) tok.get("file");
        tokenizerKind = (String) tok.get("kind");
        padId = (int) Json.lng(tok.get("pad_id"));
        unkId = (int) Json.lng(tok.get("unk_id"));
        bosId = (int) Json.lng(tok.get("bos_id"));
        eosId = (int) Json.lng(tok.get("eos_id"));
        maxLength = (int) Json.lng(tok.get("max_length"));
        Object prefix = tok.get("continuing_subword_prefix");
        continuingSubwordPrefix = prefix instanceof String ? (String) prefix : null;
        Object longest = tok.get("max_input_chars_per_word");
        maxInputCharsPerWord = Json.isInteger(longest) && Json.num(longest) >= 1 && Json.num(longest) <= Integer.MAX_VALUE
                ? (int) Json.lng(longest) : 0;
        Map<String, Object> dec = Json.obj(m.get("decoder"));
        List<List<Integer>> stages = new ArrayList<>();
        for (Object s : Json.arr(dec.get("stage_layers"))) {
            List<Integer> layers = new ArrayList<>();
            for (Object l : Json.arr(s)) layers.add((int) Json.lng(l));
            stages.add(Collections.unmodifiableList(layers));
        }
        stageLayers = Collections.unmodifiableList(stages);
        numHeads = (int) Json.lng(dec.get("num_heads"));
        headDim = (int) Json.lng(dec.get("head_dim"));
        maxLen = (int) Json.lng(dec.get("max_len"));
        dim = (int) Json.lng(dec.get("dim"));
        for (Object r : Json.arr(m.get("keep_ratios"))) keepRatios.add(Json.num(r));
        for (Map.Entry<String, Object> e : Json.obj(m.get("graphs")).entrySet()) {
            graphs.put(e.getKey(), new Graph(e.getKey(), Json.obj(e.getValue())));
        }
        for (Object a : Json.arr(m.get("artifacts"))) artifacts.add(new Manifest.Artifact(Json.obj(a)));
        for (Map.Entry<String, Object> e : Json.obj(m.get("flops")).entrySet()) {
            flops.put(e.getKey(), new Flops(Json.obj(e.getValue())));
        }
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

    /** L: the decoder's layers. */
    public int depth() {
        int n = 0;
        for (List<Integer> s : stageLayers) n += s.size();
        return n;
    }

    /** Values in one layer's key (or value) cache: H x P x hd. */
    public int cacheValues() {
        return numHeads * maxLen * headDim;
    }

    /** The layers after stage s (stage_layers[s+1:] concatenated): what fill{s} writes. */
    public List<Integer> laterLayers(int stage) {
        List<Integer> out = new ArrayList<>();
        for (int s = stage + 1; s < stageLayers.size(); s++) out.addAll(stageLayers.get(s));
        return out;
    }

    public boolean hasRatio(double ratio) {
        return keepRatios.contains(ratio);
    }

    /** A keep ratio's tag in graph names, as Python's {@code f"k{r:g}"} writes it: k1, k0.5, k0.25. */
    public static String ratioTag(double ratio) {
        return "k" + formatG(ratio);
    }

    public static String encoderGraph(double ratio) {
        return "encoder_" + ratioTag(ratio);
    }

    public static String stepGraph(int stage, double ratio) {
        return "step" + stage + "_" + ratioTag(ratio);
    }

    public static String fillGraph(int stage) {
        return "fill" + stage;
    }

    /**
     * Python's {@code f"{x:g}"}: 6 significant digits (rounded half to even on the exact binary
     * value, as C's printf), trailing zeros dropped, an exponent below 1e-4 or from 1e6 on.
     */
    public static String formatG(double x) {
        if (Double.isNaN(x) || Double.isInfinite(x)) return Double.isNaN(x) ? "nan" : x > 0 ? "inf" : "-inf";
        if (x == 0) return (1 / x < 0) ? "-0" : "0";
        BigDecimal d = new BigDecimal(x).round(new MathContext(6, RoundingMode.HALF_EVEN));
        int exp = d.precision() - d.scale() - 1;
        if (exp < -4 || exp >= 6) {
            String mantissa = d.movePointLeft(exp).stripTrailingZeros().toPlainString();
            int a = Math.abs(exp);
            return mantissa + "e" + (exp < 0 ? "-" : "+") + (a < 10 ? "0" : "") + a;
        }
        return d.stripTrailingZeros().toPlainString();
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
