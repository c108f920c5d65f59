package dev.mmedge.core;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The adaptive-exit controller (mmedge.runtime.controller; docs/bundle-format.md "The
 * controller"): after each stage, stop or go on. The last exit always stops; comparisons are >= on
 * float32 outputs promoted to double. tests/vectors/controller.json pins the decisions.
 */
public final class Controller {
    private Controller() {
    }

    /** What the controller has seen so far for one query. */
    public static final class State {
        public final List<Integer> answers = new ArrayList<>();
        public final List<Double> confidences = new ArrayList<>();
        public final List<Double> maxProbabilities = new ArrayList<>();
        public double elapsedMs;

        public void add(int answer, double confidence, double maxProbability) {
            answers.add(answer);
            confidences.add(confidence);
            maxProbabilities.add(maxProbability);
        }
    }

    /** Largest softmax probability, in double precision: 1 / sum_j exp(z_j - max z). */
    public static double softmaxMax(float[] logits) {
        double top = Double.NEGATIVE_INFINITY;
        for (float z : logits) top = Math.max(top, z);
        double sum = 0;
        for (float z : logits) sum += Math.exp((double) z - top);
        return 1.0 / sum;
    }

    /** Index of the first maximum. */
    public static int argmax(float[] values) {
        int best = 0;
        for (int i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
        return best;
    }

    /** After the exit just run (index answers.size() - 1): stop here? nextStageMs may be null (unknown). */
    public static boolean shouldStop(Policy policy, State state, int numStages, Double nextStageMs) {
        int i = state.answers.size() - 1;
        if (i >= numStages - 1) return true;
        switch (policy.kind) {
            case "full":
                return false;
            case "confidence":
                return state.confidences.get(i) >= policy.threshold;
            case "max_probability":
                return state.maxProbabilities.get(i) >= policy.threshold;
            case "patience": {
                int n = state.answers.size();
                if (n < policy.patience) return false;
                int last = state.answers.get(n - 1);
                for (int j = n - policy.patience; j < n; j++) if (state.answers.get(j) != last) return false;
                return true;
            }
            case "latency_budget":
                if (policy.threshold > 0 && state.confidences.get(i) >= policy.threshold) return true;
                return nextStageMs != null && state.elapsedMs + nextStageMs > policy.budgetMs;
            default:
                throw new IllegalStateException("unknown policy " + policy.kind);
        }
    }

    /** The exit (0-based) a policy takes given every exit's outputs; stageMs may be null. */
    public static int decideOffline(Policy policy, int[] answers, double[] confidences, double[] maxProbabilities,
                                    double[] stageMs) {
        int n = answers.length;
        State state = new State();
        for (int i = 0; i < n; i++) {
            state.add(answers[i], confidences[i], maxProbabilities[i]);
            if (stageMs != null) state.elapsedMs += stageMs[i];
            Double next = stageMs == null || i + 1 >= n ? null : stageMs[i + 1];
            if (shouldStop(policy, state, n, next)) return i;
        }
        return n - 1;
    }

    /** A named setting of the benchmark: a policy and a keep ratio. */
    public static final class Setting {
        public final Policy policy;
        public final double keepRatio;

        Setting(Policy policy, double keepRatio) {
            this.policy = policy;
            this.keepRatio = keepRatio;
        }
    }

    public static final String FULL = "full depth, every token";
    public static final String PREFILTER = "prefilter only";
    public static final String EXITS = "exits only";
    public static final String BOTH = "prefilter + exits";

    /**
     * The four settings demo and bench compare (mmedge.runtime.controller.standard_policies):
     * full depth with every token, the calibrated keep ratio at full depth, the calibrated exit
     * policy with every token, both.
     */
    public static Map<String, Setting> standardPolicies(Manifest m) {
        double full = m.fullRatio();
        Policy calibrated = Policy.fromThresholds(m.thresholds);
        Map<String, Setting> out = new LinkedHashMap<>();
        out.put(FULL, new Setting(Policy.of("full"), full));
        out.put(PREFILTER, new Setting(Policy.of("full"), m.thresholds.keepRatio));
        out.put(EXITS, new Setting(calibrated, full));
        out.put(BOTH, new Setting(calibrated, m.thresholds.keepRatio));
        return out;
    }
}
