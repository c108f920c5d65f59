package dev.mmedge.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import dev.mmedge.core.testing.Golden;
import dev.mmedge.core.testing.ReplayStageRunner;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.junit.Test;

/** BENCHMARK.md on the JVM: extras, the runner's figures against the golden exits, the result and error files. */
public class BenchmarkTest {
    private static Map<String, Object> extras(String... kv) {
        Map<String, Object> out = new HashMap<>();
        for (int i = 0; i < kv.length; i += 2) {
            String v = kv[i + 1];
            out.put(kv[i], v.matches("\\d+") && !kv[i].equals(BenchmarkOptions.CPU_AFFINITY) ? (Object) Integer.valueOf(v) : v);
        }
        return out;
    }

    @Test
    public void extrasAreChecked() {
        BenchmarkOptions o = BenchmarkOptions.fromExtras(extras("mmedge.bundle", "/sdcard/Android/data/dev.mmedge.demo/files/bundles/b.mmedge",
                "mmedge.result", "/sdcard/Android/data/dev.mmedge.demo/files/results/r.json", "mmedge.backend", "onnxruntime", "mmedge.precision",
                "int8", "mmedge.threads", "2", "mmedge.runs", "30", "mmedge.warmup", "0", "mmedge.policies", "all",
                "mmedge.cpu_affinity", "4-7"));
        assertEquals(4, o.policies.size());
        assertEquals(2, o.threads);
        assertEquals(30, o.runs);
        assertEquals(0, o.warmup);
        assertEquals("4-7", o.cpuAffinity);
        assertEquals(4, o.cpus.size());
        BenchmarkOptions d = BenchmarkOptions.fromExtras(extras("mmedge.bundle", "/b", "mmedge.result", "/r.json",
                "mmedge.policies", "both,full"));
        assertEquals("executorch", d.backend);
        assertEquals(100, d.runs);
        assertEquals(10, d.warmup);
        assertEquals(java.util.Arrays.asList(Controller.FULL, Controller.BOTH), d.policies);
        try {
            BenchmarkOptions.fromExtras(extras("mmedge.bundle", "relative", "mmedge.backend", "tflite", "mmedge.threads", "0",
                    "mmedge.policies", "fastest", "mmedge.cpu_affinity", "1;reboot", "mmedge.precision", "fp16"));
            fail();
        } catch (ConfigException exc) {
            assertEquals(exc.getMessage(), 7, exc.problems().size());
        }
    }

    /** A clock that advances 1 ms per reading: figures are deterministic. */
    private static final class TickClock implements Engine.Clock {
        long now;

        @Override
        public long nanoTime() {
            return now += 1_000_000;
        }
    }

    @Test
    public void runnerFiguresMatchTheGoldenExits() throws Exception {
        Map<String, Object> golden = Golden.queries();
        List<BenchQueries.Query> queries = Golden.answeredQueries(Golden.golden());
        assertEquals(6, queries.size());
        BenchmarkOptions o = BenchmarkOptions.fromExtras(extras("mmedge.bundle", Golden.bundle().toString(),
                "mmedge.result", "/tmp/unused.json", "mmedge.backend", "onnxruntime", "mmedge.runs", "14", "mmedge.warmup", "3"));
        TickClock clock = new TickClock();
        ReplayStageRunner.Factory factory = new ReplayStageRunner.Factory(golden);
        Map<String, Object> result = BenchmarkRunner.run(o, opts -> {
            Engine.Options eo = new Engine.Options();
            eo.clock = clock;
            return Engine.load(Golden.bundle(), factory, eo);
        }, m -> queries, MemoryProbe.PROC, clock, null);
        assertTrue("closed after the run", factory.last.closed);
        assertEquals(1L, result.get("schema_version"));
        assertEquals("replay", result.get("backend"));
        assertTrue((Double) result.get("peak_rss_mb") > 0);
        Manifest m = new Manifest(BundleLoader.parseManifest(Files.readAllBytes(Golden.bundle().resolve("manifest.json")), "m"));
        Map<String, Controller.Setting> settings = Controller.standardPolicies(m);
        Map<String, Object> policies = Json.obj(result.get("policies"));
        assertEquals(settings.keySet(), policies.keySet());
        Map<String, Object> answers = Json.obj(Golden.json(Golden.golden().resolve("android.json")).get("answers"));
        for (Map.Entry<String, Controller.Setting> e : settings.entrySet()) {
            // expected from the golden rows: the row of this policy at this keep ratio, per scene query
            long[] hist = new long[m.exitLayers.size()];
            int correct = 0;
            double kept = 0;
            for (Object qo : Json.arr(golden.get("queries"))) {
                Map<String, Object> q = Json.obj(qo);
                if (!answers.containsKey(q.get("name"))) continue;
                Map<String, Object> byRatio = Json.obj(Json.obj(q.get("by_keep_ratio")).get(Double.toString(e.getValue().keepRatio)));
                Map<String, Object> row = null;
                for (Object r : Json.arr(byRatio.get("policies"))) {
                    if (Policy.fromJson(Json.obj(Json.obj(r).get("policy"))).equals(e.getValue().policy)) row = Json.obj(r);
                }
                assertTrue("golden row for " + e.getValue().policy, row != null);
                hist[(int) Json.lng(row.get("exit_index"))]++;
                if (answers.get(q.get("name")).equals(row.get("answer"))) correct++;
                kept += Json.arr(byRatio.get("kept_index")).size();
            }
            Map<String, Object> got = Json.obj(policies.get(e.getKey()));
            List<Object> h = Json.arr(got.get("exit_histogram"));
            for (int i = 0; i < hist.length; i++) assertEquals(e.getKey(), hist[i], Json.lng(h.get(i)));
            assertEquals(e.getKey(), correct / 6.0, (Double) got.get("accuracy"), 1e-12);
            assertEquals(e.getKey(), kept / 6.0, (Double) got.get("kept_tokens"), 1e-12);
            Map<String, Object> latency = Json.obj(got.get("latency"));
            assertEquals(14L, latency.get("n"));
            assertTrue((Double) latency.get("p50_ms") <= (Double) latency.get("p99_ms"));
            assertTrue(Json.obj(got.get("stages")).containsKey("preprocess"));
        }
        assertEquals(1.0, (Double) Json.obj(policies.get(Controller.FULL)).get("speedup_p50"), 0);
    }

    @Test
    public void appAssetQueriesAreForTheShippedBundle() throws Exception {
        Path dir = Golden.repo().resolve("android_demo/app/src/main/assets/bench/vqa");
        BenchQueries doc = BenchQueries.parse(Files.readAllBytes(dir.resolve("queries.json")));
        Manifest m = new Manifest(BundleLoader.parseManifest(Files.readAllBytes(Golden.bundle().resolve("manifest.json")), "m"));
        assertEquals(m.task, doc.task);
        assertTrue(doc.entries.size() >= 32);
        for (BenchQueries.Entry e : doc.entries) {
            assertTrue(e.answer, m.labels.contains(e.answer));
            Golden.Image im = Golden.png(dir.resolve(e.image));
            assertEquals(m.imageSize, im.width);
            new Preprocessor(m).run(im.argb, im.width, im.height);
        }
    }

    private static byte[] utf8(String text) {
        return text.getBytes(StandardCharsets.UTF_8);
    }

    @Test
    public void queriesNameOneImageOrSeveral() throws Exception {
        BenchQueries doc = BenchQueries.parse(utf8("{\"format\": \"mmedge-bench-queries-1\", \"task\": \"verify\", \"queries\": ["
                + "{\"images\": [\"images/0000-0.png\", \"images/0000-1.png\"], \"text\": \"t\", \"answer\": \"True\"},"
                + "{\"image\": \"images/0001.png\", \"text\": \"u\", \"answer\": \"False\"}]}"));
        assertEquals(java.util.Arrays.asList("images/0000-0.png", "images/0000-1.png"), doc.entries.get(0).images);
        assertEquals("images/0000-0.png", doc.entries.get(0).image);
        assertEquals(java.util.Collections.singletonList("images/0001.png"), doc.entries.get(1).images);
        String[] bad = {
            "{\"image\": \"a.png\", \"images\": [\"b.png\"], \"text\": \"t\", \"answer\": \"x\"}", // both
            "{\"text\": \"t\", \"answer\": \"x\"}",                                                   // neither
            "{\"images\": [], \"text\": \"t\", \"answer\": \"x\"}",
            "{\"images\": [\"a.png\", 3], \"text\": \"t\", \"answer\": \"x\"}",
            "{\"images\": [\"../outside.png\"], \"text\": \"t\", \"answer\": \"x\"}",
        };
        for (String q : bad) {
            try {
                BenchQueries.parse(utf8("{\"format\": \"mmedge-bench-queries-1\", \"queries\": [" + q + "]}"));
                fail(q);
            } catch (ConfigException exc) {
                assertTrue(exc.getMessage(), exc.getMessage().startsWith("invalid benchmark queries:"));
            }
        }
        Path empty = Files.createTempDirectory("mmedge-queries-");
        try {
            BenchQueries.readFolder(empty, BenchQueries.PNG);
            fail();
        } catch (ConfigException exc) {
            assertTrue(exc.getMessage(), exc.getMessage().contains("no queries.json"));
        }
        Files.write(empty.resolve("queries.json"), utf8("{\"format\": \"mmedge-bench-queries-1\", \"queries\": ["
                + "{\"image\": \"missing.png\", \"text\": \"t\", \"answer\": \"x\"}]}"));
        try {
            BenchQueries.readFolder(empty, BenchQueries.PNG);
            fail();
        } catch (ConfigException exc) {
            assertTrue(exc.getMessage(), exc.getMessage().contains("missing.png") && exc.getMessage().contains("cannot be read"));
        }
        Files.delete(empty.resolve("queries.json"));
        Files.delete(empty);
    }

    /** The runner on the golden bundle and queries with some answers replaced. */
    private static Map<String, Object> runWith(List<BenchQueries.Query> queries) {
        BenchmarkOptions o = BenchmarkOptions.fromExtras(extras("mmedge.bundle", Golden.bundle().toString(),
                "mmedge.result", "/tmp/unused.json", "mmedge.runs", "6", "mmedge.warmup", "0", "mmedge.policies", "full"));
        ReplayStageRunner.Factory factory = new ReplayStageRunner.Factory(Golden.queries());
        return BenchmarkRunner.run(o, opts -> Engine.load(Golden.bundle(), factory, new Engine.Options()), m -> queries,
                MemoryProbe.PROC, new TickClock(), null);
    }

    private static BenchQueries.Query answering(BenchQueries.Query q, String answer) {
        return new BenchQueries.Query(q.name, q.images, q.text, answer);
    }

    private static double fullAccuracy(List<BenchQueries.Query> queries) {
        return (Double) Json.obj(Json.obj(runWith(queries).get("policies")).get(Controller.FULL)).get("accuracy");
    }

    @Test
    public void answersOutsideTheLabelsCountWrongUntilTheyAreMost() {
        List<BenchQueries.Query> queries = Golden.answeredQueries(Golden.golden());
        assertEquals(6, queries.size());
        List<BenchQueries.Query> firstHalf = new java.util.ArrayList<>(queries);
        List<BenchQueries.Query> secondHalf = new java.util.ArrayList<>(queries);
        for (int i = 0; i < 3; i++) {
            firstHalf.set(i, answering(queries.get(i), "not-a-label"));
            secondHalf.set(i + 3, answering(queries.get(i + 3), "not-a-label"));
        }
        // half outside: counted wrong, so the two halves' accuracies add up to the whole set's
        assertEquals(fullAccuracy(queries), fullAccuracy(firstHalf) + fullAccuracy(secondHalf), 1e-12);
        firstHalf.set(3, answering(queries.get(3), "not-a-label")); // most: another task's queries, refused
        try {
            runWith(firstHalf);
            fail();
        } catch (ConfigException exc) {
            assertTrue(exc.getMessage(), exc.getMessage().contains("4 of 6 queries answer outside the labels"));
        }
    }

    @Test
    public void queriesWithAnotherImageCountAreRefused() {
        List<BenchQueries.Query> queries = new java.util.ArrayList<>(Golden.answeredQueries(Golden.golden()));
        BenchQueries.Query q = queries.get(0);
        queries.set(0, new BenchQueries.Query("pair", java.util.Arrays.asList(q.images.get(0), q.images.get(0)), q.text, q.answer));
        try {
            runWith(queries);
            fail();
        } catch (ConfigException exc) {
            assertTrue(exc.getMessage(), exc.getMessage().contains("query pair has 2 image(s)") && exc.getMessage().contains("reads 1"));
        }
    }

    @Test
    public void resultAndErrorFiles() throws Exception {
        Path dir = Files.createTempDirectory("mmedge-bench-");
        String path = dir.resolve("r.json").toString();
        Map<String, Object> doc = new HashMap<>();
        doc.put("schema_version", 1L);
        BenchmarkRunner.writeResult(path, doc);
        assertTrue(Files.exists(dir.resolve("r.json.done")));
        assertEquals(1L, Json.obj(Json.parse(Files.readAllBytes(dir.resolve("r.json")), 8)).get("schema_version"));
        BenchmarkRunner.writeError(path, new BundleException("bundle x failed verification; hash mismatch"));
        String text = new String(Files.readAllBytes(dir.resolve("r.json")), StandardCharsets.UTF_8);
        assertTrue(text, Json.obj(Json.parse(text, 8)).get("error").toString().startsWith("BundleException: bundle x"));
        for (String f : new String[] {"r.json", "r.json.done"}) Files.delete(dir.resolve(f));
        Files.delete(dir);
    }
}
