package dev.mmedge.core;

import java.nio.file.Path;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Arrays;
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
 */
public final class Engine implements AutoCloseable {
    private static final int STAGE_TIMES = 64;

    /** Load options. */
    public static final class Options {
        /** Artifact precision: fp32 or int8. */
        public String precision = "fp32";
        /** Artifact format (null: the factory's preference). */
        public String format;
        /** Default keep ratio (null: the manifest's thresholds.keep_ratio). */
        public Double keepRatio;
        /** Default exit policy (null: the manifest's thresholds). */
        public Policy policy;
        /** Runtime threads. */
        public int threads = 1;
        /**
         * Run one grey query through every stage on load and refuse (code self-check) unless every
         * output has the declared shape and type and finite values.
         */
        public boolean selfCheck = true;
        /**
         * PEM SubjectPublicKeyInfo of the Ed25519 key the bundle must be signed with (null: no
         * signature check). An app that ships a key sets it: the signature is verified over the
         * manifest's bytes before they are parsed.
         */
        public byte[] verifyKey;
        /**
         * Rollback protection: the lowest manifest release.sequence accepted (null: none). The app
         * stores the highest sequence it has accepted (Engine.releaseSequence()) and passes it here
         * next time; with a verification key, an older signed bundle is then refused.
         */
        public Long minSequence;
        /** The manifest release.name the bundle must have (null: any). */
        public String expectName;
        /** Monotonic clock in nanoseconds (tests pass a fake one). */
        public Clock clock = Clock.SYSTEM;
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
        public final Preprocessor.Result image;
        public final WordTokenizer.Encoding text;

        Inputs(Preprocessor.Result image, WordTokenizer.Encoding text) {
            this.image = image;
            this.text = text;
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
        /** Row-major patch indices the prefilter kept, sorted ascending. */
        public final int[] keptVisualTokens;
        public final double keepRatio;
        /** preprocess, each stage run, total: milliseconds, in that order. */
        public final Map<String, Double> timingsMs;

        Prediction(String answer, int answerIndex, double confidence, double maxProbability, int exitIndex, int exitLayer,
                   int[] keptVisualTokens, double keepRatio, Map<String, Double> timingsMs) {
            this.answer = answer;
            this.answerIndex = answerIndex;
            this.confidence = confidence;
            this.maxProbability = maxProbability;
            this.exitIndex = exitIndex;
            this.exitLayer = exitLayer;
            this.keptVisualTokens = keptVisualTokens;
            this.keepRatio = keepRatio;
            this.timingsMs = Collections.unmodifiableMap(timingsMs);
        }
    }

    /** Every exit's outputs for one query (full depth). */
    public static final class AllExits {
        public final int[] answers;
        public final double[] confidences;
        public final double[] maxProbabilities;
        public final float[][] logits;
        /** kept_index as the model gives it (score order). */
        public final int[] keptIndex;
        /** The same, sorted ascending. */
        public final int[] keptVisualTokens;
        public final double[] stageMs;

        AllExits(int[] answers, double[] confidences, double[] maxProbabilities, float[][] logits, int[] keptIndex,
                 double[] stageMs) {
            this.answers = answers;
            this.confidences = confidences;
            this.maxProbabilities = maxProbabilities;
            this.logits = logits;
            this.keptIndex = keptIndex;
            this.keptVisualTokens = sorted(keptIndex);
            this.stageMs = stageMs;
        }
    }

    private final BundleLoader.Loaded bundle;
    public final Manifest manifest;
    public final List<String> labels;
    public final WordTokenizer tokenizer;
    public final Preprocessor preprocessor;
    public final Manifest.Artifact artifact;
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
        this.runner = runner;
        this.policy = policy;
        this.keepRatio = keepRatio;
        this.clock = options.clock;
        this.warnings = options.warnings;
        for (Manifest.KeepRatio k : manifest.keepRatios) groups.put(k.keepRatio, k.stages);
    }

    private static List<String> checkOptions(Options o, StageRunner.Factory factory) {
        List<String> problems = new ArrayList<>();
        if (factory == null) problems.add("a StageRunner.Factory is needed (ONNX Runtime or ExecuTorch)");
        if (!"fp32".equals(o.precision) && !"int8".equals(o.precision)) {
            problems.add("precision '" + o.precision + "' unknown; choose fp32 or int8");
        }
        if (factory != null && o.format != null && !Arrays.asList(factory.formats()).contains(o.format)) {
            problems.add("format '" + o.format + "' is not one " + factory.runtime() + " reads; choose one of "
                    + Arrays.toString(factory.formats()));
        }
        if (o.threads < 1) problems.add("threads " + o.threads + " must be at least 1");
        if (o.keepRatio != null && (o.keepRatio.isNaN() || o.keepRatio.isInfinite())) {
            problems.add("keep ratio must be a number such as 0.5");
        }
        if (o.clock == null) problems.add("clock must not be null");
        problems.addAll(loaderOptions(o).problems());
        return problems;
    }

    private static BundleLoader.Options loaderOptions(Options o) {
        BundleLoader.Options out = new BundleLoader.Options();
        out.verifyKeyPem = o.verifyKey;
        out.minSequence = o.minSequence;
        out.expectName = o.expectName;
        return out;
    }

    /** The artifact a factory runs for these options, or BundleException saying what the bundle has. */
    static Manifest.Artifact chooseArtifact(Manifest m, StageRunner.Factory factory, Options o) {
        return chooseArtifact(m.artifacts, factory.runtime(), factory.formats(), o.precision, o.format);
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

    /** The files of an artifact that its runner opens. */
    static List<String> artifactFiles(Manifest m, Manifest.Artifact a) {
        Set<String> out = new LinkedHashSet<>();
        if (a.file != null) out.add(a.file);
        for (Manifest.KeepRatio k : m.keepRatios) {
            for (String stage : k.stages) {
                String f = a.stages.get(stage).file;
                if (f != null) out.add(f);
            }
        }
        return new ArrayList<>(out);
    }

    /**
     * An ONNX-format artifact's stage graphs read external data from the listed external_data file
     * only (OnnxExternalData), checked on the bytes the runner opens, before it opens them.
     */
    static void checkExternalData(BundleLoader.Loaded bundle, Manifest.Artifact artifact, List<String> stages) {
        if (!"onnx".equals(artifact.format)) return; // ORT-format files and programs hold their own weights
        Set<String> seen = new LinkedHashSet<>();
        for (String stage : stages) {
            String file = artifact.stages.get(stage).file;
            if (file == null || !seen.add(file)) continue;
            byte[] bytes = bundle.files.get(file);
            if (bytes == null) {
                Manifest.FileEntry entry = bundle.manifest.files.get(file);
                bytes = BundleLoader.readMember(bundle.root, file, entry == null ? 0 : entry.bytes);
            }
            OnnxExternalData.check(file, bytes, artifact.externalData);
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
        List<String> problems = checkOptions(o, factory);
        if (!problems.isEmpty()) throw new ConfigException(problems, "arguments");
        final Manifest.Artifact[] chosen = new Manifest.Artifact[1];
        BundleLoader.Loaded bundle = BundleLoader.load(root, loaderOptions(o), m -> {
            double ratio = o.keepRatio != null ? o.keepRatio : m.thresholds.keepRatio;
            if (m.keepRatio(ratio) == null) {
                throw new ConfigException("keep ratio " + ratio + " was not exported; this bundle has " + m.ratios(), "arguments");
            }
            chosen[0] = chooseArtifact(m, factory, o);
            return factory.opensBytes() ? artifactFiles(m, chosen[0]) : Collections.<String>emptyList();
        });
        Manifest m = bundle.manifest;
        double ratio = o.keepRatio != null ? o.keepRatio : m.thresholds.keepRatio;
        Policy policy = o.policy != null ? o.policy : Policy.fromThresholds(m.thresholds);
        List<String> stages = new ArrayList<>();
        for (Manifest.KeepRatio k : m.keepRatios) stages.addAll(k.stages);
        checkExternalData(bundle, chosen[0], stages);
        StageRunner runner;
        try {
            runner = factory.open(bundle, chosen[0], stages, o.threads);
        } catch (MMEdgeException exc) {
            throw exc;
        } catch (Exception exc) {
            throw new BundleException(BundleException.SELF_CHECK, root + ": " + factory.runtime() + " cannot open the "
                    + chosen[0].kind() + " artifact (" + BundleLoader.shortText(String.valueOf(exc), 300)
                    + "); export the bundle again", exc);
        }
        Engine engine = new Engine(bundle, chosen[0], runner, policy, ratio, o);
        try {
            if (o.selfCheck) engine.selfCheck();
        } catch (RuntimeException exc) {
            engine.close();
            throw exc;
        }
        return engine;
    }

    public Path root() {
        return bundle.root;
    }

    /** The manifest's release.sequence (what an app stores as its next minimum), or null when it has none. */
    public Long releaseSequence() {
        Object release = manifest.raw().get("release");
        Object sequence = release instanceof Map ? Json.obj(release).get("sequence") : null;
        return Json.isInteger(sequence) ? Json.lng(sequence) : null;
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
        WordTokenizer.Encoding encoding = tokenizer.encode(text);
        Preprocessor.Result image = preprocessor.run(argb, width, height);
        if (encoding.truncated) {
            int room = tokenizer instanceof BertWordPieceTokenizer ? tokenizer.maxLength() - 2 : tokenizer.maxLength();
            warnings.warn("text has more than the model's " + room + " tokens: truncated to the first " + room);
        }
        return new Inputs(image, encoding);
    }

    private Map<String, Tensor> feeds(Inputs inputs) {
        long s = preprocessor.size();
        long l = tokenizer.maxLength();
        Map<String, Tensor> out = new LinkedHashMap<>();
        out.put("pixel_values", Tensor.float32(inputs.image.pixelValues, 1, 3, s, s));
        out.put("input_ids", Tensor.int32(inputs.text.inputIds, 1, l));
        out.put("text_mask", Tensor.int32(inputs.text.textMask, 1, l));
        return out;
    }

    // ------------------------------------------------------------------ running
    /** The stage names of a keep ratio. */
    public List<String> stagesFor(double ratio) {
        List<String> names = groups.get(ratio);
        if (names == null) {
            throw new ConfigException("keep ratio " + ratio + " was not exported; this bundle has " + manifest.ratios(), "arguments");
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
        Map<String, Tensor> out;
        try {
            out = runner.run(stage, feeds);
        } catch (MMEdgeException exc) {
            throw exc;
        } catch (Exception exc) {
            throw new BackendException(runner.backend() + " failed on stage " + stage + " ("
                    + BundleLoader.shortText(String.valueOf(exc), 300) + ")", exc);
        }
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

    private Inputs grey() {
        int s = preprocessor.size();
        int[] argb = new int[s * s];
        Arrays.fill(argb, 0xff808080);
        return preprocess(argb, s, s, "check");
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
        int patch = manifest.patchSize();
        int patches = patch > 0 ? (manifest.imageSize / patch) * (manifest.imageSize / patch) : 0;
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

    private static int nonFinite(float[] values) {
        int bad = 0;
        for (float v : values) if (Float.isNaN(v) || Float.isInfinite(v)) bad++;
        return bad;
    }

    /** Answers one question, stopping at the first exit the policy accepts (null: the engine's defaults). */
    public Prediction predict(int[] argb, int width, int height, String text, Policy policyArg, Double ratioArg) {
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
        Map<String, Tensor> feeds = feeds(preprocess(argb, width, height, text));
        Map<String, Double> timings = new LinkedHashMap<>();
        timings.put("preprocess", (clock.nanoTime() - tStart) / 1e6);
        Controller.State state = new Controller.State();
        Map<String, Tensor> first = null;
        Map<String, Tensor> out = null;
        for (int i = 0; i < names.size(); i++) {
            Run r = run(names.get(i), i == 0 ? feeds : next(out, first));
            out = r.out;
            if (first == null) first = out;
            timings.put(names.get(i), r.ms);
            state.elapsedMs += r.ms;
            float[] logits = out.get("logits").floats();
            state.add(Controller.argmax(logits), out.get("confidence").floats()[0], Controller.softmaxMax(logits));
            Double next = i + 1 < names.size() ? stageMs(names.get(i + 1)) : null;
            if (Controller.shouldStop(p, state, names.size(), next)) break;
        }
        timings.put("total", (clock.nanoTime() - tStart) / 1e6);
        int exit = state.answers.size() - 1;
        int answer = state.answers.get(exit);
        return new Prediction(labels.get(answer), answer, state.confidences.get(exit), state.maxProbabilities.get(exit), exit,
                manifest.exitLayers.get(exit), sorted(first.get("kept_index").ints()), ratio, timings);
    }

    /** Full depth, every exit's outputs (conformance tests, calibration). */
    public AllExits allExits(int[] argb, int width, int height, String text, Double ratioArg) {
        List<String> names = stagesFor(ratioArg != null ? ratioArg : keepRatio);
        List<Run> runs = allStages(feeds(preprocess(argb, width, height, text)), names);
        int n = runs.size();
        int[] answers = new int[n];
        double[] conf = new double[n];
        double[] maxp = new double[n];
        float[][] logits = new float[n][];
        double[] ms = new double[n];
        for (int i = 0; i < n; i++) {
            logits[i] = runs.get(i).out.get("logits").floats().clone();
            answers[i] = Controller.argmax(logits[i]);
            conf[i] = runs.get(i).out.get("confidence").floats()[0];
            maxp[i] = Controller.softmaxMax(logits[i]);
            ms[i] = runs.get(i).ms;
        }
        return new AllExits(answers, conf, maxp, logits, runs.get(0).out.get("kept_index").ints().clone(), ms);
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
