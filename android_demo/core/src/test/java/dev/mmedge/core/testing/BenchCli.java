package dev.mmedge.core.testing;

import dev.mmedge.core.BenchQueries;
import dev.mmedge.core.BenchmarkOptions;
import dev.mmedge.core.BenchmarkRunner;
import dev.mmedge.core.BundleLoader;
import dev.mmedge.core.CaptionBenchmarkRunner;
import dev.mmedge.core.CaptionEngine;
import dev.mmedge.core.CaptionManifest;
import dev.mmedge.core.Engine;
import dev.mmedge.core.MemoryProbe;
import dev.mmedge.core.VLMBenchmarkRunner;
import dev.mmedge.core.VLMEngine;
import dev.mmedge.core.VLMManifest;

import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * BenchmarkActivity's path on the JVM, for the host-side contract test (tests/test_android_core.py):
 * the same extras as `am start` (--es KEY VALUE, --ei KEY INT), the same dispatch on the bundle's
 * kind, BenchmarkRunner, CaptionBenchmarkRunner or VLMBenchmarkRunner, result file and `.done` file,
 * with the replay runners in place of ONNX Runtime and the golden queries that have known answers
 * (captions: the caption vectors' images with their references) in place of the app's asset queries.
 * A pushed query folder (mmedge.queries) is read as the app reads it (a generative VLM bundle runs on
 * nothing else); --replay names the recordings of another vectors file (an adapted bundle's:
 * tests/vectors/adapted/queries-nlvr2.json; a VLM bundle's graph calls, default
 * tests/vectors/vlm/replay.json, as scripts/make_vlm_replay.py records them).
 *
 *   java dev.mmedge.core.testing.BenchCli --golden tests/vectors/golden [--replay FILE] --es mmedge.bundle /abs/b.mmedge ...
 */
public final class BenchCli {
    private BenchCli() {
    }

    public static void main(String[] args) throws Exception {
        Path golden = Golden.golden();
        Path replayFile = null;
        Map<String, Object> extras = new HashMap<>();
        for (int i = 0; i < args.length; i++) {
            String flag = args[i];
            if (flag.equals("--golden")) {
                golden = Paths.get(args[++i]);
            } else if (flag.equals("--replay")) {
                replayFile = Paths.get(args[++i]);
            } else if (flag.equals("--es")) {
                extras.put(args[i + 1], args[i + 2]);
                i += 2;
            } else if (flag.equals("--ei")) {
                extras.put(args[i + 1], Integer.valueOf(args[i + 2]));
                i += 2;
            } else {
                System.err.println("unknown argument " + flag);
                System.exit(2);
            }
        }
        Object result = extras.get(BenchmarkOptions.RESULT);
        if (!(result instanceof String)) {
            System.err.println("no " + BenchmarkOptions.RESULT + ": nowhere to write");
            System.exit(2);
        }
        try {
            BenchmarkOptions options = BenchmarkOptions.fromExtras(extras);
            Map<String, Object> extra = new LinkedHashMap<>();
            extra.put("app", "dev.mmedge.core.testing.BenchCli (JVM, replayed graph outputs)");
            extra.put("cpu_affinity_applied", false);
            Map<String, Object> out;
            String kind = BundleLoader.kind(Paths.get(options.bundle));
            if (VLMManifest.KIND.equals(kind)) {
                Map<String, Object> replay = replayFile != null ? Golden.json(replayFile) : VLMVectors.replay();
                VLMBenchmarkRunner.EngineLoader loader = o -> VLMEngine.load(Paths.get(o.bundle),
                        new ReplayVLMRunner.Factory(replay), o.applyTo(new VLMEngine.Options()));
                out = VLMBenchmarkRunner.run(options, loader, m -> VLMBenchmarkRunner.pushedPrompts(options, BenchQueries.PNG), MemoryProbe.PROC, Engine.Clock.SYSTEM, extra);
            } else if (CaptionManifest.KIND.equals(kind)) {
                Map<String, Object> replay = CaptionVectors.replay();
                List<BenchQueries.Query> images = new java.util.ArrayList<>();
                for (BenchQueries.Query q : CaptionVectors.benchImages()) if (q.answer != null) images.add(q); // the scenes: with references
                CaptionBenchmarkRunner.EngineLoader loader = o -> CaptionEngine.load(Paths.get(o.bundle),
                        new ReplayCaptionRunner.Factory(replay), o.applyTo(new CaptionEngine.Options()));
                out = CaptionBenchmarkRunner.run(options, loader, m -> images, MemoryProbe.PROC, Engine.Clock.SYSTEM, extra);
            } else {
                Map<String, Object> doc = Golden.json(replayFile != null ? replayFile : golden.resolve("queries.json"));
                List<BenchQueries.Query> queries = options.queries != null
                        ? BenchQueries.readFolder(Paths.get(options.queries), BenchQueries.PNG) : Golden.answeredQueries(golden);
                BenchmarkRunner.EngineLoader loader = o -> Engine.load(Paths.get(o.bundle), new ReplayStageRunner.Factory(doc),
                        o.applyTo(new Engine.Options()));
                out = BenchmarkRunner.run(options, loader, m -> queries, MemoryProbe.PROC, Engine.Clock.SYSTEM, extra);
            }
            BenchmarkRunner.writeResult((String) result, out);
        } catch (Exception exc) {
            BenchmarkRunner.writeError((String) result, exc);
            System.err.println(exc);
            System.exit(1);
        }
    }
}
