package dev.mmedge.core;

import java.io.Closeable;
import java.util.Map;

/**
 * Runs the stages of one artifact: stage 0 takes pixel_values, input_ids, text_mask; stage i > 0
 * takes hidden_in and attention_mask; each returns at least the outputs the manifest declares, by
 * name. The Android app has one on ONNX Runtime (one session per stage file) and one on ExecuTorch
 * (one program, one method per stage); the JVM tests replay recorded outputs.
 */
public interface StageRunner extends Closeable {
    /** "onnxruntime", "executorch", ... as mmedge reports backends. */
    String backend();

    /** Runs one stage of the artifact. */
    Map<String, Tensor> run(String stage, Map<String, Tensor> inputs) throws Exception;

    @Override
    void close();

    /** Opens the runner for an artifact of a checked bundle (which artifact, and how: {@link RunnerFactory}). */
    interface Factory extends RunnerFactory {
        /**
         * Opens the artifact's stages. `bundle.files` holds the verified bytes of the artifact's
         * files when opensBytes(); files are otherwise at bundle.root.resolve(path).
         */
        StageRunner open(BundleLoader.Loaded bundle, Manifest.Artifact artifact, java.util.List<String> stages, int threads)
                throws Exception;
    }
}
