package dev.mmedge.core;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.Map;

/**
 * The intent extras of android_demo/BENCHMARK.md, checked: mmedge.bundle, mmedge.result,
 * mmedge.backend (executorch | onnxruntime), mmedge.precision (fp32 | int8; int4 for a generative VLM
 * bundle, which the engine of any other kind refuses), mmedge.threads,
 * mmedge.runs, mmedge.warmup, mmedge.policies ("all" or a comma-separated list of the standard
 * policy names or full / prefilter / exits / both), mmedge.cpu_affinity (optional CPU list),
 * mmedge.queries (optional: a folder of test queries pushed by the host, instead of the app's own).
 */
public final class BenchmarkOptions {
    public static final String BUNDLE = "mmedge.bundle";
    public static final String RESULT = "mmedge.result";
    public static final String BACKEND = "mmedge.backend";
    public static final String PRECISION = "mmedge.precision";
    public static final String THREADS = "mmedge.threads";
    public static final String RUNS = "mmedge.runs";
    public static final String WARMUP = "mmedge.warmup";
    public static final String POLICIES = "mmedge.policies";
    public static final String CPU_AFFINITY = "mmedge.cpu_affinity";
    public static final String QUERIES = "mmedge.queries";
    public static final List<String> BACKENDS = Arrays.asList("executorch", "onnxruntime");
    private static final List<String> ALIASES = Arrays.asList("full", "prefilter", "exits", "both");
    private static final List<String> NAMES =
            Arrays.asList(Controller.FULL, Controller.PREFILTER, Controller.EXITS, Controller.BOTH);

    public final String bundle;
    public final String result;
    public final String backend;
    public final String precision;
    public final int threads;
    public final int runs;
    public final int warmup;
    /** Standard policy names to run, in the standard order. */
    public final List<String> policies;
    /** The CPU list as given, or null. */
    public final String cpuAffinity;
    public final List<Integer> cpus;
    /** The pushed query folder (an absolute path on the device), or null for the app's asset queries. */
    public final String queries;

    private BenchmarkOptions(Map<String, Object> extras, List<String> problems) {
        bundle = string(extras, BUNDLE, null, problems);
        result = string(extras, RESULT, null, problems);
        backend = string(extras, BACKEND, "executorch", problems);
        precision = string(extras, PRECISION, "fp32", problems);
        threads = integer(extras, THREADS, 1, 1, problems);
        runs = integer(extras, RUNS, 100, 1, problems);
        warmup = integer(extras, WARMUP, 10, 0, problems);
        String policyText = string(extras, POLICIES, "all", problems);
        cpuAffinity = extras.get(CPU_AFFINITY) == null ? null : String.valueOf(extras.get(CPU_AFFINITY));
        if (bundle != null && !bundle.startsWith("/")) problems.add(BUNDLE + " must be an absolute path on the device, got '" + bundle + "'");
        if (result != null && !result.startsWith("/")) problems.add(RESULT + " must be an absolute path on the device, got '" + result + "'");
        queries = string(extras, QUERIES, null, problems);
        if (queries != null && !queries.startsWith("/")) problems.add(QUERIES + " must be an absolute path on the device, got '" + queries + "'");
        if (backend != null && !BACKENDS.contains(backend)) problems.add(BACKEND + " '" + backend + "' unknown; choose one of " + BACKENDS);
        if (precision != null && !Arrays.asList("fp32", "int8", "int4").contains(precision)) {
            problems.add(PRECISION + " '" + precision + "' unknown; choose fp32, int8 or int4 (generative VLM bundles)");
        }
        List<String> chosen = new ArrayList<>();
        if (policyText != null) {
            if (policyText.trim().equals("all")) {
                chosen.addAll(NAMES);
            } else {
                for (String part : policyText.split(",")) {
                    String p = part.trim();
                    int alias = ALIASES.indexOf(p);
                    String name = alias >= 0 ? NAMES.get(alias) : p;
                    if (!NAMES.contains(name)) {
                        problems.add(POLICIES + " '" + p + "' unknown; give all, or some of " + ALIASES + " or " + NAMES);
                    } else if (!chosen.contains(name)) {
                        chosen.add(name);
                    }
                }
            }
        }
        List<String> ordered = new ArrayList<>();
        for (String name : NAMES) if (chosen.contains(name)) ordered.add(name);
        policies = Collections.unmodifiableList(ordered);
        List<Integer> parsed = null;
        if (cpuAffinity != null) {
            try {
                parsed = CpuList.parse(cpuAffinity);
            } catch (ConfigException exc) {
                problems.addAll(exc.problems());
            }
        }
        cpus = parsed;
    }

    /** The options of a map of extras (String values for --es, Integer for --ei); ConfigException lists every problem. */
    public static BenchmarkOptions fromExtras(Map<String, Object> extras) {
        List<String> problems = new ArrayList<>();
        BenchmarkOptions o = new BenchmarkOptions(extras, problems);
        if (o.bundle == null) problems.add(BUNDLE + " (the bundle directory on the device) is required");
        if (o.result == null) problems.add(RESULT + " (where to write the result JSON) is required");
        if (!problems.isEmpty()) throw new ConfigException(problems, "benchmark extras");
        return o;
    }

    private static String string(Map<String, Object> extras, String key, String fallback, List<String> problems) {
        Object v = extras.get(key);
        if (v == null) return fallback;
        if (!(v instanceof String)) {
            problems.add(key + " must be a string extra (--es), got " + v.getClass().getSimpleName());
            return fallback;
        }
        return (String) v;
    }

    private static int integer(Map<String, Object> extras, String key, int fallback, int min, List<String> problems) {
        Object v = extras.get(key);
        if (v == null) return fallback;
        int value;
        if (v instanceof Integer || v instanceof Long) {
            value = ((Number) v).intValue();
        } else if (v instanceof String && ((String) v).matches("\\d{1,9}")) {
            value = Integer.parseInt((String) v);
        } else {
            problems.add(key + " must be an integer extra (--ei), got '" + v + "'");
            return fallback;
        }
        if (value < min) problems.add(key + " " + value + " must be at least " + min);
        return value;
    }

    /** Sets an engine's load options to the benchmark's precision and threads; returns them. */
    public <T extends EngineOptions> T applyTo(T options) {
        options.precision = precision;
        options.threads = threads;
        return options;
    }
}
