package dev.mmedge.demo;

import dev.mmedge.core.ConfigException;
import dev.mmedge.core.StageRunner;

/** The app's two StageRunner factories by the names `mmedge bench --backend` uses. */
final class Backends {
    private Backends() {
    }

    static StageRunner.Factory factory(String backend) {
        if ("onnxruntime".equals(backend)) return new OrtStageRunner.Factory();
        if ("executorch".equals(backend)) return new ExecuTorchStageRunner.Factory();
        throw new ConfigException("backend '" + backend + "' unknown; choose onnxruntime or executorch", "arguments");
    }
}
