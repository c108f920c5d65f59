package dev.mmedge.core;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * Loads a generative VLM bundle ({@code "kind": "vlm"}: an adapted SmolVLM) with every check of the
 * spec and generates text about an image with a per-token early exit and the prompt-conditioned
 * visual-token prefilter, greedy or with beams, over a {@link VLMRunner} (docs/bundle-format.md
 * "Generative VLM bundles"; the same arithmetic and search as the Python VLMEngine
 * (mmedge/runtime/vlm_engine.py, vlm.py, generate.py) and the JavaScript one (runtimes/js/src/vlm.ts),
 * checked token for token on tests/vectors/vlm/):
 *
 * <pre>
 *   VLMEngine engine = VLMEngine.load(bundleDir, new OrtStageRunner.Factory(), new VLMEngine.Options());
 *   Generation g = engine.generate(argb, width, height, "what color is the car?", null);
 *   g.text, g.tokens, g.exits, g.confidences, g.firstTokenMs, g.timingsMs
 *   VLMEngine.Request r = new VLMEngine.Request();
 *   r.task = "answer";                             // the bundle's settings for short answers (thresholds.tasks)
 *   engine.generate(argb, width, height, "what color is the car?", r);
 *   engine.caption(argb, width, height, null);   // generate() under the bundle's caption prompt, task "caption"
 * </pre>
 *
 * A generation's exit policy and keep ratio are, in order of precedence (spec "Settings"): the
 * {@link Request}'s; the load options' ({@link Options}; they apply to every task, as
 * {@link #setPolicy} and {@link #setKeepRatio} do); the bundle's {@code thresholds.tasks[task]} when the
 * request names a task ({@code "caption"} or {@code "answer"}; caption() names {@code "caption"}) and
 * the bundle holds that task; else the top-level {@code thresholds}. {@link #settings(String)} says which
 * applies. A task other than those two is refused as a bad argument. kv is not per task.
 *
 * The image is stretched to the square with the manifest's Pillow filter ({@link Resample}, bit for
 * bit) and normalised; the prompt is {@code prompt_before + text + prompt_after} through the
 * bundle's Hugging Face tokenizer ({@link HFTokenizer}); the vision graph scores the visual tokens
 * against the prompt and the top k are kept (any keep ratio in (0, 1]) at their unpruned positions;
 * the prompt is prefilled at full depth, then each token runs the decoder's stages over a static
 * key/value cache ({@link KvCache}) until the controller stops it, the LM head ({@code head}) running
 * only where logits are read, and a token that stopped early leaves the later layers' keys and values
 * through {@code fill{s}} (kv "copy") or by running the skipped stages (kv "recompute"). Calls are
 * serialised (a backend session may not be re-entrant).
 */
public final class VLMEngine implements AutoCloseable {
    /** The largest beam, as the Python runtime. */
    public static final int MAX_BEAM = 16;
    public static final List<String> KV_MODES = CaptionEngine.KV_MODES;
    /** Policies that read every exit's logits (the head runs at each stage), not only the exit taken's. */
    static final List<String> LOGIT_POLICIES = Arrays.asList("max_probability", "patience");

    /** Load options (those every engine takes: {@link EngineOptions}; precision also int4). */
    public static final class Options extends EngineOptions {
        /** Default cache filling of a token that exits early: "copy" or "recompute" (null: thresholds.kv). */
        public String kv;

        @Override
        void ownProblems(List<String> out) {
            if (kv != null && !KV_MODES.contains(kv)) out.add("kv '" + kv + "' unknown; choose one of " + KV_MODES);
            if (keepRatio != null && !keepRatio.isNaN() && !keepRatio.isInfinite()) {
                String p = keepRatioProblem(keepRatio);
                if (p != null) out.add(p);
            }
        }

        @Override
        List<String> precisions() {
            return Arrays.asList("fp32", "int8", "int4");
        }
    }

    /** What one generation is made with; null fields take the engine's defaults (for the task, where one is named). */
    public static final class Request {
        /**
         * The prompt's task: "caption" or "answer" (null: any prompt). The policy and keep ratio then default
         * to the bundle's for that task ({@code thresholds.tasks}) where it holds them: {@link #settings(String)}.
         */
        public String task;
        /** The exit policy, used as given (null: the engine's for the task). */
        public Policy policy;
        /** Any number in (0, 1]: the share of visual tokens the prefilter keeps (null: the engine's for the task). */
        public Double keepRatio;
        /** "copy" or "recompute" (null: the engine's). */
        public String kv;
        /** 1 = greedy, up to {@link #MAX_BEAM} (transformers' beam search). */
        public int beam = 1;
        /** The most ids generated, a stop id included: 1 to the cache's room after the prompt (null: tokenizer.max_new_tokens). */
        public Integer maxNewTokens;
    }

    private final VLMLoader.Loaded bundle;
    public final VLMManifest manifest;
    public final HFTokenizer tokenizer;
    public final Manifest.Artifact artifact;
    public final Preprocessor preprocessor;
    private final VLMRunner runner;
    private final Engine.Clock clock;
    private Policy policy;
    private double keepRatio;
    private String kv;
    /** Per task the bundle holds a setting for (thresholds.tasks), its policy and keep ratio, each overridden by a load option. */
    private final Map<String, Controller.Setting> taskSettings = new LinkedHashMap<>();

    private VLMEngine(VLMLoader.Loaded bundle, Manifest.Artifact artifact, VLMRunner runner, Policy policy, double keepRatio,
                      String kv, Engine.Clock clock) {
        this.bundle = bundle;
        this.manifest = bundle.manifest;
        this.tokenizer = bundle.hfTokenizer;
        this.artifact = artifact;
        this.runner = runner;
        this.policy = policy;
        this.keepRatio = keepRatio;
        this.kv = kv;
        this.clock = clock;
        VLMManifest m = bundle.manifest;
        this.preprocessor = Preprocessor.stretched(m.imageSize, m.mean, m.std, m.rescaleFactor, Resample.Filter.of(m.resample));
    }

    // ------------------------------------------------------------------------------ settings
    /** A keep ratio's problem (null when it is a number in (0, 1]). */
    static String keepRatioProblem(double ratio) {
        return ratio > 0 && ratio <= 1 ? null : "keep ratio " + ratio + " must be a number in (0, 1]";
    }

    /** Visual tokens kept at a keep ratio: max(1, round(ratio x M)), Python's round (halves to even). */
    public static int keptTokens(double keepRatio, int numImageTokens) {
        return (int) Math.max(1, Math.rint(keepRatio * numImageTokens));
    }

    /**
     * The policy a manifest's thresholds (or one task's setting) describe: "full", or its policy with the
     * threshold (capped at 1) and patience (mmedge.runtime.vlm_engine._policy).
     */
    public static Policy policyFromThresholds(VLMManifest.Setting th) {
        return policyNamed(th.policy, th);
    }

    /** A policy name with a setting's threshold (capped at 1) and patience; "full" needs none. */
    public static Policy policyNamed(String name, VLMManifest.Setting th) {
        return "full".equals(name) ? Policy.of("full") : new Policy(name, Math.min(1.0, th.threshold), th.patience, 0.0);
    }

    /**
     * A policy given by name as the Python runtime takes one: with the threshold and patience of the
     * setting it replaces, the bundle's for `task` where it holds one (thresholds.tasks), else its
     * top-level thresholds'. ConfigException (arguments) for an unknown task.
     */
    public Policy policyForTask(String name, String task) {
        checkTask(task);
        VLMManifest.Setting s = task != null ? manifest.thresholds.tasks.get(task) : null;
        return policyNamed(name, s != null ? s : manifest.thresholds);
    }

    /**
     * Opens a generative VLM bundle: every loading check (the signature with options.verifyKey,
     * rollback with minSequence / expectName) before any graph file is used, the external data of
     * ONNX graphs, then the runner with every graph, then (by default) the self-check. A refused
     * bundle is a BundleException with the spec's reason code; bad options are a ConfigException.
     */
    public static VLMEngine load(Path root, VLMRunner.Factory factory, Options options) {
        Options o = options == null ? new Options() : options;
        o.check(factory, "VLMRunner.Factory");
        final Manifest.Artifact[] chosen = new Manifest.Artifact[1];
        VLMLoader.Loaded bundle = VLMLoader.load(root, o.loaderOptions(), m -> {
            chosen[0] = Engine.chooseArtifact(m.artifacts, factory, o);
            // the runner opens the shared weights and every graph's file from their verified bytes
            return factory.opensBytes() ? Engine.artifactFiles(chosen[0], m.graphs.keySet(), true) : Collections.<String>emptyList();
        });
        VLMManifest m = bundle.manifest;
        Engine.checkExternalData(bundle, chosen[0], m.graphs.keySet());
        VLMRunner runner = Engine.openRunner(root, factory, chosen[0],
                () -> factory.open(bundle, chosen[0], new ArrayList<>(m.graphs.keySet()), o.threads));
        VLMEngine engine = new VLMEngine(bundle, chosen[0], runner,
                o.policy != null ? o.policy : policyFromThresholds(m.thresholds), o.keepRatio != null ? o.keepRatio : m.thresholds.keepRatio,
                o.kv != null ? o.kv : m.thresholds.kv, o.clock);
        // the bundle's settings per task, each overridden by a policy or keep ratio given here
        for (Map.Entry<String, VLMManifest.Setting> e : m.thresholds.tasks.entrySet()) {
            VLMManifest.Setting s = e.getValue();
            engine.taskSettings.put(e.getKey(), new Controller.Setting(o.policy != null ? o.policy : policyFromThresholds(s),
                    o.keepRatio != null ? o.keepRatio : s.keepRatio));
        }
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

    /** The manifest's release.sequence (what an app stores as its next minimum), or null when it has none. */
    public Long releaseSequence() {
        return BundleLoader.releaseSequence(manifest.raw());
    }

    /** The default policy for any prompt (a task's may differ: {@link #settings(String)}). */
    public Policy policy() {
        return policy;
    }

    /** The default policy for every prompt and every task, as the load option {@link EngineOptions#policy} sets it. */
    public synchronized void setPolicy(Policy policy) {
        if (policy == null) throw new ConfigException("policy must not be null", "arguments");
        this.policy = policy;
        for (Map.Entry<String, Controller.Setting> e : taskSettings.entrySet()) {
            e.setValue(new Controller.Setting(policy, e.getValue().keepRatio));
        }
    }

    /** The default keep ratio for any prompt (a task's may differ: {@link #settings(String)}). */
    public double keepRatio() {
        return keepRatio;
    }

    /** The default keep ratio for every prompt and every task, as the load option {@link EngineOptions#keepRatio} sets it. */
    public synchronized void setKeepRatio(double ratio) {
        String p = keepRatioProblem(ratio);
        if (p != null) throw new ConfigException(p, "arguments");
        this.keepRatio = ratio;
        for (Map.Entry<String, Controller.Setting> e : taskSettings.entrySet()) {
            e.setValue(new Controller.Setting(e.getValue().policy, ratio));
        }
    }

    /** A task's problem (null when it is null, any prompt, or one of {@link VLMManifest#TASKS}). */
    static String taskProblem(String task) {
        return task == null || VLMManifest.TASKS.contains(task) ? null
                : "task '" + task + "' unknown; choose one of " + VLMManifest.TASKS + " or null (any prompt)";
    }

    private static void checkTask(String task) {
        String p = taskProblem(task);
        if (p != null) throw new ConfigException(p, "arguments");
    }

    /**
     * The policy and keep ratio generate() uses by default for `task` ("caption", "answer"; null: any
     * prompt): the bundle's setting for that task where it holds one (thresholds.tasks), else its top-level
     * one, either overridden by the load options ({@link #setPolicy}, {@link #setKeepRatio}).
     * ConfigException (arguments) for an unknown task.
     */
    public synchronized Controller.Setting settings(String task) {
        checkTask(task);
        Controller.Setting s = task != null ? taskSettings.get(task) : null;
        return s != null ? s : new Controller.Setting(policy, keepRatio);
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

    // ------------------------------------------------------------------------------ inputs
    /** The image as pixel_values (spec "Generative VLM bundles", Input: stretched with the bundle's filter, normalised). */
    public Preprocessor.Result preprocess(int[] argb, int width, int height) {
        return preprocessor.run(argb, width, height);
    }

    /** The prompt's ids: the chat template around the text, with the image block (ConfigException for an empty prompt). */
    public List<Integer> promptIds(String prompt) {
        if (prompt == null || HFTokenizer.pyStrip(prompt).isEmpty()) {
            throw new ConfigException("prompt must be a non-empty string", "arguments");
        }
        return VLMLoader.encodePrompt(tokenizer, manifest, prompt);
    }

    /** One generation's settings, checked: ConfigException (arguments) lists every problem. */
    private static final class Settings {
        final Policy policy;
        final double ratio;
        final String kv;
        final int beam;
        final int limit;
        /** The self-check's runs: refuse the bundle at the first non-finite logits (what they go on to generate is moot). */
        final boolean selfCheck;

        Settings(Policy policy, double ratio, String kv, int beam, int limit) {
            this(policy, ratio, kv, beam, limit, false);
        }

        Settings(Policy policy, double ratio, String kv, int beam, int limit, boolean selfCheck) {
            this.policy = policy;
            this.ratio = ratio;
            this.kv = kv;
            this.beam = beam;
            this.limit = limit;
            this.selfCheck = selfCheck;
        }
    }

    private Settings checked(Request request) {
        Request r = request == null ? new Request() : request;
        List<String> problems = new ArrayList<>();
        String t = taskProblem(r.task);
        if (t != null) problems.add(t);
        Controller.Setting defaults = t == null ? settings(r.task) : new Controller.Setting(policy, keepRatio);
        double ratio = r.keepRatio != null ? r.keepRatio : defaults.keepRatio;
        String mode = r.kv != null ? r.kv : kv;
        int limit = r.maxNewTokens != null ? r.maxNewTokens : manifest.maxNewTokens;
        String p = keepRatioProblem(ratio);
        if (p != null) problems.add(p);
        if (!KV_MODES.contains(mode)) problems.add("kv '" + mode + "' unknown; choose one of " + KV_MODES);
        if (r.beam < 1 || r.beam > MAX_BEAM) problems.add("beam " + r.beam + " must be an integer from 1 to " + MAX_BEAM);
        if (limit < 1) problems.add("maxNewTokens " + limit + " must be a whole number >= 1");
        if (!problems.isEmpty()) throw new ConfigException(problems, "arguments");
        return new Settings(r.policy != null ? r.policy : defaults.policy, ratio, mode, r.beam, limit);
    }

    // ------------------------------------------------------------------------------ generation
    /** The model's answer to `prompt` about an ARGB image (what Bitmap.getPixels gives); null request: the engine's defaults. */
    public Generation generate(int[] argb, int width, int height, String prompt, Request request) {
        long t0 = clock.nanoTime();
        float[] pixels = preprocess(argb, width, height).pixelValues;
        double preprocessMs = (clock.nanoTime() - t0) / 1e6;
        Generation g = generatePixels(pixels, prompt, request);
        Map<String, Double> timings = new LinkedHashMap<>();
        timings.put("preprocess", preprocessMs);
        timings.putAll(g.timingsMs);
        timings.put("total", (clock.nanoTime() - t0) / 1e6);
        return g.withTimings(timings);
    }

    /**
     * generate() under the bundle's caption prompt (tokenizer.caption_prompt) with its caption settings
     * (task "caption"); a request that names another task is refused (ConfigException, arguments).
     */
    public Generation caption(int[] argb, int width, int height, Request request) {
        Request r = new Request();
        if (request != null) {
            if (request.task != null && !"caption".equals(request.task)) {
                throw new ConfigException("caption() generates a caption: call generate(argb, width, height, prompt, request) "
                        + "for task '" + request.task + "'", "arguments");
            }
            r.policy = request.policy;
            r.keepRatio = request.keepRatio;
            r.kv = request.kv;
            r.beam = request.beam;
            r.maxNewTokens = request.maxNewTokens;
        }
        r.task = "caption";
        return generate(argb, width, height, manifest.captionPrompt, r);
    }

    /** Generation from prepared pixel_values (float32 [1, 3, S, S]) and a prompt (spec "Generation"). */
    public synchronized Generation generatePixels(float[] pixelValues, String prompt, Request request) {
        Settings s = checked(request);
        int size = manifest.imageSize;
        if (pixelValues == null || pixelValues.length != 3 * size * size) {
            throw new ConfigException("pixel_values must hold 3 x " + size + " x " + size + " floats", "arguments");
        }
        List<Integer> ids = promptIds(prompt);
        return decode(ids, pixelValues, s);
    }

    /** A partial answer: generated ids with their exits and confidences, its score and cache. */
    private static final class Hypothesis {
        final int[] tokens;
        final int[] exits;
        final double[] confidences;
        final double logprob;
        final KvCache cache;
        final boolean done;

        Hypothesis(int[] tokens, int[] exits, double[] confidences, double logprob, KvCache cache, boolean done) {
            this.tokens = tokens;
            this.exits = exits;
            this.confidences = confidences;
            this.logprob = logprob;
            this.cache = cache;
            this.done = done;
        }

        Hypothesis extend(int id, Word word, double logprob, boolean done) {
            int n = tokens.length;
            int[] t2 = Arrays.copyOf(tokens, n + 1);
            int[] e2 = Arrays.copyOf(exits, n + 1);
            double[] c2 = Arrays.copyOf(confidences, n + 1);
            t2[n] = id;
            e2[n] = word.exit;
            c2[n] = word.confidence;
            return new Hypothesis(t2, e2, c2, logprob, cache.copy(), done);
        }
    }

    /** One token's outcome: the logits it is chosen from, its exit and the learned confidence there. */
    private static final class Word {
        final float[] logits;
        final int exit;
        final double confidence;

        Word(float[] logits, int exit, double confidence) {
            this.logits = logits;
            this.exit = exit;
            this.confidence = confidence;
        }
    }

    /** One generation's graph calls and state (spec "Generation", 2-3). */
    private final class Decoding {
        final VLMGraphs graphs;
        final Policy policy;
        final String kv;
        final long nextPosition;
        final long nextSlot;
        final Word first;
        final Set<Integer> stopIds;
        final boolean selfCheck;

        Decoding(VLMGraphs graphs, Settings s, long nextPosition, long nextSlot, Word first) {
            this.graphs = graphs;
            this.policy = s.policy;
            this.kv = s.kv;
            this.nextPosition = nextPosition;
            this.nextSlot = nextSlot;
            this.first = first;
            this.stopIds = new HashSet<>(manifest.stopIds);
            this.selfCheck = s.selfCheck;
        }

        /** The n-th token's word; in the self-check, BundleException (self-check) when its logits are not finite. */
        Word next(Hypothesis hyp, int n) {
            Word w = word(hyp, n);
            if (selfCheck && Engine.nonFinite(w.logits) > 0) {
                throw new BundleException(BundleException.SELF_CHECK, root() + ": the graphs give non-finite logits on a test "
                        + "prompt: their weights are corrupt; export the bundle again");
            }
            return w;
        }

        /**
         * The stages for the n-th generated token of `hyp` (updating its cache): its logits, the exit
         * taken and the learned confidence there. The first token is the prefill's.
         */
        Word word(Hypothesis hyp, int n) {
            int stages = manifest.numStages();
            if (n == 0) return first;
            Tensor positions = Tensor.int64(new long[] {nextPosition + n - 1}, 1, 1);
            Tensor slot = Tensor.int64(new long[] {nextSlot + n - 1}, 1);
            boolean everyExit = LOGIT_POLICIES.contains(policy.kind);
            Controller.State state = new Controller.State();
            Tensor hidden = graphs.embed(Tensor.int64(new long[] {hyp.tokens[hyp.tokens.length - 1]}, 1, 1));
            float[] logits = null;
            int chosen = stages - 1;
            for (int s = 0; s < stages; s++) {
                VLMGraphs.Step out = graphs.step(s, hidden, positions, slot, hyp.cache);
                hidden = out.hidden;
                if (logits == null) { // still choosing
                    float[] stageLogits = everyExit ? graphs.head(out.exitHidden) : null;
                    state.add(stageLogits != null ? Controller.argmax(stageLogits) : -1, out.confidence,
                            stageLogits != null ? Controller.softmaxMax(stageLogits) : Double.NaN);
                    if (Controller.shouldStop(policy, state, stages, null)) {
                        logits = stageLogits != null ? stageLogits : graphs.head(out.exitHidden);
                        chosen = s;
                        if (WordDecoder.COPY.equals(kv)) break;
                    }
                }
            }
            if (WordDecoder.COPY.equals(kv) && chosen < stages - 1) graphs.fill(chosen, hidden, positions, slot, hyp.cache);
            return new Word(logits, chosen, state.confidences.get(chosen));
        }
    }

    /** Where the prompt's one block of image tokens starts (ConfigException "prompt" unless it holds one block of M). */
    private int imageBlock(List<Integer> ids) {
        int m = manifest.numImageTokens;
        List<Integer> at = new ArrayList<>();
        for (int i = 0; i < ids.size(); i++) if (ids.get(i) == manifest.imageTokenId) at.add(i);
        if (at.size() != m || (m > 0 && at.get(at.size() - 1) - at.get(0) != m - 1)) {
            throw new ConfigException("the prompt must hold one block of " + m + " image tokens (one tile); it holds " + at.size(),
                    "prompt");
        }
        return at.get(0);
    }

    /**
     * Generation from prompt ids and prepared pixel_values: the prompt (vision, embed, the kept visual
     * tokens in place of the image block at their unpruned positions), the prefill at full depth, then
     * greedy or beam search (spec "Generation").
     */
    private Generation decode(List<Integer> ids, float[] pixelValues, Settings s) {
        int m = manifest.numImageTokens;
        int start = imageBlock(ids);
        int k = keptTokens(s.ratio, m);
        int total = ids.size() - m + k;
        int room = manifest.maxSlots - total;
        if (s.limit > room) {
            throw new ConfigException("maxNewTokens " + s.limit + " must be from 1 to " + room + " (the cache holds "
                    + manifest.maxSlots + " slots, the prompt " + total + ")", "arguments");
        }
        long t0 = clock.nanoTime();
        VLMGraphs graphs = new VLMGraphs(runner, manifest, clock);
        // 1. the prompt
        long[] text = new long[ids.size() - m];
        long[] all = new long[ids.size()];
        for (int i = 0, j = 0; i < ids.size(); i++) {
            all[i] = ids.get(i);
            if (ids.get(i) != manifest.imageTokenId) text[j++] = ids.get(i);
        }
        int size = manifest.imageSize;
        VLMGraphs.Vision vision = graphs.vision(Tensor.float32(pixelValues, 1, 3, size, size), Tensor.int64(text, 1, text.length));
        float[] embedded = graphs.embed(Tensor.int64(all, 1, all.length)).floats();
        int dim = graphs.dim();
        float[] visual = vision.visual.floats();
        if (visual.length != m * dim) {
            throw new BackendException(runner.backend() + " gave visual " + vision.visual + " for graph vision; the embed graph's "
                    + "width is " + dim, null);
        }
        int[] kept = sorted(topK(vision.scores, k));
        float[] embeds = new float[total * dim];
        long[] positions = new long[total];
        System.arraycopy(embedded, 0, embeds, 0, start * dim);
        for (int i = 0; i < start; i++) positions[i] = i;
        for (int j = 0; j < k; j++) {
            System.arraycopy(visual, kept[j] * dim, embeds, (start + j) * dim, dim);
            positions[start + j] = start + kept[j];
        }
        int after = ids.size() - start - m;
        System.arraycopy(embedded, (start + m) * dim, embeds, (start + k) * dim, after * dim);
        for (int i = 0; i < after; i++) positions[start + k + i] = start + m + i;
        // 2. the prefill: every stage on the whole prompt, slot 0, empty caches
        KvCache cache = KvCache.zeros(manifest.depth(), manifest.numKvHeads, manifest.maxSlots, manifest.headDim);
        Tensor hidden = Tensor.float32(embeds, 1, total, dim);
        Tensor positionTensor = Tensor.int64(positions, 1, total);
        Tensor slot0 = Tensor.int64(new long[] {0}, 1);
        VLMGraphs.Step out = null;
        for (int st = 0; st < manifest.numStages(); st++) {
            out = graphs.step(st, hidden, positionTensor, slot0, cache);
            hidden = out.hidden;
        }
        Word first = new Word(graphs.head(out.exitHidden), manifest.numStages() - 1, out.confidence);
        double firstTokenMs = (clock.nanoTime() - t0) / 1e6;
        // 3. the tokens
        Decoding d = new Decoding(graphs, s, positions[total - 1] + 1, total, first);
        Hypothesis startHyp = new Hypothesis(new int[0], new int[0], new double[0], 0.0, cache, false);
        Hypothesis best = s.beam > 1 ? searchTransformers(startHyp, s.limit, s.beam, d) : search(startHyp, s.limit, d);
        Map<String, Double> timings = new LinkedHashMap<>(graphs.timings);
        timings.put("decode", (clock.nanoTime() - t0) / 1e6);
        return new Generation(tokenizer.decode(best.tokens), best.tokens, best.exits, best.confidences, best.logprob, s.ratio, k,
                ids, s.policy, s.kv, s.beam, firstTokenMs, timings);
    }

    /** Greedy search (generate.py search, beam 1): the best next id by double-precision log-softmax, ties to the lower id. */
    private Hypothesis search(Hypothesis start, int limit, Decoding d) {
        Hypothesis hyp = start;
        for (int n = 0; n < limit && !hyp.done; n++) {
            Word word = d.next(hyp, n);
            double[] logp = logSoftmax64(word.logits);
            int w = topK(logp, 1)[0];
            hyp = hyp.extend(w, word, hyp.logprob + logp[w], d.stopIds.contains(w));
        }
        return hyp;
    }

    /** A continuation in transformers' beam search. */
    private static final class Candidate {
        final float score;
        final Hypothesis hyp;
        final int id;
        final Word word;

        Candidate(float score, Hypothesis hyp, int id, Word word) {
            this.score = score;
            this.hyp = hyp;
            this.id = id;
            this.word = word;
        }
    }

    /** A finished beam hypothesis with its score (summed log-probability over its length). */
    private static final class Finished {
        final double score;
        final Hypothesis hyp;

        Finished(double score, Hypothesis hyp) {
            this.score = score;
            this.hyp = hyp;
        }
    }

    /**
     * Beam search as transformers' generate() (generate.py search_transformers; spec "Generation", 5):
     * per step the top max(2, 1 + distinct stop ids) x beam continuations by summed float32
     * log-probability; a stopping one (a stop id, or the last allowed token) among the top `beam` is
     * set aside as finished (score over its length), the best `beam` others run on, until no beam can
     * beat the worst finished one. The best finished hypothesis wins (the first on ties).
     */
    private Hypothesis searchTransformers(Hypothesis start, int limit, int beam, Decoding d) {
        int keep = Math.max(2, 1 + d.stopIds.size()) * beam;
        List<Hypothesis> running = Collections.singletonList(start);
        List<Finished> finished = new ArrayList<>();
        for (int n = 0; n < limit; n++) {
            List<Candidate> candidates = new ArrayList<>();
            for (Hypothesis hyp : running) {
                Word word = d.next(hyp, n);
                float[] logp = logSoftmax32(word.logits);
                for (int w : topK(logp, keep)) candidates.add(new Candidate((float) hyp.logprob + logp[w], hyp, w, word));
            }
            Collections.sort(candidates, (a, b) -> descending(a.score, b.score)); // stable: ties keep their order
            List<Hypothesis> next = new ArrayList<>();
            for (int rank = 0; rank < Math.min(keep, candidates.size()); rank++) {
                Candidate c = candidates.get(rank);
                boolean stops = d.stopIds.contains(c.id) || n == limit - 1;
                Hypothesis made = c.hyp.extend(c.id, c.word, c.score, stops);
                if (stops) {
                    if (rank < beam) finished.add(new Finished((double) c.score / (n + 1), made));
                } else if (next.size() < beam) {
                    next.add(made);
                }
            }
            Collections.sort(finished, (a, b) -> descending(a.score, b.score));
            if (finished.size() > beam) finished = new ArrayList<>(finished.subList(0, beam));
            running = next;
            if (running.isEmpty() || (finished.size() == beam && running.get(0).logprob / (n + 1) <= finished.get(beam - 1).score)) {
                break;
            }
        }
        if (finished.isEmpty()) return running.get(0);
        Finished best = finished.get(0);
        for (Finished f : finished) if (f.score > best.score) best = f;
        return best.hyp;
    }

    // ------------------------------------------------------------------------------ arithmetic
    /** Higher first; equal (==) values compare equal, as Python's sort keys do. */
    private static int descending(double a, double b) {
        return a > b ? -1 : a < b ? 1 : 0;
    }

    private static int[] sorted(int[] values) {
        int[] out = values.clone();
        Arrays.sort(out);
        return out;
    }

    /** The indices of the k largest values, largest first, ties to the lower index (NaN last). */
    static int[] topK(float[] values, int k) {
        double[] v = new double[values.length];
        for (int i = 0; i < v.length; i++) v[i] = values[i];
        return topK(v, k);
    }

    /** The indices of the k largest values, largest first, ties to the lower index (NaN last). */
    static int[] topK(double[] values, int k) {
        Integer[] order = new Integer[values.length];
        for (int i = 0; i < order.length; i++) order[i] = i;
        Arrays.sort(order, (a, b) -> {
            boolean na = Double.isNaN(values[a]);
            boolean nb = Double.isNaN(values[b]);
            if (na != nb) return na ? 1 : -1;
            int c = na ? 0 : descending(values[a], values[b]);
            return c != 0 ? c : Integer.compare(a, b);
        });
        int n = Math.min(k, order.length);
        int[] out = new int[n];
        for (int i = 0; i < n; i++) out[i] = order[i];
        return out;
    }

    /** Rounds a sum's additions: identity for double precision, to float32 for numpy's float32 sums. */
    private interface Rounding {
        double round(double x);
    }

    /** numpy's pairwise summation (its add.reduce of a contiguous array), each addition rounded by `r`. */
    private static double pairwiseSum(double[] a, int from, int n, Rounding r) {
        if (n < 8) {
            double res = r.round(0);
            for (int i = 0; i < n; i++) res = r.round(res + a[from + i]);
            return res;
        }
        if (n <= 128) {
            double[] acc = new double[8];
            for (int j = 0; j < 8; j++) acc[j] = a[from + j];
            int i = 8;
            for (; i < n - (n % 8); i += 8) for (int j = 0; j < 8; j++) acc[j] = r.round(acc[j] + a[from + i + j]);
            double res = r.round(r.round(r.round(acc[0] + acc[1]) + r.round(acc[2] + acc[3]))
                    + r.round(r.round(acc[4] + acc[5]) + r.round(acc[6] + acc[7])));
            for (; i < n; i++) res = r.round(res + a[from + i]);
            return res;
        }
        int n2 = n / 2;
        n2 -= n2 % 8;
        return r.round(pairwiseSum(a, from, n2, r) + pairwiseSum(a, from + n2, n - n2, r));
    }

    /** log-softmax in double precision as numpy computes it: (z - max z) - log(sum exp(z - max z)). */
    static double[] logSoftmax64(float[] logits) {
        double top = Double.NEGATIVE_INFINITY;
        for (float z : logits) top = Math.max(top, z);
        double[] e = new double[logits.length];
        for (int i = 0; i < e.length; i++) e[i] = Math.exp((double) logits[i] - top);
        double lse = Math.log(pairwiseSum(e, 0, e.length, x -> x));
        double[] out = new double[logits.length];
        for (int i = 0; i < out.length; i++) out[i] = ((double) logits[i] - top) - lse;
        return out;
    }

    /**
     * log-softmax in float32 as numpy computes it on float32 logits (transformers' beam scores): each
     * operation rounded to float32, the sum pairwise. (numpy's float32 exp and log are vectorised
     * approximations that may differ from the correctly rounded values used here by an ulp; scores
     * then differ by about 1e-7, which changes a beam only on a near tie.)
     */
    static float[] logSoftmax32(float[] logits) {
        float top = Float.NEGATIVE_INFINITY;
        for (float z : logits) top = Math.max(top, z);
        float[] d = new float[logits.length];
        double[] e = new double[logits.length];
        for (int i = 0; i < d.length; i++) {
            d[i] = logits[i] - top;
            e[i] = (float) Math.exp(d[i]);
        }
        float lse = (float) Math.log(pairwiseSum(e, 0, e.length, x -> (float) x));
        float[] out = new float[logits.length];
        for (int i = 0; i < out.length; i++) out[i] = d[i] - lse;
        return out;
    }

    // ------------------------------------------------------------------------------ self-check
    /**
     * Step 12: a grey image under the caption prompt through every graph: two tokens at full depth at
     * the smallest keep ratio, then two at keep 1 that exit at the first exit (the fill graphs);
     * BundleException (self-check) unless every run returns finite logits (at the first that is not)
     * and outputs of the expected shapes.
     */
    public synchronized void selfCheck() {
        int size = manifest.imageSize;
        int[] grey = new int[size * size];
        Arrays.fill(grey, 0xff808080);
        float[] pixels = preprocess(grey, size, size).pixelValues;
        List<Integer> ids = promptIds(manifest.captionPrompt);
        double smallest = Collections.min(manifest.keepRatios);
        Settings[] runs = {
            new Settings(Policy.of("full"), smallest, WordDecoder.COPY, 1, 2, true),
            new Settings(new Policy("max_probability", 0.0, 2, 0.0), 1.0, WordDecoder.COPY, 1, 2, true),
        };
        for (Settings s : runs) {
            try {
                decode(ids, pixels, s); // refuses at the first non-finite logits (Settings.selfCheck)
            } catch (BackendException exc) {
                throw new BundleException(BundleException.SELF_CHECK, root() + ": the " + runner.backend() + " graphs fail on a "
                        + "test prompt (" + BundleLoader.shortText(exc.getMessage(), 300) + "); export the bundle again", exc);
            }
        }
    }
}
