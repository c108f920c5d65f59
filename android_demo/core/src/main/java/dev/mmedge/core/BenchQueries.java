package dev.mmedge.core;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;

/**
 * The benchmark's test queries: a queries.json ({"format": "mmedge-bench-queries-1", "task",
 * "queries": [{"image" or "images", "text", "answer"}]}) beside PNG images. The app ships one set
 * per scene task as an asset (scripts/make_android_queries.py); `mmedge bench --device` pushes its
 * own folder (mmedge.bench.query_folder) for a bundle the scenes do not fit: another dataset, an
 * adapted model, two images per query (NLVR2: "images": [left, right]); for a generative VLM bundle
 * (mmedge.bench.vlm_device) each query's text is the prompt, its answer the reference and its optional
 * "task" "caption" or "answer" (how the host scores the generated text).
 */
public final class BenchQueries {
    public static final String FORMAT = "mmedge-bench-queries-1";
    /** The most images one query may name. */
    public static final int MAX_IMAGES = 8;

    /** One query as listed. */
    public static final class Entry {
        /** The query's image files, relative to the folder: one, or a two-image bundle's left and right. */
        public final List<String> images;
        /** The first of {@link #images}. */
        public final String image;
        public final String text;
        public final String answer;
        /** The query's optional "task" (a generative VLM bundle's prompts: "caption" or "answer"), or null. */
        public final String task;

        Entry(List<String> images, String text, String answer, String task) {
            this.images = Collections.unmodifiableList(images);
            this.image = images.get(0);
            this.text = text;
            this.answer = answer;
            this.task = task;
        }
    }

    /** A decoded query. */
    public static final class Query {
        public final String name;
        /** The first image (the only one of a one-image query). */
        public final int[] argb;
        public final int width;
        public final int height;
        /** Every image of the query, in order. */
        public final List<ImageFiles.Decoded> images;
        public final String text;
        /** The right answer (a label; a generative VLM prompt's reference text), or null when unknown. */
        public final String answer;
        /** The query's task when listed ("caption" or "answer" for a generative VLM bundle), else null. */
        public final String task;

        public Query(String name, int[] argb, int width, int height, String text, String answer) {
            this(name, Collections.singletonList(new ImageFiles.Decoded(argb, width, height)), text, answer);
        }

        public Query(String name, List<ImageFiles.Decoded> images, String text, String answer) {
            this(name, images, text, answer, null);
        }

        public Query(String name, List<ImageFiles.Decoded> images, String text, String answer, String task) {
            if (images.isEmpty()) throw new IllegalArgumentException("a query needs an image");
            this.name = name;
            this.images = Collections.unmodifiableList(new ArrayList<>(images));
            this.argb = images.get(0).argb;
            this.width = images.get(0).width;
            this.height = images.get(0).height;
            this.text = text;
            this.answer = answer;
            this.task = task;
        }
    }

    public final String task;
    public final List<Entry> entries;

    private BenchQueries(String task, List<Entry> entries) {
        this.task = task;
        this.entries = Collections.unmodifiableList(entries);
    }

    /** Parses a queries.json; ConfigException says what is wrong. */
    public static BenchQueries parse(byte[] data) {
        Object doc;
        try {
            doc = Json.parse(data, 8);
        } catch (Json.ParseException exc) {
            throw new ConfigException("queries.json is not valid JSON (" + exc.getMessage() + ")", "benchmark queries");
        }
        if (!(doc instanceof Map) || !FORMAT.equals(Json.obj(doc).get("format"))) {
            throw new ConfigException("queries.json must be an object with format " + FORMAT, "benchmark queries");
        }
        Map<String, Object> m = Json.obj(doc);
        List<Entry> entries = new ArrayList<>();
        Object list = m.get("queries");
        if (!(list instanceof List) || Json.arr(list).isEmpty()) {
            throw new ConfigException("queries.json lists no queries", "benchmark queries");
        }
        for (Object q : Json.arr(list)) {
            Map<String, Object> e = q instanceof Map ? Json.obj(q) : null;
            if (e == null || !(e.get("text") instanceof String) || !(e.get("answer") instanceof String)) {
                throw new ConfigException("each query needs text and answer strings", "benchmark queries");
            }
            List<String> images = images(e);
            for (String image : images) {
                if (BundleLoader.memberProblem(image) != null) {
                    throw new ConfigException("query image " + image + ": " + BundleLoader.memberProblem(image), "benchmark queries");
                }
            }
            Object task = e.get("task");
            if (task != null && !(task instanceof String)) throw new ConfigException("a query's \"task\" must be a string", "benchmark queries");
            entries.add(new Entry(images, (String) e.get("text"), (String) e.get("answer"), (String) task));
        }
        Object task = m.get("task");
        return new BenchQueries(task instanceof String ? (String) task : null, entries);
    }

    /** A query's image names: "image" (one) or "images" (1..MAX_IMAGES), never both. */
    private static List<String> images(Map<String, Object> e) {
        Object one = e.get("image");
        Object many = e.get("images");
        if ((one == null) == (many == null)) {
            throw new ConfigException("each query names its image (\"image\") or its images (\"images\"), one of the two",
                    "benchmark queries");
        }
        List<String> out = new ArrayList<>();
        if (one != null) {
            if (!(one instanceof String)) throw new ConfigException("a query's \"image\" must be a string", "benchmark queries");
            out.add((String) one);
            return out;
        }
        if (!(many instanceof List) || Json.arr(many).isEmpty() || Json.arr(many).size() > MAX_IMAGES) {
            throw new ConfigException("a query's \"images\" must list 1 to " + MAX_IMAGES + " file names", "benchmark queries");
        }
        for (Object name : Json.arr(many)) {
            if (!(name instanceof String)) throw new ConfigException("a query's \"images\" must be strings", "benchmark queries");
            out.add((String) name);
        }
        return out;
    }

    /** What a folder's image file holds, decoded (the app decodes through the platform instead). */
    public interface ImageReader {
        ImageFiles.Decoded read(Path file) throws IOException;
    }

    /**
     * The queries of a folder pushed by `mmedge bench --device` (queries.json and its PNG images),
     * decoded by `reader`; ConfigException when the folder, its queries.json or an image is missing or bad.
     */
    public static List<Query> readFolder(Path dir, ImageReader reader) {
        Path doc = dir.resolve("queries.json");
        if (!Files.isRegularFile(doc)) {
            throw new ConfigException("no queries.json in " + dir + " (push the folder `mmedge bench --device` writes)",
                    "benchmark queries");
        }
        BenchQueries parsed;
        try (java.io.InputStream in = Files.newInputStream(doc)) {
            parsed = parse(IO.readAll(in, 1 << 24));
        } catch (IOException exc) {
            throw new ConfigException("cannot read " + doc + ": " + exc.getMessage(), "benchmark queries");
        }
        List<Query> out = new ArrayList<>();
        for (Entry e : parsed.entries) {
            List<ImageFiles.Decoded> decoded = new ArrayList<>();
            for (String image : e.images) {
                try {
                    decoded.add(reader.read(dir.resolve(image)));
                } catch (IOException | RuntimeException exc) {
                    throw new ConfigException("query image " + image + " in " + dir + " cannot be read: " + exc.getMessage(),
                            "benchmark queries");
                }
            }
            out.add(new Query(String.join("+", e.images), decoded, e.text, e.answer, e.task));
        }
        return out;
    }

    /** Reads and decodes a PNG with the core's decoder (ImageFiles.decode). */
    public static final ImageReader PNG = file -> ImageFiles.decode(Files.readAllBytes(file));
}
