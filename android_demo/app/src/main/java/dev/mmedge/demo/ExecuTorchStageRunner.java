package dev.mmedge.demo;

import dev.mmedge.core.BundleLoader;
import dev.mmedge.core.CaptionLoader;
import dev.mmedge.core.CaptionManifest;
import dev.mmedge.core.CaptionRunner;
import dev.mmedge.core.Manifest;
import dev.mmedge.core.StageRunner;
import dev.mmedge.core.Tensor;
import dev.mmedge.core.VLMLoader;
import dev.mmedge.core.VLMRunner;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import org.pytorch.executorch.DType;
import org.pytorch.executorch.EValue;
import org.pytorch.executorch.Module;

/**
 * Stages, captioning graphs and generative VLM graphs on ExecuTorch's Android API: one program (the
 * artifact's .pte, lowered to XNNPACK at export) with one method per stage or graph; inputs in the
 * order the manifest lists them (a VLM graph's: VLMRunner.inputNames), outputs named by the
 * artifact's per-method `outputs`. Module.load takes a
 * path only, so the program is opened again after the core hashed it (as the Python runtime does);
 * a process that can swap files in the bundle directory between the two is not detected.
 */
final class ExecuTorchStageRunner implements StageRunner, CaptionRunner, VLMRunner {
    private final Module module;
    /** Each method's input names, in the order the manifest lists them. */
    private final Map<String, List<String>> inputs;
    private final Manifest.Artifact artifact;

    private ExecuTorchStageRunner(Module module, Map<String, List<String>> inputs, Manifest.Artifact artifact) {
        this.module = module;
        this.inputs = inputs;
        this.artifact = artifact;
    }

    private static List<String> names(List<Manifest.TensorSpec> specs) {
        List<String> out = new ArrayList<>();
        for (Manifest.TensorSpec t : specs) out.add(t.name);
        return out;
    }

    /** The program with every named method loaded. */
    private static Module load(java.nio.file.Path root, Manifest.Artifact artifact, List<String> names, int threads) {
        String path = root.resolve(artifact.file).toAbsolutePath().toString();
        Module module = Module.load(path, Module.LOAD_MODE_MMAP, threads);
        for (String name : names) {
            String method = artifact.stages.get(name).method;
            int error = module.loadMethod(method);
            if (error != 0) {
                module.destroy();
                throw new IllegalStateException("ExecuTorch cannot load method " + method + " of " + artifact.file
                        + " (error 0x" + Integer.toHexString(error) + ")");
            }
        }
        return module;
    }

    static final class Factory implements StageRunner.Factory, CaptionRunner.Factory, VLMRunner.Factory {
        @Override
        public String runtime() {
            return "executorch";
        }

        @Override
        public String[] formats() {
            return new String[] {"pte"};
        }

        @Override
        public boolean opensBytes() {
            return false;
        }

        @Override
        public StageRunner open(BundleLoader.Loaded bundle, Manifest.Artifact artifact, List<String> stages, int threads) {
            Map<String, List<String>> inputs = new LinkedHashMap<>();
            for (String stage : stages) inputs.put(stage, names(bundle.manifest.stages.get(stage).inputs));
            return new ExecuTorchStageRunner(load(bundle.root, artifact, stages, threads), inputs, artifact);
        }

        /** A captioning artifact: one method per graph (encoder_k{r}, step{s}_k{r}, fill{s}) of the one .pte. */
        @Override
        public CaptionRunner open(CaptionLoader.Loaded bundle, Manifest.Artifact artifact, List<String> graphs, int threads) {
            Map<String, List<String>> inputs = new LinkedHashMap<>();
            for (String graph : graphs) {
                CaptionManifest.Graph g = bundle.manifest.graphs.get(graph);
                inputs.put(graph, names(g.inputs));
            }
            return new ExecuTorchStageRunner(load(bundle.root, artifact, graphs, threads), inputs, artifact);
        }

        /** A generative VLM artifact: one method per graph (vision, embed, step{s}, head, fill{s}) of the one .pte. */
        @Override
        public VLMRunner open(VLMLoader.Loaded bundle, Manifest.Artifact artifact, List<String> graphs, int threads) {
            Map<String, List<String>> inputs = new LinkedHashMap<>();
            for (String graph : graphs) inputs.put(graph, VLMRunner.inputNames(graph));
            return new ExecuTorchStageRunner(load(bundle.root, artifact, graphs, threads), inputs, artifact);
        }
    }

    @Override
    public String backend() {
        return "executorch";
    }

    private static org.pytorch.executorch.Tensor toEt(Tensor t) {
        switch (t.dtype) {
            case "float32":
                return org.pytorch.executorch.Tensor.fromBlob(t.floats(), t.shape());
            case "int32":
                return org.pytorch.executorch.Tensor.fromBlob(t.ints(), t.shape());
            case "int64":
                return org.pytorch.executorch.Tensor.fromBlob(t.longs(), t.shape());
            default:
                throw new IllegalArgumentException("dtype " + t.dtype);
        }
    }

    private static Tensor fromEt(String name, EValue value) {
        if (!value.isTensor()) throw new IllegalStateException("output " + name + " is not a tensor");
        org.pytorch.executorch.Tensor t = value.toTensor();
        DType dtype = t.dtype();
        if (dtype == DType.FLOAT) return Tensor.float32(t.getDataAsFloatArray(), t.shape());
        if (dtype == DType.INT32) return Tensor.int32(t.getDataAsIntArray(), t.shape());
        if (dtype == DType.INT64) return Tensor.int64(t.getDataAsLongArray(), t.shape());
        throw new IllegalStateException("output " + name + " has dtype " + dtype);
    }

    /** Runs one stage (classifier) or graph (captioning): inputs in the manifest's order, outputs by the artifact's names. */
    @Override
    public Map<String, Tensor> run(String stage, Map<String, Tensor> feeds) {
        List<String> order = inputs.get(stage);
        if (order == null) throw new IllegalArgumentException(stage + " is not open");
        Manifest.ArtifactStage where = artifact.stages.get(stage);
        EValue[] args = new EValue[order.size()];
        for (int i = 0; i < args.length; i++) {
            Tensor t = feeds.get(order.get(i));
            if (t == null) throw new IllegalArgumentException(stage + " needs input " + order.get(i));
            args[i] = EValue.from(toEt(t));
        }
        EValue[] outs = module.execute(where.method, args);
        if (outs.length != where.outputs.size()) {
            throw new IllegalStateException("method " + where.method + " gave " + outs.length + " outputs, the manifest names "
                    + where.outputs.size());
        }
        Map<String, Tensor> out = new LinkedHashMap<>();
        for (int i = 0; i < outs.length; i++) out.put(where.outputs.get(i), fromEt(where.outputs.get(i), outs[i]));
        return out;
    }

    @Override
    public void close() {
        module.destroy();
    }
}
