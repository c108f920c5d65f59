package dev.mmedge.demo;

import android.app.Activity;
import android.content.res.AssetManager;
import android.os.Bundle;
import android.os.Debug;
import android.os.Process;
import android.util.Log;
import android.widget.TextView;

import dev.mmedge.core.BenchQueries;
import dev.mmedge.core.BenchmarkOptions;
import dev.mmedge.core.BenchmarkRunner;
import dev.mmedge.core.BundleLoader;
import dev.mmedge.core.CaptionBenchmarkRunner;
import dev.mmedge.core.CaptionEngine;
import dev.mmedge.core.CaptionManifest;
import dev.mmedge.core.ConfigException;
import dev.mmedge.core.CpuList;
import dev.mmedge.core.Engine;
import dev.mmedge.core.IO;
import dev.mmedge.core.ImageFiles;
import dev.mmedge.core.MemoryProbe;
import dev.mmedge.core.VLMBenchmarkRunner;
import dev.mmedge.core.VLMEngine;
import dev.mmedge.core.VLMManifest;

import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The benchmark entry point `mmedge bench --device` drives through adb, exactly as
 * android_demo/BENCHMARK.md says: intent extras in, the result JSON (or {"error": ...}) and an
 * empty `<result>.done` out. The work itself is the core's BenchmarkRunner, for a captioning
 * bundle (kind "caption") its CaptionBenchmarkRunner, for a generative VLM bundle (kind "vlm") its
 * VLMBenchmarkRunner (all JVM-tested); this class only reads the extras, pins the thread, decodes the
 * queries (the folder the host pushed, `mmedge.queries`, else the app's asset queries for the bundle's
 * task; a VLM bundle runs on the pushed prompts only) and measures PSS.
 */
public final class BenchmarkActivity extends Activity {
    private static final String TAG = "mmedge-bench";

    @Override
    protected void onCreate(Bundle savedInstanceState) {
        super.onCreate(savedInstanceState);
        TextView view = new TextView(this);
        view.setText("mmedge benchmark running…");
        setContentView(view);
        Map<String, Object> extras = new HashMap<>();
        Bundle b = getIntent().getExtras();
        if (b != null) for (String key : b.keySet()) extras.put(key, b.get(key));
        Thread worker = new Thread(() -> {
            run(extras);
            runOnUiThread(this::finish);
        }, "mmedge-bench");
        worker.start();
    }

    private void run(Map<String, Object> extras) {
        Object result = extras.get(BenchmarkOptions.RESULT);
        if (!(result instanceof String)) {
            Log.e(TAG, "no " + BenchmarkOptions.RESULT + " extra: nowhere to write the result");
            return;
        }
        String resultPath = (String) result;
        try {
            BenchmarkOptions options = BenchmarkOptions.fromExtras(extras);
            Map<String, Object> extra = new LinkedHashMap<>();
            extra.put("app", "dev.mmedge.demo " + appVersion());
            extra.put("cpu_affinity_applied", options.cpus == null ? null : pin(options.cpus));
            // Pinned before the engine loads: the runtimes' worker threads inherit this thread's mask.
            MemoryProbe memory = new MemoryProbe() {
                @Override
                public double peakRssMb() {
                    return MemoryProbe.PROC.peakRssMb();
                }

                @Override
                public double pssMb() {
                    return Debug.getPss() / 1024.0; // kB -> MB
                }
            };
            Map<String, Object> out;
            String kind = BundleLoader.kind(Paths.get(options.bundle));
            if (VLMManifest.KIND.equals(kind)) {
                VLMBenchmarkRunner.EngineLoader loader = o -> VLMEngine.load(Paths.get(o.bundle), Backends.vlmFactory(o.backend),
                        o.applyTo(new VLMEngine.Options()));
                out = VLMBenchmarkRunner.run(options, loader, m -> VLMBenchmarkRunner.pushedPrompts(options, BenchmarkActivity::readImage),
                        memory, Engine.Clock.SYSTEM, extra);
            } else if (CaptionManifest.KIND.equals(kind)) {
                CaptionBenchmarkRunner.EngineLoader loader = o -> CaptionEngine.load(Paths.get(o.bundle),
                        Backends.captionFactory(o.backend), o.applyTo(new CaptionEngine.Options()));
                out = CaptionBenchmarkRunner.run(options, loader, m -> queries(options, "caption"), memory, Engine.Clock.SYSTEM, extra);
            } else {
                BenchmarkRunner.EngineLoader loader = o -> Engine.load(Paths.get(o.bundle), Backends.factory(o.backend),
                        o.applyTo(new Engine.Options()));
                out = BenchmarkRunner.run(options, loader, m -> queries(options, m.task), memory, Engine.Clock.SYSTEM, extra);
            }
            BenchmarkRunner.writeResult(resultPath, out);
            Log.i(TAG, "wrote " + resultPath);
        } catch (Exception | OutOfMemoryError exc) { // the contract: every failure becomes {"error": ...}
            Log.e(TAG, "benchmark failed", exc);
            try {
                BenchmarkRunner.writeError(resultPath, exc);
            } catch (IOException io) {
                Log.e(TAG, "cannot write " + resultPath + " (is the results directory writable by the app?)", io);
            }
        }
    }

    private String appVersion() {
        try {
            return getPackageManager().getPackageInfo(getPackageName(), 0).versionName;
        } catch (android.content.pm.PackageManager.NameNotFoundException exc) {
            return "unknown";
        }
    }

    /** Pins this thread with toybox's taskset and reads the mask back; the result says what was applied. */
    private static String pin(List<Integer> cpus) throws IOException, InterruptedException {
        int tid = Process.myTid();
        java.lang.Process p = new ProcessBuilder("taskset", "-p", CpuList.hexMask(cpus), String.valueOf(tid))
                .redirectErrorStream(true).start();
        String output = new String(IO.readAll(p.getInputStream(), 1 << 16), StandardCharsets.UTF_8).trim();
        if (p.waitFor() != 0) throw new ConfigException("taskset could not pin the benchmark thread: " + output, "cpu affinity");
        for (String line : new String(Files.readAllBytes(Paths.get("/proc/self/task/" + tid + "/status")),
                StandardCharsets.UTF_8).split("\n")) {
            if (line.startsWith("Cpus_allowed_list:")) return line.substring(line.indexOf(':') + 1).trim();
        }
        return "unknown";
    }

    /** The pushed folder's queries when the host sent one, else the app's asset queries for the task. */
    private List<BenchQueries.Query> queries(BenchmarkOptions options, String task) {
        if (options.queries == null) return loadQueries(task);
        return BenchQueries.readFolder(Paths.get(options.queries), BenchmarkActivity::readImage);
    }

    /** A pushed query's image file, decoded as the demo screen decodes images (Images.decode). */
    private static ImageFiles.Decoded readImage(java.nio.file.Path file) throws IOException {
        Images.Argb im = Images.decode(Files.readAllBytes(file));
        return new ImageFiles.Decoded(im.pixels, im.width, im.height);
    }

    /**
     * The asset queries for a task: assets/bench/<task>/ (scripts/make_android_queries.py); for
     * "caption" each query's answer is the image's reference caption.
     */
    private List<BenchQueries.Query> loadQueries(String task) {
        AssetManager assets = getAssets();
        String dir = "bench/" + task + "/";
        try {
            BenchQueries doc;
            try (InputStream in = assets.open(dir + "queries.json")) {
                doc = BenchQueries.parse(IO.readAll(in, 1 << 24));
            }
            List<BenchQueries.Query> out = new ArrayList<>();
            for (BenchQueries.Entry e : doc.entries) {
                List<ImageFiles.Decoded> images = new ArrayList<>();
                for (String name : e.images) {
                    try (InputStream in = assets.open(dir + name)) {
                        Images.Argb im = Images.decode(IO.readAll(in, 1 << 26));
                        images.add(new ImageFiles.Decoded(im.pixels, im.width, im.height));
                    }
                }
                out.add(new BenchQueries.Query(String.join("+", e.images), images, e.text, e.answer));
            }
            return out;
        } catch (IOException exc) {
            throw new ConfigException("the app has no test queries for task " + task + " (assets/" + dir + "); add them with "
                    + "`python scripts/make_android_queries.py --task " + task + "` and rebuild", "benchmark queries");
        }
    }
}
