package dev.mmedge.demo;

import ai.onnxruntime.OnnxJavaType;
import ai.onnxruntime.OnnxTensor;
import ai.onnxruntime.OnnxTensorLike;
import ai.onnxruntime.OnnxValue;
import ai.onnxruntime.OrtEnvironment;
import ai.onnxruntime.OrtException;
import ai.onnxruntime.OrtSession;
import ai.onnxruntime.TensorInfo;

import dev.mmedge.core.BundleException;
import dev.mmedge.core.BundleLoader;
import dev.mmedge.core.CaptionLoader;
import dev.mmedge.core.CaptionRunner;
import dev.mmedge.core.Manifest;
import dev.mmedge.core.OnnxExternalData;
import dev.mmedge.core.RunnerFactory;
import dev.mmedge.core.StageRunner;
import dev.mmedge.core.Tensor;
import dev.mmedge.core.VLMLoader;
import dev.mmedge.core.VLMRunner;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.FloatBuffer;
import java.nio.IntBuffer;
import java.nio.LongBuffer;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Stages, captioning graphs and generative VLM graphs on ONNX Runtime's Android API: one OrtSession
 * per stage or graph file (ORT format preferred, plain ONNX accepted), created from the bytes the
 * core verified (never a second read of the file), with the XNNPACK execution provider. A captioning
 * or VLM bundle's ONNX graphs read their weights from one shared external_data file: its verified bytes are handed
 * to each session as external initializers (SessionOptions.addExternalInitializers, one tensor per
 * initializer the graph stores externally, found by the core's OnnxExternalData), so no graph reads
 * a file either.
 */
final class OrtStageRunner implements StageRunner, CaptionRunner, VLMRunner {
    private final OrtEnvironment env;
    private final Map<String, OrtSession> sessions;
    /** Options of sessions that were given external initializers, closed with the sessions. */
    private final List<OrtSession.SessionOptions> options;

    private OrtStageRunner(OrtEnvironment env, Map<String, OrtSession> sessions, List<OrtSession.SessionOptions> options) {
        this.env = env;
        this.sessions = sessions;
        this.options = options;
    }

    /** The session options of every graph: XNNPACK with `threads`, ORT's own pools at one thread. */
    private static OrtSession.SessionOptions sessionOptions(int threads) throws OrtException {
        OrtSession.SessionOptions options = new OrtSession.SessionOptions();
        // XNNPACK runs the compute with its own pool; ORT's own intra-op pool stays at one thread
        options.setIntraOpNumThreads(1);
        options.setInterOpNumThreads(1);
        options.setExecutionMode(OrtSession.SessionOptions.ExecutionMode.SEQUENTIAL);
        options.setOptimizationLevel(OrtSession.SessionOptions.OptLevel.ALL_OPT);
        Map<String, String> xnnpack = new HashMap<>();
        xnnpack.put("intra_op_num_threads", String.valueOf(threads));
        options.addXnnpack(xnnpack);
        return options;
    }

    /** The Java type ORT reads an ONNX TensorProto.DataType as. */
    private static OnnxJavaType javaType(int onnxType, String name) {
        switch (onnxType) {
            case 1: return OnnxJavaType.FLOAT;
            case 2: return OnnxJavaType.UINT8;
            case 3: return OnnxJavaType.INT8;
            case 5: return OnnxJavaType.INT16;
            case 6: return OnnxJavaType.INT32;
            case 7: return OnnxJavaType.INT64;
            case 9: return OnnxJavaType.BOOL;
            case 11: return OnnxJavaType.DOUBLE;
            default:
                throw new BundleException(BundleException.UNSUPPORTED, "external initializer " + name + " has ONNX data type "
                        + onnxType + ", which this runner cannot pass to ONNX Runtime");
        }
    }

    /**
     * The external initializers of one graph as tensors over the verified weights bytes (little
     * endian, as ONNX stores them and as arm64 and x86_64 are); `made` collects them for closing.
     */
    private static Map<String, OnnxTensorLike> externalInitializers(OrtEnvironment env, String file, byte[] graph, byte[] weights,
                                                                    String location, List<OnnxTensor> made) throws OrtException {
        List<OnnxExternalData.ExternalTensor> tensors;
        try {
            tensors = OnnxExternalData.externalInitializers(graph);
        } catch (OnnxExternalData.FormatException exc) {
            throw new BundleException(BundleException.SELF_CHECK, file + " is not a well-formed ONNX file (" + exc.getMessage()
                    + "); export the bundle again", exc);
        }
        Map<String, OnnxTensorLike> out = new LinkedHashMap<>();
        for (OnnxExternalData.ExternalTensor t : tensors) {
            long length = t.length < 0 ? weights.length - t.offset : t.length;
            if (!location.equals(t.location) || t.offset + length > weights.length) {
                throw new BundleException(BundleException.SELF_CHECK, file + ": initializer " + t.name + " lies outside "
                        + location + "; export the bundle again");
            }
            ByteBuffer data = ByteBuffer.allocateDirect((int) length).order(ByteOrder.nativeOrder());
            data.put(weights, (int) t.offset, (int) length).flip();
            OnnxTensor tensor = OnnxTensor.createTensor(env, data, t.dims, javaType(t.dataType, t.name));
            made.add(tensor);
            out.put(t.name, tensor);
        }
        return out;
    }

    /** ONNX Runtime from verified bytes (runtime, formats and opensBytes: {@link RunnerFactory.OnnxRuntime}). */
    static final class Factory implements StageRunner.Factory, CaptionRunner.Factory, VLMRunner.Factory, RunnerFactory.OnnxRuntime {
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
            try (OrtSession.SessionOptions options = sessionOptions(threads)) {
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
            return new OrtStageRunner(env, sessions, new ArrayList<>());
        }

        /**
         * A captioning artifact's graphs, from their verified bytes; an ONNX artifact's shared
         * external_data file passed to each session from its verified bytes too.
         */
        @Override
        public CaptionRunner open(CaptionLoader.Loaded bundle, Manifest.Artifact artifact, List<String> graphs, int threads)
                throws OrtException {
            return openGraphs(bundle.files, artifact, graphs, threads);
        }

        /** A generative VLM artifact's graphs, the same way (one session per graph, shared weights from verified bytes). */
        @Override
        public VLMRunner open(VLMLoader.Loaded bundle, Manifest.Artifact artifact, List<String> graphs, int threads)
                throws OrtException {
            return openGraphs(bundle.files, artifact, graphs, threads);
        }

        private static OrtStageRunner openGraphs(Map<String, byte[]> files, Manifest.Artifact artifact, List<String> graphs,
                                                 int threads) throws OrtException {
            OrtEnvironment env = OrtEnvironment.getEnvironment();
            byte[] weights = null;
            String location = null;
            if (artifact.externalData != null && "onnx".equals(artifact.format)) {
                weights = files.get(artifact.externalData);
                if (weights == null) throw new BundleException(artifact.externalData + " was not verified");
                location = artifact.externalData.substring(artifact.externalData.lastIndexOf('/') + 1);
            }
            Map<String, OrtSession> sessions = new HashMap<>();
            List<OrtSession.SessionOptions> kept = new ArrayList<>();
            try {
                for (String graph : graphs) {
                    String file = artifact.stages.get(graph).file;
                    byte[] bytes = files.get(file);
                    if (bytes == null) throw new BundleException("graph " + graph + ": " + file + " was not verified");
                    OrtSession.SessionOptions options = sessionOptions(threads);
                    kept.add(options);
                    List<OnnxTensor> made = new ArrayList<>();
                    try {
                        if (weights != null) options.addExternalInitializers(externalInitializers(env, file, bytes, weights, location, made));
                        sessions.put(graph, env.createSession(bytes, options));
                    } finally {
                        for (OnnxTensor t : made) t.close(); // copied into the session when it was created
                    }
                }
            } catch (OrtException | RuntimeException exc) {
                for (OrtSession s : sessions.values()) closeQuietly(s);
                for (OrtSession.SessionOptions o : kept) o.close();
                throw exc;
            }
            return new OrtStageRunner(env, sessions, kept);
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

    /** Runs one stage (classifier) or graph (captioning) with its inputs by name. */
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
        for (OrtSession.SessionOptions o : options) o.close();
        options.clear();
    }
}
