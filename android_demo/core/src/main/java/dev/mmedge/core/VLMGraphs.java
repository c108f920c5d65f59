package dev.mmedge.core;

import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The graph calls of one generation (or one self-check run) over a {@link VLMRunner}: each call fed
 * its inputs in the graphs' order, timed (total milliseconds per graph name), a backend's own failure
 * reported as a {@link BackendException} naming the graph, and every output the engine reads checked
 * for its shape (docs/bundle-format.md "Generative VLM bundles", "Graphs": the manifest names the
 * outputs; their shapes follow from the layout and the decoder width D, which the embed graph gives),
 * so that a misbehaving backend cannot feed wrongly sized arrays on. Step and fill graphs read and
 * replace the caches of their layers in a {@link KvCache}.
 */
final class VLMGraphs {
    private static final String F32 = "float32";

    private final VLMRunner runner;
    private final VLMManifest manifest;
    private final Engine.Clock clock;
    /** D: the decoder width (0 until the embed graph has run). */
    private int dim;
    /** Total milliseconds per graph name, in the order graphs first ran. */
    final Map<String, Double> timings = new LinkedHashMap<>();

    VLMGraphs(VLMRunner runner, VLMManifest manifest, Engine.Clock clock) {
        this.runner = runner;
        this.manifest = manifest;
        this.clock = clock;
    }

    /** D, from the first embed output. */
    int dim() {
        return dim;
    }

    /** The vision graph's outputs: visual (1, M, D) and each visual token's prefilter score. */
    static final class Vision {
        final Tensor visual;
        final float[] scores;

        Vision(Tensor visual, float[] scores) {
            this.visual = visual;
            this.scores = scores;
        }
    }

    /** A step graph's outputs (its caches already written back). */
    static final class Step {
        final Tensor hidden;
        final Tensor exitHidden;
        final double confidence;

        Step(Tensor hidden, Tensor exitHidden, double confidence) {
            this.hidden = hidden;
            this.exitHidden = exitHidden;
            this.confidence = confidence;
        }
    }

    private Map<String, Tensor> run(String graph, Map<String, Tensor> inputs) {
        long t0 = clock.nanoTime();
        Map<String, Tensor> out = Engine.backendCall(runner.backend(), "graph " + graph, () -> runner.run(graph, inputs));
        double ms = (clock.nanoTime() - t0) / 1e6;
        Double before = timings.get(graph);
        timings.put(graph, before == null ? ms : before + ms);
        return out;
    }

    /** The output `name` of `graph`, float32 of shape `shape`; BackendException otherwise. */
    private Tensor output(Map<String, Tensor> out, String graph, String name, long... shape) {
        Tensor t = out == null ? null : out.get(name);
        if (t == null) throw new BackendException("the backend gave no output " + name + " for graph " + graph, null);
        if (!F32.equals(t.dtype) || !t.hasShape(shape)) {
            throw new BackendException(runner.backend() + " gave " + name + " " + t + " for graph " + graph + "; generation reads "
                    + F32 + " " + Arrays.toString(shape), null);
        }
        return t;
    }

    private long[] cacheShape(int layers) {
        return new long[] {layers, 1, manifest.numKvHeads, manifest.maxSlots, manifest.headDim};
    }

    /** vision: pixel_values (1, 3, S, S), text_ids (1, T - M) -> visual (1, M, D), scores (1, M). */
    Vision vision(Tensor pixelValues, Tensor textIds) {
        Map<String, Tensor> in = new LinkedHashMap<>();
        in.put("pixel_values", pixelValues);
        in.put("text_ids", textIds);
        Map<String, Tensor> out = run("vision", in);
        int m = manifest.numImageTokens;
        Tensor scores = output(out, "vision", "scores", 1, m);
        Tensor visual = out.get("visual");
        long d = visual != null && visual.shape().length == 3 ? visual.shape()[2] : 0;
        return new Vision(output(out, "vision", "visual", 1, m, Math.max(d, 1)), scores.floats());
    }

    /** embed: ids (1, T) -> embeds (1, T, D); the first call fixes D, which must be the visual tokens' width. */
    Tensor embed(Tensor ids) {
        Map<String, Tensor> in = new LinkedHashMap<>();
        in.put("ids", ids);
        Map<String, Tensor> out = run("embed", in);
        long t = ids.shape()[1];
        if (dim == 0) {
            Tensor e = out == null ? null : out.get("embeds");
            long[] shape = e == null ? new long[0] : e.shape();
            dim = shape.length == 3 && shape[2] >= 1 && shape[2] <= Integer.MAX_VALUE ? (int) shape[2] : 1;
        }
        return output(out, "embed", "embeds", 1, t, dim);
    }

    /**
     * step{s}: hidden_in (1, T, D), positions (1, T), slot (1), the stage's caches -> hidden (1, T, D),
     * exit_hidden (1, D), confidence (1); present_k / present_v replace the stage's layers in `cache`.
     */
    Step step(int stage, Tensor hiddenIn, Tensor positions, Tensor slot, KvCache cache) {
        String graph = VLMManifest.stepGraph(stage);
        List<Integer> layers = manifest.stageLayers.get(stage);
        Map<String, Tensor> out = runCached(graph, hiddenIn, positions, slot, layers, cache);
        long t = hiddenIn.shape()[1];
        Tensor hidden = output(out, graph, "hidden", 1, t, dim);
        Tensor exitHidden = output(out, graph, "exit_hidden", 1, dim);
        Tensor confidence = output(out, graph, "confidence", 1);
        return new Step(hidden, exitHidden, confidence.floats()[0]);
    }

    /** fill{s}: the token's hidden at stage s, its position and slot, the caches of the layers after stage s. */
    void fill(int stage, Tensor hiddenIn, Tensor positions, Tensor slot, KvCache cache) {
        runCached(VLMManifest.fillGraph(stage), hiddenIn, positions, slot, manifest.laterLayers(stage), cache);
    }

    private Map<String, Tensor> runCached(String graph, Tensor hiddenIn, Tensor positions, Tensor slot, List<Integer> layers,
                                          KvCache cache) {
        Map<String, Tensor> in = new LinkedHashMap<>();
        in.put("hidden_in", hiddenIn);
        in.put("positions", positions);
        in.put("slot", slot);
        in.put("past_k", cache.stackKeys(layers));
        in.put("past_v", cache.stackValues(layers));
        Map<String, Tensor> out = run(graph, in);
        long[] shape = cacheShape(layers.size());
        cache.replace(layers, output(out, graph, "present_k", shape), output(out, graph, "present_v", shape));
        return out;
    }

    /** head: exit_hidden (1, D) -> logits (1, V), the shared LM head. */
    float[] head(Tensor exitHidden) {
        Map<String, Tensor> in = new LinkedHashMap<>();
        in.put("exit_hidden", exitHidden);
        return output(run("head", in), "head", "logits", 1, manifest.vocabSize).floats();
    }
}
