package dev.mmedge.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;

import dev.mmedge.core.testing.CaptionVectors;
import dev.mmedge.core.testing.Golden;
import dev.mmedge.core.testing.NegativeVectors;
import dev.mmedge.core.testing.ReplayCaptionRunner;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.junit.Test;

/**
 * BENCHMARK.md for a captioning bundle on the JVM: BundleLoader.kind picks the caption path, and
 * CaptionBenchmarkRunner's per-word exits, words and first-pass captions equal the Python runtime's
 * captions in the golden vectors under the four standard settings.
 */
public class CaptionBenchmarkTest {
    /** A clock that advances 1 ms per reading: figures are deterministic. */
    private static final class TickClock implements Engine.Clock {
        long now;

        @Override
        public long nanoTime() {
            return now += 1_000_000;
        }
    }

    /** The vectors' greedy caption of an image under a setting (the bundle's thresholds are "full", kv copy). */
    private static Map<String, Object> expected(Map<String, Object> entry, double ratio) {
        Map<String, Object> byRatio = Json.obj(Json.obj(entry.get("by_keep_ratio")).get(CaptionManifest.formatG(ratio)));
        for (Object o : Json.arr(byRatio.get("runs"))) {
            Map<String, Object> run = Json.obj(o);
            if ("full".equals(Json.obj(run.get("policy")).get("kind")) && "copy".equals(run.get("kv"))
                    && Json.lng(run.get("beam")) == 1 && Json.lng(run.get("max_len")) == 24) {
                return run;
            }
        }
        throw new IllegalStateException("no full-depth greedy caption in the vectors");
    }

    @Test
    public void settingsFiguresMatchTheVectors() throws Exception {
        Path tmp = Files.createTempDirectory("mmedge-caption-bench-");
        try {
            Path bundle = CaptionVectors.assembleBundle(tmp);
            assertEquals(CaptionManifest.KIND, BundleLoader.kind(bundle));
            assertEquals(null, BundleLoader.kind(Golden.bundle()));
            Map<String, Object> extras = new HashMap<>();
            extras.put(BenchmarkOptions.BUNDLE, bundle.toString());
            extras.put(BenchmarkOptions.RESULT, tmp.resolve("r.json").toString());
            extras.put(BenchmarkOptions.BACKEND, "onnxruntime");
            extras.put(BenchmarkOptions.RUNS, 8);
            extras.put(BenchmarkOptions.WARMUP, 1);
            BenchmarkOptions o = BenchmarkOptions.fromExtras(extras);
            List<BenchQueries.Query> images = CaptionVectors.benchImages();
            ReplayCaptionRunner.Factory factory = new ReplayCaptionRunner.Factory(CaptionVectors.replay());
            TickClock clock = new TickClock();
            Map<String, Object> result = CaptionBenchmarkRunner.run(o, opts -> {
                CaptionEngine.Options co = new CaptionEngine.Options();
                co.clock = clock;
                return CaptionEngine.load(bundle, factory, co);
            }, m -> images, MemoryProbe.PROC, clock, null);
            assertTrue("closed after the run", factory.last.closed);
            assertEquals("caption", result.get("task"));
            assertEquals(6L, result.get("samples"));
            assertEquals(4L, result.get("exits"));
            Map<String, Object> policies = Json.obj(result.get("policies"));
            assertEquals(Arrays.asList(Controller.FULL, Controller.PREFILTER, Controller.EXITS, Controller.BOTH),
                    new ArrayList<>(policies.keySet()));
            List<Object> entries = Json.arr(CaptionVectors.vectors().get("images"));
            for (Map.Entry<String, Object> e : policies.entrySet()) {
                Map<String, Object> row = Json.obj(e.getValue());
                double ratio = Json.num(row.get("keep_ratio"));
                long[] histogram = new long[4];
                long ids = 0;
                List<Object> captions = Json.arr(row.get("captions"));
                assertEquals(6, captions.size());
                for (int i = 0; i < captions.size(); i++) {
                    Map<String, Object> entry = Json.obj(entries.get(i));
                    Map<String, Object> want = expected(entry, ratio);
                    Map<String, Object> got = Json.obj(captions.get(i));
                    assertEquals(entry.get("name"), got.get("image"));
                    assertEquals(e.getKey() + " " + entry.get("name"), want.get("text"), got.get("text"));
                    assertEquals(want.get("exits"), got.get("exits"));
                    assertEquals(entry.containsKey("reference") ? entry.get("reference") : Json.NULL, got.get("reference"));
                    for (Object x : Json.arr(want.get("exits"))) histogram[(int) Json.lng(x)]++;
                    ids += Json.arr(want.get("exits")).size();
                }
                List<Object> hist = new ArrayList<>();
                for (long h : histogram) hist.add(h);
                assertEquals(e.getKey(), hist, row.get("exit_histogram"));
                assertEquals((double) ids / 6, Json.num(row.get("words")), 1e-12);
                Map<String, Object> latency = Json.obj(row.get("latency"));
                assertEquals(8L, latency.get("n"));
                assertEquals(1000.0 / Json.num(latency.get("p50_ms")), Json.num(row.get("captions_per_s")), 1e-9);
                Map<String, Object> stages = Json.obj(row.get("stages"));
                assertTrue(stages.keySet().toString(), stages.keySet().containsAll(Arrays.asList("preprocess", "encoder",
                        CaptionManifest.stepGraph(0, ratio))));
                assertTrue(!stages.containsKey("total") && !stages.containsKey(CaptionManifest.fillGraph(0)));
            }
            assertEquals(1.0, Json.num(Json.obj(policies.get(Controller.FULL)).get("speedup_p50")), 0);
            BenchmarkRunner.writeResult(o.result, result);
            assertTrue(Files.exists(tmp.resolve("r.json.done")));
        } finally {
            NegativeVectors.removeTree(tmp);
        }
    }

    /** The app's caption assets (scripts/make_android_queries.py --task caption) are the vectors' scenes and references. */
    @Test
    public void appAssetImagesAreTheScenesWithTheirReferences() throws Exception {
        Path dir = Golden.repo().resolve("android_demo/app/src/main/assets/bench/caption");
        BenchQueries doc = BenchQueries.parse(Files.readAllBytes(dir.resolve("queries.json")));
        assertEquals("caption", doc.task);
        assertTrue(doc.entries.size() >= 32);
        Map<String, Object> first = Json.obj(Json.arr(CaptionVectors.vectors().get("images")).get(0)); // scene 0 of the test split
        assertEquals(first.get("reference"), doc.entries.get(0).answer);
        Golden.Image scene = CaptionVectors.image(first);
        Golden.Image asset = Golden.png(dir.resolve(doc.entries.get(0).image));
        assertEquals(scene.sha256(), asset.sha256());
        for (BenchQueries.Entry e : doc.entries) {
            assertEquals("", e.text);
            assertTrue(e.answer, e.answer.endsWith(" ."));
            assertEquals(96, Golden.png(dir.resolve(e.image)).width);
        }
    }
}
