package dev.mmedge.core;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;

/**
 * Greedy and beam search over the words a {@link Words} source makes (docs/bundle-format.md
 * "Captioning bundles", "Greedy and beam search"; greedy is beam 1). Scores are double precision.
 * Per position: each live hypothesis, in order, runs one word and gives its {@code beam} best next
 * ids by log-softmax (best first, equal values by the lower id); a done hypothesis gives itself.
 * All candidates are sorted by score with a stable sort (equal scores keep the order they were
 * listed in) and the first {@code beam} kept. The result: with beam 1 the one hypothesis, else the
 * highest {@code score / max(1, ids)}, the first on ties.
 */
final class BeamSearch {
    private BeamSearch() {
    }

    /** One word's outcome: the exit's logits (float32, V), the exit and its learned confidence. */
    static final class Word {
        final float[] logits;
        final int exit;
        final double confidence;

        Word(float[] logits, int exit, double confidence) {
            this.logits = logits;
            this.exit = exit;
            this.confidence = confidence;
        }
    }

    /** Runs one word of a hypothesis at a position (updating the hypothesis' cache). */
    interface Words {
        Word next(Hypothesis hypothesis, int position);
    }

    /** A partial caption: generated ids with their exits and confidences, its score and cache. */
    static final class Hypothesis {
        final int[] ids;
        final int[] exits;
        final double[] confidences;
        final double score;
        /** The caches after its last word (a word run for it replaces layers here). */
        final KvCache cache;
        final boolean done;

        Hypothesis(int[] ids, int[] exits, double[] confidences, double score, KvCache cache, boolean done) {
            this.ids = ids;
            this.exits = exits;
            this.confidences = confidences;
            this.score = score;
            this.cache = cache;
            this.done = done;
        }

        /** The id a word of this hypothesis is fed: its last id, or [BOS] before any. */
        int lastId(int bosId) {
            return ids.length == 0 ? bosId : ids[ids.length - 1];
        }

        Hypothesis extend(int id, Word word, double newScore, int eosId) {
            int n = ids.length;
            int[] i2 = Arrays.copyOf(ids, n + 1);
            int[] e2 = Arrays.copyOf(exits, n + 1);
            double[] c2 = Arrays.copyOf(confidences, n + 1);
            i2[n] = id;
            e2[n] = word.exit;
            c2[n] = word.confidence;
            return new Hypothesis(i2, e2, c2, newScore, cache.copy(), id == eosId);
        }
    }

    /** The search's outcome: the chosen hypothesis and the time each position took (ms). */
    static final class Result {
        final Hypothesis best;
        final double[] positionMs;

        Result(Hypothesis best, double[] positionMs) {
            this.best = best;
            this.positionMs = positionMs;
        }
    }

    private static final class Candidate {
        final double score;
        final Hypothesis from;
        final int id; // -1: a done hypothesis carried over
        final Word word;

        Candidate(double score, Hypothesis from, int id, Word word) {
            this.score = score;
            this.from = from;
            this.id = id;
            this.word = word;
        }
    }

    /** Greedy (beam 1) or beam search from one empty hypothesis with the given start cache, for at most maxLen ids. */
    static Result search(Words words, KvCache start, int beam, int maxLen, int eosId, Engine.Clock clock) {
        List<Hypothesis> beams = Collections.singletonList(new Hypothesis(new int[0], new int[0], new double[0], 0.0, start,
                false));
        List<Double> positionMs = new ArrayList<>();
        for (int position = 0; position < maxLen; position++) {
            long t0 = clock.nanoTime();
            List<Candidate> candidates = new ArrayList<>();
            for (Hypothesis h : beams) {
                if (h.done) {
                    candidates.add(new Candidate(h.score, h, -1, null));
                    continue;
                }
                Word word = words.next(h, position);
                double[] logp = logSoftmax(word.logits);
                for (int id : topIds(logp, beam)) candidates.add(new Candidate(h.score + logp[id], h, id, word));
            }
            // stable: equal scores keep the order hypotheses and their ids were listed in
            Collections.sort(candidates, (a, b) -> descending(a.score, b.score));
            List<Hypothesis> kept = new ArrayList<>();
            for (Candidate c : candidates.subList(0, Math.min(beam, candidates.size()))) {
                kept.add(c.id < 0 ? c.from : c.from.extend(c.id, c.word, c.score, eosId));
            }
            beams = kept;
            positionMs.add((clock.nanoTime() - t0) / 1e6);
            boolean allDone = true;
            for (Hypothesis h : beams) allDone &= h.done;
            if (allDone) break;
        }
        Hypothesis best = beams.get(0);
        if (beam > 1) { // the best length-normalised score; the first on ties
            for (Hypothesis h : beams) if (normalised(h) > normalised(best)) best = h;
        }
        double[] ms = new double[positionMs.size()];
        for (int i = 0; i < ms.length; i++) ms[i] = positionMs.get(i);
        return new Result(best, ms);
    }

    /** Higher first; equal (==, so 0.0 and -0.0 too) values compare equal, as Python's sort keys do. */
    private static int descending(double a, double b) {
        return a > b ? -1 : a < b ? 1 : 0;
    }

    private static double normalised(Hypothesis h) {
        return h.score / Math.max(1, h.ids.length);
    }

    /** log-softmax in double precision: (z_i - max z) - ln(sum_j exp(z_j - max z)). */
    static double[] logSoftmax(float[] logits) {
        double top = Double.NEGATIVE_INFINITY;
        for (float z : logits) top = Math.max(top, z);
        double sum = 0;
        for (float z : logits) sum += Math.exp((double) z - top);
        double lse = Math.log(sum);
        double[] out = new double[logits.length];
        for (int i = 0; i < out.length; i++) out[i] = ((double) logits[i] - top) - lse;
        return out;
    }

    /** The `count` best ids by value, best first; equal values by the lower id. */
    static int[] topIds(double[] values, int count) {
        Integer[] order = new Integer[values.length];
        for (int i = 0; i < order.length; i++) order[i] = i;
        Arrays.sort(order, (a, b) -> {
            int c = descending(values[a], values[b]);
            return c != 0 ? c : Integer.compare(a, b);
        });
        int n = Math.min(count, order.length);
        int[] out = new int[n];
        for (int i = 0; i < n; i++) out[i] = order[i];
        return out;
    }
}
