package dev.mmedge.core;

import java.util.Collections;
import java.util.List;
import java.util.Map;

/**
 * One caption (docs/bundle-format.md "Captioning bundles", "Words and text"): the generated ids
 * ([EOS] included when reached), per id its exit and learned confidence, the words before the first
 * [EOS] and the text (the words joined by single spaces), the hypothesis' score and the timings.
 */
public final class Caption {
    /** The words joined by one space (no detokenisation: punctuation is a word of its own). */
    public final String text;
    /** One vocabulary string per generated id before the first [EOS] ("[UNK]" for an id without an entry). */
    public final List<String> words;
    /** Generated ids, [EOS] included when reached. */
    public final int[] tokens;
    /** Per generated id: the 0-based stage it exited at. */
    public final int[] exits;
    /** Per generated id: decoder layers run before its exit (the exit stage's last layer + 1). */
    public final int[] exitLayers;
    /** Per generated id: the learned confidence at its exit (float32 read as a double). */
    public final double[] confidences;
    /** The hypothesis' score: the sum of its ids' log-softmax (double precision). */
    public final double logprob;
    public final double keepRatio;
    public final Policy policy;
    /** "copy" or "recompute". */
    public final String kv;
    public final int beam;
    /** Milliseconds: preprocess (caption() only), encoder, each graph's total over the caption, total. */
    public final Map<String, Double> timingsMs;
    /** Milliseconds per generated position (every live hypothesis' graphs at that position). */
    public final double[] positionMs;

    Caption(String text, List<String> words, int[] tokens, int[] exits, int[] exitLayers, double[] confidences, double logprob,
            double keepRatio, Policy policy, String kv, int beam, Map<String, Double> timingsMs, double[] positionMs) {
        this.text = text;
        this.words = Collections.unmodifiableList(words);
        this.tokens = tokens;
        this.exits = exits;
        this.exitLayers = exitLayers;
        this.confidences = confidences;
        this.logprob = logprob;
        this.keepRatio = keepRatio;
        this.policy = policy;
        this.kv = kv;
        this.beam = beam;
        this.timingsMs = Collections.unmodifiableMap(timingsMs);
        this.positionMs = positionMs;
    }

    /** The mean exit (0-based stage) over the generated ids, 0 for none. */
    public double meanExit() {
        if (exits.length == 0) return 0;
        double sum = 0;
        for (int e : exits) sum += e;
        return sum / exits.length;
    }
}
