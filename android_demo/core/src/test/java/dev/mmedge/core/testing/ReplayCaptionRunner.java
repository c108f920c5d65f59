package dev.mmedge.core.testing;

import dev.mmedge.core.CaptionLoader;
import dev.mmedge.core.CaptionManifest;
import dev.mmedge.core.CaptionRunner;
import dev.mmedge.core.IO;
import dev.mmedge.core.Json;
import dev.mmedge.core.Manifest;
import dev.mmedge.core.Tensor;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Base64;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * A CaptionRunner that replays the graph calls the Python CaptionEngine made on onnxruntime
 * (tests/vectors/caption/replay.json, scripts/make_caption_replay.py), so that the caption engine's
 * decoding is tested on the JVM without ONNX Runtime.
 *
 * <p>It answers a call only when the graph and every input are those of a recorded call, and
 * throws an {@link AssertionError} (which no engine code catches) on any other: pixel_values by the
 * SHA-256 of their float32 bytes (so the preprocessing must be bit-identical), token and position by
 * value, and every cache, cross-attention row and hidden by identity, layer by layer, in order. The
 * tensors it gives stand for the recorded ones: each layer slice is filled with a pattern that
 * encodes the recorded tensor's index ({@code index + 1 + (i % 251) / 256} at element i), the zero
 * cache is zeros, and an input slice must be exactly such a pattern, so a slice copied to the wrong
 * place, mixed with another, or from another hypothesis' cache does not match. Logits and
 * confidence are the recorded float32 values. Every call made is counted per recorded call, so a
 * test can check that the engine made each of them.
 *
 * <p>With {@code nanOutputs} every float output is NaN (a backend running weights full of NaN).
 */
public final class ReplayCaptionRunner implements CaptionRunner {
    private static final int PATTERN = 251;

    private final CaptionManifest manifest;
    private final List<String> tensors = new ArrayList<>();
    private final int zeroCache;
    private final Map<String, Integer> byInputs = new HashMap<>();
    private final List<List<Object>> rows = new ArrayList<>();
    private final boolean nanOutputs;
    /** How often each recorded call was made (index: the call's line in replay.json). */
    public final int[] used;
    public int calls;
    public boolean closed;

    ReplayCaptionRunner(CaptionManifest manifest, Map<String, Object> replay, boolean nanOutputs) {
        this.manifest = manifest;
        this.nanOutputs = nanOutputs;
        for (Object t : Json.arr(replay.get("tensors"))) tensors.add((String) t);
        zeroCache = (int) Json.lng(replay.get("zero_cache"));
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

    private static String kind(String graph) {
        return graph.startsWith("encoder_") ? "encoder" : graph.startsWith("step") ? "step" : "fill";
    }

    /** The key of a recorded row: the graph and its inputs (the row's leading fields). */
    private static String recordedKey(List<Object> row) {
        String graph = (String) row.get(0);
        int inputs = kind(graph).equals("encoder") ? 1 : kind(graph).equals("step") ? 6 : 4;
        StringBuilder key = new StringBuilder(graph);
        for (int i = 1; i <= inputs; i++) key.append('|').append(Json.write(row.get(i)));
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
        CaptionManifest.Graph spec = manifest.graphs.get(graph);
        if (spec == null) throw new AssertionError("replay: no graph " + graph + " in the manifest");
        List<String> names = new ArrayList<>(inputs.keySet());
        List<String> want = new ArrayList<>();
        for (Manifest.TensorSpec t : spec.inputs) want.add(t.name);
        if (!names.equals(want)) throw new AssertionError("replay: " + graph + " was fed " + names + ", its inputs are " + want);
        for (Manifest.TensorSpec t : spec.inputs) {
            Tensor got = inputs.get(t.name);
            if (!got.hasShape(t.shape) || !got.dtype.equals(t.dtype)) {
                throw new AssertionError("replay: " + graph + " input " + t.name + " is " + got + ", the manifest says "
                        + t.dtype + " " + Arrays.toString(t.shape));
            }
        }
        StringBuilder key = new StringBuilder(graph);
        for (String name : names) key.append('|').append(Json.write(identify(graph, name, inputs.get(name))));
        Integer index = byInputs.get(key.toString());
        if (index == null) {
            throw new AssertionError("replay: unexpected call " + key + ": the Python runtime made no such call (a wrong "
                    + "exit, token, position, cache or fill)");
        }
        used[index]++;
        return outputs(graph, spec, rows.get(index));
    }

    /** What an input stands for: its value (token, position), its SHA-256 (pixel_values) or its tensor indices. */
    private Object identify(String graph, String name, Tensor t) {
        switch (name) {
            case "pixel_values":
                return IO.sha256Hex(IO.float32LE(t.floats()));
            case "token":
            case "position":
                return t.longs()[0];
            case "hidden_in":
                return (long) slice(graph, name, t.floats(), 0, t.size());
            default: { // past_k, past_v, cross_k, cross_v: one index per layer
                int layers = (int) t.shape()[0];
                int size = t.size() / layers;
                List<Object> ids = new ArrayList<>();
                for (int j = 0; j < layers; j++) ids.add((long) slice(graph, name + "[" + j + "]", t.floats(), j * size, size));
                return ids;
            }
        }
    }

    /** The recorded tensor a slice stands for (AssertionError when it is not one this runner gave, or zeros). */
    private int slice(String graph, String what, float[] data, int from, int size) {
        boolean zero = true;
        for (int i = 0; i < size && zero; i++) zero = data[from + i] == 0f;
        if (zero) return zeroCache;
        int id = (int) data[from] - 1;
        boolean ok = id >= 0 && id < tensors.size();
        for (int i = 0; i < size && ok; i++) ok = data[from + i] == value(id, i);
        if (!ok) {
            throw new AssertionError("replay: " + graph + " input " + what + " is not a tensor a recorded graph gave "
                    + "(a slice copied to the wrong place or mixed with another)");
        }
        return id;
    }

    private static float value(int id, int i) {
        return id + 1 + (i % PATTERN) / 256f;
    }

    private void fill(float[] out, int from, int size, int id) {
        if (id == zeroCache) return;
        for (int i = 0; i < size; i++) out[from + i] = value(id, i);
    }

    private Tensor tensorOf(Manifest.TensorSpec spec, List<Object> ids) {
        int n = 1;
        for (long d : spec.shape) n *= (int) d;
        float[] data = new float[n];
        int size = n / ids.size();
        for (int j = 0; j < ids.size(); j++) fill(data, j * size, size, (int) Json.lng(ids.get(j)));
        return nan(Tensor.float32(data, spec.shape));
    }

    private Tensor nan(Tensor t) {
        if (nanOutputs) Arrays.fill(t.floats(), Float.NaN);
        return t;
    }

    private Map<String, Tensor> outputs(String graph, CaptionManifest.Graph spec, List<Object> row) {
        Map<String, Tensor> out = new HashMap<>();
        String kind = kind(graph);
        if (kind.equals("encoder")) {
            out.put("cross_k", tensorOf(spec.output("cross_k"), Json.arr(row.get(2))));
            out.put("cross_v", tensorOf(spec.output("cross_v"), Json.arr(row.get(3))));
            return out;
        }
        int at = kind.equals("step") ? 7 : 5;
        if (kind.equals("step")) {
            out.put("hidden", tensorOf(spec.output("hidden"), Json.arr(Arrays.<Object>asList(row.get(7)))));
            byte[] raw = Base64.getDecoder().decode((String) row.get(8));
            float[] logits = new float[raw.length / 4];
            ByteBuffer.wrap(raw).order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer().get(logits);
            out.put("logits", nan(Tensor.float32(logits, spec.output("logits").shape)));
            out.put("confidence", nan(Tensor.float32(new float[] {(float) Json.num(row.get(9))}, 1)));
            at = 10;
        }
        out.put("present_k", tensorOf(spec.output("present_k"), Json.arr(row.get(at))));
        out.put("present_v", tensorOf(spec.output("present_v"), Json.arr(row.get(at + 1))));
        return out;
    }

    @Override
    public void close() {
        closed = true;
    }

    /** The factory: runs the "onnxruntime" onnx artifact (from its verified bytes) by replaying replay.json. */
    public static final class Factory extends ReplayFactory implements CaptionRunner.Factory {
        public ReplayCaptionRunner last;
        /** The files the last runner was given the verified bytes of. */
        public final List<String> openedFiles = new ArrayList<>();

        public Factory(Map<String, Object> replay) {
            this(replay, true, false);
        }

        /** sameManifest false: an edited copy of the bundle (refusal tests); nanOutputs: every float output NaN. */
        public Factory(Map<String, Object> replay, boolean sameManifest, boolean nanOutputs) {
            super(replay, sameManifest, nanOutputs);
        }

        @Override
        public CaptionRunner open(CaptionLoader.Loaded bundle, Manifest.Artifact artifact, List<String> graphs, int threads) {
            checkManifest(bundle.manifestBytes, "replay.json was recorded from another manifest: run python scripts/make_caption_replay.py");
            openedFiles.clear();
            List<String> files = new ArrayList<>();
            for (String graph : graphs) files.add(artifact.stages.get(graph).file);
            if (artifact.externalData != null) files.add(artifact.externalData);
            for (String file : files) {
                requireVerified(bundle.files, file);
                openedFiles.add(file);
            }
            last = new ReplayCaptionRunner(bundle.manifest, recording, nanOutputs);
            return last;
        }
    }
}
