package dev.mmedge.core.testing;

import dev.mmedge.core.IO;
import dev.mmedge.core.RunnerFactory;

import java.util.Map;

/**
 * What the replay runners' factories share: they stand for ONNX Runtime opening the onnx artifact
 * from its verified bytes, replay a recording made from one manifest, and may give NaN for every
 * float output (a backend running weights full of NaN).
 */
abstract class ReplayFactory implements RunnerFactory.OnnxRuntime {
    /** The recorded outputs (tests/vectors/golden/queries.json and the like, or caption/replay.json). */
    final Map<String, Object> recording;
    /** False: replay on an edited copy of the bundle (refusal and tamper tests). */
    final boolean sameManifest;
    /** Every float output NaN. */
    final boolean nanOutputs;

    ReplayFactory(Map<String, Object> recording, boolean sameManifest, boolean nanOutputs) {
        this.recording = recording;
        this.sameManifest = sameManifest;
        this.nanOutputs = nanOutputs;
    }

    /** With sameManifest, the manifest must be the one the recording was made from (IllegalStateException(`otherwise`)). */
    void checkManifest(byte[] manifestBytes, String otherwise) {
        if (sameManifest && !IO.sha256Hex(manifestBytes).equals(recording.get("manifest_sha256"))) {
            throw new IllegalStateException(otherwise);
        }
    }

    /** A file the runner opens must come with its verified bytes (the loader kept them: opensBytes). */
    static void requireVerified(Map<String, byte[]> files, String file) {
        if (files.get(file) == null) throw new IllegalStateException("no verified bytes of " + file);
    }
}
