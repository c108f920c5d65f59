package dev.mmedge.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import dev.mmedge.core.testing.BundleCopy;
import dev.mmedge.core.testing.Golden;
import dev.mmedge.core.testing.NegativeVectors;
import dev.mmedge.core.testing.ReplayVLMRunner;
import dev.mmedge.core.testing.VLMVectors;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.junit.Test;

/**
 * BENCHMARK.md for a generative VLM bundle on the JVM: VLMBenchmarkRunner over the replayed graph
 * calls of tests/vectors/vlm (the committed tiny bundle, whose thresholds are confidence 0.510205 at
 * keep 0.5, kv copy; and a copy with settings per task): under the four settings its first-pass
 * generations, per-token exits and exit histograms equal the Python VLMEngine's generations in
 * vectors.json, each prompt under its task's setting; timings are counted per run and per task;
 * the settings' order rotates as the host bench's does; prompts it cannot score are refused.
 */
public class VLMBenchmarkTest {
    /** A clock that advances 1 ms per reading: figures are deterministic. */
    private static final class TickClock implements Engine.Clock {
        long now;

        @Override
        public long nanoTime() {
            return now += 1_000_000;
        }
    }

    private static Map<String, Object> extras(Path bundle, Path tmp, int runs, int warmup) {
        Map<String, Object> extras = new HashMap<>();
        extras.put(BenchmarkOptions.BUNDLE, bundle.toString());
        extras.put(BenchmarkOptions.RESULT, tmp.resolve("r.json").toString());
        extras.put(BenchmarkOptions.BACKEND, "onnxruntime");
        extras.put(BenchmarkOptions.RUNS, runs);
        extras.put(BenchmarkOptions.WARMUP, warmup);
        return extras;
    }

    /** vectors.json's queries as pushed prompts: the caption prompt is a caption, any other a question. */
    private static List<BenchQueries.Query> prompts(Map<String, Object> doc, String captionPrompt) {
        List<BenchQueries.Query> out = new ArrayList<>();
        int i = 0;
        for (Object o : Json.arr(doc.get("queries"))) {
            Map<String, Object> q = Json.obj(o);
            Golden.Image im = VLMVectors.image(doc, (String) q.get("image"));
            String prompt = (String) q.get("prompt");
            String task = prompt.equals(captionPrompt) ? "caption" : "answer";
            out.add(new BenchQueries.Query("q" + i++, Collections.singletonList(new ImageFiles.Decoded(im.argb, im.width, im.height)),
                    prompt, "reference " + i, task));
        }
        return out;
    }

    /** The vectors' greedy run of a query under a setting (kv copy, the tokenizer's max_new_tokens). */
    private static Map<String, Object> expected(Map<String, Object> query, Controller.Setting s) {
        Map<String, Object> run = VLMTaskSettingsTest.run(query, s.policy, s.keepRatio);
        if (run == null) throw new IllegalStateException("no run of " + s.policy.toJson() + " at keep " + s.keepRatio + " in the vectors");
        return run;
    }

    @Test
    public void settingsGenerationsMatchTheVectors() throws Exception {
        Path tmp = Files.createTempDirectory("mmedge-vlm-bench-");
        try {
            Path bundle = VLMVectors.bundle();
            assertEquals(VLMManifest.KIND, BundleLoader.kind(bundle));
            Map<String, Object> doc = VLMVectors.vectors();
            int runs = 2 * Json.arr(doc.get("queries")).size() + 1; // two passes and one more: a partial third
            BenchmarkOptions o = BenchmarkOptions.fromExtras(extras(bundle, tmp, runs, 1));
            ReplayVLMRunner.Factory factory = new ReplayVLMRunner.Factory(VLMVectors.replay());
            TickClock clock = new TickClock();
            List<List<BenchQueries.Query>> given = new ArrayList<>();
            List<VLMManifest> manifests = new ArrayList<>();
            Map<String, Object> result = VLMBenchmarkRunner.run(o, opts -> {
                VLMEngine.Options vo = opts.applyTo(new VLMEngine.Options());
                vo.clock = clock;
                return VLMEngine.load(bundle, factory, vo);
            }, m -> {
                manifests.add(m);
                given.add(prompts(doc, m.captionPrompt));
                return given.get(0);
            }, MemoryProbe.PROC, clock, null);
            assertTrue("closed after the run", factory.last.closed);
            assertEquals("vlm", result.get("task"));
            assertEquals("replay", result.get("backend"));
            int n = given.get(0).size();
            assertEquals((long) n, result.get("samples"));
            assertEquals((long) runs, result.get("runs"));
            assertEquals(3L, result.get("exits"));
            assertEquals(Arrays.asList(1L, 2L, 3L), result.get("exit_after_layer"));
            assertEquals("copy", result.get("kv"));
            assertEquals(10L, result.get("max_new_tokens"));
            Map<String, Object> policies = Json.obj(result.get("policies"));
            assertEquals(Arrays.asList(Controller.FULL, Controller.PREFILTER, Controller.EXITS, Controller.BOTH),
                    new ArrayList<>(policies.keySet()));
            Map<String, Controller.Setting> settings = VLMBenchmarkRunner.standardSettings(manifests.get(0));
            assertEquals(1.0, settings.get(Controller.FULL).keepRatio, 0);
            assertEquals(0.5, settings.get(Controller.BOTH).keepRatio, 0);
            assertEquals("confidence", settings.get(Controller.EXITS).policy.kind);
            List<Object> queries = Json.arr(doc.get("queries"));
            for (Map.Entry<String, Object> e : policies.entrySet()) {
                Map<String, Object> row = Json.obj(e.getValue());
                Controller.Setting s = settings.get(e.getKey());
                assertEquals(s.keepRatio, Json.num(row.get("keep_ratio")), 0);
                assertEquals(s.policy.toJson(), row.get("exit_policy"));
                Map<String, Object> tasks = Json.obj(row.get("by_task")); // no thresholds.tasks: every task runs the setting
                assertEquals(Arrays.asList("caption", "answer"), new ArrayList<>(tasks.keySet()));
                for (Object t : tasks.values()) {
                    assertEquals(s.keepRatio, Json.num(Json.obj(t).get("keep_ratio")), 0);
                    assertEquals(s.policy.toJson(), Json.obj(t).get("exit_policy"));
                }
                List<Object> generations = Json.arr(row.get("generations"));
                assertEquals(n, generations.size());
                long[] histogram = new long[3];
                long decoded = 0;
                long ids = 0;
                long multi = 0;
                for (int i = 0; i < n; i++) {
                    Map<String, Object> want = expected(Json.obj(queries.get(i)), s);
                    Map<String, Object> got = Json.obj(generations.get(i));
                    String where = e.getKey() + " query " + i;
                    assertEquals(where, want.get("text"), got.get("text"));
                    assertEquals(where, want.get("tokens"), got.get("tokens"));
                    assertEquals(where, want.get("exits"), got.get("exits"));
                    assertEquals(given.get(0).get(i).text, got.get("prompt"));
                    assertEquals(given.get(0).get(i).task, got.get("task"));
                    assertEquals("reference " + (i + 1), got.get("reference"));
                    List<Object> exits = Json.arr(want.get("exits"));
                    for (Object x : exits.subList(1, exits.size())) histogram[(int) Json.lng(x)]++;
                    decoded += exits.size() - 1;
                    ids += exits.size();
                    if (exits.size() > 1) multi += i == 0 ? 3 : 2; // query 0 is also the partial third pass
                }
                assertEquals(e.getKey(), BenchmarkRunner.histogramJson(histogram), row.get("exit_histogram"));
                assertEquals((double) ids / n, Json.num(row.get("tokens")), 1e-12);
                assertTrue(decoded > 0);
                for (String key : new String[] {"first_token_ms", "total_ms", "ms_per_token"}) {
                    Map<String, Object> spread = Json.obj(row.get(key));
                    assertEquals(key, key.equals("ms_per_token") ? multi : runs, Json.lng(spread.get("n")));
                    double p10 = Json.num(spread.get("p10"));
                    double p50 = Json.num(spread.get("p50"));
                    double p90 = Json.num(spread.get("p90"));
                    assertTrue(key + " " + spread, 0 < p10 && p10 <= p50 && p50 <= p90);
                }
                Map<String, Object> stages = Json.obj(row.get("stages"));
                assertTrue(stages.keySet().toString(), stages.keySet().containsAll(Arrays.asList("preprocess", "vision", "embed",
                        "step0", "head")) && !stages.containsKey("total") && !stages.containsKey("decode"));
                // a token that exits early leaves the later layers' cache to its fill graph; full depth runs none
                assertEquals(e.getKey(), histogram[0] + histogram[1] > 0, stages.containsKey("fill0") || stages.containsKey("fill1"));
            }
            BenchmarkRunner.writeResult(o.result, result);
            assertTrue(Files.exists(tmp.resolve("r.json.done")));
            Object back = Json.parse(Files.readAllBytes(tmp.resolve("r.json")), 64);
            assertEquals(Json.write(result, 1), Json.write(back, 1));
        } finally {
            NegativeVectors.removeTree(tmp);
        }
    }

    /**
     * A bundle with settings per task (VLMTaskSettingsTest's: captions max_probability 0.116324 at keep 1,
     * answers patience 2 at keep 0.5): each prompt runs under its task's setting (its generations those of
     * the vectors under that setting), each setting is reported per task (the task's policy and keep ratio,
     * its prompts' timings), and a setting whose tasks differ has no policy and keep ratio of its own.
     */
    @Test
    public void eachPromptRunsUnderItsTasksSetting() throws Exception {
        Path tmp = Files.createTempDirectory("mmedge-vlm-bench-");
        try (BundleCopy copy = VLMTaskSettingsTest.withTasks("mmedge-vlm-bench-tasks-")) {
            Map<String, Object> doc = VLMVectors.vectors();
            int runs = 2 * Json.arr(doc.get("queries")).size() + 1;
            BenchmarkOptions o = BenchmarkOptions.fromExtras(extras(copy.dir, tmp, runs, 1));
            ReplayVLMRunner.Factory factory = new ReplayVLMRunner.Factory(VLMVectors.replay(), false, false);
            TickClock clock = new TickClock();
            List<List<BenchQueries.Query>> given = new ArrayList<>();
            List<Map<String, Map<String, Controller.Setting>>> settings = new ArrayList<>();
            Map<String, Object> result = VLMBenchmarkRunner.run(o, opts -> {
                VLMEngine.Options vo = opts.applyTo(new VLMEngine.Options());
                vo.clock = clock;
                VLMEngine engine = VLMEngine.load(copy.dir, factory, vo);
                settings.add(VLMBenchmarkRunner.settingsByTask(engine));
                return engine;
            }, m -> {
                given.add(prompts(doc, m.captionPrompt));
                return given.get(0);
            }, MemoryProbe.PROC, clock, null);
            List<BenchQueries.Query> prompts = given.get(0);
            Map<String, Map<String, Controller.Setting>> byTask = settings.get(0);
            assertEquals(1.0, byTask.get(Controller.BOTH).get("caption").keepRatio, 0);
            assertEquals("max_probability", byTask.get(Controller.BOTH).get("caption").policy.kind);
            assertEquals(0.5, byTask.get(Controller.PREFILTER).get("answer").keepRatio, 0);
            assertEquals("patience", byTask.get(Controller.EXITS).get("answer").policy.kind);
            assertEquals(1.0, byTask.get(Controller.EXITS).get("answer").keepRatio, 0);
            Map<String, Object> policies = Json.obj(result.get("policies"));
            List<Object> queries = Json.arr(doc.get("queries"));
            for (Map.Entry<String, Object> e : policies.entrySet()) {
                Map<String, Object> row = Json.obj(e.getValue());
                Map<String, Controller.Setting> mine = byTask.get(e.getKey());
                boolean same = e.getKey().equals(Controller.FULL);
                assertEquals(e.getKey(), same ? (Object) 1.0 : Json.NULL, row.get("keep_ratio"));
                assertEquals(e.getKey(), same ? Policy.of("full").toJson() : Json.NULL, row.get("exit_policy"));
                Map<String, Object> tasks = Json.obj(row.get("by_task"));
                assertEquals(Arrays.asList("caption", "answer"), new ArrayList<>(tasks.keySet()));
                long n = 0;
                for (Map.Entry<String, Object> t : tasks.entrySet()) {
                    Map<String, Object> entry = Json.obj(t.getValue());
                    assertEquals(mine.get(t.getKey()).keepRatio, Json.num(entry.get("keep_ratio")), 0);
                    assertEquals(mine.get(t.getKey()).policy.toJson(), entry.get("exit_policy"));
                    long count = Json.lng(Json.obj(entry.get("total_ms")).get("n"));
                    assertEquals(count, Json.lng(Json.obj(entry.get("first_token_ms")).get("n")));
                    long prompted = 0;
                    for (int r = 0; r < runs; r++) if (prompts.get(r % prompts.size()).task.equals(t.getKey())) prompted++;
                    assertEquals(e.getKey() + " " + t.getKey(), prompted, count);
                    n += count;
                }
                assertEquals((long) runs, n);
                List<Object> generations = Json.arr(row.get("generations"));
                for (int i = 0; i < prompts.size(); i++) {
                    Map<String, Object> want = expected(Json.obj(queries.get(i)), mine.get(prompts.get(i).task));
                    Map<String, Object> got = Json.obj(generations.get(i));
                    String where = e.getKey() + " query " + i + " (" + prompts.get(i).task + ")";
                    assertEquals(where, want.get("tokens"), got.get("tokens"));
                    assertEquals(where, want.get("exits"), got.get("exits"));
                    assertEquals(where, want.get("text"), got.get("text"));
                }
            }
            BenchmarkRunner.writeResult(o.result, result);
            Object back = Json.parse(Files.readAllBytes(tmp.resolve("r.json")), 64);
            assertEquals(Json.write(result, 1), Json.write(back, 1));
        } finally {
            NegativeVectors.removeTree(tmp);
        }
    }

    /** The host bench rotates who goes first by (prompt + pass): mmedge/adapt/vlm_bench.py bench_generation. */
    @Test
    public void settingsRotateAsTheHostBench() {
        List<String> names = Arrays.asList("a", "b", "c", "d");
        assertEquals(Arrays.asList("a", "b", "c", "d"), VLMBenchmarkRunner.order(names, 0, 3));
        assertEquals(Arrays.asList("b", "c", "d", "a"), VLMBenchmarkRunner.order(names, 1, 3));
        assertEquals(Arrays.asList("c", "d", "a", "b"), VLMBenchmarkRunner.order(names, 2, 3));
        assertEquals(Arrays.asList("b", "c", "d", "a"), VLMBenchmarkRunner.order(names, 3, 3)); // prompt 0, pass 1
        assertEquals(Arrays.asList("d", "a", "b", "c"), VLMBenchmarkRunner.order(names, 5, 3)); // prompt 2, pass 1
        assertEquals(Arrays.asList("b", "a"), VLMBenchmarkRunner.order(Arrays.asList("a", "b"), 1, 5));
    }

    @Test
    public void promptsItCannotScoreAreRefused() throws Exception {
        Path tmp = Files.createTempDirectory("mmedge-vlm-bench-");
        try {
            BenchmarkOptions o = BenchmarkOptions.fromExtras(extras(VLMVectors.bundle(), tmp, 2, 0));
            try {
                VLMBenchmarkRunner.pushedPrompts(o, BenchQueries.PNG);
                fail("no pushed prompts: refused");
            } catch (ConfigException exc) {
                assertTrue(exc.getMessage(), exc.getMessage().contains(BenchmarkOptions.QUERIES));
            }
            Map<String, Object> doc = VLMVectors.vectors();
            List<BenchQueries.Query> good = prompts(doc, "describe the image.");
            BenchQueries.Query q = good.get(0);
            List<BenchQueries.Query> bad = Arrays.asList(
                    new BenchQueries.Query("untasked", q.images, q.text, q.answer),
                    new BenchQueries.Query("unreferenced", q.images, q.text, null, "caption"),
                    new BenchQueries.Query("empty", q.images, "  ", q.answer, "answer"),
                    new BenchQueries.Query("two", Arrays.asList(q.images.get(0), q.images.get(0)), q.text, q.answer, "answer"));
            ReplayVLMRunner.Factory factory = new ReplayVLMRunner.Factory(VLMVectors.replay());
            try {
                VLMBenchmarkRunner.run(o, opts -> VLMEngine.load(VLMVectors.bundle(), factory, new VLMEngine.Options()),
                        m -> bad, MemoryProbe.PROC, Engine.Clock.SYSTEM, null);
                fail("prompts without task, reference or text refused");
            } catch (ConfigException exc) {
                String m = exc.getMessage();
                for (String name : new String[] {"untasked", "unreferenced", "empty", "two"}) assertTrue(m, m.contains("prompt " + name));
            }
            assertTrue("the engine is closed after a refusal", factory.last.closed);
            // the error file of the contract
            BenchmarkRunner.writeError(o.result, new ConfigException("no prompts", "benchmark queries"));
            Map<String, Object> written = Json.obj(Json.parse(Files.readAllBytes(tmp.resolve("r.json")), 8));
            assertEquals(Collections.singleton("error"), written.keySet());
            assertTrue(Files.exists(tmp.resolve("r.json.done")));
            assertNull(BenchQueries.parse(("{\"format\": \"mmedge-bench-queries-1\", \"queries\": [{\"image\": \"a.png\", "
                    + "\"text\": \"t\", \"answer\": \"a\"}]}").getBytes(StandardCharsets.UTF_8)).entries.get(0).task);
            assertEquals("caption", BenchQueries.parse(("{\"format\": \"mmedge-bench-queries-1\", \"queries\": [{\"image\": "
                    + "\"a.png\", \"text\": \"t\", \"answer\": \"a\", \"task\": \"caption\"}]}").getBytes(StandardCharsets.UTF_8))
                    .entries.get(0).task);
        } finally {
            NegativeVectors.removeTree(tmp);
        }
    }
}
