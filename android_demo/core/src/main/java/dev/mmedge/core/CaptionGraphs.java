package dev.mmedge.core;

import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * The graph calls of one caption (or one self-check) over a {@link CaptionRunner}: each call timed
 * (total milliseconds per graph name), a backend's own failure reported as a
 * {@link BackendException} naming the graph, and every output checked against the shape and dtype
 * the manifest declares for it, so that a misbehaving backend cannot feed wrongly sized arrays on.
 */
final class CaptionGraphs {
    private final CaptionRunner runner;
    private final CaptionManifest manifest;
    private final Engine.Clock clock;
    /** Total milliseconds per graph name, in the order graphs first ran. */
    final Map<String, Double> timings = new LinkedHashMap<>();

    CaptionGraphs(CaptionRunner runner, CaptionManifest manifest, Engine.Clock clock) {
        this.runner = runner;
        this.manifest = manifest;
        this.clock = clock;
    }

    /** One graph call, as CaptionRunner's encode / step / fill, timed. */
    private <T> T timed(String graph, Engine.BackendCall<T> call) {
        long t0 = clock.nanoTime();
        T out = Engine.backendCall(runner.backend(), "graph " + graph, call);
        double ms = (clock.nanoTime() - t0) / 1e6;
        Double before = timings.get(graph);
        timings.put(graph, before == null ? ms : before + ms);
        return out;
    }

    private void check(String graph, String output, Tensor t) {
        Manifest.TensorSpec spec = manifest.graphs.get(graph).output(output);
        if (!t.hasShape(spec.shape) || !spec.dtype.equals(t.dtype)) {
            throw new BackendException(runner.backend() + " gave " + output + " " + t + " for graph " + graph
                    + "; the manifest declares " + spec.dtype + " " + Arrays.toString(spec.shape), null);
        }
    }

    CaptionRunner.Encoded encode(String graph, Tensor pixelValues) {
        CaptionRunner.Encoded out = timed(graph, () -> runner.encode(graph, pixelValues));
        check(graph, "cross_k", out.crossK);
        check(graph, "cross_v", out.crossV);
        return out;
    }

    CaptionRunner.Step step(String graph, Tensor first, long position, Tensor pastK, Tensor pastV, Tensor crossK,
                            Tensor crossV) {
        CaptionRunner.Step out = timed(graph, () -> runner.step(graph, first, position, pastK, pastV, crossK, crossV));
        check(graph, "hidden", out.hidden);
        check(graph, "logits", out.logits);
        check(graph, "confidence", out.confidence);
        check(graph, "present_k", out.presentK);
        check(graph, "present_v", out.presentV);
        return out;
    }

    CaptionRunner.Fill fill(String graph, Tensor hiddenIn, long position, Tensor pastK, Tensor pastV) {
        CaptionRunner.Fill out = timed(graph, () -> runner.fill(graph, hiddenIn, position, pastK, pastV));
        check(graph, "present_k", out.presentK);
        check(graph, "present_v", out.presentV);
        return out;
    }
}
