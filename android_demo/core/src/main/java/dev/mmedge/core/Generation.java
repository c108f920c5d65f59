package dev.mmedge.core;

import java.util.Collections;
import java.util.List;
import java.util.Map;

/**
 * One answer of a generative VLM bundle (docs/bundle-format.md "Generative VLM bundles",
 * "Generation"): the generated ids (a stop id included when reached), per id its exit and learned
 * confidence, the decoded text, the hypothesis' summed log-probability and the timings.
 */
public final class Generation {
    /** The generated ids decoded, special tokens skipped, stripped of surrounding spaces. */
    public final String text;
    /** Generated ids, a stop id included when reached. */
    public final int[] tokens;
    /** Per generated id: the 0-based stage it exited at (the first comes from the prefill: the last stage). */
    public final int[] exits;
    /** Per generated id: the learned confidence at its exit (float32 read as a double). */
    public final double[] confidences;
    /** The hypothesis' summed log-probability (greedy: double precision; beams: float32, as transformers). */
    public final double logprob;
    public final double keepRatio;
    /** Visual tokens the prefilter kept: max(1, round(keepRatio x M)), halves to even. */
    public final int keptVisualTokens;
    /** The prompt's ids (the chat template around the text, the image block included). */
    public final List<Integer> promptIds;
    public final Policy policy;
    /** "copy" or "recompute". */
    public final String kv;
    public final int beam;
    /** ms from the first graph to the first token (vision, embed, prefill, head). */
    public final double firstTokenMs;
    /**
     * Milliseconds: preprocess (generate() and caption() only), each graph's total over the
     * generation by name, decode (first graph to last token), total.
     */
    public final Map<String, Double> timingsMs;

    Generation(String text, int[] tokens, int[] exits, double[] confidences, double logprob, double keepRatio, int keptVisualTokens,
               List<Integer> promptIds, Policy policy, String kv, int beam, double firstTokenMs, Map<String, Double> timingsMs) {
        this.text = text;
        this.tokens = tokens;
        this.exits = exits;
        this.confidences = confidences;
        this.logprob = logprob;
        this.keepRatio = keepRatio;
        this.keptVisualTokens = keptVisualTokens;
        this.promptIds = Collections.unmodifiableList(promptIds);
        this.policy = policy;
        this.kv = kv;
        this.beam = beam;
        this.firstTokenMs = firstTokenMs;
        this.timingsMs = Collections.unmodifiableMap(timingsMs);
    }

    /** The mean exit (0-based stage) over the generated ids, 0 for none. */
    public double meanExit() {
        if (exits.length == 0) return 0;
        double sum = 0;
        for (int e : exits) sum += e;
        return sum / exits.length;
    }

    Generation withTimings(Map<String, Double> timings) {
        return new Generation(text, tokens, exits, confidences, logprob, keepRatio, keptVisualTokens, promptIds, policy, kv, beam,
                firstTokenMs, timings);
    }
}
