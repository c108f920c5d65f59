package dev.mmedge.core.testing;

import dev.mmedge.core.BenchQueries;
import dev.mmedge.core.IO;
import dev.mmedge.core.ImageFiles;
import dev.mmedge.core.Json;
import dev.mmedge.core.TextException;
import dev.mmedge.core.WordTokenizer;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/** The repository's shared vectors (tests/vectors) and how a JVM test reads them. */
public final class Golden {
    private Golden() {
    }

    /** The repository root: -Dmmedge.repo, else found upwards from the working directory. */
    public static Path repo() {
        String prop = System.getProperty("mmedge.repo");
        if (prop != null) return Paths.get(prop).toAbsolutePath();
        Path p = Paths.get("").toAbsolutePath();
        while (p != null && !Files.isDirectory(p.resolve("tests/vectors/golden"))) p = p.getParent();
        if (p == null) throw new IllegalStateException("cannot find the repository (tests/vectors/golden); pass -Dmmedge.repo=");
        return p;
    }

    public static Path golden() {
        return repo().resolve("tests/vectors/golden");
    }

    public static Map<String, Object> json(Path path) {
        try {
            return Json.obj(Json.parse(Files.readAllBytes(path), 64));
        } catch (IOException | Json.ParseException exc) {
            throw new IllegalStateException("cannot read " + path + ": " + exc.getMessage(), exc);
        }
    }

    public static int[] ints(Object list) {
        List<Object> l = Json.arr(list);
        int[] out = new int[l.size()];
        for (int i = 0; i < out.length; i++) out[i] = (int) Json.lng(l.get(i));
        return out;
    }

    public static List<String> strings(Object list) {
        List<String> out = new ArrayList<>();
        for (Object t : Json.arr(list)) out.add((String) t);
        return out;
    }

    /**
     * Every case of a golden tokenizer file (format mmedge-golden-tokenizer-1) through `tok`: tokens,
     * ids, masks and the truncation flag equal, TextException where the case says TextError.
     * Returns {encodings, errors}.
     */
    public static int[] checkTokenizerCases(WordTokenizer tok, Map<String, Object> doc) {
        int encodings = 0;
        int errors = 0;
        for (Object o : Json.arr(doc.get("cases"))) {
            Map<String, Object> c = Json.obj(o);
            String text = (String) c.get("text");
            if (c.containsKey("error")) {
                org.junit.Assert.assertEquals("TextError", c.get("error"));
                try {
                    tok.encode(text);
                    org.junit.Assert.fail("no TextException for " + Json.write(text));
                } catch (TextException expected) {
                    errors++;
                }
                continue;
            }
            WordTokenizer.Encoding e = tok.encode(text);
            List<String> want = strings(c.get("tokens"));
            org.junit.Assert.assertEquals("tokens of " + Json.write(text), want, e.tokens);
            org.junit.Assert.assertEquals("tokenize of " + Json.write(text), want, tok.tokenize(text));
            org.junit.Assert.assertArrayEquals("input_ids of " + Json.write(text), ints(c.get("input_ids")), e.inputIds);
            org.junit.Assert.assertArrayEquals("text_mask of " + Json.write(text), ints(c.get("text_mask")), e.textMask);
            org.junit.Assert.assertEquals("truncated " + Json.write(text), want.size() > tok.maxLength(), e.truncated);
            encodings++;
        }
        return new int[] {encodings, errors};
    }

    public static Map<String, Object> queries() {
        return json(golden().resolve("queries.json"));
    }

    public static Path bundle() {
        return repo().resolve((String) queries().get("bundle"));
    }

    /**
     * A decoded PNG: ARGB ints as Bitmap.getPixels gives them (not premultiplied), from the core's
     * decoder (ImageFiles, what the app uses for PNG files: EXIF orientation and pixel formats as
     * the spec says; ImageModesTest checks it against ImageIO and image-modes.json).
     */
    public static final class Image {
        public final int[] argb;
        public final int width;
        public final int height;

        Image(int[] argb, int width, int height) {
            this.argb = argb;
            this.width = width;
            this.height = height;
        }

        /** SHA-256 of the ints written big-endian (android.json's argb_be_sha256). */
        public String sha256() {
            ByteBuffer b = ByteBuffer.allocate(argb.length * 4);
            for (int v : argb) b.putInt(v);
            return IO.sha256Hex(b.array());
        }
    }

    public static Image png(Path path) {
        try {
            ImageFiles.Decoded im = ImageFiles.decode(Files.readAllBytes(path));
            return new Image(im.argb, im.width, im.height);
        } catch (IOException exc) {
            throw new IllegalStateException("cannot read " + path + ": " + exc.getMessage(), exc);
        }
    }

    /**
     * The vectors' image generator ("generator" in tests/vectors/adapted and tests/vectors/caption:
     * xorshift32 from `seed`, one byte per channel value, interleaved; pattern "binary" thresholds at
     * 128): the channel values of a width x height x channels image, row-major.
     */
    public static int[] generated(Map<String, Object> spec) {
        int n = (int) (Json.lng(spec.get("width")) * Json.lng(spec.get("height")) * Json.lng(spec.get("channels")));
        boolean binary = "binary".equals(spec.get("pattern"));
        int x = (int) Json.lng(spec.get("seed"));
        int[] out = new int[n];
        for (int i = 0; i < n; i++) {
            x ^= x << 13;
            x ^= x >>> 17;
            x ^= x << 5;
            int v = x >>> 24;
            out[i] = binary ? (v >= 128 ? 255 : 0) : v;
        }
        return out;
    }

    /** The generated image as Bitmap.getPixels gives it: ARGB ints, alpha 255 for RGB. */
    public static int[] generatedArgb(Map<String, Object> spec) {
        int[] v = generated(spec);
        int ch = (int) Json.lng(spec.get("channels"));
        int[] out = new int[v.length / ch];
        for (int p = 0; p < out.length; p++) {
            int a = ch == 4 ? v[p * 4 + 3] : 255;
            out[p] = a << 24 | v[p * ch] << 16 | v[p * ch + 1] << 8 | v[p * ch + 2];
        }
        return out;
    }

    /** The golden queries that have a known answer (android.json "answers"), as benchmark queries. */
    public static List<BenchQueries.Query> answeredQueries(Path goldenDir) {
        Map<String, Object> doc = json(goldenDir.resolve("queries.json"));
        Map<String, Object> answers = Json.obj(json(goldenDir.resolve("android.json")).get("answers"));
        List<BenchQueries.Query> out = new ArrayList<>();
        for (Object o : Json.arr(doc.get("queries"))) {
            Map<String, Object> q = Json.obj(o);
            String name = (String) q.get("name");
            if (!answers.containsKey(name)) continue;
            Image im = png(goldenDir.resolve((String) q.get("image")));
            out.add(new BenchQueries.Query(name, im.argb, im.width, im.height, (String) q.get("text"), (String) answers.get(name)));
        }
        return out;
    }

}
