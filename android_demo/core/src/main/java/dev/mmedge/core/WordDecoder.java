package dev.mmedge.core;

import java.util.List;

/**
 * One word of a hypothesis (docs/bundle-format.md "Captioning bundles", "One word"): the step
 * graphs of the keep ratio in stage order (stage 0 fed the hypothesis' last id, or [BOS]; later
 * stages the previous stage's hidden), each stage's caches replaced with its outputs; the
 * controller asked after each stage until one stops (the last always does). That stage is the
 * word's exit. kv "copy" stops there and, before the last stage, writes the later layers' caches
 * with {@code fill{e}}; kv "recompute" runs the remaining stages for their caches (their logits
 * ignored). No stage time reaches the controller, so a latency budget never stops a word.
 */
final class WordDecoder implements BeamSearch.Words {
    static final String COPY = "copy";
    static final String RECOMPUTE = "recompute";

    private final CaptionGraphs graphs;
    private final CaptionManifest manifest;
    private final String[] stepGraphs;
    private final Tensor[] crossK;
    private final Tensor[] crossV;
    private final Policy policy;
    private final boolean copy;

    /** crossK / crossV: each stage's rows of the encoder's cross keys and values. */
    WordDecoder(CaptionGraphs graphs, CaptionManifest manifest, double ratio, Tensor[] crossK, Tensor[] crossV, Policy policy,
                String kv) {
        this.graphs = graphs;
        this.manifest = manifest;
        this.crossK = crossK;
        this.crossV = crossV;
        this.policy = policy;
        this.copy = COPY.equals(kv);
        stepGraphs = new String[manifest.numStages()];
        for (int s = 0; s < stepGraphs.length; s++) stepGraphs[s] = CaptionManifest.stepGraph(s, ratio);
    }

    @Override
    public BeamSearch.Word next(BeamSearch.Hypothesis h, int position) {
        int stages = stepGraphs.length;
        Controller.State state = new Controller.State();
        Tensor hidden = null;
        float[] chosenLogits = null;
        int chosen = stages - 1;
        for (int s = 0; s < stages; s++) {
            List<Integer> layers = manifest.stageLayers.get(s);
            Tensor first = s == 0 ? Tensor.int64(new long[] {h.lastId(manifest.bosId)}, 1) : hidden;
            CaptionRunner.Step out = graphs.step(stepGraphs[s], first, position, h.cache.stackKeys(layers),
                    h.cache.stackValues(layers), crossK[s], crossV[s]);
            h.cache.replace(layers, out.presentK, out.presentV);
            hidden = out.hidden;
            if (chosenLogits != null) continue; // recompute: a later stage runs for its caches only
            float[] logits = out.logits.floats();
            state.add(Controller.argmax(logits), out.confidence.floats()[0], Controller.softmaxMax(logits));
            if (Controller.shouldStop(policy, state, stages, null)) {
                chosenLogits = logits;
                chosen = s;
                if (copy) break;
            }
        }
        if (copy && chosen < stages - 1) {
            List<Integer> later = manifest.laterLayers(chosen);
            CaptionRunner.Fill out = graphs.fill(CaptionManifest.fillGraph(chosen), hidden, position,
                    h.cache.stackKeys(later), h.cache.stackValues(later));
            h.cache.replace(later, out.presentK, out.presentV);
        }
        return new BeamSearch.Word(chosenLogits, chosen, state.confidences.get(chosen));
    }
}
