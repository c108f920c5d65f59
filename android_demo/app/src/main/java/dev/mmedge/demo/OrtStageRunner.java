package dev.mmedge.demo;

import ai.onnxruntime.OnnxJavaType;
import ai.onnxruntime.OnnxTensor;
import ai.onnxruntime.OnnxValue;
import ai.onnxruntime.OrtEnvironment;
import ai.onnxruntime.OrtException;
import ai.onnxruntime.OrtSession;
import ai.onnxruntime.TensorInfo;

import dev.mmedge.core.BundleException;
import dev.mmedge.core.BundleLoader;
import dev.mmedge.core.Manifest;
import dev.mmedge.core.StageRunner;
import dev.mmedge.core.Tensor;

import java.nio.FloatBuffer;
import java.nio.IntBuffer;
import java.nio.LongBuffer;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Stages on ONNX Runtime's Android API: one OrtSession per stage file (ORT format preferred, plain
 * ONNX accepted), created from the bytes the core verified (never a second read of the file),
 * with the XNNPACK execution provider.
 */
final class OrtStageRunner implements StageRunner {
    private final OrtEnvironment env;
    private final Map<String, OrtSession> sessions;

    private OrtStageRunner(OrtEnvironment env, Map<String, OrtSession> sessions) {
        this.env = env;
        this.sessions = sessions;
    }

    static final class Factory implements StageRunner.Factory {
        @Override
        public String runtime() {
            return "onnxruntime";
        }

        @Override
        public String[] formats() {
            return new String[] {"ort", "onnx"};
        }

        @Override
        public boolean opensBytes() {
            return true;
        }

        @Override
        public StageRunner open(BundleLoader.Loaded bundle, Manifest.Artifact artifact, List<String> stages, int threads)
                throws OrtException {
            if (artifact.externalData != null) {
                // the stage graphs read a shared weights file by name, and this runner opens verified bytes
                throw new BundleException(BundleException.UNSUPPORTED, "artifact " + artifact.kind() + " keeps its weights in "
                        + artifact.externalData + ", which this runner cannot pass to ONNX Runtime; use the ORT-format artifact "
                        + "(mmedge bundle --runtime onnxruntime --format ort): each .ort file holds its own weights");
            }
            OrtEnvironment env = OrtEnvironment.getEnvironment();
            Map<String, OrtSession> sessions = new HashMap<>();
            try (OrtSession.SessionOptions options = new OrtSession.SessionOptions()) {
                // XNNPACK runs the compute with its own pool; ORT's own intra-op pool stays at one thread
                options.setIntraOpNumThreads(1);
                options.setInterOpNumThreads(1);
                options.setExecutionMode(OrtSession.SessionOptions.ExecutionMode.SEQUENTIAL);
                options.setOptimizationLevel(OrtSession.SessionOptions.OptLevel.ALL_OPT);
                Map<String, String> xnnpack = new HashMap<>();
                xnnpack.put("intra_op_num_threads", String.valueOf(threads));
                options.addXnnpack(xnnpack);
                for (String stage : stages) {
                    String file = artifact.stages.get(stage).file;
                    byte[] bytes = bundle.files.get(file);
                    if (bytes == null) throw new BundleException("stage " + stage + ": " + file + " was not verified");
                    sessions.put(stage, env.createSession(bytes, options));
                }
            } catch (OrtException | RuntimeException exc) {
                for (OrtSession s : sessions.values()) closeQuietly(s);
                throw exc;
            }
            return new OrtStageRunner(env, sessions);
        }
    }

    @Override
    public String backend() {
        return "onnxruntime";
    }

    private OnnxTensor toOrt(Tensor t) throws OrtException {
        switch (t.dtype) {
            case "float32":
                return OnnxTensor.createTensor(env, FloatBuffer.wrap(t.floats()), t.shape());
            case "int32":
                return OnnxTensor.createTensor(env, IntBuffer.wrap(t.ints()), t.shape());
            case "int64":
                return OnnxTensor.createTensor(env, LongBuffer.wrap(t.longs()), t.shape());
            default:
                throw new IllegalArgumentException("dtype " + t.dtype);
        }
    }

    private static Tensor fromOrt(String name, OnnxValue value) throws OrtException {
        if (!(value instanceof OnnxTensor)) throw new IllegalStateException("output " + name + " is not a tensor");
        OnnxTensor t = (OnnxTensor) value;
        TensorInfo info = t.getInfo();
        long[] shape = info.getShape();
        if (info.type == OnnxJavaType.FLOAT) {
            FloatBuffer b = t.getFloatBuffer();
            float[] a = new float[b.remaining()];
            b.get(a);
            return Tensor.float32(a, shape);
        }
        if (info.type == OnnxJavaType.INT32) {
            IntBuffer b = t.getIntBuffer();
            int[] a = new int[b.remaining()];
            b.get(a);
            return Tensor.int32(a, shape);
        }
        if (info.type == OnnxJavaType.INT64) {
            LongBuffer b = t.getLongBuffer();
            long[] a = new long[b.remaining()];
            b.get(a);
            return Tensor.int64(a, shape);
        }
        throw new IllegalStateException("output " + name + " has type " + info.type);
    }

    @Override
    public Map<String, Tensor> run(String stage, Map<String, Tensor> inputs) throws OrtException {
        OrtSession session = sessions.get(stage);
        if (session == null) throw new IllegalArgumentException("stage " + stage + " is not open");
        Map<String, OnnxTensor> feeds = new LinkedHashMap<>();
        List<OnnxTensor> made = new ArrayList<>();
        try {
            for (Map.Entry<String, Tensor> e : inputs.entrySet()) {
                OnnxTensor t = toOrt(e.getValue());
                made.add(t);
                feeds.put(e.getKey(), t);
            }
            Map<String, Tensor> out = new LinkedHashMap<>();
            try (OrtSession.Result result = session.run(feeds)) {
                for (Map.Entry<String, OnnxValue> e : result) out.put(e.getKey(), fromOrt(e.getKey(), e.getValue()));
            }
            return out;
        } finally {
            for (OnnxTensor t : made) t.close();
        }
    }

    private static void closeQuietly(OrtSession s) {
        try {
            s.close();
        } catch (OrtException ignored) {
            // closing a session that failed to be used: nothing more to do
        }
    }

    @Override
    public void close() {
        for (OrtSession s : sessions.values()) closeQuietly(s);
        sessions.clear();
    }
}
