package dev.mmedge.core;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * An exit policy, as mmedge.runtime.controller.Policy: kind, threshold (confidence /
 * max_probability, and latency_budget's optional confidence threshold), patience, budget in ms.
 * Defaults as in Python: confidence 0.9, patience 2, budget 0.
 */
public final class Policy {
    public static final List<String> KINDS =
            Arrays.asList("confidence", "max_probability", "patience", "latency_budget", "full");

    public final String kind;
    public final double threshold;
    public final int patience;
    public final double budgetMs;

    /** A checked policy; ConfigException lists every problem. */
    public Policy(String kind, double threshold, int patience, double budgetMs) {
        List<String> problems = new ArrayList<>();
        if (kind == null || !KINDS.contains(kind)) {
            problems.add("policy '" + kind + "' unknown; choose one of " + KINDS);
        }
        if (Double.isNaN(threshold) || Double.isInfinite(threshold)) {
            problems.add("threshold " + threshold + " must be a finite number in [0, 1], e.g. 0.9");
        } else if (threshold < 0 || threshold > 1.0001) {
            problems.add("threshold " + threshold + " must be in [0, 1]");
        }
        if (patience < 1) problems.add("patience " + patience + " must be at least 1");
        if (Double.isNaN(budgetMs) || Double.isInfinite(budgetMs)) {
            problems.add("budget_ms " + budgetMs + " must be a finite number of milliseconds, e.g. 5.0");
        } else if ("latency_budget".equals(kind) && budgetMs <= 0) {
            problems.add("latency_budget needs budget_ms > 0");
        }
        if (!problems.isEmpty()) throw new ConfigException(problems, "exit policy");
        this.kind = kind;
        this.threshold = threshold;
        this.patience = patience;
        this.budgetMs = budgetMs;
    }

    public static Policy of(String kind) {
        return new Policy(kind, 0.9, 2, 0.0);
    }

    public static Policy confidence(double threshold) {
        return new Policy("confidence", threshold, 2, 0.0);
    }

    /**
     * A policy from its JSON form ({"kind", "threshold"?, "patience"?, "budget_ms"?}, as
     * Policy.to_dict writes it and the test vectors hold); a patience that is not a whole number is refused.
     */
    public static Policy fromJson(Map<String, Object> m) {
        Object kind = m.get("kind");
        Object threshold = m.containsKey("threshold") ? m.get("threshold") : 0.9;
        Object patience = m.containsKey("patience") ? m.get("patience") : 2L;
        Object budget = m.containsKey("budget_ms") ? m.get("budget_ms") : 0.0;
        List<String> problems = new ArrayList<>();
        if (!(kind instanceof String)) problems.add("policy kind must be a string, one of " + KINDS);
        if (!Json.isNumber(threshold)) problems.add("threshold must be a number in [0, 1], e.g. 0.9");
        if (!(patience instanceof Long)) problems.add("patience must be a whole number (int), e.g. 2");
        if (!Json.isNumber(budget)) problems.add("budget_ms must be a number of milliseconds, e.g. 5.0");
        if (!problems.isEmpty()) throw new ConfigException(problems, "exit policy");
        long p = (Long) patience;
        return new Policy((String) kind, Json.num(threshold), (int) Math.max(Math.min(p, Integer.MAX_VALUE), Integer.MIN_VALUE),
                Json.num(budget));
    }

    /** As Python's Policy.to_dict. */
    public Map<String, Object> toJson() {
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("kind", kind);
        out.put("threshold", threshold);
        out.put("patience", (long) patience);
        out.put("budget_ms", budgetMs);
        return out;
    }

    /**
     * The policy a manifest's thresholds describe (a latency_budget there falls back to
     * confidence, since a budget is the app's).
     */
    public static Policy fromThresholds(Manifest.Thresholds th) {
        String kind = "latency_budget".equals(th.policy) ? "confidence" : th.policy;
        double threshold = "max_probability".equals(kind) ? th.maxProbability : th.confidence;
        return new Policy(kind, threshold, th.patience, 0.0);
    }

    @Override
    public boolean equals(Object o) {
        if (!(o instanceof Policy)) return false;
        Policy p = (Policy) o;
        return kind.equals(p.kind) && threshold == p.threshold && patience == p.patience && budgetMs == p.budgetMs;
    }

    @Override
    public int hashCode() {
        return kind.hashCode() * 31 + Double.valueOf(threshold).hashCode() + patience;
    }

    @Override
    public String toString() {
        return Json.write(toJson());
    }
}
