package dev.mmedge.core;

import java.io.Closeable;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.Map;

/**
 * Runs the graphs of a generative VLM artifact (docs/bundle-format.md "Generative VLM bundles",
 * "Graphs"): {@code vision} and {@code embed} once per prompt, {@code step{s}} for the prefill and for
 * each stage of each token, {@code head} where logits are read, {@code fill{s}} after a token that
 * exited at stage s (kv "copy"). The parallel of {@link CaptionRunner}: a backend implements
 * {@link #run} (one session or method per graph, inputs and outputs by the graphs' names; the app's
 * OrtStageRunner is one). Inputs are given in the graphs' order (vision: pixel_values, text_ids;
 * embed: ids; step: hidden_in, positions, slot, past_k, past_v; head: exit_hidden; fill: hidden_in,
 * positions, slot, past_k, past_v). Every float tensor is float32, row-major; caches are
 * {@code [n, 1, G, P, hd]} with layer j of the graph at index j.
 */
public interface VLMRunner extends Closeable {
    /** "onnxruntime", "executorch", ... as mmedge reports backends. */
    String backend();

    /** Runs one graph with its inputs by name; returns at least the outputs layout.graphs names for it, by name. */
    Map<String, Tensor> run(String graph, Map<String, Tensor> inputs) throws Exception;

    @Override
    void close();

    /** A graph's inputs in the order the engine gives them (by the graph name's prefix: vision, embed, step, head, fill). */
    static List<String> inputNames(String graph) {
        if (graph.startsWith("vision")) return Arrays.asList("pixel_values", "text_ids");
        if (graph.startsWith("embed")) return Collections.singletonList("ids");
        if (graph.startsWith("head")) return Collections.singletonList("exit_hidden");
        return Arrays.asList("hidden_in", "positions", "slot", "past_k", "past_v"); // step{s}, fill{s}
    }

    /** Opens the runner for an artifact of a checked VLM bundle (which artifact, and how: {@link RunnerFactory}). */
    interface Factory extends RunnerFactory {
        /**
         * Opens the artifact's graphs. {@code bundle.files} holds the verified bytes of the artifact's
         * files (its graphs and external data) when opensBytes(); files are otherwise at
         * bundle.root.resolve(path).
         */
        VLMRunner open(VLMLoader.Loaded bundle, Manifest.Artifact artifact, List<String> graphs, int threads) throws Exception;
    }
}
