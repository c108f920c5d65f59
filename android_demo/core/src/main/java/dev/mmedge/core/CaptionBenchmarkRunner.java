package dev.mmedge.core;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * What BenchmarkActivity does for a captioning bundle, without Android (android_demo/BENCHMARK.md,
 * "Captioning bundles"): load the bundle with every check, one first caption, `warmup` captions,
 * then for each selected standard setting (full depth with every token, prefilter only, exits
 * only, both: mmedge/caption/bench.py settings) `runs` timed greedy captions cycling over the
 * test images. Per setting: latency per caption (preprocessing included, Caption.timingsMs
 * "total"), the time of each graph per caption, captions per second (1000 / median latency) and
 * measured throughput, and over the first pass through the images the per-word exit histogram,
 * mean exit, ids per caption and each caption with its reference.
 */
public final class CaptionBenchmarkRunner {
    /** Opens the caption engine the options ask for (the app: ONNX Runtime or ExecuTorch; tests: the replay runner). */
    public interface EngineLoader {
        CaptionEngine load(BenchmarkOptions options);
    }

    /** The test images, each with its reference caption as `answer` (the app reads assets/bench/caption/). */
    public interface ImageSource {
        List<BenchQueries.Query> images(CaptionManifest manifest);
    }

    private CaptionBenchmarkRunner() {
    }

    /**
     * The four settings (mmedge/caption/bench.py settings, named as Controller's standard policies):
     * full depth at the largest keep ratio, full depth at the calibrated keep ratio, the engine's
     * policy at the largest keep ratio, both.
     */
    public static Map<String, Controller.Setting> standardSettings(CaptionEngine engine) {
        double full = 0;
        for (double r : engine.manifest.keepRatios) full = Math.max(full, r);
        double calibrated = engine.manifest.thresholds.keepRatio;
        Map<String, Controller.Setting> out = new LinkedHashMap<>();
        out.put(Controller.FULL, new Controller.Setting(Policy.of("full"), full));
        out.put(Controller.PREFILTER, new Controller.Setting(Policy.of("full"), calibrated));
        out.put(Controller.EXITS, new Controller.Setting(engine.policy(), full));
        out.put(Controller.BOTH, new Controller.Setting(engine.policy(), calibrated));
        return out;
    }

    /** Runs the benchmark; `extra` entries (app version, affinity applied) are added to the result. */
    public static Map<String, Object> run(BenchmarkOptions o, EngineLoader loader, ImageSource source, MemoryProbe memory,
                                          Engine.Clock clock, Map<String, Object> extra) {
        double peakPss = Double.NaN;
        long t0 = clock.nanoTime();
        CaptionEngine engine = loader.load(o);
        try {
            double loadMs = (clock.nanoTime() - t0) / 1e6;
            CaptionManifest m = engine.manifest;
            List<BenchQueries.Query> images = source.images(m);
            if (images.isEmpty()) throw new ConfigException("no test images to caption", "benchmark queries");
            double firstMs = BenchmarkRunner.firstAndWarmUp(images, o.warmup, clock,
                    q -> engine.caption(q.argb, q.width, q.height, null));
            peakPss = BenchmarkRunner.max(peakPss, memory.pssMb());
            Map<String, Controller.Setting> settings = standardSettings(engine);
            Map<String, Object> rows = new LinkedHashMap<>();
            for (String name : o.policies) {
                rows.put(name, setting(engine, settings.get(name), images, o.runs, clock));
                peakPss = BenchmarkRunner.max(peakPss, memory.pssMb());
            }
            BenchmarkRunner.addSpeedups(rows);
            Map<String, Object> out = BenchmarkRunner.resultHead(engine.backend(), o, m.name, "caption", engine.artifact.kind(),
                    images.size());
            out.put("beam", 1L);
            out.put("kv", engine.kv());
            out.put("exits", (long) m.numStages());
            BenchmarkRunner.resultTail(out, loadMs, firstMs, memory, peakPss, m.raw().get("thresholds"), extra, rows);
            return out;
        } finally {
            engine.close();
        }
    }

    /** One setting's row: `runs` timed captions cycling over the images; exits and captions of the first pass. */
    private static Map<String, Object> setting(CaptionEngine engine, Controller.Setting s, List<BenchQueries.Query> images,
                                               int runs, Engine.Clock clock) {
        CaptionEngine.Request request = new CaptionEngine.Request();
        request.policy = s.policy;
        request.keepRatio = s.keepRatio;
        List<Double> totals = new ArrayList<>();
        Map<String, List<Double>> graphs = new LinkedHashMap<>();
        long[] histogram = new long[engine.numStages()];
        long ids = 0;
        double exitSum = 0;
        int firstPass = Math.min(runs, images.size());
        List<Object> captions = new ArrayList<>();
        long started = clock.nanoTime();
        for (int r = 0; r < runs; r++) {
            BenchQueries.Query q = images.get(r % images.size());
            Caption c = engine.caption(q.argb, q.width, q.height, request);
            BenchmarkRunner.collectTimings(c.timingsMs, totals, graphs);
            if (r < firstPass) {
                for (int e : c.exits) {
                    histogram[e]++;
                    exitSum += e;
                }
                ids += c.exits.length;
                Map<String, Object> caption = new LinkedHashMap<>();
                caption.put("image", q.name);
                caption.put("text", c.text);
                List<Object> exits = new ArrayList<>();
                for (int e : c.exits) exits.add((long) e);
                caption.put("exits", exits);
                caption.put("reference", q.answer == null ? Json.NULL : q.answer);
                captions.add(caption);
            }
        }
        double wallS = (clock.nanoTime() - started) / 1e9;
        Map<String, Object> row = new LinkedHashMap<>();
        row.put("exit_policy", s.policy.toJson());
        row.put("keep_ratio", s.keepRatio);
        Map<String, Object> latency = Stats.summarize(totals);
        row.put("latency", latency);
        row.put("stages", BenchmarkRunner.summarizeEach(graphs));
        double p50 = (Double) latency.get("p50_ms");
        row.put("captions_per_s", p50 > 0 ? 1000.0 / p50 : 0.0);
        row.put("throughput_captions_per_s", wallS > 0 ? totals.size() / wallS : 0.0);
        row.put("exit_histogram", BenchmarkRunner.histogramJson(histogram));
        row.put("mean_exit", ids > 0 ? exitSum / ids : 0.0);
        row.put("words", (double) ids / firstPass);
        row.put("captions", captions);
        return row;
    }
}
