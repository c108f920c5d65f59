package dev.mmedge.core;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import dev.mmedge.core.testing.Golden;
import dev.mmedge.core.testing.ReplayVLMRunner;
import dev.mmedge.core.testing.VLMVectors;

import java.nio.file.Files;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import org.junit.AfterClass;
import org.junit.BeforeClass;
import org.junit.Test;

/**
 * Conformance of the generative VLM path on the VLM golden vectors (tests/vectors/vlm/, made by the
 * Python VLMEngine on onnxruntime): Pillow's LANCZOS resizes and the images' pixel_values bit for bit,
 * the Hugging Face tokenizer cases (a WordLevel and a byte-level BPE tokenizer) id for id and text for
 * text, the kept-token counts, every prompt's ids, then through VLMEngine over the replayed graph calls
 * (replay.json) every generation of every query and setting (policy, keep ratio, kv mode, greedy or
 * beams, max_new_tokens) and the bundle-default generate() and caption(): tokens, exits and text equal,
 * confidences and log-probabilities within the vectors' tolerance, and every graph call the Python
 * runtime made made again (and no other). The counts are printed at the end.
 */
public class VLMVectorsTest {
    private static Map<String, Object> doc;
    private static Map<String, Object> replay;
    private static ReplayVLMRunner.Factory factory;
    private static VLMEngine engine;
    private static final Map<String, Integer> counts = new TreeMap<>();
    private static double maxConfidenceDiff;
    private static double maxLogprobDiff;

    private static void count(String what) {
        counts.merge(what, 1, Integer::sum);
    }

    @BeforeClass
    public static void load() {
        doc = VLMVectors.vectors();
        replay = VLMVectors.replay();
        factory = new ReplayVLMRunner.Factory(replay);
        engine = VLMEngine.load(VLMVectors.bundle(), factory, new VLMEngine.Options());
    }

    @AfterClass
    public static void report() {
        if (engine != null) engine.close();
        System.out.println("# vlm agreement (Java core): " + counts + ", all equal; largest confidence difference "
                + maxConfidenceDiff + ", largest logprob difference " + maxLogprobDiff);
    }

    @Test
    public void theRecordingsBelongToTheseVectorsAndThisBundle() throws Exception {
        byte[] manifest = Files.readAllBytes(VLMVectors.bundle().resolve("manifest.json"));
        assertEquals("the bundle changed: run python scripts/make_vlm_vectors.py", doc.get("manifest_sha256"), IO.sha256Hex(manifest));
        String stale = "replay.json is stale: run python scripts/make_vlm_replay.py";
        assertEquals(stale, doc.get("manifest_sha256"), replay.get("manifest_sha256"));
        assertEquals(stale, replay.get("vectors_sha256"), IO.sha256Hex(Files.readAllBytes(VLMVectors.dir().resolve("vectors.json"))));
        assertEquals("mmedge-vlm-replay-1", replay.get("format"));
        // the replay runner stands for ONNX Runtime on the onnx artifact, given the verified bytes of every graph and the weights
        assertEquals("onnx", engine.artifact.format);
        assertEquals(engine.manifest.graphs.size() + 1, factory.openedFiles.size());
        assertTrue(factory.openedFiles.contains("onnx/fp32/weights.bin"));
        assertEquals("the bundle's defaults", "confidence", engine.policy().kind);
        assertEquals(0.5, engine.keepRatio(), 0);
    }

    @Test
    public void lanczosResizesAreBitIdentical() {
        Map<String, Object> lanczos = Golden.json(VLMVectors.dir().resolve("resize-lanczos.json"));
        for (Object o : Json.arr(lanczos.get("resample"))) {
            Map<String, Object> c = Json.obj(o);
            int w = (int) Json.lng(c.get("width"));
            int h = (int) Json.lng(c.get("height"));
            int ow = (int) Json.lng(c.get("out_width"));
            int oh = (int) Json.lng(c.get("out_height"));
            int[] out = Resample.resize(Golden.generated(c), w, h, 3, ow, oh, Resample.Filter.LANCZOS);
            byte[] bytes = new byte[out.length];
            for (int i = 0; i < out.length; i++) bytes[i] = (byte) out[i];
            String where = w + "x" + h + " -> " + ow + "x" + oh + " " + c.get("pattern");
            assertEquals(where, c.get("sha256"), IO.sha256Hex(bytes));
            List<String> passes = Golden.strings(c.get("passes"));
            if (passes.size() == 2) assertEquals(where, passes.get(0).equals("vertical"), Resample.verticalFirst(w, h, ow, oh));
            count("lanczos resizes bit-identical");
        }
    }

    @Test
    public void tokenizerCasesMatchHuggingFaceTokenizers() throws Exception {
        Map<String, Object> tokenizers = Json.obj(Golden.json(VLMVectors.dir().resolve("tokenizer.json")).get("tokenizers"));
        for (Map.Entry<String, Object> e : tokenizers.entrySet()) {
            Map<String, Object> t = Json.obj(e.getValue());
            String file = (String) t.get("file");
            HFTokenizer tok = HFTokenizer.fromJson(Files.readAllBytes(Golden.repo().resolve(file)), file);
            for (Object o : Json.arr(t.get("cases"))) {
                Map<String, Object> c = Json.obj(o);
                int[] ids = Golden.ints(c.get("ids"));
                if (c.containsKey("text")) {
                    List<Integer> got = tok.encode((String) c.get("text"));
                    assertEquals(e.getKey() + " encode " + Json.write(c.get("text")), Json.write(c.get("ids")), Json.write(toJson(got)));
                    count(e.getKey() + " texts encoded");
                }
                assertEquals(e.getKey() + " decode " + Json.write(c.get("ids")), c.get("decoded"), tok.decode(ids));
                count(e.getKey() + " ids decoded");
            }
        }
    }

    private static List<Object> toJson(List<Integer> ids) {
        List<Object> out = new ArrayList<>();
        for (int id : ids) out.add((long) id);
        return out;
    }

    @Test
    public void keptTokenCountsRoundHalfToEven() {
        for (Object o : Json.arr(doc.get("kept_tokens"))) {
            Map<String, Object> c = Json.obj(o);
            assertEquals(Json.write(c), Json.lng(c.get("kept")),
                    VLMEngine.keptTokens(Json.num(c.get("keep_ratio")), (int) Json.lng(c.get("num_image_tokens"))));
            count("kept-token counts");
        }
    }

    @Test
    public void preprocessingAndPromptsAreIdentical() {
        for (Object o : Json.arr(doc.get("images"))) {
            Map<String, Object> entry = Json.obj(o);
            Golden.Image im = VLMVectors.image(doc, (String) entry.get("name"));
            Preprocessor.Result r = engine.preprocess(im.argb, im.width, im.height);
            assertEquals(entry.get("name") + " resized", entry.get("resized_rgb_sha256"), IO.sha256Hex(r.resizedBytes()));
            assertEquals(entry.get("name") + " pixel_values", entry.get("pixel_values_sha256"), IO.sha256Hex(IO.float32LE(r.pixelValues)));
            List<Object> sample = Json.arr(entry.get("pixel_values_sample"));
            for (int i = 0; i < sample.size(); i++) assertEquals(Json.num(sample.get(i)), r.pixelValues[i * 97], 0.0);
            count("images preprocessed bit-identical");
        }
        for (Object o : Json.arr(doc.get("queries"))) {
            Map<String, Object> q = Json.obj(o);
            assertEquals(q.get("prompt") + " ids", Json.write(q.get("prompt_ids")), Json.write(toJson(engine.promptIds((String) q.get("prompt")))));
            count("prompts encoded");
        }
    }

    private static void same(String where, Map<String, Object> want, Generation g) {
        double tolConfidence = Json.num(Json.obj(doc.get("tolerance")).get("confidence_abs"));
        double tolLogprob = Json.num(Json.obj(doc.get("tolerance")).get("logprob_abs"));
        assertArrayEquals(where + " tokens", Golden.ints(want.get("tokens")), g.tokens);
        assertArrayEquals(where + " exits", Golden.ints(want.get("exits")), g.exits);
        assertEquals(where + " text", want.get("text"), g.text);
        assertEquals(where + " kept visual tokens", Json.lng(want.get("kept_visual_tokens")), g.keptVisualTokens);
        List<Object> confidences = Json.arr(want.get("confidences"));
        assertEquals(where, confidences.size(), g.confidences.length);
        for (int i = 0; i < confidences.size(); i++) {
            double diff = Math.abs(Json.num(confidences.get(i)) - g.confidences[i]);
            maxConfidenceDiff = Math.max(maxConfidenceDiff, diff);
            assertTrue(where + " confidence " + i, diff <= tolConfidence);
        }
        if (want.containsKey("logprob")) {
            double diff = Math.abs(Json.num(want.get("logprob")) - g.logprob);
            maxLogprobDiff = Math.max(maxLogprobDiff, diff);
            assertTrue(where + " logprob " + g.logprob + " vs " + want.get("logprob"), diff <= tolLogprob);
        }
    }

    /**
     * Every generation of vectors.json through a newly loaded engine (its self-check first) over the
     * replayed graph calls, then every recorded call made, and as many graph runs as the Python runtime's.
     */
    @Test
    public void everyGenerationAndEveryRecordedGraphCall() {
        ReplayVLMRunner.Factory fresh = new ReplayVLMRunner.Factory(replay);
        try (VLMEngine engine = VLMEngine.load(VLMVectors.bundle(), fresh, new VLMEngine.Options())) {
            generateAll(engine);
        }
        ReplayVLMRunner runner = fresh.last;
        assertTrue(runner.closed);
        int made = 0;
        for (int i = 0; i < runner.used.length; i++) {
            if (runner.used[i] > 0) made++;
        }
        assertEquals("every recorded graph call made again (the self-check's included)", runner.recordedCalls(), made);
        assertEquals("graph runs", Json.lng(replay.get("graph_runs")), runner.calls);
        counts.put("distinct graph calls made again", made);
        counts.put("graph runs", runner.calls);
    }

    private static void generateAll(VLMEngine engine) {
        for (Object o : Json.arr(doc.get("queries"))) {
            Map<String, Object> q = Json.obj(o);
            Golden.Image im = VLMVectors.image(doc, (String) q.get("image"));
            for (Object r : Json.arr(q.get("runs"))) {
                Map<String, Object> s = Json.obj(r);
                VLMEngine.Request request = new VLMEngine.Request();
                request.policy = Policy.fromJson(Json.obj(s.get("policy")));
                request.keepRatio = Json.num(s.get("keep_ratio"));
                request.kv = (String) s.get("kv");
                request.beam = (int) Json.lng(s.get("beam"));
                request.maxNewTokens = (int) Json.lng(s.get("max_new_tokens"));
                Generation g = engine.generate(im.argb, im.width, im.height, (String) q.get("prompt"), request);
                String where = q.get("image") + " '" + q.get("prompt") + "' " + Json.write(s.get("policy")) + " keep " + s.get("keep_ratio")
                        + " " + s.get("kv") + " beam " + s.get("beam") + " max " + s.get("max_new_tokens");
                same(where, s, g);
                assertEquals(request.policy, g.policy);
                count("generations (" + (request.beam > 1 ? "beams" : "greedy") + ")");
                for (int e : g.exits) if (e < engine.numStages() - 1) count("tokens that exited early");
            }
        }
        for (Object o : Json.arr(doc.get("defaults"))) {
            Map<String, Object> d = Json.obj(o);
            Golden.Image im = VLMVectors.image(doc, (String) d.get("image"));
            Generation g;
            if ("generate".equals(d.get("call"))) {
                g = engine.generate(im.argb, im.width, im.height, (String) d.get("prompt"), null);
            } else {
                VLMEngine.Request request = new VLMEngine.Request();
                request.maxNewTokens = (int) Json.lng(d.get("max_new_tokens"));
                g = engine.caption(im.argb, im.width, im.height, request);
            }
            same("default " + d.get("call") + " " + d.get("image"), d, g);
            assertEquals(Json.num(d.get("keep_ratio")), g.keepRatio, 0);
            assertTrue(g.timingsMs.containsKey("preprocess") && g.timingsMs.containsKey("head") && g.timingsMs.containsKey("total"));
            count("default generate/caption calls");
        }
    }

    /** A generation the Python runtime did not make (another keep ratio keeps other visual tokens) finds no recorded call. */
    @Test
    public void aCallTheReferenceDidNotMakeFails() {
        Golden.Image im = VLMVectors.image(doc, "wide");
        VLMEngine.Request request = new VLMEngine.Request();
        request.keepRatio = 0.75;
        try {
            engine.generate(im.argb, im.width, im.height, "describe the image.", request);
            fail("the replay answered a call it has no recording of");
        } catch (AssertionError exc) {
            assertTrue(exc.getMessage(), exc.getMessage().startsWith("replay: unexpected call step0"));
        }
    }

    @Test
    public void badArgumentsAreConfigErrors() {
        Golden.Image im = VLMVectors.image(doc, "square");
        for (double ratio : new double[] {0.0, -0.5, 1.5, Double.NaN}) {
            VLMEngine.Request request = new VLMEngine.Request();
            request.keepRatio = ratio;
            try {
                engine.generate(im.argb, im.width, im.height, "what color is the circle?", request);
                fail("keep ratio " + ratio);
            } catch (ConfigException exc) {
                assertTrue(exc.getMessage(), exc.getMessage().contains("(0, 1]"));
            }
        }
        VLMEngine.Request request = new VLMEngine.Request();
        request.beam = 17;
        request.kv = "sometimes";
        request.maxNewTokens = 0;
        try {
            engine.generate(im.argb, im.width, im.height, "hi", request);
            fail();
        } catch (ConfigException exc) {
            assertEquals(exc.getMessage(), 3, exc.problems().size());
        }
        request = new VLMEngine.Request();
        request.maxNewTokens = 47; // the cache holds 64 slots, the prompt 18 at keep 0.5 (8 of 16 visual tokens)
        try {
            engine.generate(im.argb, im.width, im.height, "hi", request);
            fail();
        } catch (ConfigException exc) {
            assertTrue(exc.getMessage(), exc.getMessage().contains("from 1 to 46"));
        }
        for (String prompt : new String[] {"", " \t\u001c", null}) {
            try {
                engine.generate(im.argb, im.width, im.height, prompt, null);
                fail();
            } catch (ConfigException exc) {
                assertTrue(exc.getMessage().contains("non-empty"));
            }
        }
        try {
            engine.generate(im.argb, im.width, im.height, "<image> twice", null); // a 17th image token
            fail();
        } catch (ConfigException exc) {
            assertTrue(exc.getMessage(), exc.getMessage().contains("one block of 16 image tokens"));
        }
        VLMEngine.Options o = new VLMEngine.Options();
        o.keepRatio = 2.0;
        o.precision = "int3";
        try {
            VLMEngine.load(VLMVectors.bundle(), new ReplayVLMRunner.Factory(replay), o);
            fail();
        } catch (ConfigException exc) {
            assertEquals(exc.getMessage(), 2, exc.problems().size());
        }
        assertEquals(Arrays.asList("fp32", "int8", "int4"), new VLMEngine.Options().precisions());
    }
}
