package dev.mmedge.core;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/** The load options that {@link Engine.Options} and {@link CaptionEngine.Options} share. */
public abstract class EngineOptions {
    /** Artifact precision: fp32 or int8 (a generative VLM bundle's also int4). */
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
     * Run a grey image through every stage (or graph) on load and refuse (code self-check) unless
     * every output has the declared shape and type and finite values.
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
     * stores the highest sequence it has accepted (the engine's releaseSequence()) and passes it here
     * next time; with a verification key, an older signed bundle is then refused.
     */
    public Long minSequence;
    /** The manifest release.name the bundle must have (null: any). */
    public String expectName;
    /** Monotonic clock in nanoseconds (tests pass a fake one). */
    public Engine.Clock clock = Engine.Clock.SYSTEM;

    EngineOptions() {
    }

    /** What a subclass adds to {@link #problems} (before the clock and the loader's options). */
    void ownProblems(List<String> out) {
    }

    /** The precisions this kind of bundle is exported in. */
    List<String> precisions() {
        return Arrays.asList("fp32", "int8");
    }

    /** Every problem with these options for `factory` (named `factoryName` when it is missing); empty when fine. */
    final List<String> problems(RunnerFactory factory, String factoryName) {
        List<String> problems = new ArrayList<>();
        if (factory == null) problems.add("a " + factoryName + " is needed (ONNX Runtime or ExecuTorch)");
        if (!precisions().contains(precision)) {
            problems.add("precision '" + precision + "' unknown; choose " + String.join(" or ", precisions()));
        }
        if (factory != null && format != null && !Arrays.asList(factory.formats()).contains(format)) {
            problems.add("format '" + format + "' is not one " + factory.runtime() + " reads; choose one of "
                    + Arrays.toString(factory.formats()));
        }
        if (threads < 1) problems.add("threads " + threads + " must be at least 1");
        if (keepRatio != null && (keepRatio.isNaN() || keepRatio.isInfinite())) {
            problems.add("keep ratio must be a number such as 0.5");
        }
        ownProblems(problems);
        if (clock == null) problems.add("clock must not be null");
        problems.addAll(loaderOptions().problems());
        return problems;
    }

    /** ConfigException (arguments) listing every problem of {@link #problems}, if any. */
    final void check(RunnerFactory factory, String factoryName) {
        List<String> problems = problems(factory, factoryName);
        if (!problems.isEmpty()) throw new ConfigException(problems, "arguments");
    }

    /** The keep ratio the engine starts with: {@link #keepRatio}, else the manifest's thresholds.keep_ratio. */
    final double startRatio(Manifest.Thresholds thresholds) {
        return keepRatio != null ? keepRatio : thresholds.keepRatio;
    }

    /** "keep ratio R was not exported; this bundle has [...]" */
    static String notExported(double ratio, List<Double> exported) {
        return "keep ratio " + ratio + " was not exported; this bundle has " + exported;
    }

    /**
     * Step 12's query on a newly opened engine: runs `selfCheck` when {@link #selfCheck} is set; on any
     * failure closes the engine (`close`: its runner) and rethrows.
     */
    final void runSelfCheck(Runnable selfCheck, Runnable close) {
        try {
            if (this.selfCheck) selfCheck.run();
        } catch (RuntimeException exc) {
            close.run();
            throw exc;
        }
    }

    /** The signature and rollback options the loader checks. */
    final BundleLoader.Options loaderOptions() {
        BundleLoader.Options out = new BundleLoader.Options();
        out.verifyKeyPem = verifyKey;
        out.minSequence = minSequence;
        out.expectName = expectName;
        return out;
    }
}
