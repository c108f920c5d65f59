package dev.mmedge.core.testing;

import dev.mmedge.core.BundleLoader;
import dev.mmedge.core.IO;
import dev.mmedge.core.Json;
import dev.mmedge.core.Manifest;
import dev.mmedge.core.StageRunner;
import dev.mmedge.core.Tensor;

import java.util.Arrays;
import java.util.HashMap;
import java.util.HashSet;
import java.util.IdentityHashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * A StageRunner that replays the stage outputs the Python runtime recorded in
 * tests/vectors/golden/queries.json or tests/vectors/adapted/queries*.json (every exit's logits and
 * confidence and the kept tokens, per keep ratio), so that stage chaining is tested on the JVM
 * without ONNX Runtime. A two-image bundle's recordings give the SHA-256 of the stacked
 * pixel_values [1, 2, 3, S, S] and every image's kept patches in one list (see keptIndex).
 *
 * <p>It is strict about its inputs: stage 0 finds its recording by the SHA-256 of the float32
 * pixel_values and the input_ids it is given (so wrong preprocessing or tokenisation finds none
 * and fails); a later stage accepts only the very hidden tensor the previous stage of the same
 * chain returned and stage 0's attention_mask tensor. The only unrecorded input it answers is the
 * engine's uniform grey self-check / warm-up query (zeros, with the declared shapes).
 *
 * <p>With {@code nanOutputs} it stands for a backend running corrupt weights (the negative vectors'
 * {@code needs_backend} cases, whose graphs this JVM cannot run): every float output (hidden,
 * logits, confidence) is NaN, as ONNX Runtime gives for weights full of NaN.
 */
public final class ReplayStageRunner implements StageRunner {
    /** Where a tensor this runner returned came from. */
    private static final class Origin {
        final Map<String, Object> recording; // the query's by_keep_ratio entry; null for the grey query
        final int stage;
        final double ratio;
        final Tensor attentionMask;

        Origin(Map<String, Object> recording, int stage, double ratio, Tensor attentionMask) {
            this.recording = recording;
            this.stage = stage;
            this.ratio = ratio;
            this.attentionMask = attentionMask;
        }
    }

    private final Manifest manifest;
    private final Map<String, Map<String, Object>> byInput = new HashMap<>();
    private final Map<Tensor, Origin> hidden = new IdentityHashMap<>();
    private final float greyValue;
    private final boolean nanOutputs;
    /** Files the runner was given the verified bytes of. */
    public final Set<String> openedFiles = new HashSet<>();
    public int calls;
    public boolean closed;

    ReplayStageRunner(Manifest manifest, Map<String, Object> golden, boolean nanOutputs) {
        this.manifest = manifest;
        this.nanOutputs = nanOutputs;
        for (Object o : Json.arr(golden.get("queries"))) {
            Map<String, Object> q = Json.obj(o);
            byInput.put(key((String) q.get("pixel_values_sha256"), ints(Json.arr(q.get("input_ids")))), q);
        }
        greyValue = (128f / 255f - 0.5f) / 0.5f;
    }

    private static int[] ints(List<Object> values) {
        int[] out = new int[values.size()];
        for (int i = 0; i < out.length; i++) out[i] = (int) Json.lng(values.get(i));
        return out;
    }

    private static String key(String pixelSha, int[] ids) {
        return pixelSha + "|" + Arrays.toString(ids);
    }

    @Override
    public String backend() {
        return "replay";
    }

    private boolean isGrey(float[] pixels) {
        for (float v : pixels) if (v != greyValue) return false;
        return true;
    }

    private static Tensor zeros(Manifest.TensorSpec spec) {
        long n = 1;
        for (long d : spec.shape) n *= d;
        if (spec.dtype.equals("float32")) return Tensor.float32(new float[(int) n], spec.shape);
        return Tensor.int32(new int[(int) n], spec.shape);
    }

    @Override
    public Map<String, Tensor> run(String stageName, Map<String, Tensor> inputs) {
        if (closed) throw new IllegalStateException("run after close");
        calls++;
        Manifest.Stage stage = manifest.stages.get(stageName);
        if (stage == null) throw new IllegalArgumentException("no stage " + stageName);
        Map<String, Object> recording;
        Tensor attentionMask;
        if (stage.stage == 0) {
            if (!inputs.keySet().equals(new HashSet<>(BundleLoader.STAGE0_INPUTS))) {
                throw new IllegalArgumentException("stage 0 fed " + inputs.keySet());
            }
            for (Manifest.TensorSpec spec : stage.inputs) {
                Tensor t = inputs.get(spec.name);
                if (!t.hasShape(spec.shape) || !t.dtype.equals(spec.dtype)) {
                    throw new IllegalArgumentException(spec.name + " is " + t + ", the manifest says " + spec.dtype + " "
                            + Arrays.toString(spec.shape));
                }
            }
            float[] pixels = inputs.get("pixel_values").floats();
            Map<String, Object> query = byInput.get(key(IO.sha256Hex(IO.float32LE(pixels)), inputs.get("input_ids").ints()));
            if (query == null && !isGrey(pixels)) {
                throw new IllegalArgumentException("no recording for these stage-0 inputs: the preprocessing or the "
                        + "tokenizer differs from the Python runtime's");
            }
            recording = query == null ? null
                    : Json.obj(Json.obj(query.get("by_keep_ratio")).get(ratioKey(stage.keepRatio)));
            attentionMask = zeros(stage.output("attention_mask"));
        } else {
            if (!inputs.keySet().equals(new HashSet<>(BundleLoader.LATER_INPUTS))) {
                throw new IllegalArgumentException("stage " + stageName + " fed " + inputs.keySet());
            }
            Origin from = hidden.get(inputs.get("hidden_in"));
            if (from == null || from.stage != stage.stage - 1 || from.ratio != stage.keepRatio) {
                throw new IllegalArgumentException("stage " + stageName + " was not given the hidden output of stage "
                        + (stage.stage - 1) + " of keep ratio " + stage.keepRatio);
            }
            if (inputs.get("attention_mask") != from.attentionMask) {
                throw new IllegalArgumentException("stage " + stageName + " was not given stage 0's attention_mask");
            }
            recording = from.recording;
            attentionMask = from.attentionMask;
        }
        Map<String, Tensor> out = new LinkedHashMap<>();
        Tensor h = zeros(stage.output("hidden"));
        if (nanOutputs) Arrays.fill(h.floats(), Float.NaN);
        hidden.put(h, new Origin(recording, stage.stage, stage.keepRatio, attentionMask));
        out.put("hidden", h);
        int labels = manifest.labels.size();
        float[] logits = new float[labels];
        float[] confidence = new float[1];
        if (recording != null) {
            List<Object> row = Json.arr(Json.arr(recording.get("logits")).get(stage.stage));
            for (int j = 0; j < labels; j++) logits[j] = (float) Json.num(row.get(j));
            confidence[0] = (float) Json.num(Json.arr(recording.get("confidence")).get(stage.stage));
        }
        if (nanOutputs) {
            Arrays.fill(logits, Float.NaN);
            Arrays.fill(confidence, Float.NaN);
        }
        out.put("logits", Tensor.float32(logits, stage.output("logits").shape));
        out.put("confidence", Tensor.float32(confidence, stage.output("confidence").shape));
        if (stage.stage == 0) {
            out.put("attention_mask", attentionMask);
            out.put("kept_index", keptIndex(stage.output("kept_index"), recording));
        }
        return out;
    }

    /**
     * Stage 0's kept_index, [1, k] or [I, k] for a bundle of I images per query: each image's own
     * patch indices 0..N-1. The recording lists every image's kept patches in one ascending list,
     * image i's patch j as i * N + j; row i is rebuilt from the entries i * N .. (i + 1) * N - 1 less
     * i * N. Each row is given back in another (score-like) order: the engine must sort, and number
     * image i's patches i * N + j again. The grey query keeps patches 0..k-1 of each image.
     */
    private Tensor keptIndex(Manifest.TensorSpec spec, Map<String, Object> recording) {
        int kept = (int) spec.shape[spec.shape.length - 1];
        int rows = spec.shape.length == 2 ? (int) spec.shape[0] : 1;
        int patches = manifest.patchesPerImage();
        int[] index = new int[rows * kept];
        if (recording == null) {
            for (int i = 0; i < index.length; i++) index[i] = i % kept;
            return Tensor.int32(index, spec.shape);
        }
        List<Object> recorded = Json.arr(recording.get("kept_index"));
        if (recorded.size() != rows * kept) {
            throw new IllegalStateException("recorded " + recorded.size() + " kept tokens, the manifest " + rows + " x " + kept);
        }
        int[] filled = new int[rows];
        for (Object o : recorded) {
            int v = (int) Json.lng(o);
            int row = rows == 1 ? 0 : v / patches;
            if (row >= rows || filled[row] == kept) throw new IllegalStateException("recorded kept index " + v + " is not image-wise");
            index[row * kept + kept - 1 - filled[row]++] = v - row * (rows == 1 ? 0 : patches);
        }
        return Tensor.int32(index, spec.shape);
    }

    /** The golden file's keep-ratio keys are Python's float repr ("1.0", "0.25"). */
    static String ratioKey(double ratio) {
        return Double.toString(ratio);
    }

    @Override
    public void close() {
        closed = true;
    }

    /** The factory: runs "onnxruntime" onnx artifacts (from their verified bytes) by replaying queries.json. */
    public static final class Factory extends ReplayFactory implements StageRunner.Factory {
        public ReplayStageRunner last;

        public Factory(Map<String, Object> golden) {
            this(golden, true);
        }

        /** sameManifest false: replay on an edited copy of the bundle (tamper tests). */
        public Factory(Map<String, Object> golden, boolean sameManifest) {
            this(golden, sameManifest, false);
        }

        /** nanOutputs: every float output NaN (a backend running weights full of NaN). */
        public Factory(Map<String, Object> golden, boolean sameManifest, boolean nanOutputs) {
            super(golden, sameManifest, nanOutputs);
        }

        @Override
        public StageRunner open(BundleLoader.Loaded bundle, Manifest.Artifact artifact, List<String> stages, int threads) {
            checkManifest(bundle.manifestBytes, "the recordings were made from another manifest");
            ReplayStageRunner runner = new ReplayStageRunner(bundle.manifest, recording, nanOutputs);
            for (String stage : stages) {
                String file = artifact.stages.get(stage).file;
                requireVerified(bundle.files, file);
                runner.openedFiles.add(file);
            }
            last = runner;
            return runner;
        }
    }
}
