package dev.mmedge.core;

import java.nio.file.Path;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.Collections;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * Loads a bundle (every check of the spec), preprocesses, runs the stages of the keep ratio in
 * use over a {@link StageRunner} and lets the controller stop early (mmedge.runtime.engine.Engine):
 *
 * <pre>
 *   Engine engine = Engine.load(bundleDir, new OrtStageRunner.Factory(), new Engine.Options());
 *   Engine.Prediction p = engine.predict(argb, width, height, "what color is the circle ?", null, null);
 *   p.answer, p.exitIndex, p.keptVisualTokens, p.timingsMs
 * </pre>
 *
 * An adapted NLVR2 bundle ({@code preprocessing.num_images} 2, {@link #numImages}) takes two images
 * per query, left then right: {@code predict(Arrays.asList(left, right), text, null, null)}, each an
 * {@link ImageFiles.Decoded}; another count is an {@link ImageCountException}. An adapted retrieval
 * bundle ({@code head} "match-score", {@link #head}) answers "yes" or "no" and gives the match
 * probability as {@link Prediction#matchScore} (docs/bundle-format.md, "Two images, and a match score").
 */
public final class Engine implements AutoCloseable {
    private static final int STAGE_TIMES = 64;

    /** Load options (those both engines take: {@link EngineOptions}). */
    public static final class Options extends EngineOptions {
        /** Receives warnings (a text truncated to max_length). */
        public Warnings warnings = Warnings.IGNORE;
    }

    /** A monotonic nanosecond clock. */
    public interface Clock {
        Clock SYSTEM = System::nanoTime;

        long nanoTime();
    }

    /** Where warnings go. */
    public interface Warnings {
        Warnings IGNORE = message -> { };

        void warn(String message);
    }

    /** Stage-0 inputs and what they were made from. */
    public static final class Inputs {
        /** The (first) image, prepared: for a two-image bundle the left one. */
        public final Preprocessor.Result image;
        /** Every image of the query, prepared, in the order given. */
        public final List<Preprocessor.Result> images;
        /** pixel_values: float32 [1, 3, S, S], or the images' stacked [1, I, 3, S, S] for a bundle of I > 1 images. */
        public final float[] pixelValues;
        public final WordTokenizer.Encoding text;

        Inputs(List<Preprocessor.Result> images, WordTokenizer.Encoding text) {
            this.images = Collections.unmodifiableList(new ArrayList<>(images));
            this.image = images.get(0);
            this.text = text;
            if (images.size() == 1) {
                this.pixelValues = image.pixelValues;
            } else {
                int plane = image.pixelValues.length;
                float[] stacked = new float[plane * images.size()];
                for (int i = 0; i < images.size(); i++) System.arraycopy(images.get(i).pixelValues, 0, stacked, i * plane, plane);
                this.pixelValues = stacked;
            }
        }
    }

    /** One answer. */
    public static final class Prediction {
        public final String answer;
        public final int answerIndex;
        /** Learned confidence at the exit taken. */
        public final double confidence;
        /** Top softmax probability at the exit taken. */
        public final double maxProbability;
        /** 0-based exit taken. */
        public final int exitIndex;
        /** The layer after which it exits. */
        public final int exitLayer;
        /**
         * Row-major patch indices the prefilter kept, sorted ascending; with two images, image i's
         * patch j is i * N + j (N patches per image).
         */
        public final int[] keptVisualTokens;
        public final double keepRatio;
        /** preprocess, each stage run, total: milliseconds, in that order. */
        public final Map<String, Double> timingsMs;
        /**
         * head "match-score": the match probability sigmoid(s) at the exit taken (the answer is "yes"
         * when it exceeds 0.5); null for a softmax classifier.
         */
        public final Double matchScore;

        Prediction(String answer, int answerIndex, double confidence, double maxProbability, int exitIndex, int exitLayer,
                   int[] keptVisualTokens, double keepRatio, Map<String, Double> timingsMs, Double matchScore) {
            this.answer = answer;
            this.answerIndex = answerIndex;
            this.confidence = confidence;
            this.maxProbability = maxProbability;
            this.exitIndex = exitIndex;
            this.exitLayer = exitLayer;
            this.keptVisualTokens = keptVisualTokens;
            this.keepRatio = keepRatio;
            this.timingsMs = Collections.unmodifiableMap(timingsMs);
            this.matchScore = matchScore;
        }
    }

    /** Every exit's outputs for one query (full depth). */
    public static final class AllExits {
        public final int[] answers;
        public final double[] confidences;
        public final double[] maxProbabilities;
        public final float[][] logits;
        /** kept_index as the model gives it (score order), one list: with two images, image i's patch j is i * N + j. */
        public final int[] keptIndex;
        /** The same, sorted ascending. */
        public final int[] keptVisualTokens;
        public final double[] stageMs;
        /** head "match-score": each exit's match probability sigmoid(s); null for a softmax classifier. */
        public final double[] matchScores;

        AllExits(int[] answers, double[] confidences, double[] maxProbabilities, float[][] logits, int[] keptIndex,
                 double[] stageMs, double[] matchScores) {
            this.answers = answers;
            this.confidences = confidences;
            this.maxProbabilities = maxProbabilities;
            this.logits = logits;
            this.keptIndex = keptIndex;
            this.keptVisualTokens = sorted(keptIndex);
            this.stageMs = stageMs;
            this.matchScores = matchScores;
        }
    }

    private final BundleLoader.Loaded bundle;
    public final Manifest manifest;
    public final List<String> labels;
    public final WordTokenizer tokenizer;
    public final Preprocessor preprocessor;
    public final Manifest.Artifact artifact;
    /** Images per query: preprocessing.num_images (2 for an adapted NLVR2 model), else 1. */
    public final int numImages;
    /** How the logits are read: {@link Manifest#SOFTMAX}, or {@link Manifest#MATCH_SCORE} (Prediction.matchScore). */
    public final String head;
    private final StageRunner runner;
    private final Clock clock;
    private final Warnings warnings;
    private final Map<Double, List<String>> groups = new LinkedHashMap<>();
    private final Map<String, ArrayDeque<Double>> stageTimes = new HashMap<>();
    private Policy policy;
    private double keepRatio;

    private Engine(BundleLoader.Loaded bundle, Manifest.Artifact artifact, StageRunner runner, Policy policy,
                   double keepRatio, Options options) {
        this.bundle = bundle;
        this.manifest = bundle.manifest;
        this.labels = Collections.unmodifiableList(manifest.labels);
        this.tokenizer = bundle.tokenizer;
        this.preprocessor = new Preprocessor(manifest);
        this.artifact = artifact;
        this.numImages = manifest.numImages;
        this.head = manifest.head;
        this.runner = runner;
        this.policy = policy;
        this.keepRatio = keepRatio;
        this.clock = options.clock;
        this.warnings = options.warnings;
        for (Manifest.KeepRatio k : manifest.keepRatios) groups.put(k.keepRatio, k.stages);
    }

    /** The artifact a factory runs for these options, or BundleException saying what the bundle has. */
    static Manifest.Artifact chooseArtifact(List<Manifest.Artifact> artifacts, RunnerFactory factory, EngineOptions o) {
        return chooseArtifact(artifacts, factory.runtime(), factory.formats(), o.precision, o.format);
    }

    /**
     * The first artifact of `runtime` and `precision` in `format` (null: the first of `formats`, the
     * runner's preference, that the bundle has); BundleException (unsupported) saying what it has.
     */
    static Manifest.Artifact chooseArtifact(List<Manifest.Artifact> artifacts, String runtime, String[] formats,
                                            String precision, String format) {
        List<String> wanted = format != null ? Collections.singletonList(format) : Arrays.asList(formats);
        for (String f : wanted) {
            for (Manifest.Artifact a : artifacts) {
                if (a.runtime.equals(runtime) && a.precision.equals(precision) && a.format.equals(f)) return a;
            }
        }
        Set<String> have = new LinkedHashSet<>();
        for (Manifest.Artifact a : artifacts) have.add(a.runtime + "/" + a.format + "/" + a.precision);
        throw new BundleException(BundleException.UNSUPPORTED, "the bundle has no " + runtime + " " + precision + " artifact in format "
                + String.join(" or ", wanted) + "; it has " + String.join(", ", have) + ". Make one with `mmedge export`"
                + " (or `mmedge bundle --runtime " + runtime + "`)");
    }

    /**
     * The files of an artifact that its runner opens: its program file, with `externalData` its shared
     * weights file (a captioning artifact's runner hands those bytes over), and each stage's (or graph's) file.
     */
    static List<String> artifactFiles(Manifest.Artifact a, Collection<String> stages, boolean externalData) {
        Set<String> out = new LinkedHashSet<>();
        if (a.file != null) out.add(a.file);
        if (externalData && a.externalData != null) out.add(a.externalData);
        for (String stage : stages) {
            String f = a.stages.get(stage).file;
            if (f != null) out.add(f);
        }
        return new ArrayList<>(out);
    }

    /**
     * Step 11: an ONNX-format artifact's stage (or graph) files read external data from the listed
     * external_data file only (OnnxExternalData), checked on the bytes the runner opens, before it opens them.
     */
    static void checkExternalData(BundleLoader.Checked<?> bundle, Manifest.Artifact artifact, Collection<String> stages) {
        if (!"onnx".equals(artifact.format)) return; // ORT-format files and programs hold their own weights
        Set<String> seen = new LinkedHashSet<>();
        for (String stage : stages) {
            String file = artifact.stages.get(stage).file;
            if (file == null || !seen.add(file)) continue;
            byte[] bytes = bundle.files.get(file);
            if (bytes == null) {
                Manifest.FileEntry entry = bundle.listedFiles.get(file);
                bytes = BundleLoader.readMember(bundle.root, file, entry == null ? 0 : entry.bytes);
            }
            OnnxExternalData.check(file, bytes, artifact.externalData);
        }
    }

    /** A call into a backend, which may throw the backend's own exceptions. */
    interface BackendCall<R> {
        R call() throws Exception;
    }

    /**
     * Runs a stage or graph (`what`, e.g. "stage k16_stage0"); a backend's own error is a
     * BackendException "BACKEND failed on WHAT (...)" (an MMEdgeException passes as it is).
     */
    static <R> R backendCall(String backend, String what, BackendCall<R> call) {
        try {
            return call.call();
        } catch (MMEdgeException exc) {
            throw exc;
        } catch (Exception exc) {
            throw new BackendException(backend + " failed on " + what + " (" + BundleLoader.shortText(String.valueOf(exc), 300) + ")",
                    exc);
        }
    }

    /**
     * Step 12's opening: the runner `opener` gives; a backend's own error is a BundleException
     * (self-check) naming the artifact (an MMEdgeException passes as it is).
     */
    static <R> R openRunner(Path root, RunnerFactory factory, Manifest.Artifact artifact, BackendCall<R> opener) {
        try {
            return opener.call();
        } catch (MMEdgeException exc) {
            throw exc;
        } catch (Exception exc) {
            throw new BundleException(BundleException.SELF_CHECK, root + ": " + factory.runtime() + " cannot open the "
                    + artifact.kind() + " artifact (" + BundleLoader.shortText(String.valueOf(exc), 300)
                    + "); export the bundle again", exc);
        }
    }

    /**
     * Opens a bundle: every loading check of the spec before any stage file is used (the signature
     * when options.verifyKey is set, rollback when options.minSequence / expectName are), the
     * external data of ONNX stage graphs, then the runner, then (by default) a self-check query
     * through every stage of every keep ratio. A refused bundle is a BundleException with the
     * spec's reason code ({@link BundleException#code()}); bad options are a ConfigException.
     */
    public static Engine load(Path root, StageRunner.Factory factory, Options options) {
        Options o = options == null ? new Options() : options;
        o.check(factory, "StageRunner.Factory");
        final Manifest.Artifact[] chosen = new Manifest.Artifact[1];
        BundleLoader.Loaded bundle = BundleLoader.load(root, o.loaderOptions(), m -> {
            double ratio = o.startRatio(m.thresholds);
            if (m.keepRatio(ratio) == null) throw new ConfigException(EngineOptions.notExported(ratio, m.ratios()), "arguments");
            chosen[0] = chooseArtifact(m.artifacts, factory, o);
            return factory.opensBytes() ? artifactFiles(chosen[0], stageNames(m), false) : Collections.<String>emptyList();
        });
        Manifest m = bundle.manifest;
        double ratio = o.startRatio(m.thresholds);
        Policy policy = o.policy != null ? o.policy : Policy.fromThresholds(m.thresholds);
        List<String> stages = stageNames(m);
        checkExternalData(bundle, chosen[0], stages);
        StageRunner runner = openRunner(root, factory, chosen[0], () -> factory.open(bundle, chosen[0], stages, o.threads));
        Engine engine = new Engine(bundle, chosen[0], runner, policy, ratio, o);
        o.runSelfCheck(engine::selfCheck, engine::close);
        return engine;
    }

    /** Every stage of every keep ratio, in the manifest's order. */
    private static List<String> stageNames(Manifest m) {
        List<String> stages = new ArrayList<>();
        for (Manifest.KeepRatio k : m.keepRatios) stages.addAll(k.stages);
        return stages;
    }

    public Path root() {
        return bundle.root;
    }

    /** The manifest's release.sequence (what an app stores as its next minimum), or null when it has none. */
    public Long releaseSequence() {
        return BundleLoader.releaseSequence(manifest.raw());
    }

    /** The manifest's release.name, or null when it has none. */
    public String releaseName() {
        Object release = manifest.raw().get("release");
        Object name = release instanceof Map ? Json.obj(release).get("name") : null;
        return name instanceof String ? (String) name : null;
    }

    public String backend() {
        return runner.backend();
    }

    public Policy policy() {
        return policy;
    }

    public void setPolicy(Policy policy) {
        this.policy = policy;
    }

    public double keepRatio() {
        return keepRatio;
    }

    public void setKeepRatio(double ratio) {
        stagesFor(ratio);
        this.keepRatio = ratio;
    }

    @Override
    public void close() {
        runner.close();
    }

    // ------------------------------------------------------------------ inputs
    /**
     * Stage-0 inputs for an ARGB image and a text (spec "Inputs"; an adapted encoder's bundle,
     * resize "pillow-bicubic" / tokenizer kind "bert-wordpiece": spec "Adapted encoders").
     */
    public Inputs preprocess(int[] argb, int width, int height, String text) {
        return preprocess(one(argb, width, height), text);
    }

    /**
     * Stage-0 inputs for the query's images, {@link #numImages} of them in order (left, right for a
     * two-image bundle: each prepared alone, stacked to [1, 2, 3, S, S]); ImageCountException for
     * another count.
     */
    public Inputs preprocess(List<ImageFiles.Decoded> images, String text) {
        checkCount(images);
        WordTokenizer.Encoding encoding = tokenizer.encode(text);
        List<Preprocessor.Result> prepared = new ArrayList<>();
        for (ImageFiles.Decoded image : images) {
            if (image == null) throw new ImageException("an image of the query is null; pass ARGB pixels with their size");
            prepared.add(preprocessor.run(image.argb, image.width, image.height));
        }
        if (encoding.truncated) {
            int room = tokenizer instanceof BertWordPieceTokenizer ? tokenizer.maxLength() - 2 : tokenizer.maxLength();
            warnings.warn("text has more than the model's " + room + " tokens: truncated to the first " + room);
        }
        return new Inputs(prepared, encoding);
    }

    private static List<ImageFiles.Decoded> one(int[] argb, int width, int height) {
        return Collections.singletonList(new ImageFiles.Decoded(argb, width, height));
    }

    /** The query's images must be {@link #numImages} (ImageCountException otherwise, as the Python Engine). */
    private void checkCount(List<ImageFiles.Decoded> images) {
        int got = images == null ? 0 : images.size();
        if (got != numImages) throw new ImageCountException(numImages, got, root().toString());
    }

    private Map<String, Tensor> feeds(Inputs inputs) {
        long l = tokenizer.maxLength();
        Map<String, Tensor> out = new LinkedHashMap<>();
        out.put("pixel_values", Tensor.float32(inputs.pixelValues, BundleLoader.pixelShape(manifest)));
        out.put("input_ids", Tensor.int32(inputs.text.inputIds, 1, l));
        out.put("text_mask", Tensor.int32(inputs.text.textMask, 1, l));
        return out;
    }

    // ------------------------------------------------------------------ running
    /** The stage names of a keep ratio. */
    public List<String> stagesFor(double ratio) {
        List<String> names = groups.get(ratio);
        if (names == null) {
            throw new ConfigException(EngineOptions.notExported(ratio, manifest.ratios()), "arguments");
        }
        return names;
    }

    private static final class Run {
        final Map<String, Tensor> out;
        final double ms;

        Run(Map<String, Tensor> out, double ms) {
            this.out = out;
            this.ms = ms;
        }
    }

    private Run run(String stage, Map<String, Tensor> feeds) {
        long t0 = clock.nanoTime();
        Map<String, Tensor> out = backendCall(runner.backend(), "stage " + stage, () -> runner.run(stage, feeds));
        double ms = (clock.nanoTime() - t0) / 1e6;
        Manifest.Stage spec = manifest.stages.get(stage);
        for (Manifest.TensorSpec t : spec.outputs) {
            if (out == null || out.get(t.name) == null) {
                throw new BackendException(runner.backend() + " gave no output " + t.name + " for stage " + stage, null);
            }
        }
        ArrayDeque<Double> times = stageTimes.get(stage);
        if (times == null) stageTimes.put(stage, times = new ArrayDeque<>());
        times.addLast(ms);
        if (times.size() > STAGE_TIMES) times.removeFirst();
        return new Run(out, ms);
    }

    /** Median of a stage's recent measured times, null before it has run. */
    public Double stageMs(String stage) {
        ArrayDeque<Double> times = stageTimes.get(stage);
        if (times == null || times.isEmpty()) return null;
        double[] s = new double[times.size()];
        int i = 0;
        for (double t : times) s[i++] = t;
        Arrays.sort(s);
        int mid = s.length / 2;
        return s.length % 2 == 1 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
    }

    private Map<String, Tensor> next(Map<String, Tensor> previous, Map<String, Tensor> first) {
        Map<String, Tensor> in = new LinkedHashMap<>();
        in.put("hidden_in", previous.get("hidden"));
        in.put("attention_mask", first.get("attention_mask")); // every later stage reuses stage 0's
        return in;
    }

    private List<Run> allStages(Map<String, Tensor> feeds, List<String> names) {
        List<Run> runs = new ArrayList<>();
        for (int i = 0; i < names.size(); i++) {
            Map<String, Tensor> in = i == 0 ? feeds : next(runs.get(i - 1).out, runs.get(0).out);
            runs.add(run(names.get(i), in));
        }
        return runs;
    }

    /** The self-check and warm-up query: a uniform grey image (value 128) for each of the bundle's images. */
    private Inputs grey() {
        int s = preprocessor.size();
        int[] argb = new int[s * s];
        Arrays.fill(argb, 0xff808080);
        return preprocess(Collections.nCopies(numImages, new ImageFiles.Decoded(argb, s, s)), "check");
    }

    /**
     * Stage 0's kept_index ([1, k], or [I, k] for I images) as one list in model order; image i's patch
     * j is i * N + j (N patches per image), as the Python Engine numbers them.
     */
    private int[] kept(Tensor keptIndex) {
        int[] kept = keptIndex.ints().clone();
        long[] shape = keptIndex.shape();
        int rows = shape.length == 2 ? (int) shape[0] : 1;
        int patches = manifest.patchesPerImage();
        if (rows <= 1 || patches == 0) return kept;
        int k = kept.length / rows;
        for (int i = 0; i < kept.length; i++) kept[i] += (i / k) * patches;
        return kept;
    }

    /**
     * A match-score head's match probability: softmax(logits)[1] = sigmoid(s) for logits [0, s], in
     * double precision as the Python Engine computes it, 1 / (1 + exp(logits[0] - logits[1])).
     */
    public static double matchProbability(float[] logits) {
        return 1.0 / (1.0 + Math.exp((double) logits[0] - (double) logits[1]));
    }

    private Double matchScore(float[] logits) {
        return Manifest.MATCH_SCORE.equals(head) ? matchProbability(logits) : null;
    }

    /** Runs every stage a few times so that latency budgets have measured stage times. */
    public void warmUp(int runs, double ratio) {
        List<String> names = stagesFor(ratio);
        Map<String, Tensor> feeds = feeds(grey());
        for (int r = 0; r < runs; r++) allStages(feeds, names);
    }

    /**
     * One query (a uniform grey image) through every stage of every keep ratio; BundleException
     * (code self-check) unless every declared output is there with its shape and dtype, every float
     * output is finite (weights full of NaN give NaN everywhere: such a bundle would answer with
     * confidence NaN) and the kept indices are patches of the image.
     */
    public void selfCheck() {
        Map<String, Tensor> feeds = feeds(grey());
        int patches = manifest.patchesPerImage();
        for (Manifest.KeepRatio group : manifest.keepRatios) {
            List<Run> runs;
            try {
                runs = allStages(feeds, group.stages);
            } catch (BackendException exc) {
                throw new BundleException(BundleException.SELF_CHECK, root() + ": the " + runner.backend()
                        + " stages fail on a test query (" + BundleLoader.shortText(exc.getMessage(), 300)
                        + "); export the bundle again", exc);
            }
            for (int i = 0; i < runs.size(); i++) {
                String name = group.stages.get(i);
                for (Manifest.TensorSpec spec : manifest.stages.get(name).outputs) {
                    Tensor got = runs.get(i).out.get(spec.name);
                    if (!got.hasShape(spec.shape)) {
                        throw new BundleException(BundleException.SELF_CHECK, root() + ": stage " + name + " output " + spec.name
                                + " has shape " + Arrays.toString(got.shape()) + ", the manifest says "
                                + Arrays.toString(spec.shape) + "; export the bundle again");
                    }
                    boolean floating = "float32".equals(spec.dtype);
                    boolean dtypeOk = floating ? "float32".equals(got.dtype)
                            : "int32".equals(got.dtype) || "int64".equals(got.dtype);
                    if (!dtypeOk) {
                        throw new BundleException(BundleException.SELF_CHECK, root() + ": stage " + name + " output " + spec.name
                                + " is " + got.dtype + ", the manifest says " + spec.dtype + "; export the bundle again");
                    }
                    if (floating) {
                        int bad = nonFinite(got.floats());
                        if (bad > 0) {
                            throw new BundleException(BundleException.SELF_CHECK, root() + ": stage " + name + " gives "
                                    + bad + " non-finite value" + (bad == 1 ? "" : "s") + " (NaN or infinity) in "
                                    + spec.name + " on a test query: its weights are corrupt; export the bundle again");
                        }
                    }
                }
            }
            int[] kept;
            try {
                kept = runs.get(0).out.get("kept_index").ints();
            } catch (ArithmeticException exc) {
                kept = new int[] {-1};
            }
            for (int k : kept) {
                if (patches > 0 && (k < 0 || k >= patches)) {
                    throw new BundleException(BundleException.SELF_CHECK, root() + ": the prefilter keeps token indices outside 0.."
                            + (patches - 1) + "; export the bundle again");
                }
            }
        }
    }

    /** How many values are NaN or infinite. */
    static int nonFinite(float[] values) {
        int bad = 0;
        for (float v : values) if (Float.isNaN(v) || Float.isInfinite(v)) bad++;
        return bad;
    }

    /** Answers one question, stopping at the first exit the policy accepts (null: the engine's defaults). */
    public Prediction predict(int[] argb, int width, int height, String text, Policy policyArg, Double ratioArg) {
        return predict(one(argb, width, height), text, policyArg, ratioArg);
    }

    /**
     * Answers one query of {@link #numImages} images (a two-image bundle: left, right), stopping at the
     * first exit the policy accepts (null: the engine's defaults); ImageCountException for another count.
     */
    public Prediction predict(List<ImageFiles.Decoded> images, String text, Policy policyArg, Double ratioArg) {
        checkCount(images);
        Policy p = policyArg != null ? policyArg : policy;
        double ratio = ratioArg != null ? ratioArg : keepRatio;
        List<String> names = stagesFor(ratio);
        if (p.kind.equals("latency_budget")) {
            for (String n : names) {
                if (stageMs(n) == null) {
                    warmUp(3, ratio);
                    break;
                }
            }
        }
        long tStart = clock.nanoTime();
        Map<String, Tensor> feeds = feeds(preprocess(images, text));
        Map<String, Double> timings = new LinkedHashMap<>();
        timings.put("preprocess", (clock.nanoTime() - tStart) / 1e6);
        Controller.State state = new Controller.State();
        Map<String, Tensor> first = null;
        Map<String, Tensor> out = null;
        float[] logits = null;
        for (int i = 0; i < names.size(); i++) {
            Run r = run(names.get(i), i == 0 ? feeds : next(out, first));
            out = r.out;
            if (first == null) first = out;
            timings.put(names.get(i), r.ms);
            state.elapsedMs += r.ms;
            logits = out.get("logits").floats();
            state.add(Controller.argmax(logits), out.get("confidence").floats()[0], Controller.softmaxMax(logits));
            Double next = i + 1 < names.size() ? stageMs(names.get(i + 1)) : null;
            if (Controller.shouldStop(p, state, names.size(), next)) break;
        }
        timings.put("total", (clock.nanoTime() - tStart) / 1e6);
        int exit = state.answers.size() - 1;
        int answer = state.answers.get(exit);
        return new Prediction(labels.get(answer), answer, state.confidences.get(exit), state.maxProbabilities.get(exit), exit,
                manifest.exitLayers.get(exit), sorted(kept(first.get("kept_index"))), ratio, timings, matchScore(logits));
    }

    /** Full depth, every exit's outputs (conformance tests, calibration). */
    public AllExits allExits(int[] argb, int width, int height, String text, Double ratioArg) {
        return allExits(one(argb, width, height), text, ratioArg);
    }

    /** Full depth, every exit's outputs for a query of {@link #numImages} images; ImageCountException for another count. */
    public AllExits allExits(List<ImageFiles.Decoded> images, String text, Double ratioArg) {
        checkCount(images);
        List<String> names = stagesFor(ratioArg != null ? ratioArg : keepRatio);
        List<Run> runs = allStages(feeds(preprocess(images, text)), names);
        int n = runs.size();
        int[] answers = new int[n];
        double[] conf = new double[n];
        double[] maxp = new double[n];
        float[][] logits = new float[n][];
        double[] ms = new double[n];
        double[] match = Manifest.MATCH_SCORE.equals(head) ? new double[n] : null;
        for (int i = 0; i < n; i++) {
            logits[i] = runs.get(i).out.get("logits").floats().clone();
            answers[i] = Controller.argmax(logits[i]);
            conf[i] = runs.get(i).out.get("confidence").floats()[0];
            maxp[i] = Controller.softmaxMax(logits[i]);
            ms[i] = runs.get(i).ms;
            if (match != null) match[i] = matchProbability(logits[i]);
        }
        return new AllExits(answers, conf, maxp, logits, kept(runs.get(0).out.get("kept_index")), ms, match);
    }

    public List<Long> exitFlops(double ratio) {
        Manifest.KeepRatio k = manifest.keepRatio(ratio);
        if (k == null) throw new ConfigException("keep ratio " + ratio + " was not exported", "arguments");
        return k.exitFlops;
    }

    static int[] sorted(int[] values) {
        int[] out = values.clone();
        Arrays.sort(out);
        return out;
    }
}
