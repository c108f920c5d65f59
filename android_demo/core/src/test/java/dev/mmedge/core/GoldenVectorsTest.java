package dev.mmedge.core;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import dev.mmedge.core.testing.Golden;
import dev.mmedge.core.testing.ReplayStageRunner;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.AfterClass;
import org.junit.BeforeClass;
import org.junit.Test;

/**
 * Conformance on the golden vectors of docs/bundle-format.md, made by the Python runtime from the
 * shipped bundle: tokenizer cases, decoded ARGB pixels, resized image and pixel_values bit for bit,
 * and, through the Engine's stage chain over the replay StageRunner, kept tokens, answers and the
 * exit and answer of every listed policy. The counts are printed at the end.
 */
public class GoldenVectorsTest {
    private static Map<String, Object> golden;
    private static Map<String, Object> android;
    private static Engine engine;
    private static ReplayStageRunner.Factory factory;
    private static final Map<String, Integer> counts = new LinkedHashMap<>();

    private static void count(String what) {
        counts.merge(what, 1, Integer::sum);
    }

    @BeforeClass
    public static void load() {
        golden = Golden.queries();
        android = Golden.json(Golden.golden().resolve("android.json"));
        factory = new ReplayStageRunner.Factory(golden);
        engine = Engine.load(Golden.bundle(), factory, new Engine.Options());
    }

    @AfterClass
    public static void report() {
        if (engine != null) engine.close();
        System.out.println("# golden agreement (Java core): " + counts + ", all equal");
    }

    private static int[] ints(Object list) {
        List<Object> l = Json.arr(list);
        int[] out = new int[l.size()];
        for (int i = 0; i < out.length; i++) out[i] = (int) Json.lng(l.get(i));
        return out;
    }

    @Test
    public void vectorsWereMadeFromThisBundle() throws Exception {
        assertEquals("mmedge-golden-1", golden.get("format"));
        byte[] manifest = Files.readAllBytes(Golden.bundle().resolve("manifest.json"));
        assertEquals("manifest.json differs from the one the golden vectors were made from: regenerate them",
                golden.get("manifest_sha256"), IO.sha256Hex(manifest));
        assertEquals(golden.get("manifest_sha256"), android.get("manifest_sha256"));
    }

    @Test
    public void tokenizerCases() throws Exception {
        Map<String, Object> cases = Golden.json(Golden.golden().resolve("tokenizer.json"));
        Path file = Golden.repo().resolve((String) cases.get("tokenizer"));
        WordTokenizer tok = WordTokenizer.fromJson(Files.readAllBytes(file), true);
        assertEquals(Json.lng(cases.get("max_length")), tok.maxLength());
        assertTrue(Json.arr(cases.get("cases")).size() >= 20);
        int[] counts = Golden.checkTokenizerCases(tok, cases);
        for (int i = 0; i < counts[0]; i++) count("tokenizer cases");
        for (int i = 0; i < counts[1]; i++) count("tokenizer errors");
    }

    @Test
    public void queries() {
        Map<String, Object> images = Json.obj(android.get("images"));
        for (Object o : Json.arr(golden.get("queries"))) {
            Map<String, Object> q = Json.obj(o);
            String name = (String) q.get("name");
            String text = (String) q.get("text");
            Golden.Image im = Golden.png(Golden.golden().resolve((String) q.get("image")));
            assertEquals(name, Json.lng(q.get("width")), im.width);
            assertEquals(name, Json.lng(q.get("height")), im.height);
            assertEquals(name + ": decoded ARGB pixels", Json.obj(images.get(q.get("image"))).get("argb_be_sha256"), im.sha256());
            count("decoded images");
            Engine.Inputs in = engine.preprocess(im.argb, im.width, im.height, text);
            assertArrayEquals(name + " input_ids", ints(q.get("input_ids")), in.text.inputIds);
            assertArrayEquals(name + " text_mask", ints(q.get("text_mask")), in.text.textMask);
            assertEquals(name + ": resized 8-bit RGB", q.get("resized_rgb_sha256"), IO.sha256Hex(in.image.resizedBytes()));
            assertEquals(name + ": pixel_values", q.get("pixel_values_sha256"), IO.sha256Hex(IO.float32LE(in.image.pixelValues)));
            count("queries preprocessed bit-identical");
            for (Map.Entry<String, Object> e : Json.obj(q.get("by_keep_ratio")).entrySet()) {
                double ratio = Double.parseDouble(e.getKey());
                Map<String, Object> want = Json.obj(e.getValue());
                Engine.AllExits exits = engine.allExits(im.argb, im.width, im.height, text, ratio);
                assertArrayEquals(name + " kept tokens at " + ratio, ints(want.get("kept_index")), exits.keptVisualTokens);
                List<Object> answers = Json.arr(want.get("answers"));
                for (int i = 0; i < answers.size(); i++) {
                    assertEquals(name + " exit " + i, answers.get(i), engine.labels.get(exits.answers[i]));
                }
                count("keep ratios");
                for (Object r : Json.arr(want.get("policies"))) {
                    Map<String, Object> row = Json.obj(r);
                    Policy policy = Policy.fromJson(Json.obj(row.get("policy")));
                    int offline = Controller.decideOffline(policy, exits.answers, exits.confidences, exits.maxProbabilities, null);
                    assertEquals(name + " offline " + policy, Json.lng(row.get("exit_index")), offline);
                    Engine.Prediction p = engine.predict(im.argb, im.width, im.height, text, policy, ratio);
                    assertEquals(name + " predict exit " + policy, Json.lng(row.get("exit_index")), p.exitIndex);
                    assertEquals(name + " predict answer " + policy, row.get("answer"), p.answer);
                    assertArrayEquals(ints(want.get("kept_index")), p.keptVisualTokens);
                    assertEquals((long) engine.manifest.exitLayers.get(p.exitIndex), p.exitLayer);
                    count("policy decisions (exit and answer)");
                }
            }
            Map<String, Object> d = Json.obj(q.get("default"));
            Engine.Prediction p = engine.predict(im.argb, im.width, im.height, text, null, null);
            assertEquals(Json.num(d.get("keep_ratio")), p.keepRatio, 0);
            assertEquals(Policy.fromJson(Json.obj(d.get("policy"))), engine.policy());
            assertEquals(name + " default exit", Json.lng(d.get("exit_index")), p.exitIndex);
            assertEquals(name + " default answer", d.get("answer"), p.answer);
            List<String> keys = new ArrayList<>(p.timingsMs.keySet());
            assertEquals("preprocess", keys.get(0));
            assertEquals("total", keys.get(keys.size() - 1));
            assertEquals(p.exitIndex + 3, keys.size());
            count("default predictions");
        }
        assertTrue(factory.last.openedFiles.size() >= 8);
    }
}
