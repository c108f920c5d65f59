package dev.mmedge.core;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A typed view of a manifest that has passed the schema (so every field read here exists and has
 * its type). The raw JSON tree stays available as {@link #raw()}; optional sections this runtime
 * does not implement (such as {@code modality_pruning}) are left there and ignored, as the spec
 * allows.
 */
public final class Manifest {
    /** head: the answer is labels[argmax] and max_probability the largest softmax probability (the default). */
    public static final String SOFTMAX = "softmax";
    /**
     * head of an adapted image-text retrieval model: task "match", labels {@link #MATCH_LABELS}, logits
     * [0, s]; the match probability is softmax(logits)[1] = sigmoid(s) ({@link Engine#matchProbability}).
     */
    public static final String MATCH_SCORE = "match-score";
    /** The labels of a match-score bundle. */
    public static final List<String> MATCH_LABELS = Collections.unmodifiableList(Arrays.asList("no", "yes"));
    /** The task of a match-score bundle. */
    public static final String MATCH_TASK = "match";

    /** One input or output of a stage. */
    public static final class TensorSpec {
        public final String name;
        public final long[] shape;
        public final String dtype;

        TensorSpec(Map<String, Object> m) {
            name = (String) m.get("name");
            List<Object> dims = Json.arr(m.get("shape"));
            shape = new long[dims.size()];
            for (int i = 0; i < shape.length; i++) shape[i] = Json.lng(dims.get(i));
            dtype = (String) m.get("dtype");
        }
    }

    /** An entry of `stages`. */
    public static final class Stage {
        public final String name;
        public final int stage;
        public final double keepRatio;
        public final List<TensorSpec> inputs = new ArrayList<>();
        public final List<TensorSpec> outputs = new ArrayList<>();
        public final long flops;

        Stage(String name, Map<String, Object> m) {
            this.name = name;
            stage = (int) Json.lng(m.get("stage"));
            keepRatio = Json.num(m.get("keep_ratio"));
            for (Object t : Json.arr(m.get("inputs"))) inputs.add(new TensorSpec(Json.obj(t)));
            for (Object t : Json.arr(m.get("outputs"))) outputs.add(new TensorSpec(Json.obj(t)));
            flops = Json.lng(m.get("flops"));
        }

        public TensorSpec output(String outputName) {
            for (TensorSpec t : outputs) if (t.name.equals(outputName)) return t;
            return null;
        }

        public TensorSpec input(String inputName) {
            for (TensorSpec t : inputs) if (t.name.equals(inputName)) return t;
            return null;
        }
    }

    /** An entry of `keep_ratios`. */
    public static final class KeepRatio {
        public final double keepRatio;
        public final int keptTokens;
        public final int seqLen;
        public final List<String> stages = new ArrayList<>();
        public final List<Long> exitFlops = new ArrayList<>();

        KeepRatio(Map<String, Object> m) {
            keepRatio = Json.num(m.get("keep_ratio"));
            keptTokens = (int) Json.lng(m.get("kept_tokens"));
            seqLen = (int) Json.lng(m.get("seq_len"));
            for (Object s : Json.arr(m.get("stages"))) stages.add((String) s);
            for (Object f : Json.arr(m.get("exit_flops"))) exitFlops.add(Json.lng(f));
        }
    }

    /** Where one stage is in an artifact. */
    public static final class ArtifactStage {
        public final String file;
        public final String method;
        public final String function;
        public final List<String> outputs;

        ArtifactStage(Map<String, Object> m) {
            file = (String) m.get("file");
            method = (String) m.get("method");
            function = (String) m.get("function");
            if (m.containsKey("outputs")) {
                List<String> names = new ArrayList<>();
                for (Object o : Json.arr(m.get("outputs"))) names.add((String) o);
                outputs = Collections.unmodifiableList(names);
            } else {
                outputs = null;
            }
        }
    }

    /** An entry of `artifacts`. */
    public static final class Artifact {
        public final String target;
        public final String format;
        public final String precision;
        public final String runtime;
        public final String file;
        /** format onnx: the shared weights file the stage graphs read (ONNX external data), or null. */
        public final String externalData;
        public final Map<String, ArtifactStage> stages = new LinkedHashMap<>();

        Artifact(Map<String, Object> m) {
            target = (String) m.get("target");
            format = (String) m.get("format");
            precision = (String) m.get("precision");
            runtime = (String) m.get("runtime");
            file = (String) m.get("file");
            externalData = (String) m.get("external_data");
            for (Map.Entry<String, Object> e : Json.obj(m.get("stages")).entrySet()) {
                stages.put(e.getKey(), new ArtifactStage(Json.obj(e.getValue())));
            }
        }

        public String kind() {
            return target + "/" + format + "/" + precision;
        }
    }

    /** `thresholds` (a captioning bundle's add kv: {@link CaptionManifest.Thresholds}). */
    public static class Thresholds {
        public final String policy;
        public final double confidence;
        public final double maxProbability;
        public final int patience;
        public final double keepRatio;

        Thresholds(Map<String, Object> m) {
            policy = (String) m.get("policy");
            confidence = Json.num(m.get("confidence"));
            maxProbability = Json.num(m.get("max_probability"));
            patience = (int) Json.lng(m.get("patience"));
            keepRatio = Json.num(m.get("keep_ratio"));
        }
    }

    /** A listed file: size and SHA-256. */
    public static final class FileEntry {
        public final String sha256;
        public final long bytes;

        FileEntry(Map<String, Object> m) {
            sha256 = (String) m.get("sha256");
            bytes = Json.lng(m.get("bytes"));
        }
    }

    private final Map<String, Object> raw;
    public final String name;
    public final String task;
    public final List<String> labels = new ArrayList<>();
    public final List<Integer> exitLayers = new ArrayList<>();
    /** head: {@link #SOFTMAX} (also when absent) or {@link #MATCH_SCORE}. */
    public final String head;
    public final Map<String, Object> modelConfig;
    // preprocessing
    public final int imageSize;
    public final double scale;
    public final double[] mean = new double[3];
    public final double[] std = new double[3];
    /** preprocessing.pad_color; absent for an adapted encoder (resize "pillow-bicubic"): the background grey. */
    public final int[] padColor = new int[3];
    /** preprocessing.resize: "pillow-bilinear" (format 1, or a sentence in older bundles) or "pillow-bicubic". */
    public final String resize;
    /**
     * preprocessing.num_images: images per query (1 when absent; 2 for an adapted NLVR2 model, whose
     * stage 0 takes pixel_values [1, 2, 3, S, S]).
     */
    public final int numImages;
    // tokenizer
    public final String tokenizerFile;
    public final int maxLength;
    public final boolean lowercase;
    public final String splitRegex;
    public final int padId;
    public final int unkId;
    /** tokenizer.kind: "word" (WordLevel file; the default when absent) or "wordpiece" (WordPiece file). */
    public final String tokenizerKind;
    /** tokenizer.continuing_subword_prefix (kind wordpiece), or null when absent. */
    public final String continuingSubwordPrefix;
    /** tokenizer.max_input_chars_per_word (kind wordpiece), or 0 when absent. */
    public final int maxInputCharsPerWord;
    /** The tokenizer section as the manifest states it (kind bert-wordpiece: compared with the file's settings). */
    public final Map<String, Object> tokenizerSpec;
    public final List<KeepRatio> keepRatios = new ArrayList<>();
    public final Map<String, Stage> stages = new LinkedHashMap<>();
    public final Thresholds thresholds;
    public final List<Artifact> artifacts = new ArrayList<>();
    public final Map<String, FileEntry> files = new LinkedHashMap<>();
    /** in_graph.by_keep_ratio: key -> {file, ort_file?} (named paths only; this runtime runs the staged chain). */
    public final Map<String, Map<String, Object>> inGraph = new LinkedHashMap<>();

    /** The typed view of a schema-valid manifest. */
    public Manifest(Map<String, Object> m) {
        raw = m;
        name = (String) m.get("name");
        task = (String) m.get("task");
        for (Object l : Json.arr(m.get("labels"))) labels.add((String) l);
        for (Object e : Json.arr(m.get("exit_layers"))) exitLayers.add((int) Json.lng(e));
        Object headValue = m.get("head");
        head = headValue == null ? SOFTMAX : headValue instanceof String ? (String) headValue : Json.write(headValue);
        modelConfig = Json.obj(Json.obj(m.get("model")).get("config"));
        Map<String, Object> pre = Json.obj(m.get("preprocessing"));
        imageSize = (int) Json.lng(pre.get("image_size"));
        scale = Json.num(pre.get("scale"));
        resize = (String) pre.get("resize");
        Object images = pre.get("num_images");
        numImages = Json.isInteger(images) && Json.num(images) >= 1 && Json.num(images) <= Integer.MAX_VALUE
                ? (int) Json.lng(images) : 1;
        Object pad = pre.get("pad_color");
        for (int c = 0; c < 3; c++) {
            mean[c] = Json.num(Json.arr(pre.get("mean")).get(c));
            std[c] = Json.num(Json.arr(pre.get("std")).get(c));
            padColor[c] = pad == null ? Preprocessor.BACKGROUND[c] : (int) Json.lng(Json.arr(pad).get(c));
        }
        Map<String, Object> tok = Json.obj(m.get("tokenizer"));
        tokenizerSpec = Collections.unmodifiableMap(tok);
        tokenizerFile = (String) tok.get("file");
        maxLength = (int) Json.lng(tok.get("max_length"));
        lowercase = (Boolean) tok.get("lowercase");
        splitRegex = (String) tok.get("split_regex");
        padId = (int) Json.lng(tok.get("pad_id"));
        unkId = (int) Json.lng(tok.get("unk_id"));
        Object kind = tok.get("kind");
        tokenizerKind = kind == null ? WordTokenizer.KIND_WORD : kind instanceof String ? (String) kind : Json.write(kind);
        Object prefix = tok.get("continuing_subword_prefix");
        continuingSubwordPrefix = prefix instanceof String ? (String) prefix : null;
        Object longest = tok.get("max_input_chars_per_word");
        maxInputCharsPerWord = Json.isInteger(longest) && Json.num(longest) >= 1 && Json.num(longest) <= Integer.MAX_VALUE
                ? (int) Json.lng(longest) : 0;
        for (Object k : Json.arr(m.get("keep_ratios"))) keepRatios.add(new KeepRatio(Json.obj(k)));
        for (Map.Entry<String, Object> e : Json.obj(m.get("stages")).entrySet()) {
            stages.put(e.getKey(), new Stage(e.getKey(), Json.obj(e.getValue())));
        }
        thresholds = new Thresholds(Json.obj(m.get("thresholds")));
        for (Object a : Json.arr(m.get("artifacts"))) artifacts.add(new Artifact(Json.obj(a)));
        for (Map.Entry<String, Object> e : Json.obj(m.get("files")).entrySet()) {
            files.put(e.getKey(), new FileEntry(Json.obj(e.getValue())));
        }
        Object ig = m.get("in_graph");
        if (ig instanceof Map && Json.obj(ig).get("by_keep_ratio") instanceof Map) {
            for (Map.Entry<String, Object> e : Json.obj(Json.obj(ig).get("by_keep_ratio")).entrySet()) {
                inGraph.put(e.getKey(), Json.obj(e.getValue()));
            }
        }
    }

    /** The parsed manifest.json as it was read. */
    public Map<String, Object> raw() {
        return raw;
    }

    /** The keep_ratios entry of a ratio, or null. */
    public KeepRatio keepRatio(double ratio) {
        for (KeepRatio k : keepRatios) if (k.keepRatio == ratio) return k;
        return null;
    }

    public List<Double> ratios() {
        List<Double> out = new ArrayList<>();
        for (KeepRatio k : keepRatios) out.add(k.keepRatio);
        return out;
    }

    /** The largest keep ratio (every token). */
    public double fullRatio() {
        double best = 0;
        for (KeepRatio k : keepRatios) best = Math.max(best, k.keepRatio);
        return best;
    }

    /** Patches per image, (image_size / patch_size)^2, or 0 when model.config has no positive patch_size. */
    public int patchesPerImage() {
        int patch = patchSize();
        return patch > 0 ? (imageSize / patch) * (imageSize / patch) : 0;
    }

    /** model.config.patch_size when it is a positive integer, else 0. */
    public int patchSize() {
        Object p = modelConfig.get("patch_size");
        return Json.isInteger(p) && Json.num(p) > 0 ? (int) Json.lng(p) : 0;
    }
}
