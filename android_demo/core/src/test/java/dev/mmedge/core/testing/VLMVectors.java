package dev.mmedge.core.testing;

import dev.mmedge.core.Json;

import java.nio.file.Path;
import java.util.Map;

/** The generative VLM vectors (tests/vectors/vlm, scripts/make_vlm_vectors.py and make_vlm_replay.py) and their bundle. */
public final class VLMVectors {
    private VLMVectors() {
    }

    public static Path dir() {
        return Golden.repo().resolve("tests/vectors/vlm");
    }

    /** The committed bundle tests/vectors/vlm/tiny-smolvlm-onnx.mmedge. */
    public static Path bundle() {
        return Golden.repo().resolve((String) vectors().get("bundle"));
    }

    public static Map<String, Object> vectors() {
        return Golden.json(dir().resolve("vectors.json"));
    }

    public static Map<String, Object> replay() {
        return Golden.json(dir().resolve("replay.json"));
    }

    /** A generated image of vectors.json "images" by name, as Bitmap.getPixels gives it. */
    public static Golden.Image image(Map<String, Object> vectors, String name) {
        for (Object o : Json.arr(vectors.get("images"))) {
            Map<String, Object> entry = Json.obj(o);
            if (name.equals(entry.get("name"))) {
                return new Golden.Image(Golden.generatedArgb(entry), (int) Json.lng(entry.get("width")),
                        (int) Json.lng(entry.get("height")));
            }
        }
        throw new IllegalArgumentException("vectors.json has no image " + name);
    }
}
