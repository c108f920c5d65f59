package dev.mmedge.core;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * What BenchmarkActivity does for a generative VLM bundle (kind "vlm"), without Android
 * (android_demo/BENCHMARK.md, "Generative VLM bundles"), as the host's bench measures it
 * (mmedge/adapt/vlm_bench.py bench_generation): load the bundle with every check, one first
 * generation (the bundle's defaults for the first prompt's task), then `warmup` prompts under every
 * selected setting, then `runs` timed generations per setting over the prompts the host pushed, the
 * settings interleaved prompt by prompt and pass by pass (who goes first rotates), so that the phone's
 * noise falls on all of them alike. The settings: full depth at the largest keep ratio, full depth at
 * the calibrated keep ratio, the bundle's exit policy at the largest keep ratio, both (greedy, the
 * bundle's kv and max_new_tokens); the calibrated policy and keep ratio are the bundle's for each
 * prompt's task ({@link VLMEngine#settings(String)}: thresholds.tasks where the bundle holds the task,
 * else its top-level thresholds), so each prompt runs under its task's setting. Per setting: time to
 * first token, ms per decoded token ((decode - first token) / (ids - 1), generations of more than one
 * id) and ms per generation (preprocessing excluded, the engine's "decode"), each as median, p10 and
 * p90, over every prompt and (by_task) over each task's prompts alone, with that task's policy and
 * keep ratio; the time of each graph per generation; and over the first pass through the prompts the
 * exit histogram of the decoded ids (the first id comes from the prefill and is left out, as on the
 * host), their mean exit, ids per generation and each generation with its prompt's task and
 * reference, which the host scores (CIDEr, accuracy). A setting's own exit_policy and keep_ratio are
 * null where its tasks' differ.
 */
public final class VLMBenchmarkRunner {
    /** Opens the VLM engine the options ask for (the app: ONNX Runtime or ExecuTorch; tests: the replay runner). */
    public interface EngineLoader {
        VLMEngine load(BenchmarkOptions options);
    }

    /** The prompts: each query's image, its prompt text, its reference as `answer` and its task (the host's pushed folder). */
    public interface PromptSource {
        List<BenchQueries.Query> prompts(VLMManifest manifest);
    }

    /** The prompt tasks the host scores: captions (CIDEr) and short answers (exact match); those of thresholds.tasks. */
    public static final List<String> TASKS = VLMManifest.TASKS;

    private VLMBenchmarkRunner() {
    }

    /**
     * The four settings for a prompt of any task (named as Controller's standard policies) from the
     * top-level thresholds: full depth at the largest keep ratio, full depth at the calibrated keep
     * ratio, the bundle's policy at the largest keep ratio, both. The benchmark runs {@link #settingsByTask}.
     */
    public static Map<String, Controller.Setting> standardSettings(VLMManifest m) {
        double full = 0;
        for (double r : m.keepRatios) full = Math.max(full, r);
        Policy policy = VLMEngine.policyFromThresholds(m.thresholds);
        Map<String, Controller.Setting> out = new LinkedHashMap<>();
        out.put(Controller.FULL, new Controller.Setting(Policy.of("full"), full));
        out.put(Controller.PREFILTER, new Controller.Setting(Policy.of("full"), m.thresholds.keepRatio));
        out.put(Controller.EXITS, new Controller.Setting(policy, full));
        out.put(Controller.BOTH, new Controller.Setting(policy, m.thresholds.keepRatio));
        return out;
    }

    /**
     * The four settings, each per task (mmedge/adapt/vlm_bench.py settings): full depth at the largest keep
     * ratio, full depth at the task's calibrated keep ratio, the task's policy at the largest keep ratio,
     * both; the task's policy and keep ratio are the engine's for it ({@link VLMEngine#settings(String)}).
     */
    public static Map<String, Map<String, Controller.Setting>> settingsByTask(VLMEngine engine) {
        double full = 0;
        for (double r : engine.manifest.keepRatios) full = Math.max(full, r);
        Map<String, Map<String, Controller.Setting>> out = new LinkedHashMap<>();
        for (String name : Arrays.asList(Controller.FULL, Controller.PREFILTER, Controller.EXITS, Controller.BOTH)) {
            out.put(name, new LinkedHashMap<>());
        }
        for (String task : TASKS) {
            Controller.Setting s = engine.settings(task);
            out.get(Controller.FULL).put(task, new Controller.Setting(Policy.of("full"), full));
            out.get(Controller.PREFILTER).put(task, new Controller.Setting(Policy.of("full"), s.keepRatio));
            out.get(Controller.EXITS).put(task, new Controller.Setting(s.policy, full));
            out.get(Controller.BOTH).put(task, new Controller.Setting(s.policy, s.keepRatio));
        }
        return out;
    }

    /** A request for a prompt of `task` under `s` (null: the engine's defaults for the task). */
    private static VLMEngine.Request request(String task, Controller.Setting s) {
        VLMEngine.Request request = new VLMEngine.Request();
        request.task = task;
        if (s != null) {
            request.policy = s.policy;
            request.keepRatio = s.keepRatio;
        }
        return request;
    }

    /** Runs the benchmark; `extra` entries (app version, affinity applied) are added to the result. */
    public static Map<String, Object> run(BenchmarkOptions o, EngineLoader loader, PromptSource source, MemoryProbe memory,
                                          Engine.Clock clock, Map<String, Object> extra) {
        double peakPss = Double.NaN;
        long t0 = clock.nanoTime();
        VLMEngine engine = loader.load(o);
        try {
            double loadMs = (clock.nanoTime() - t0) / 1e6;
            VLMManifest m = engine.manifest;
            List<BenchQueries.Query> prompts = source.prompts(m);
            checkPrompts(prompts);
            double firstMs = BenchmarkRunner.firstAndWarmUp(prompts, 0, clock,
                    q -> engine.generate(q.argb, q.width, q.height, q.text, request(q.task, null)));
            Map<String, Map<String, Controller.Setting>> all = settingsByTask(engine);
            List<String> names = new ArrayList<>(o.policies);
            Map<String, Map<String, VLMEngine.Request>> requests = new LinkedHashMap<>();
            for (String name : names) {
                Map<String, VLMEngine.Request> byTask = new LinkedHashMap<>();
                for (Map.Entry<String, Controller.Setting> e : all.get(name).entrySet()) {
                    byTask.put(e.getKey(), request(e.getKey(), e.getValue()));
                }
                requests.put(name, byTask);
            }
            for (int i = 0; i < o.warmup; i++) {
                BenchQueries.Query q = prompts.get(i % prompts.size());
                for (String name : names) engine.generate(q.argb, q.width, q.height, q.text, requests.get(name).get(q.task));
            }
            peakPss = BenchmarkRunner.max(peakPss, memory.pssMb());
            Map<String, Row> rows = new LinkedHashMap<>();
            for (String name : names) rows.put(name, new Row(engine.numStages()));
            int n = prompts.size();
            for (int r = 0; r < o.runs; r++) {
                int i = r % n;
                for (String name : order(names, r, n)) {
                    BenchQueries.Query q = prompts.get(i);
                    Generation g = engine.generate(q.argb, q.width, q.height, q.text, requests.get(name).get(q.task));
                    rows.get(name).add(g, q, r < n);
                }
            }
            peakPss = BenchmarkRunner.max(peakPss, memory.pssMb());
            Map<String, Object> out = BenchmarkRunner.resultHead(engine.backend(), o, m.name, VLMManifest.KIND,
                    engine.artifact.kind(), n);
            out.put("beam", 1L);
            out.put("kv", engine.kv());
            out.put("max_new_tokens", (long) m.maxNewTokens);
            out.put("exits", (long) m.numStages());
            List<Object> exitAfter = new ArrayList<>();
            for (List<Integer> layers : m.stageLayers) exitAfter.add((long) (layers.get(layers.size() - 1) + 1));
            out.put("exit_after_layer", exitAfter);
            Map<String, Object> json = new LinkedHashMap<>();
            for (String name : names) json.put(name, rows.get(name).toJson(all.get(name)));
            BenchmarkRunner.resultTail(out, loadMs, firstMs, memory, peakPss, m.raw().get("thresholds"), extra, json);
            return out;
        } finally {
            engine.close();
        }
    }

    /**
     * The prompts of the folder the host pushed (mmedge.queries), decoded by `reader` (the app ships no
     * prompts for generative VLM bundles); ConfigException without one.
     */
    public static List<BenchQueries.Query> pushedPrompts(BenchmarkOptions o, BenchQueries.ImageReader reader) {
        if (o.queries == null) {
            throw new ConfigException("a generative VLM bundle runs on the prompts `mmedge bench --device` pushes; give "
                    + BenchmarkOptions.QUERIES + " (the app ships none)", "benchmark queries");
        }
        return BenchQueries.readFolder(java.nio.file.Paths.get(o.queries), reader);
    }

    /**
     * The settings' order for timed generation `r` (prompt r % n of pass r / n): rotated by (prompt + pass),
     * as the host bench rotates who goes first.
     */
    static List<String> order(List<String> names, int r, int n) {
        int shift = (r % n + r / n) % names.size();
        List<String> out = new ArrayList<>(names.subList(shift, names.size()));
        out.addAll(names.subList(0, shift));
        return out;
    }

    /** Every prompt needs a text, a reference and a task the host can score; ConfigException lists what is wrong. */
    static void checkPrompts(List<BenchQueries.Query> prompts) {
        if (prompts.isEmpty()) {
            throw new ConfigException("no prompts to generate from: a generative VLM bundle runs on the prompts the host "
                    + "pushes (mmedge.queries)", "benchmark queries");
        }
        List<String> problems = new ArrayList<>();
        for (BenchQueries.Query q : prompts) {
            if (q.images.size() != 1) problems.add("prompt " + q.name + " has " + q.images.size() + " images; a generative VLM reads one");
            if (q.text == null || HFTokenizer.pyStrip(q.text).isEmpty()) problems.add("prompt " + q.name + " has no text");
            if (q.answer == null) problems.add("prompt " + q.name + " has no reference (\"answer\")");
            if (!TASKS.contains(q.task)) problems.add("prompt " + q.name + " has task " + q.task + ", not one of " + TASKS);
            if (problems.size() >= 5) break;
        }
        if (!problems.isEmpty()) throw new ConfigException(problems, "benchmark queries");
    }

    /** Times to first token, per decoded token and per generation. */
    private static final class Timings {
        final List<Double> first = new ArrayList<>();
        final List<Double> perToken = new ArrayList<>();
        final List<Double> total = new ArrayList<>();

        void add(Generation g) {
            double decodeMs = g.timingsMs.get("decode");
            first.add(g.firstTokenMs);
            total.add(decodeMs);
            if (g.tokens.length > 1) perToken.add((decodeMs - g.firstTokenMs) / (g.tokens.length - 1));
        }

        /** Their spreads into `row`: first_token_ms, ms_per_token (null without a generation of two ids or more), total_ms. */
        void into(Map<String, Object> row) {
            row.put("first_token_ms", spread(first));
            row.put("ms_per_token", perToken.isEmpty() ? Json.NULL : spread(perToken));
            row.put("total_ms", spread(total));
        }
    }

    /** One setting's measurements. */
    private static final class Row {
        final Timings all = new Timings();
        /** Each task's prompts alone. */
        final Map<String, Timings> byTask = new LinkedHashMap<>();
        final List<Double> ignored = new ArrayList<>();
        final Map<String, List<Double>> graphs = new LinkedHashMap<>();
        final long[] histogram;
        long decoded;
        double exitSum;
        long ids;
        long kept;
        final List<Object> generations = new ArrayList<>();

        Row(int stages) {
            histogram = new long[stages];
        }

        void add(Generation g, BenchQueries.Query q, boolean firstPass) {
            all.add(g);
            Timings mine = byTask.get(q.task);
            if (mine == null) byTask.put(q.task, mine = new Timings());
            mine.add(g);
            BenchmarkRunner.collectTimings(g.timingsMs, ignored, graphs);
            if (!firstPass) return;
            for (int j = 1; j < g.exits.length; j++) {
                histogram[g.exits[j]]++;
                exitSum += g.exits[j];
                decoded++;
            }
            ids += g.tokens.length;
            kept += g.keptVisualTokens;
            Map<String, Object> out = new LinkedHashMap<>();
            out.put("image", q.name);
            out.put("task", q.task);
            out.put("prompt", q.text);
            out.put("text", g.text);
            List<Object> tokens = new ArrayList<>();
            for (int t : g.tokens) tokens.add((long) t);
            out.put("tokens", tokens);
            List<Object> exits = new ArrayList<>();
            for (int e : g.exits) exits.add((long) e);
            out.put("exits", exits);
            out.put("reference", q.answer);
            generations.add(out);
        }

        /** The row of a setting whose policy and keep ratio per task are `settings`. */
        Map<String, Object> toJson(Map<String, Controller.Setting> settings) {
            Map<String, Object> tasks = new LinkedHashMap<>();
            Controller.Setting one = null;
            boolean same = true;
            for (String task : TASKS) { // the tasks of the prompts, in TASKS order
                Timings t = byTask.get(task);
                if (t == null) continue;
                Controller.Setting s = settings.get(task);
                if (one == null) {
                    one = s;
                } else {
                    same &= one.policy.equals(s.policy) && one.keepRatio == s.keepRatio;
                }
                Map<String, Object> entry = new LinkedHashMap<>();
                entry.put("keep_ratio", s.keepRatio);
                entry.put("exit_policy", s.policy.toJson());
                t.into(entry);
                tasks.put(task, entry);
            }
            Map<String, Object> row = new LinkedHashMap<>();
            row.put("exit_policy", same && one != null ? one.policy.toJson() : Json.NULL);
            row.put("keep_ratio", same && one != null ? (Object) one.keepRatio : Json.NULL);
            all.into(row);
            graphs.remove("decode"); // total_ms
            row.put("stages", BenchmarkRunner.summarizeEach(graphs));
            row.put("exit_histogram", BenchmarkRunner.histogramJson(histogram));
            row.put("mean_exit", decoded > 0 ? exitSum / decoded : Json.NULL);
            row.put("tokens", (double) ids / generations.size());
            row.put("kept_visual_tokens", (double) kept / generations.size());
            row.put("by_task", tasks);
            row.put("generations", generations);
            return row;
        }
    }

    /** The host bench's spread of milliseconds (vlm_bench._spread: numpy's linear percentiles) with the count. */
    static Map<String, Object> spread(List<Double> ms) {
        double[] a = new double[ms.size()];
        for (int i = 0; i < a.length; i++) a[i] = ms.get(i);
        Arrays.sort(a);
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("n", (long) a.length);
        out.put("p10", Stats.percentile(a, 10));
        out.put("p50", Stats.percentile(a, 50));
        out.put("p90", Stats.percentile(a, 90));
        return out;
    }
}
