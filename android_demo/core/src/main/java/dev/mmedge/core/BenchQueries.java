package dev.mmedge.core;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;

/**
 * The benchmark's test queries: a queries.json ({"format": "mmedge-bench-queries-1", "task",
 * "queries": [{"image", "text", "answer"}]}) beside PNG images, written by
 * scripts/make_android_queries.py from the test split (the app ships one set as an asset).
 */
public final class BenchQueries {
    public static final String FORMAT = "mmedge-bench-queries-1";

    /** One query as listed. */
    public static final class Entry {
        public final String image;
        public final String text;
        public final String answer;

        Entry(String image, String text, String answer) {
            this.image = image;
            this.text = text;
            this.answer = answer;
        }
    }

    /** A decoded query. */
    public static final class Query {
        public final String name;
        public final int[] argb;
        public final int width;
        public final int height;
        public final String text;
        /** The right answer (a label), or null when unknown. */
        public final String answer;

        public Query(String name, int[] argb, int width, int height, String text, String answer) {
            this.name = name;
            this.argb = argb;
            this.width = width;
            this.height = height;
            this.text = text;
            this.answer = answer;
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
            if (e == null || !(e.get("image") instanceof String) || !(e.get("text") instanceof String)
                    || !(e.get("answer") instanceof String)) {
                throw new ConfigException("each query needs image, text and answer strings", "benchmark queries");
            }
            String image = (String) e.get("image");
            if (BundleLoader.memberProblem(image) != null) {
                throw new ConfigException("query image " + image + ": " + BundleLoader.memberProblem(image), "benchmark queries");
            }
            entries.add(new Entry(image, (String) e.get("text"), (String) e.get("answer")));
        }
        Object task = m.get("task");
        return new BenchQueries(task instanceof String ? (String) task : null, entries);
    }
}
