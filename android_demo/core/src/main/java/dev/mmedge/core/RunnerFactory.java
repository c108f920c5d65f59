package dev.mmedge.core;

/**
 * What an engine asks of a backend before it opens one, for both kinds of bundle
 * ({@link StageRunner.Factory}: a classifier bundle's stages; {@link CaptionRunner.Factory}: a
 * captioning bundle's graphs): which artifact it runs, and whether it opens files from their
 * verified bytes.
 */
public interface RunnerFactory {
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
     * ONNX Runtime: ORT-format files preferred, plain ONNX accepted, each opened from its verified
     * bytes (the app's OrtStageRunner; the JVM tests' replay runners stand for it).
     */
    interface OnnxRuntime extends RunnerFactory {
        @Override
        default String runtime() {
            return "onnxruntime";
        }

        @Override
        default String[] formats() {
            return new String[] {"ort", "onnx"};
        }

        @Override
        default boolean opensBytes() {
            return true;
        }
    }
}
