package dev.mmedge.demo;

import dev.mmedge.core.CaptionRunner;
import dev.mmedge.core.ConfigException;
import dev.mmedge.core.StageRunner;
import dev.mmedge.core.VLMRunner;

/**
 * The app's runner factories by the names `mmedge bench --backend` uses: each runs classifier stages,
 * captioning graphs and generative VLM graphs.
 */
final class Backends {
    private Backends() {
    }

    static StageRunner.Factory factory(String backend) {
        if ("onnxruntime".equals(backend)) return new OrtStageRunner.Factory();
        if ("executorch".equals(backend)) return new ExecuTorchStageRunner.Factory();
        throw new ConfigException("backend '" + backend + "' unknown; choose onnxruntime or executorch", "arguments");
    }

    /** The same backends' factories for captioning bundles (kind "caption"). */
    static CaptionRunner.Factory captionFactory(String backend) {
        if ("onnxruntime".equals(backend)) return new OrtStageRunner.Factory();
        if ("executorch".equals(backend)) return new ExecuTorchStageRunner.Factory();
        throw new ConfigException("backend '" + backend + "' unknown; choose onnxruntime or executorch", "arguments");
    }

    /** The same backends' factories for generative VLM bundles (kind "vlm": the demo screen and the benchmark). */
    static VLMRunner.Factory vlmFactory(String backend) {
        if ("onnxruntime".equals(backend)) return new OrtStageRunner.Factory();
        if ("executorch".equals(backend)) return new ExecuTorchStageRunner.Factory();
        throw new ConfigException("backend '" + backend + "' unknown; choose onnxruntime or executorch", "arguments");
    }
}
