package dev.mmedge.core.testing;

import dev.mmedge.core.IO;
import dev.mmedge.core.Json;
import dev.mmedge.core.Manifest;
import dev.mmedge.core.Tensor;
import dev.mmedge.core.VLMLoader;
import dev.mmedge.core.VLMManifest;
import dev.mmedge.core.VLMRunner;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Base64;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * A VLMRunner that replays the graph calls the Python VLMEngine made on onnxruntime
 * (tests/vectors/vlm/replay.json, scripts/make_vlm_replay.py), so that the VLM engine's generation
 * is tested on the JVM without ONNX Runtime.
 *
 * <p>It answers a call only when the graph and every input are those of a recorded call, and throws
 * an {@link AssertionError} (which no engine code catches) on any other: pixel_values by the SHA-256
 * of their float32 bytes (so the preprocessing must be bit-identical), text_ids, ids, positions and
 * slot by value, and every float tensor by identity: each row of a (1, T, D) tensor, each layer of a
 * cache and each exit_hidden, in order. The tensors it gives stand for the recorded ones: each row or
 * layer is filled with a pattern that encodes the recorded tensor's index ({@code index + 1 + (i % 251) / 256}
 * at element i), an all-zero tensor is zeros, and an input slice must be exactly such a pattern, so a
 * visual row in the wrong place, a cache layer from another hypothesis or a hidden from the wrong
 * stage does not match. Scores, logits and confidence are the recorded float32 values. Every call made
 * is counted per recorded call, so a test can check that the engine made each of them.
 *
 * <p>With {@code nanOutputs} every logit is NaN (a backend whose LM head's weights are NaN; the
 * tensors passed on keep their patterns, so the calls up to the first logits are still checked).
 */
public final class ReplayVLMRunner implements VLMRunner {
    private static final int PATTERN = 251;
    private static final List<String> ROWS = Arrays.asList("visual", "embeds", "hidden", "hidden_in");
    private static final List<String> LAYERS = Arrays.asList("past_k", "past_v", "present_k", "present_v");

    private final VLMManifest manifest;
    private final Map<String, List<String>> columns = new HashMap<>();
    private final int dim;
    private final int zero;
    private final int tensorCount;
    private final Map<String, Integer> byInputs = new HashMap<>();
    private final List<List<Object>> rows = new ArrayList<>();
    private final boolean nanOutputs;
    /** How often each recorded call was made (index: the call's line in replay.json). */
    public final int[] used;
    public int calls;
    public boolean closed;

    ReplayVLMRunner(VLMManifest manifest, Map<String, Object> replay, boolean nanOutputs) {
        this.manifest = manifest;
        this.nanOutputs = nanOutputs;
        for (Map.Entry<String, Object> e : Json.obj(replay.get("columns")).entrySet()) columns.put(e.getKey(), Golden.strings(e.getValue()));
        dim = (int) Json.lng(replay.get("dim"));
        zero = (int) Json.lng(replay.get("zero"));
        tensorCount = (int) Json.lng(replay.get("tensor_count"));
        if (tensorCount >= 1 << 15) throw new IllegalStateException("too many tensors for the float pattern: " + tensorCount);
        for (Object o : Json.arr(replay.get("calls"))) {
            List<Object> row = Json.arr(o);
            String key = recordedKey(row);
            if (byInputs.put(key, rows.size()) != null) throw new IllegalStateException("replay.json repeats the call " + key);
            rows.add(row);
        }
        used = new int[rows.size()];
    }

    /** How many recorded calls there are. */
    public int recordedCalls() {
        return rows.size();
    }

    /** The graph kind of a graph name: vision, embed, step, head or fill. */
    public static String kind(String graph) {
        for (String k : new String[] {"vision", "embed", "step", "head", "fill"}) if (graph.startsWith(k)) return k;
        throw new AssertionError("replay: no graph kind for " + graph);
    }

    /** The input columns of a graph kind (its columns up to the first output). */
    private List<String> inputs(String kind) {
        int n = kind.equals("vision") ? 2 : kind.equals("embed") || kind.equals("head") ? 1 : 5;
        return columns.get(kind).subList(1, 1 + n);
    }

    private String recordedKey(List<Object> row) {
        String graph = (String) row.get(0);
        StringBuilder key = new StringBuilder(graph);
        for (int i = 1; i <= inputs(kind(graph)).size(); i++) key.append('|').append(Json.write(row.get(i)));
        return key.toString();
    }

    @Override
    public String backend() {
        return "replay";
    }

    @Override
    public Map<String, Tensor> run(String graph, Map<String, Tensor> inputs) {
        if (closed) throw new AssertionError("replay: " + graph + " run after close");
        calls++;
        if (!manifest.graphs.containsKey(graph)) throw new AssertionError("replay: no graph " + graph + " in the manifest");
        String kind = kind(graph);
        List<String> names = new ArrayList<>(inputs.keySet());
        if (!names.equals(inputs(kind))) throw new AssertionError("replay: " + graph + " was fed " + names + ", its inputs are " + inputs(kind));
        StringBuilder key = new StringBuilder(graph);
        for (String name : names) key.append('|').append(Json.write(identify(graph, name, inputs.get(name))));
        Integer index = byInputs.get(key.toString());
        if (index == null) {
            throw new AssertionError("replay: unexpected call " + BundleText.cut(key.toString(), 600) + ": the Python runtime made no "
                    + "such call (a wrong kept token, position, slot, exit, cache, head or fill)");
        }
        used[index]++;
        return outputs(graph, kind, rows.get(index));
    }

    /** What an input stands for: its SHA-256 (pixel_values), its values (ids, positions, slot) or its tensor indices. */
    private Object identify(String graph, String name, Tensor t) {
        switch (name) {
            case "pixel_values":
                expect(graph, name, t, "float32");
                return IO.sha256Hex(IO.float32LE(t.floats()));
            case "text_ids":
            case "ids":
            case "positions": {
                expect(graph, name, t, "int64");
                long[] shape = t.shape();
                if (shape.length != 2 || shape[0] != 1) throw new AssertionError("replay: " + graph + " " + name + " is " + t);
                List<Object> out = new ArrayList<>();
                for (long v : t.longs()) out.add(v);
                return out;
            }
            case "slot":
                expect(graph, name, t, "int64");
                if (!t.hasShape(new long[] {1})) throw new AssertionError("replay: " + graph + " slot is " + t);
                return t.longs()[0];
            case "exit_hidden":
                expect(graph, name, t, "float32");
                if (!t.hasShape(new long[] {1, dim})) throw new AssertionError("replay: " + graph + " exit_hidden is " + t);
                return (long) slice(graph, name, t.floats(), 0, dim);
            default: { // hidden_in: one index per row; past_k, past_v: one index per layer
                expect(graph, name, t, "float32");
                long[] shape = t.shape();
                int parts = (int) (ROWS.contains(name) ? shape[1] : shape[0]);
                boolean ok = ROWS.contains(name) ? shape.length == 3 && shape[0] == 1 && shape[2] == dim
                        : t.hasShape(new long[] {parts, 1, manifest.numKvHeads, manifest.maxSlots, manifest.headDim});
                if (!ok) throw new AssertionError("replay: " + graph + " " + name + " is " + t);
                int size = t.size() / parts;
                List<Object> ids = new ArrayList<>();
                for (int j = 0; j < parts; j++) ids.add((long) slice(graph, name + "[" + j + "]", t.floats(), j * size, size));
                return ids;
            }
        }
    }

    private static void expect(String graph, String name, Tensor t, String dtype) {
        if (!t.dtype.equals(dtype)) throw new AssertionError("replay: " + graph + " input " + name + " is " + t + ", not " + dtype);
    }

    /** The recorded tensor a slice stands for (AssertionError when it is not one this runner gave, or zeros). */
    private int slice(String graph, String what, float[] data, int from, int size) {
        boolean isZero = true;
        for (int i = 0; i < size && isZero; i++) isZero = data[from + i] == 0f;
        if (isZero) return zero;
        int id = (int) data[from] - 1;
        boolean ok = id >= 0 && id < tensorCount;
        for (int i = 0; i < size && ok; i++) ok = data[from + i] == value(id, i);
        if (!ok) {
            throw new AssertionError("replay: " + graph + " input " + what + " is not a tensor a recorded graph gave "
                    + "(a row or cache layer copied to the wrong place or mixed with another)");
        }
        return id;
    }

    private static float value(int id, int i) {
        return id + 1 + (i % PATTERN) / 256f;
    }

    private Tensor tensorOf(List<Object> ids, long... shape) {
        int n = 1;
        for (long d : shape) n *= (int) d;
        float[] data = new float[n];
        int size = n / ids.size();
        for (int j = 0; j < ids.size(); j++) {
            int id = (int) Json.lng(ids.get(j));
            if (id == zero) continue;
            for (int i = 0; i < size; i++) data[j * size + i] = value(id, i);
        }
        return Tensor.float32(data, shape);
    }

    private Tensor nan(Tensor t) {
        if (nanOutputs) Arrays.fill(t.floats(), Float.NaN);
        return t;
    }

    private Tensor floats(String base64, long... shape) {
        byte[] raw = Base64.getDecoder().decode(base64);
        float[] values = new float[raw.length / 4];
        ByteBuffer.wrap(raw).order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer().get(values);
        return Tensor.float32(values, shape);
    }

    private long[] cache(int layers) {
        return new long[] {layers, 1, manifest.numKvHeads, manifest.maxSlots, manifest.headDim};
    }

    private Map<String, Tensor> outputs(String graph, String kind, List<Object> row) {
        Map<String, Tensor> out = new HashMap<>();
        int at = 1 + inputs(kind).size();
        switch (kind) {
            case "vision": {
                List<Object> visual = Json.arr(row.get(at));
                out.put("visual", tensorOf(visual, 1, visual.size(), dim));
                out.put("scores", floats((String) row.get(at + 1), 1, manifest.numImageTokens));
                break;
            }
            case "embed": {
                List<Object> embeds = Json.arr(row.get(at));
                out.put("embeds", tensorOf(embeds, 1, embeds.size(), dim));
                break;
            }
            case "step": {
                List<Object> hidden = Json.arr(row.get(at));
                int layers = Json.arr(row.get(at + 3)).size();
                out.put("hidden", tensorOf(hidden, 1, hidden.size(), dim));
                out.put("exit_hidden", tensorOf(Arrays.asList(row.get(at + 1)), 1, dim));
                out.put("confidence", Tensor.float32(new float[] {(float) Json.num(row.get(at + 2))}, 1));
                out.put("present_k", tensorOf(Json.arr(row.get(at + 3)), cache(layers)));
                out.put("present_v", tensorOf(Json.arr(row.get(at + 4)), cache(layers)));
                break;
            }
            case "head":
                out.put("logits", nan(floats((String) row.get(at), 1, manifest.vocabSize)));
                break;
            default: { // fill
                int layers = Json.arr(row.get(at)).size();
                out.put("present_k", tensorOf(Json.arr(row.get(at)), cache(layers)));
                out.put("present_v", tensorOf(Json.arr(row.get(at + 1)), cache(layers)));
            }
        }
        return out;
    }

    @Override
    public void close() {
        closed = true;
    }

    /** Short messages. */
    private static final class BundleText {
        static String cut(String s, int limit) {
            return s.length() <= limit ? s : s.substring(0, limit - 3) + "...";
        }
    }

    /**
     * The factory: runs the "onnxruntime" onnx artifact (the one the recording was made with, from its
     * verified bytes) by replaying replay.json.
     */
    public static final class Factory extends ReplayFactory implements VLMRunner.Factory {
        public ReplayVLMRunner last;
        /** The files the last runner was given the verified bytes of. */
        public final List<String> openedFiles = new ArrayList<>();

        public Factory(Map<String, Object> replay) {
            this(replay, true, false);
        }

        /** sameManifest false: an edited copy of the bundle (refusal tests); nanOutputs: every logit NaN. */
        public Factory(Map<String, Object> replay, boolean sameManifest, boolean nanOutputs) {
            super(replay, sameManifest, nanOutputs);
        }

        /** The recording was made on the onnx artifact: preferred (ORT itself prefers the ORT-format files). */
        @Override
        public String[] formats() {
            return new String[] {"onnx", "ort"};
        }

        @Override
        public VLMRunner open(VLMLoader.Loaded bundle, Manifest.Artifact artifact, List<String> graphs, int threads) {
            checkManifest(bundle.manifestBytes, "replay.json was recorded from another manifest: run python scripts/make_vlm_replay.py");
            openedFiles.clear();
            List<String> files = new ArrayList<>();
            for (String graph : graphs) files.add(artifact.stages.get(graph).file);
            if (artifact.externalData != null) files.add(artifact.externalData);
            for (String file : files) {
                requireVerified(bundle.files, file);
                openedFiles.add(file);
            }
            last = new ReplayVLMRunner(bundle.manifest, recording, nanOutputs);
            return last;
        }
    }
}
