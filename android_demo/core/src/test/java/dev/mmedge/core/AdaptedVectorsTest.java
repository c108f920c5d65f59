package dev.mmedge.core;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import dev.mmedge.core.testing.Golden;
import dev.mmedge.core.testing.NegativeVectors;
import dev.mmedge.core.testing.ReplayStageRunner;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.AfterClass;
import org.junit.BeforeClass;
import org.junit.Test;

/**
 * Adapted encoders' bundles (docs/bundle-format.md, "Adapted encoders") on the golden vectors of
 * tests/vectors/adapted (scripts/make_adapted_vectors.py), made by the Python runtime from the
 * committed tiny ViLT bundle: BERT tokenizer cases, Pillow bicubic resamples and the Engine's image
 * preparation bit for bit, and, through the Engine's stage chain over the replay StageRunner (no
 * ONNX Runtime on this JVM: stage 0 finds its recording only when the pixels and ids are exactly the
 * Python runtime's), kept tokens, answers and every policy's exit and answer. Counts are printed.
 */
public class AdaptedVectorsTest {
    private static Map<String, Object> tokenizerDoc;
    private static Map<String, Object> resizeDoc;
    private static Map<String, Object> queriesDoc;
    private static Path bundle;
    private static Engine engine;
    private static final Map<String, Integer> counts = new LinkedHashMap<>();

    private static void count(String what) {
        counts.merge(what, 1, Integer::sum);
    }

    private static Path vectors() {
        return Golden.repo().resolve("tests/vectors/adapted");
    }

    @BeforeClass
    public static void load() {
        tokenizerDoc = Golden.json(vectors().resolve("tokenizer.json"));
        resizeDoc = Golden.json(vectors().resolve("resize.json"));
        queriesDoc = Golden.json(vectors().resolve("queries.json"));
        bundle = Golden.repo().resolve((String) queriesDoc.get("bundle"));
        Engine.Options o = new Engine.Options();
        engine = Engine.load(bundle, new ReplayStageRunner.Factory(queriesDoc), o);
    }

    @AfterClass
    public static void report() {
        if (engine != null) engine.close();
        System.out.println("# adapted agreement (Java core): " + counts + ", all equal");
    }

    /** The vectors' image generator (Golden.generated: xorshift32, "generator" in the files). */
    static int[] generated(Map<String, Object> spec) {
        return Golden.generated(spec);
    }

    /** The generated image as Bitmap.getPixels gives it (Golden.generatedArgb). */
    static int[] argb(Map<String, Object> spec) {
        return Golden.generatedArgb(spec);
    }

    private static int w(Map<String, Object> spec) {
        return (int) Json.lng(spec.get("width"));
    }

    private static int h(Map<String, Object> spec) {
        return (int) Json.lng(spec.get("height"));
    }

    private static byte[] bytes(int[] values) {
        byte[] out = new byte[values.length];
        for (int i = 0; i < out.length; i++) out[i] = (byte) values[i];
        return out;
    }

    private static String textOf(Map<String, Object> c) {
        if (c.containsKey("text")) return (String) c.get("text");
        Map<String, Object> r = Json.obj(c.get("repeat"));
        StringBuilder out = new StringBuilder();
        for (long i = 0; i < Json.lng(r.get("count")); i++) out.append((String) r.get("text"));
        return out.toString();
    }

    @Test
    public void vectorsWereMadeFromThisBundle() throws Exception {
        String sha = IO.sha256Hex(Files.readAllBytes(bundle.resolve("manifest.json")));
        for (Map<String, Object> doc : Arrays.asList(tokenizerDoc, resizeDoc, queriesDoc)) {
            assertEquals("regenerate the adapted vectors", doc.get("manifest_sha256"), sha);
        }
        assertTrue(engine.tokenizer instanceof BertWordPieceTokenizer);
        assertTrue(engine.preprocessor.stretches());
    }

    @Test
    public void generatorGivesThePythonGeneratorsFirstBytes() {
        Map<String, Object> spec = new LinkedHashMap<>();
        spec.put("width", 4L);
        spec.put("height", 1L);
        spec.put("channels", 1L);
        spec.put("pattern", "noise");
        spec.put("seed", 1L);
        assertArrayEquals(new int[] {0, 4, 157, 18}, generated(spec));
        spec.put("width", 8L);
        spec.put("seed", 2024L);
        assertArrayEquals(new int[] {31, 159, 70, 141, 45, 99, 86, 53}, generated(spec));
    }

    @Test
    public void tokenizerCases() throws Exception {
        byte[] file = Files.readAllBytes(Golden.repo().resolve((String) tokenizerDoc.get("tokenizer")));
        BertWordPieceTokenizer fromFile = BertWordPieceTokenizer.fromBertJson(file, (int) Json.lng(tokenizerDoc.get("max_length")));
        List<Object> cases = Json.arr(tokenizerDoc.get("cases"));
        assertTrue(cases.size() >= 60);
        for (Object o : cases) {
            Map<String, Object> c = Json.obj(o);
            String text = textOf(c);
            String shown = Json.write(text.length() > 60 ? text.substring(0, 60) : text);
            for (WordTokenizer tok : Arrays.asList(fromFile, engine.tokenizer)) {
                if (c.containsKey("error")) {
                    try {
                        tok.encode(text);
                        fail("no TextException for " + shown);
                    } catch (TextException expected) {
                        continue;
                    }
                }
                WordTokenizer.Encoding e = tok.encode(text);
                assertArrayEquals("input_ids of " + shown, Golden.ints(c.get("input_ids")), e.inputIds);
                assertArrayEquals("text_mask of " + shown, Golden.ints(c.get("text_mask")), e.textMask);
                assertEquals("truncated " + shown, c.get("truncated"), e.truncated);
                if (c.containsKey("tokens")) assertEquals("pieces of " + shown, Golden.strings(c.get("tokens")), e.tokens);
                else assertEquals("pieces of " + shown, Json.lng(c.get("token_count")), e.tokens.size());
            }
            count(c.containsKey("error") ? "tokenizer errors" : "tokenizer cases");
        }
    }

    @Test
    public void normaliserStepsOneByOne() {
        Map<String, Integer> vocab = new LinkedHashMap<>();
        for (String t : new String[] {"[PAD]", "[UNK]", "[CLS]", "[SEP]"}) vocab.put(t, vocab.size());
        BertWordPieceTokenizer all = new BertWordPieceTokenizer(vocab, 8, true, true, true, true, new ArrayList<String>(), "##", 100);
        assertEquals("abcd ef", all.normalize("a\u0000b\ufffdc\u200bd\te\u0085f"));
        assertEquals(" \u4e2d  \u6587 x", all.normalize("\u4e2d\u6587x"));
        assertEquals("\ud86e\udc20 \ud86e\udd20 ", all.normalize("\ud86e\udc20\ud86e\udd20")); // U+2B820 stays, U+2B920 spaced
        assertEquals("e\u03c3i", all.normalize("\u00c9\u03a3\u0130"));
        BertWordPieceTokenizer accents = new BertWordPieceTokenizer(vocab, 8, true, false, true, true, new ArrayList<String>(), "##", 100);
        assertEquals("\u00e9\u03c3i\u0307", accents.normalize("\u00c9\u03a3\u0130"));
        assertEquals(Arrays.asList("a", "$", "b", "\u00bf", "c", "\u2014", "d"), BertWordPieceTokenizer.preTokenize("a$b \u00bfc\u2014d"));
    }

    @Test
    public void resampleCases() {
        List<Object> cases = Json.arr(resizeDoc.get("resample"));
        assertTrue(cases.size() >= 80);
        for (Object o : cases) {
            Map<String, Object> c = Json.obj(o);
            int ow = (int) Json.lng(c.get("out_width"));
            int oh = (int) Json.lng(c.get("out_height"));
            String name = w(c) + "x" + h(c) + " -> " + ow + "x" + oh + " " + c.get("pattern");
            List<String> order = new ArrayList<>();
            if (ow != w(c) && oh != h(c)) {
                order.addAll(Resample.verticalFirst(w(c), h(c), ow, oh) ? Arrays.asList("vertical", "horizontal")
                        : Arrays.asList("horizontal", "vertical"));
            } else {
                if (ow != w(c)) order.add("horizontal");
                if (oh != h(c)) order.add("vertical");
            }
            assertEquals(name + ": Pillow 13's passes", Golden.strings(c.get("passes")), order);
            int[] out = Resample.resize(generated(c), w(c), h(c), 3, ow, oh, Resample.Filter.BICUBIC);
            assertEquals(name, c.get("sha256"), IO.sha256Hex(bytes(out)));
            count("resample cases");
        }
    }

    @Test
    public void bilinearResampleIsTheFormat1SquareResize() {
        for (int[] nm : new int[][] {{9, 32}, {100, 32}, {413, 48}, {32, 17}}) {
            Map<String, Object> spec = new LinkedHashMap<>();
            spec.put("width", (long) nm[0]);
            spec.put("height", (long) nm[0]);
            spec.put("channels", 3L);
            spec.put("pattern", "noise");
            spec.put("seed", 77L + nm[0]);
            int[] rgb = generated(spec);
            assertArrayEquals(Preprocessor.resizeSquare(rgb, nm[0], nm[1]),
                    Resample.resize(rgb, nm[0], nm[0], 3, nm[1], nm[1], Resample.Filter.BILINEAR));
        }
    }

    @Test
    public void imageCases() {
        for (Object o : Json.arr(resizeDoc.get("images"))) {
            Map<String, Object> c = Json.obj(o);
            String name = w(c) + "x" + h(c) + "x" + c.get("channels") + " " + c.get("pattern");
            if (Boolean.TRUE.equals(c.get("refused"))) {
                try {
                    engine.preprocess(argb(c), w(c), h(c), "x");
                    fail(name + " was not refused");
                } catch (ImageException expected) {
                    count("refused images");
                }
                continue;
            }
            Engine.Inputs in = engine.preprocess(argb(c), w(c), h(c), "x");
            assertEquals(name + ": resized", c.get("resized_rgb_sha256"), IO.sha256Hex(in.image.resizedBytes()));
            assertEquals(name + ": pixel_values", c.get("pixel_values_sha256"), IO.sha256Hex(IO.float32LE(in.image.pixelValues)));
            count("images preprocessed bit-identical");
        }
    }

    @Test
    public void queries() {
        for (Object o : Json.arr(queriesDoc.get("queries"))) {
            Map<String, Object> q = Json.obj(o);
            String name = (String) q.get("name");
            String text = (String) q.get("text");
            int[] image = argb(q);
            Engine.Inputs in = engine.preprocess(image, w(q), h(q), text);
            assertArrayEquals(name + " input_ids", Golden.ints(q.get("input_ids")), in.text.inputIds);
            assertArrayEquals(name + " text_mask", Golden.ints(q.get("text_mask")), in.text.textMask);
            assertEquals(name + ": resized", q.get("resized_rgb_sha256"), IO.sha256Hex(in.image.resizedBytes()));
            assertEquals(name + ": pixel_values", q.get("pixel_values_sha256"), IO.sha256Hex(IO.float32LE(in.image.pixelValues)));
            count("queries preprocessed bit-identical");
            for (Map.Entry<String, Object> e : Json.obj(q.get("by_keep_ratio")).entrySet()) {
                double ratio = Double.parseDouble(e.getKey());
                Map<String, Object> want = Json.obj(e.getValue());
                Engine.AllExits exits = engine.allExits(image, w(q), h(q), text, ratio);
                assertArrayEquals(name + " kept tokens", Golden.ints(want.get("kept_index")), exits.keptVisualTokens);
                List<Object> probabilities = Json.arr(want.get("max_probability"));
                for (int i = 0; i < exits.answers.length; i++) {
                    assertEquals(name + " exit " + i, Json.arr(want.get("answers")).get(i), engine.labels.get(exits.answers[i]));
                    assertEquals(name + " softmax max " + i, Json.num(probabilities.get(i)), exits.maxProbabilities[i], 1e-6);
                }
                for (Object r : Json.arr(want.get("policies"))) {
                    Map<String, Object> row = Json.obj(r);
                    Policy policy = Policy.fromJson(Json.obj(row.get("policy")));
                    Engine.Prediction p = engine.predict(image, w(q), h(q), text, policy, ratio);
                    assertEquals(name + " exit " + policy, Json.lng(row.get("exit_index")), p.exitIndex);
                    assertEquals(name + " answer " + policy, row.get("answer"), p.answer);
                    assertArrayEquals(Golden.ints(want.get("kept_index")), p.keptVisualTokens);
                    count("policy decisions (exit and answer)");
                }
            }
            Map<String, Object> d = Json.obj(q.get("default"));
            Engine.Prediction p = engine.predict(image, w(q), h(q), text, null, null);
            assertEquals(name + " default exit", Json.lng(d.get("exit_index")), p.exitIndex);
            assertEquals(name + " default answer", d.get("answer"), p.answer);
            count("default predictions");
        }
    }

    /** The manifest edited (tokenizer settings the file does not have): refused with code tokenizer. */
    @Test
    public void misstatedTokenizerSettingsAreRefused() throws Exception {
        String[][] edits = {{"lowercase", "false"}, {"strip_accents", "false"}, {"special_tokens", "[]"}, {"cls_id", "3"},
            {"template", "[\"[CLS]\", \"$text\"]"}, {"max_input_chars_per_word", "50"}};
        Path tmp = Files.createTempDirectory("mmedge-adapted-");
        try {
            Path dir = tmp.resolve("bundle.mmedge");
            NegativeVectors.copyBase(bundle, dir);
            String original = new String(Files.readAllBytes(dir.resolve("manifest.json")), StandardCharsets.UTF_8);
            for (String[] edit : edits) {
                Map<String, Object> m = Json.obj(Json.parse(original, 64));
                Json.obj(m.get("tokenizer")).put(edit[0], Json.parse(edit[1], 4));
                Files.write(dir.resolve("manifest.json"), Json.write(m, 1).getBytes(StandardCharsets.UTF_8));
                try {
                    Engine.load(dir, new ReplayStageRunner.Factory(queriesDoc, false), new Engine.Options()).close();
                    fail(edit[0] + ": loaded");
                } catch (BundleException exc) {
                    assertEquals(exc.getMessage(), BundleException.TOKENIZER, exc.code());
                    assertTrue(exc.getMessage(), exc.getMessage().contains(edit[0]));
                    count("misstated settings refused");
                }
            }
        } finally {
            NegativeVectors.removeTree(tmp);
        }
    }
}
