package dev.mmedge.core;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;

import dev.mmedge.core.testing.CaptionVectors;
import dev.mmedge.core.testing.Golden;
import dev.mmedge.core.testing.ReplayCaptionRunner;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import org.junit.AfterClass;
import org.junit.BeforeClass;
import org.junit.Test;

/**
 * Conformance of the caption engine on the captioning golden vectors (tests/vectors/caption/,
 * made by the Python CaptionEngine on onnxruntime): every image's pixel_values bit for bit, then
 * through CaptionEngine over the replayed graph calls (replay.json) every caption of every image,
 * keep ratio, policy, kv mode and search: the generated ids, words, text and exit of every id
 * equal, confidences and scores within the vectors' tolerance, and every graph call the Python
 * runtime made made again (and no other). The counts are printed at the end.
 */
public class CaptionVectorsTest {
    private static Map<String, Object> doc;
    private static Map<String, Object> replay;
    private static Path bundle;
    private static ReplayCaptionRunner.Factory factory;
    private static CaptionEngine engine;
    private static final Map<String, Integer> counts = new TreeMap<>();

    private static void count(String what) {
        counts.merge(what, 1, Integer::sum);
    }

    @BeforeClass
    public static void load() throws Exception {
        doc = CaptionVectors.vectors();
        replay = CaptionVectors.replay();
        bundle = CaptionVectors.assembleBundle(Files.createTempDirectory("mmedge-caption-"));
        factory = new ReplayCaptionRunner.Factory(replay);
        engine = CaptionEngine.load(bundle, factory, new CaptionEngine.Options());
    }

    @AfterClass
    public static void report() {
        if (engine != null) engine.close();
        System.out.println("# caption agreement (Java core): " + counts + ", all equal");
    }

    @Test
    public void theRecordingsBelongToTheseVectorsAndThisBundle() throws Exception {
        byte[] manifest = Files.readAllBytes(bundle.resolve("manifest.json"));
        assertEquals("the bundle changed: run python scripts/make_caption_vectors.py", doc.get("manifest_sha256"),
                IO.sha256Hex(manifest));
        assertEquals("replay.json is stale: run python scripts/make_caption_replay.py", doc.get("manifest_sha256"),
                replay.get("manifest_sha256"));
        assertEquals("replay.json is stale: run python scripts/make_caption_replay.py", replay.get("vectors_sha256"),
                IO.sha256Hex(Files.readAllBytes(CaptionVectors.dir().resolve("vectors.json"))));
        assertEquals("mmedge-caption-replay-1", replay.get("format"));
        // the loader kept, and the runner was given, the verified bytes of every graph and the weights
        assertEquals(engine.manifest.graphs.size() + 1, factory.openedFiles.size());
        assertTrue(factory.openedFiles.contains("onnx/fp32/weights.bin"));
    }

    @Test
    public void preprocessingIsBitIdentical() {
        for (Object o : Json.arr(doc.get("images"))) {
            Map<String, Object> entry = Json.obj(o);
            Golden.Image im = CaptionVectors.image(entry);
            Preprocessor.Result r = engine.preprocess(im.argb, im.width, im.height);
            assertEquals(entry.get("name") + " resized", entry.get("resized_rgb_sha256"), IO.sha256Hex(r.resizedBytes()));
            assertEquals(entry.get("name") + " pixel_values", entry.get("pixel_values_sha256"),
                    IO.sha256Hex(IO.float32LE(r.pixelValues)));
            count("images preprocessed bit-identical");
        }
    }

    private static CaptionEngine.Request request(Map<String, Object> run, double ratio) {
        CaptionEngine.Request r = new CaptionEngine.Request();
        r.policy = CaptionVectors.policy(run);
        r.keepRatio = ratio;
        r.kv = (String) run.get("kv");
        r.beam = (int) Json.lng(run.get("beam"));
        r.maxLen = (int) Json.lng(run.get("max_len"));
        return r;
    }

    @Test
    public void everyCaptionWordForWordAndExitForExit() {
        Map<String, Object> tol = Json.obj(doc.get("tolerance"));
        double confTol = Json.num(tol.get("confidence_abs"));
        double logprobTol = Json.num(tol.get("logprob_abs"));
        double worstConf = 0;
        double worstLogprob = 0;
        int before = factory.last.calls;
        for (Object o : Json.arr(doc.get("images"))) {
            Map<String, Object> entry = Json.obj(o);
            Golden.Image im = CaptionVectors.image(entry);
            float[] pixels = engine.preprocess(im.argb, im.width, im.height).pixelValues;
            for (Map.Entry<String, Object> byRatio : Json.obj(entry.get("by_keep_ratio")).entrySet()) {
                double ratio = Double.parseDouble(byRatio.getKey());
                count("images x keep ratios");
                for (Object r : Json.arr(Json.obj(byRatio.getValue()).get("runs"))) {
                    Map<String, Object> run = Json.obj(r);
                    String where = entry.get("name") + " k" + byRatio.getKey() + " " + Json.write(run.get("policy")) + " kv "
                            + run.get("kv") + " beam " + run.get("beam") + " max_len " + run.get("max_len");
                    Caption c = engine.captionPixels(pixels, request(run, ratio));
                    assertArrayEquals(where + " ids", Golden.ints(run.get("tokens")), c.tokens);
                    assertArrayEquals(where + " exits", Golden.ints(run.get("exits")), c.exits);
                    assertEquals(where + " text", run.get("text"), c.text);
                    List<String> words = Golden.strings(run.get("words")); // a string per id, [EOS] included
                    List<String> before_eos = new ArrayList<>();
                    for (String w : words) {
                        if (w.equals(CaptionLoader.EOS)) break;
                        before_eos.add(w);
                    }
                    assertEquals(where + " words", before_eos, c.words);
                    List<Object> conf = Json.arr(run.get("confidences"));
                    assertEquals(where + " confidences", conf.size(), c.confidences.length);
                    for (int i = 0; i < conf.size(); i++) {
                        double err = Math.abs(Json.num(conf.get(i)) - c.confidences[i]);
                        assertTrue(where + " confidence " + i + " off by " + err, err <= confTol);
                        worstConf = Math.max(worstConf, err);
                    }
                    double err = Math.abs(Json.num(run.get("logprob")) - c.logprob);
                    assertTrue(where + " logprob off by " + err, err <= logprobTol);
                    worstLogprob = Math.max(worstLogprob, err);
                    for (int i = 0; i < c.exits.length; i++) assertEquals(c.exits[i] + 1, c.exitLayers[i]); // one layer a stage
                    count("captions (ids, words, exits equal)");
                    counts.merge("ids", c.tokens.length, Integer::sum);
                    count((((int) Json.lng(run.get("beam"))) == 1 ? "greedy" : "beam") + " captions");
                    count(run.get("kv") + " captions");
                    count("policy " + Json.obj(run.get("policy")).get("kind"));
                }
            }
        }
        System.out.println("# caption vectors: largest confidence error " + worstConf + ", largest score error " + worstLogprob
                + ", " + (factory.last.calls - before) + " graph calls");
        assertEquals(Json.lng(replay.get("captions")), (long) counts.get("captions (ids, words, exits equal)"));
        // the self-check at load and these captions made every call the Python runtime made (and no other: run() fails)
        int[] used = factory.last.used;
        List<Integer> unused = new ArrayList<>();
        for (int i = 0; i < used.length; i++) if (used[i] == 0) unused.add(i);
        assertTrue("recorded calls the engine never made (indices into replay.json's calls): " + unused, unused.isEmpty());
        counts.put("distinct graph calls, all made", used.length);
    }
}
