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

    /** Opens the runner for an artifact of a checked bundle. */
    interface Factory {
        /** The manifest runtime this factory runs ("onnxruntime", "executorch"). */
        String runtime();

        /** Artifact formats it reads, most preferred first (e.g. "ort", "onnx"; "pte"). */
        String[] formats();

        /**
         * True when it opens files from their verified bytes (the loader then keeps them); false
         * when the backend can only open a path (ExecuTorch's Module.load), which opens the
         * file again after it was hashed.
         */
        boolean opensBytes();

        /**
         * Opens the artifact's stages. `bundle.files` holds the verified bytes of the artifact's
         * files when opensBytes(); files are otherwise at bundle.root.resolve(path).
         */
        StageRunner open(BundleLoader.Loaded bundle, Manifest.Artifact artifact, java.util.List<String> stages, int threads)
                throws Exception;
    }
}
