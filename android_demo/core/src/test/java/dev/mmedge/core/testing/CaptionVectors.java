package dev.mmedge.core.testing;

import dev.mmedge.core.BenchQueries;
import dev.mmedge.core.IO;
import dev.mmedge.core.Json;
import dev.mmedge.core.Policy;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Base64;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;

/**
 * The captioning golden vectors (tests/vectors/caption/, scripts/make_caption_vectors.py) and the
 * graph-call recordings beside them (replay.json, scripts/make_caption_replay.py), as JVM tests
 * read them; the committed bundle is assembled with its weights file rebuilt from the shipped
 * model's safetensors, byte for byte (weights.json), as the Python and JavaScript tests do.
 */
public final class CaptionVectors {
    private CaptionVectors() {
    }

    public static Path dir() {
        return Golden.repo().resolve("tests/vectors/caption");
    }

    public static Map<String, Object> vectors() {
        return Golden.json(dir().resolve("vectors.json"));
    }

    public static Map<String, Object> replay() {
        return Golden.json(dir().resolve("replay.json"));
    }

    /** An image of the vectors as Bitmap.getPixels gives it: the PNG ("file") or the generator's image. */
    public static Golden.Image image(Map<String, Object> entry) {
        if (entry.containsKey("file")) return Golden.png(dir().resolve((String) entry.get("file")));
        return new Golden.Image(Golden.generatedArgb(entry), (int) Json.lng(entry.get("width")), (int) Json.lng(entry.get("height")));
    }

    /** The vectors' images as the benchmark's test images: each named, with its reference caption (null for the generated ones). */
    public static List<BenchQueries.Query> benchImages() {
        List<BenchQueries.Query> out = new ArrayList<>();
        for (Object o : Json.arr(vectors().get("images"))) {
            Map<String, Object> entry = Json.obj(o);
            Golden.Image im = image(entry);
            out.add(new BenchQueries.Query((String) entry.get("name"), im.argb, im.width, im.height, "",
                    (String) entry.get("reference")));
        }
        return out;
    }

    /** A run's policy as the vectors give it ({"kind", "threshold", "patience", "budget_ms"}). */
    public static Policy policy(Map<String, Object> run) {
        return Policy.fromJson(Json.obj(run.get("policy")));
    }

    /** The committed bundle copied to dest/caption-default.mmedge with its weights file rebuilt (weights.json). */
    public static Path assembleBundle(Path dest) {
        Map<String, Object> doc = vectors();
        Path src = Golden.repo().resolve((String) doc.get("bundle"));
        Path out = dest.resolve(src.getFileName().toString());
        Map<String, Object> recipe = Golden.json(Golden.repo().resolve((String) doc.get("weights")));
        try {
            copyTree(src, out);
            Path weights = out.resolve((String) recipe.get("file"));
            Files.createDirectories(weights.getParent());
            Files.write(weights, rebuildWeights(recipe));
        } catch (IOException exc) {
            throw new UncheckedIOException(exc);
        }
        return out;
    }

    private static void copyTree(Path src, Path dst) throws IOException {
        try (Stream<Path> walk = Files.walk(src)) {
            for (Path p : (Iterable<Path>) walk::iterator) {
                Path target = dst.resolve(src.relativize(p).toString());
                if (Files.isDirectory(p)) Files.createDirectories(target);
                else Files.copy(p, target);
            }
        }
    }

    /**
     * weights.json's rule: a zero-filled buffer of `bytes`; each segment the safetensors tensor's
     * float32 little-endian bytes (a 2-D tensor transposed when `transpose`) or its `base64` bytes.
     */
    static byte[] rebuildWeights(Map<String, Object> recipe) throws IOException {
        byte[] st = Files.readAllBytes(Golden.repo().resolve((String) recipe.get("safetensors")));
        if (!IO.sha256Hex(st).equals(recipe.get("safetensors_sha256"))) {
            throw new IllegalStateException(recipe.get("safetensors") + " changed: run python scripts/make_caption_vectors.py");
        }
        long headerBytes = ByteBuffer.wrap(st, 0, 8).order(ByteOrder.LITTLE_ENDIAN).getLong();
        Map<String, Object> header;
        try {
            header = Json.obj(Json.parse(Arrays.copyOfRange(st, 8, 8 + (int) headerBytes), 16));
        } catch (Json.ParseException exc) {
            throw new IllegalStateException("the safetensors header is not JSON: " + exc.getMessage(), exc);
        }
        int base = 8 + (int) headerBytes;
        byte[] out = new byte[(int) Json.lng(recipe.get("bytes"))];
        for (Object o : Json.arr(recipe.get("segments"))) {
            Map<String, Object> s = Json.obj(o);
            byte[] chunk;
            if (s.containsKey("base64")) {
                chunk = Base64.getDecoder().decode((String) s.get("base64"));
            } else {
                Map<String, Object> t = Json.obj(header.get(s.get("tensor")));
                if (!"F32".equals(t.get("dtype"))) throw new IllegalStateException(s.get("tensor") + " is not F32");
                List<Object> offsets = Json.arr(t.get("data_offsets"));
                chunk = Arrays.copyOfRange(st, base + (int) Json.lng(offsets.get(0)), base + (int) Json.lng(offsets.get(1)));
                if (Boolean.TRUE.equals(s.get("transpose"))) {
                    List<Object> shape = Json.arr(t.get("shape"));
                    chunk = transpose(chunk, (int) Json.lng(shape.get(0)), (int) Json.lng(shape.get(1)));
                }
            }
            if (chunk.length != Json.lng(s.get("length"))) throw new IllegalStateException("segment at " + s.get("offset") + " has the wrong length");
            System.arraycopy(chunk, 0, out, (int) Json.lng(s.get("offset")), chunk.length);
        }
        if (!IO.sha256Hex(out).equals(recipe.get("sha256"))) {
            throw new IllegalStateException("the rebuilt weights differ from the exported ones: run python scripts/make_caption_vectors.py --export");
        }
        return out;
    }

    /** A row-major (r, c) float32 matrix's bytes as its (c, r) transpose. */
    private static byte[] transpose(byte[] data, int r, int c) {
        ByteBuffer in = ByteBuffer.wrap(data).order(ByteOrder.LITTLE_ENDIAN);
        ByteBuffer out = ByteBuffer.allocate(data.length).order(ByteOrder.LITTLE_ENDIAN);
        for (int i = 0; i < r; i++) {
            for (int j = 0; j < c; j++) out.putFloat((j * r + i) * 4, in.getFloat((i * c + j) * 4));
        }
        return out.array();
    }
}
