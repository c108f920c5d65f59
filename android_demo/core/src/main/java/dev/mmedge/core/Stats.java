package dev.mmedge.core;

import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/** Latency statistics as mmedge.bench.stats.summarize (numpy's linear percentiles, std with ddof 1). */
public final class Stats {
    private Stats() {
    }

    /** n, mean_ms, std_ms, min_ms, p50_ms, p90_ms, p99_ms, max_ms of a list of milliseconds. */
    public static Map<String, Object> summarize(List<Double> ms) {
        if (ms.isEmpty()) throw new IllegalArgumentException("no measurements to summarize");
        double[] a = new double[ms.size()];
        for (int i = 0; i < a.length; i++) a[i] = ms.get(i);
        Arrays.sort(a);
        double sum = 0;
        for (double v : a) sum += v;
        double mean = sum / a.length;
        double sq = 0;
        for (double v : a) sq += (v - mean) * (v - mean);
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("n", (long) a.length);
        out.put("mean_ms", mean);
        out.put("std_ms", a.length > 1 ? Math.sqrt(sq / (a.length - 1)) : 0.0);
        out.put("min_ms", a[0]);
        out.put("p50_ms", percentile(a, 50));
        out.put("p90_ms", percentile(a, 90));
        out.put("p99_ms", percentile(a, 99));
        out.put("max_ms", a[a.length - 1]);
        return out;
    }

    /** numpy.percentile(method="linear") of sorted values, with numpy's two-sided interpolation. */
    public static double percentile(double[] sorted, double q) {
        double index = q / 100.0 * (sorted.length - 1);
        int lo = (int) Math.floor(index);
        int hi = Math.min(lo + 1, sorted.length - 1);
        double t = index - lo;
        double a = sorted[lo];
        double b = sorted[hi];
        double diff = b - a;
        return t >= 0.5 ? b - diff * (1 - t) : a + diff * t;
    }
}
