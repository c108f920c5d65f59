package dev.mmedge.core;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.Consumer;

/**
 * What BenchmarkActivity does, without Android (android_demo/BENCHMARK.md): load the bundle
 * (every check and the SHA-256 of every file), one first inference, `warmup` queries, then for each
 * selected standard policy `runs` timed queries cycling over the test queries; the result JSON has
 * the fields of the host bench (mmedge/bench/bench.schema.json; the host adds kind, device, serial,
 * cooldown and affinity). Per policy: latency of the whole query (preprocessing included, as
 * Engine.predict's "total"), per-stage times (preprocess and each stage run), throughput,
 * and, over the first pass through the queries, accuracy, exit histogram, mean exit and kept tokens.
 * A query holds as many images as the bundle reads (a two-image NLVR2 bundle: left, right).
 */
public final class BenchmarkRunner {
    /** Opens the engine the options ask for (the app: ONNX Runtime or ExecuTorch; tests: a replay runner). */
    public interface EngineLoader {
        Engine load(BenchmarkOptions options);
    }

    /** The test queries for the loaded bundle (the app reads its assets for the bundle's task). */
    public interface QuerySource {
        List<BenchQueries.Query> queries(Manifest manifest);
    }

    /**
     * The most queries whose answer is not a label (counted wrong, as the host bench counts them) before
     * the queries are refused as another task's (mmedge.bench.queries.MAX_OUT_OF_VOCABULARY).
     */
    static final double MAX_OUT_OF_VOCABULARY = 0.5;

    private BenchmarkRunner() {
    }

    /** Runs the benchmark; `extra` entries (app version, affinity applied) are added to the result. */
    public static Map<String, Object> run(BenchmarkOptions o, EngineLoader loader, QuerySource source,
                                          MemoryProbe memory, Engine.Clock clock, Map<String, Object> extra) {
        double peakPss = Double.NaN;
        long t0 = clock.nanoTime();
        Engine engine = loader.load(o);
        try {
            double loadMs = (clock.nanoTime() - t0) / 1e6;
            Manifest m = engine.manifest;
            List<BenchQueries.Query> queries = source.queries(m);
            if (queries.isEmpty()) throw new ConfigException("no test queries to run", "benchmark queries");
            for (BenchQueries.Query q : queries) {
                if (q.images.size() != engine.numImages) {
                    throw new ConfigException("query " + q.name + " has " + q.images.size() + " image(s); " + m.name + " reads "
                            + engine.numImages + " per query: these queries are for another bundle", "benchmark queries");
                }
                if (q.answer == null) {
                    throw new ConfigException("query " + q.name + " has no answer; accuracy needs every answer", "benchmark queries");
                }
            }
            List<BenchQueries.Query> outside = new ArrayList<>();
            for (BenchQueries.Query q : queries) if (!m.labels.contains(q.answer)) outside.add(q);
            if (outside.size() > MAX_OUT_OF_VOCABULARY * queries.size()) {
                BenchQueries.Query q = outside.get(0);
                throw new ConfigException(outside.size() + " of " + queries.size() + " queries answer outside the labels of "
                        + m.name + " (task " + m.task + "), e.g. query " + q.name + " answers '" + q.answer
                        + "': these queries are for another task", "benchmark queries");
            }
            double firstMs = firstAndWarmUp(queries, o.warmup, clock,
                    q -> engine.predict(q.images, q.text, null, null));
            peakPss = max(peakPss, memory.pssMb());
            Map<String, Controller.Setting> settings = Controller.standardPolicies(m);
            Map<String, Object> policies = new LinkedHashMap<>();
            int exits = m.exitLayers.size();
            for (String name : o.policies) {
                Controller.Setting s = settings.get(name);
                List<Double> totals = new ArrayList<>();
                Map<String, List<Double>> stages = new LinkedHashMap<>();
                long[] histogram = new long[exits];
                double exitSum = 0;
                double keptSum = 0;
                int correct = 0;
                int judged = 0;
                int firstPass = Math.min(o.runs, queries.size());
                long started = clock.nanoTime();
                for (int r = 0; r < o.runs; r++) {
                    BenchQueries.Query q = queries.get(r % queries.size());
                    Engine.Prediction p = engine.predict(q.images, q.text, s.policy, s.keepRatio);
                    collectTimings(p.timingsMs, totals, stages);
                    if (r < firstPass) {
                        histogram[p.exitIndex]++;
                        exitSum += p.exitIndex;
                        keptSum += p.keptVisualTokens.length;
                        judged++;
                        if (q.answer.equals(p.answer)) correct++;
                    }
                }
                double wallS = (clock.nanoTime() - started) / 1e9;
                peakPss = max(peakPss, memory.pssMb());
                Map<String, Object> row = new LinkedHashMap<>();
                row.put("exit_policy", s.policy.toJson());
                row.put("keep_ratio", s.keepRatio);
                row.put("latency", Stats.summarize(totals));
                row.put("stages", summarizeEach(stages));
                row.put("throughput_qps", wallS > 0 ? totals.size() / wallS : 0.0);
                row.put("accuracy", (double) correct / judged);
                row.put("exit_histogram", histogramJson(histogram));
                row.put("mean_exit", exitSum / firstPass);
                row.put("kept_tokens", keptSum / firstPass);
                policies.put(name, row);
            }
            addSpeedups(policies);
            Map<String, Object> out = resultHead(engine.backend(), o, m.name, m.task, engine.artifact.kind(), queries.size());
            resultTail(out, loadMs, firstMs, memory, peakPss, m.raw().get("thresholds"), extra, policies);
            return out;
        } finally {
            engine.close();
        }
    }

    /** The larger of two measurements, NaN standing for none. */
    static double max(double a, double b) {
        if (Double.isNaN(a)) return b;
        if (Double.isNaN(b)) return a;
        return Math.max(a, b);
    }

    // ------------------------------------------------------------------ shared with CaptionBenchmarkRunner
    /** Runs the first query (timed: the first-inference time in ms, returned), then `warmup` queries cycling over them. */
    static double firstAndWarmUp(List<BenchQueries.Query> queries, int warmup, Engine.Clock clock, Consumer<BenchQueries.Query> run) {
        long t0 = clock.nanoTime();
        run.accept(queries.get(0));
        double firstMs = (clock.nanoTime() - t0) / 1e6;
        for (int i = 0; i < warmup; i++) run.accept(queries.get(i % queries.size()));
        return firstMs;
    }

    /** One query's timings: "total" to `totals`, each other entry (preprocess, a stage or graph) to its list in `parts`. */
    static void collectTimings(Map<String, Double> timings, List<Double> totals, Map<String, List<Double>> parts) {
        totals.add(timings.get("total"));
        for (Map.Entry<String, Double> t : timings.entrySet()) {
            if (t.getKey().equals("total")) continue;
            List<Double> list = parts.get(t.getKey());
            if (list == null) parts.put(t.getKey(), list = new ArrayList<>());
            list.add(t.getValue());
        }
    }

    /** Stats.summarize of each list, by name. */
    static Map<String, Object> summarizeEach(Map<String, List<Double>> lists) {
        Map<String, Object> out = new LinkedHashMap<>();
        for (Map.Entry<String, List<Double>> e : lists.entrySet()) out.put(e.getKey(), Stats.summarize(e.getValue()));
        return out;
    }

    /** An exit histogram as a JSON list. */
    static List<Object> histogramJson(long[] histogram) {
        List<Object> out = new ArrayList<>();
        for (long h : histogram) out.add(h);
        return out;
    }

    /** Each row's speedup_p50: the full-depth row's median latency over its own (when a full row was run). */
    static void addSpeedups(Map<String, Object> rows) {
        Object full = rows.get(Controller.FULL);
        if (full == null) return;
        double fullP50 = (Double) Json.obj(Json.obj(full).get("latency")).get("p50_ms");
        for (Object row : rows.values()) {
            double p50 = (Double) Json.obj(Json.obj(row).get("latency")).get("p50_ms");
            Json.obj(row).put("speedup_p50", p50 > 0 ? fullP50 / p50 : 0.0);
        }
    }

    /** The result's first fields: schema_version, backend, precision, threads, model, task, bundle, artifact, samples, runs, warmup. */
    static Map<String, Object> resultHead(String backend, BenchmarkOptions o, String model, String task, String artifact, int samples) {
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("schema_version", 1L);
        out.put("backend", backend);
        out.put("precision", o.precision);
        out.put("threads", (long) o.threads);
        out.put("model", model);
        out.put("task", task);
        out.put("bundle", o.bundle);
        out.put("artifact", artifact);
        out.put("samples", (long) samples);
        out.put("runs", (long) o.runs);
        out.put("warmup", (long) o.warmup);
        return out;
    }

    /** The result's last fields: load and first-inference times, memory, the manifest's thresholds, `extra`, the rows. */
    static void resultTail(Map<String, Object> out, double loadMs, double firstMs, MemoryProbe memory, double peakPss,
                           Object thresholds, Map<String, Object> extra, Map<String, Object> rows) {
        out.put("load_ms", loadMs);
        out.put("first_inference_ms", firstMs);
        double rss = memory.peakRssMb();
        out.put("peak_rss_mb", Double.isNaN(rss) ? 0.0 : rss);
        out.put("peak_pss_mb", Double.isNaN(peakPss) ? Json.NULL : peakPss);
        out.put("thresholds", thresholds);
        if (extra != null) out.putAll(extra);
        out.put("policies", rows);
    }

    /** Writes the result JSON (through a temporary file and a rename), then the empty `.done` file. */
    public static void writeResult(String resultPath, Map<String, Object> result) throws IOException {
        Path path = Paths.get(resultPath);
        Path tmp = path.resolveSibling("." + path.getFileName() + ".tmp");
        Files.write(tmp, Json.write(result, 1).getBytes(StandardCharsets.UTF_8));
        Files.move(tmp, path, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
        Files.write(Paths.get(resultPath + ".done"), new byte[0]);
    }

    /** On failure: {"error": "<message>"} and the `.done` file, as BENCHMARK.md says. */
    public static void writeError(String resultPath, Throwable error) throws IOException {
        Map<String, Object> out = new LinkedHashMap<>();
        String message = error.getMessage() == null ? error.toString() : error.getMessage();
        out.put("error", error.getClass().getSimpleName() + ": " + BundleLoader.shortText(message, 2000));
        writeResult(resultPath, out);
    }
}
