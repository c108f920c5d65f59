package dev.mmedge.core;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Loads a captioning bundle ({@code "kind": "caption"}) with every check of the spec and captions
 * images with a per-word early exit, greedy or beam search, over a {@link CaptionRunner}
 * (docs/bundle-format.md "Captioning bundles"; the same arithmetic as the Python and JavaScript
 * CaptionEngines, checked word for word on tests/vectors/caption/):
 *
 * <pre>
 *   CaptionEngine engine = CaptionEngine.load(bundleDir, new OrtStageRunner.Factory(), new CaptionEngine.Options());
 *   Caption c = engine.caption(argb, width, height, null);
 *   c.text, c.words, c.exits, c.confidences, c.timingsMs
 * </pre>
 *
 * The image is encoded once ({@code encoder_k{r}}); each word then runs the decoder stages
 * ({@link WordDecoder}) over a static key/value cache per hypothesis ({@link KvCache}) until the
 * controller stops it; {@link BeamSearch} keeps the best hypotheses; {@link CaptionText} gives
 * the words. Calls are serialised (a backend session may not be re-entrant).
 */
public final class CaptionEngine implements AutoCloseable {
    /** The largest beam, as the Python runtime. */
    public static final int MAX_BEAM = 16;
    public static final List<String> KV_MODES = Collections.unmodifiableList(Arrays.asList(WordDecoder.COPY,
            WordDecoder.RECOMPUTE));
    /** Captioning bundles normalise with mean and std 0.5 (format version 1 fixes it; the manifest has no preprocessing). */
    private static final double[] HALF = {0.5, 0.5, 0.5};

    /** Load options (those both engines take: {@link EngineOptions}). */
    public static final class Options extends EngineOptions {
        /** Default cache filling of a word that exits early: "copy" or "recompute" (null: thresholds.kv). */
        public String kv;

        @Override
        void ownProblems(List<String> out) {
            if (kv != null && !KV_MODES.contains(kv)) out.add("kv '" + kv + "' unknown; choose one of " + KV_MODES);
        }
    }

    /** What one caption is made with; null fields take the engine's defaults. */
    public static final class Request {
        /** The exit policy (null: the engine's). */
        public Policy policy;
        /** One of the bundle's keep ratios (null: the engine's). */
        public Double keepRatio;
        /** "copy" or "recompute" (null: the engine's). */
        public String kv;
        /** 1 = greedy, up to {@link #MAX_BEAM}. */
        public int beam = 1;
        /** The most ids generated, [EOS] included: 1 to decoder.max_len (null: decoder.max_len). */
        public Integer maxLen;
    }

    private final CaptionLoader.Loaded bundle;
    public final CaptionManifest manifest;
    public final WordTokenizer tokenizer;
    public final Manifest.Artifact artifact;
    public final Preprocessor preprocessor;
    private final CaptionRunner runner;
    private final Engine.Clock clock;
    private final CaptionText text;
    private Policy policy;
    private double keepRatio;
    private String kv;

    private CaptionEngine(CaptionLoader.Loaded bundle, Manifest.Artifact artifact, CaptionRunner runner, Policy policy,
                          double keepRatio, String kv, Engine.Clock clock) {
        this.bundle = bundle;
        this.manifest = bundle.manifest;
        this.tokenizer = bundle.tokenizer;
        this.artifact = artifact;
        this.runner = runner;
        this.policy = policy;
        this.keepRatio = keepRatio;
        this.kv = kv;
        this.clock = clock;
        this.preprocessor = new Preprocessor(manifest.imageSize, Preprocessor.BACKGROUND, HALF, HALF, 1.0 / 255);
        this.text = new CaptionText(bundle.tokenizer, manifest.eosId);
    }

    /**
     * The policy a manifest's thresholds describe: its policy with the confidence or max_probability
     * threshold (capped at 1) and patience; a latency_budget there is read as confidence (a budget is the app's).
     */
    public static Policy policyFromThresholds(CaptionManifest.Thresholds th) {
        String kind = "latency_budget".equals(th.policy) ? "confidence" : th.policy;
        double threshold = "max_probability".equals(kind) ? th.maxProbability : th.confidence;
        return new Policy(kind, Math.min(1.0, threshold), th.patience, 0.0);
    }

    /**
     * Opens a captioning bundle: every loading check (the signature with options.verifyKey,
     * rollback with minSequence / expectName) before any graph file is used, the external data of
     * ONNX graphs, then the runner with every graph, then (by default) the self-check. A refused
     * bundle is a BundleException with the spec's reason code; bad options are a ConfigException.
     */
    public static CaptionEngine load(Path root, CaptionRunner.Factory factory, Options options) {
        Options o = options == null ? new Options() : options;
        o.check(factory, "CaptionRunner.Factory");
        final Manifest.Artifact[] chosen = new Manifest.Artifact[1];
        CaptionLoader.Loaded bundle = CaptionLoader.load(root, o.loaderOptions(), m -> {
            double ratio = o.startRatio(m.thresholds);
            if (!m.hasRatio(ratio)) throw new ConfigException(EngineOptions.notExported(ratio, m.keepRatios), "arguments");
            chosen[0] = Engine.chooseArtifact(m.artifacts, factory, o);
            // the runner opens the program, the shared weights and every graph's file
            return factory.opensBytes() ? Engine.artifactFiles(chosen[0], m.graphs.keySet(), true) : Collections.<String>emptyList();
        });
        CaptionManifest m = bundle.manifest;
        Engine.checkExternalData(bundle, chosen[0], m.graphs.keySet());
        CaptionRunner runner = Engine.openRunner(root, factory, chosen[0],
                () -> factory.open(bundle, chosen[0], new ArrayList<>(m.graphs.keySet()), o.threads));
        CaptionEngine engine = new CaptionEngine(bundle, chosen[0], runner,
                o.policy != null ? o.policy : policyFromThresholds(m.thresholds), o.startRatio(m.thresholds),
                o.kv != null ? o.kv : m.thresholds.kv, o.clock);
        o.runSelfCheck(engine::selfCheck, engine::close);
        return engine;
    }

    public Path root() {
        return bundle.root;
    }

    public String backend() {
        return runner.backend();
    }

    /** E: the decoder's stages, hence exits. */
    public int numStages() {
        return manifest.numStages();
    }

    /** Decoder layers run before exit `exit` (0-based stage): the stage's last layer + 1. */
    public int exitLayer(int exit) {
        List<Integer> layers = manifest.stageLayers.get(exit);
        return layers.get(layers.size() - 1) + 1;
    }

    /** The manifest's release.sequence (what an app stores as its next minimum), or null when it has none. */
    public Long releaseSequence() {
        return BundleLoader.releaseSequence(manifest.raw());
    }

    public Policy policy() {
        return policy;
    }

    public void setPolicy(Policy policy) {
        if (policy == null) throw new ConfigException("policy must not be null", "arguments");
        this.policy = policy;
    }

    public double keepRatio() {
        return keepRatio;
    }

    public void setKeepRatio(double ratio) {
        if (!manifest.hasRatio(ratio)) {
            throw new ConfigException(EngineOptions.notExported(ratio, manifest.keepRatios), "arguments");
        }
        this.keepRatio = ratio;
    }

    public String kv() {
        return kv;
    }

    public void setKv(String kv) {
        if (!KV_MODES.contains(kv)) throw new ConfigException("kv '" + kv + "' unknown; choose one of " + KV_MODES, "arguments");
        this.kv = kv;
    }

    @Override
    public void close() {
        runner.close();
    }

    /** The image as pixel_values (spec "Image": pad to a square with (118, 118, 124), bilinear, mean / std 0.5). */
    public Preprocessor.Result preprocess(int[] argb, int width, int height) {
        return preprocessor.run(argb, width, height);
    }

    /** Captions an ARGB image (what Bitmap.getPixels gives); null request: the engine's defaults. */
    public Caption caption(int[] argb, int width, int height, Request request) {
        long t0 = clock.nanoTime();
        float[] pixels = preprocess(argb, width, height).pixelValues;
        double preprocessMs = (clock.nanoTime() - t0) / 1e6;
        Caption c = captionPixels(pixels, request);
        Map<String, Double> timings = new LinkedHashMap<>();
        timings.put("preprocess", preprocessMs);
        timings.putAll(c.timingsMs);
        timings.put("total", (clock.nanoTime() - t0) / 1e6);
        return new Caption(c.text, c.words, c.tokens, c.exits, c.exitLayers, c.confidences, c.logprob, c.keepRatio, c.policy,
                c.kv, c.beam, timings, c.positionMs);
    }

    /** One caption's settings, checked: ConfigException (arguments) lists every problem. */
    private static final class Settings {
        final Policy policy;
        final double ratio;
        final String kv;
        final int beam;
        final int maxLen;

        Settings(Policy policy, double ratio, String kv, int beam, int maxLen) {
            this.policy = policy;
            this.ratio = ratio;
            this.kv = kv;
            this.beam = beam;
            this.maxLen = maxLen;
        }
    }

    private Settings settings(Request request) {
        Request r = request == null ? new Request() : request;
        List<String> problems = new ArrayList<>();
        double ratio = r.keepRatio != null ? r.keepRatio : keepRatio;
        String mode = r.kv != null ? r.kv : kv;
        int limit = r.maxLen != null ? r.maxLen : manifest.maxLen;
        if (!manifest.hasRatio(ratio)) problems.add(EngineOptions.notExported(ratio, manifest.keepRatios));
        if (!KV_MODES.contains(mode)) problems.add("kv '" + mode + "' unknown; choose one of " + KV_MODES);
        if (r.beam < 1 || r.beam > MAX_BEAM) problems.add("beam " + r.beam + " must be an integer from 1 to " + MAX_BEAM);
        if (limit < 1 || limit > manifest.maxLen) {
            problems.add("maxLen " + limit + " must be an integer from 1 to the model's " + manifest.maxLen);
        }
        if (!problems.isEmpty()) throw new ConfigException(problems, "arguments");
        return new Settings(r.policy != null ? r.policy : policy, ratio, mode, r.beam, limit);
    }

    /**
     * Captions prepared pixel_values (float32 [1, 3, S, S]): the encoder once, then per position
     * one word of every live hypothesis (spec "Decoding"). Timings: encoder, each graph, total.
     */
    public synchronized Caption captionPixels(float[] pixelValues, Request request) {
        Settings s = settings(request);
        int size = manifest.imageSize;
        if (pixelValues == null || pixelValues.length != 3 * size * size) {
            throw new ConfigException("pixel_values must hold 3 x " + size + " x " + size + " floats", "arguments");
        }
        long t0 = clock.nanoTime();
        CaptionGraphs graphs = new CaptionGraphs(runner, manifest, clock);
        String encoder = CaptionManifest.encoderGraph(s.ratio);
        CaptionRunner.Encoded enc = graphs.encode(encoder, Tensor.float32(pixelValues, 1, 3, size, size));
        double encoderMs = graphs.timings.get(encoder);
        Tensor[][] cross = crossByStage(enc);
        WordDecoder words = new WordDecoder(graphs, manifest, s.ratio, cross[0], cross[1], s.policy, s.kv);
        KvCache start = KvCache.zeros(manifest.depth(), manifest.numHeads, manifest.maxLen, manifest.headDim);
        BeamSearch.Result result = BeamSearch.search(words, start, s.beam, s.maxLen, manifest.eosId, clock);
        BeamSearch.Hypothesis best = result.best;
        List<String> w = text.words(best.ids);
        int[] layers = new int[best.exits.length];
        for (int i = 0; i < layers.length; i++) layers[i] = exitLayer(best.exits[i]);
        Map<String, Double> timings = new LinkedHashMap<>();
        timings.put("encoder", encoderMs);
        for (Map.Entry<String, Double> e : graphs.timings.entrySet()) if (!e.getKey().equals(encoder)) timings.put(e.getKey(), e.getValue());
        timings.put("total", (clock.nanoTime() - t0) / 1e6);
        return new Caption(CaptionText.text(w), w, best.ids, best.exits, layers, best.confidences, best.score, s.ratio,
                s.policy, s.kv, s.beam, timings, result.positionMs);
    }

    /** Each stage's rows of cross_k and cross_v ([n, 1, H, k, hd], the stage's layers being consecutive). */
    private Tensor[][] crossByStage(CaptionRunner.Encoded enc) {
        long[] shape = enc.crossK.shape();
        int k = (int) shape[3];
        int rows = manifest.numHeads * k * manifest.headDim;
        int stages = manifest.numStages();
        Tensor[][] out = new Tensor[2][stages];
        float[][] sources = {enc.crossK.floats(), enc.crossV.floats()};
        for (int s = 0; s < stages; s++) {
            List<Integer> layers = manifest.stageLayers.get(s);
            int from = layers.get(0) * rows;
            int n = layers.size();
            for (int which = 0; which < 2; which++) {
                float[] slice = Arrays.copyOfRange(sources[which], from, from + n * rows);
                out[which][s] = Tensor.float32(slice, n, 1, manifest.numHeads, k, manifest.headDim);
            }
        }
        return out;
    }

    /**
     * Step 12: a grey image through every encoder, then every step graph (position 0, [BOS], zero
     * caches) of every keep ratio and every fill graph (fed the first keep ratio's hidden of its
     * stage); BundleException (self-check) unless every output has its declared shape and dtype
     * and finite values.
     */
    public synchronized void selfCheck() {
        int size = manifest.imageSize;
        int[] grey = new int[size * size];
        Arrays.fill(grey, 0xff808080);
        float[] pixels = preprocess(grey, size, size).pixelValues;
        CaptionGraphs graphs = new CaptionGraphs(runner, manifest, clock);
        List<Tensor> hidden = new ArrayList<>();
        try {
            for (double ratio : manifest.keepRatios) {
                String encoder = CaptionManifest.encoderGraph(ratio);
                CaptionRunner.Encoded enc = graphs.encode(encoder, Tensor.float32(pixels, 1, 3, size, size));
                finite(encoder, "cross_k", enc.crossK);
                finite(encoder, "cross_v", enc.crossV);
                Tensor[][] cross = crossByStage(enc);
                Tensor previous = null;
                for (int s = 0; s < manifest.numStages(); s++) {
                    String graph = CaptionManifest.stepGraph(s, ratio);
                    KvCache zeros = KvCache.zeros(manifest.depth(), manifest.numHeads, manifest.maxLen, manifest.headDim);
                    List<Integer> layers = manifest.stageLayers.get(s);
                    Tensor first = s == 0 ? Tensor.int64(new long[] {manifest.bosId}, 1) : previous;
                    CaptionRunner.Step out = graphs.step(graph, first, 0, zeros.stackKeys(layers), zeros.stackValues(layers),
                            cross[0][s], cross[1][s]);
                    finite(graph, "hidden", out.hidden);
                    finite(graph, "logits", out.logits);
                    finite(graph, "confidence", out.confidence);
                    finite(graph, "present_k", out.presentK);
                    finite(graph, "present_v", out.presentV);
                    previous = out.hidden;
                    if (ratio == manifest.keepRatios.get(0)) hidden.add(out.hidden);
                }
            }
            for (int s = 0; s < manifest.numStages() - 1; s++) {
                String graph = CaptionManifest.fillGraph(s);
                List<Integer> later = manifest.laterLayers(s);
                KvCache zeros = KvCache.zeros(manifest.depth(), manifest.numHeads, manifest.maxLen, manifest.headDim);
                CaptionRunner.Fill out = graphs.fill(graph, hidden.get(s), 0, zeros.stackKeys(later), zeros.stackValues(later));
                finite(graph, "present_k", out.presentK);
                finite(graph, "present_v", out.presentV);
            }
        } catch (BackendException exc) {
            throw new BundleException(BundleException.SELF_CHECK, root() + ": the " + runner.backend() + " graphs fail on a "
                    + "test image (" + BundleLoader.shortText(exc.getMessage(), 300) + "); export the bundle again", exc);
        }
    }

    private void finite(String graph, String output, Tensor t) {
        int bad = Engine.nonFinite(t.floats());
        if (bad > 0) {
            throw new BundleException(BundleException.SELF_CHECK, root() + ": graph " + graph + " gives " + bad + " non-finite value"
                    + (bad == 1 ? "" : "s") + " (NaN or infinity) in " + output + " on a test image: its weights are corrupt; "
                    + "export the bundle again");
        }
    }
}
