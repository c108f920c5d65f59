package dev.mmedge.core;

import java.io.Closeable;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Runs the graphs of a captioning artifact (docs/bundle-format.md "Captioning bundles", "Graphs"):
 * {@code encoder_k{r}} once per image, {@code step{s}_k{r}} for each stage of each word and
 * {@code fill{s}} after a word that exited at stage s (kv "copy"). The parallel of
 * {@link StageRunner}: a backend implements {@link #run} (one session or method per graph, inputs
 * and outputs by the manifest's names); {@link #encode}, {@link #step} and {@link #fill} feed it
 * the inputs each graph takes, in the manifest's order, and may be overridden by a backend that
 * keeps its own tensors. Every float tensor is float32, row-major; caches are
 * {@code [n, 1, H, P, hd]} with layer j of the graph at index j.
 */
public interface CaptionRunner extends Closeable {
    /** "onnxruntime", "executorch", ... as mmedge reports backends. */
    String backend();

    /** Runs one graph with its inputs by name; returns at least the outputs the manifest declares, by name. */
    Map<String, Tensor> run(String graph, Map<String, Tensor> inputs) throws Exception;

    @Override
    void close();

    /** encoder_k{r}: pixel_values float32 [1, 3, S, S] -> cross_k, cross_v [L, 1, H, k, hd]. */
    default Encoded encode(String graph, Tensor pixelValues) throws Exception {
        Map<String, Tensor> in = new LinkedHashMap<>();
        in.put("pixel_values", pixelValues);
        Map<String, Tensor> out = run(graph, in);
        return new Encoded(output(out, graph, "cross_k"), output(out, graph, "cross_v"));
    }

    /**
     * step{s}_k{r} for one word at `position`: `first` is stage 0's {@code token} (int64 [1]) or a
     * later stage's {@code hidden_in} (the previous stage's hidden); the stage's caches and cross rows.
     */
    default Step step(String graph, Tensor first, long position, Tensor pastK, Tensor pastV, Tensor crossK, Tensor crossV)
            throws Exception {
        Map<String, Tensor> in = new LinkedHashMap<>();
        in.put("int64".equals(first.dtype) ? "token" : "hidden_in", first);
        in.put("position", Tensor.int64(new long[] {position}, 1));
        in.put("past_k", pastK);
        in.put("past_v", pastV);
        in.put("cross_k", crossK);
        in.put("cross_v", crossV);
        Map<String, Tensor> out = run(graph, in);
        return new Step(output(out, graph, "hidden"), output(out, graph, "logits"), output(out, graph, "confidence"),
                output(out, graph, "present_k"), output(out, graph, "present_v"));
    }

    /** fill{s}: the caches of the layers after stage s written at `position` from the exiting stage's hidden. */
    default Fill fill(String graph, Tensor hiddenIn, long position, Tensor pastK, Tensor pastV) throws Exception {
        Map<String, Tensor> in = new LinkedHashMap<>();
        in.put("hidden_in", hiddenIn);
        in.put("position", Tensor.int64(new long[] {position}, 1));
        in.put("past_k", pastK);
        in.put("past_v", pastV);
        Map<String, Tensor> out = run(graph, in);
        return new Fill(output(out, graph, "present_k"), output(out, graph, "present_v"));
    }

    /** An output the graph must give; BackendException when the backend gave none. */
    static Tensor output(Map<String, Tensor> out, String graph, String name) {
        Tensor t = out == null ? null : out.get(name);
        if (t == null) throw new BackendException("the backend gave no output " + name + " for graph " + graph, null);
        return t;
    }

    /** The encoder's outputs. */
    final class Encoded {
        public final Tensor crossK;
        public final Tensor crossV;

        public Encoded(Tensor crossK, Tensor crossV) {
            this.crossK = crossK;
            this.crossV = crossV;
        }
    }

    /** A step graph's outputs. */
    final class Step {
        public final Tensor hidden;
        public final Tensor logits;
        public final Tensor confidence;
        public final Tensor presentK;
        public final Tensor presentV;

        public Step(Tensor hidden, Tensor logits, Tensor confidence, Tensor presentK, Tensor presentV) {
            this.hidden = hidden;
            this.logits = logits;
            this.confidence = confidence;
            this.presentK = presentK;
            this.presentV = presentV;
        }
    }

    /** A fill graph's outputs. */
    final class Fill {
        public final Tensor presentK;
        public final Tensor presentV;

        public Fill(Tensor presentK, Tensor presentV) {
            this.presentK = presentK;
            this.presentV = presentV;
        }
    }

    /** Opens the runner for an artifact of a checked captioning bundle (which artifact, and how: {@link RunnerFactory}). */
    interface Factory extends RunnerFactory {
        /**
         * Opens the artifact's graphs. {@code bundle.files} holds the verified bytes of the artifact's
         * files (its graphs and external data) when opensBytes(); files are otherwise at
         * bundle.root.resolve(path).
         */
        CaptionRunner open(CaptionLoader.Loaded bundle, Manifest.Artifact artifact, List<String> graphs, int threads)
                throws Exception;
    }
}
