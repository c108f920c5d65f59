package dev.mmedge.core;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import dev.mmedge.core.testing.BundleCopy;
import dev.mmedge.core.testing.Golden;
import dev.mmedge.core.testing.ReplayStageRunner;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
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
 * Python runtime's), kept tokens, answers and every policy's exit and answer. The same for the
 * adapted NLVR2 bundle (two images per query, left then right, stacked to [1, 2, 3, S, S]; image i's
 * kept patch j numbered i * N + j) and the adapted retrieval bundle (head "match-score": the match
 * probability sigmoid(s) per exit and at the exit taken), on queries-nlvr2.json and
 * queries-retrieval.json, with their consistency rules and the ImageCountException. Counts are printed.
 */
public class AdaptedVectorsTest {
    private static Map<String, Object> tokenizerDoc;
    private static Map<String, Object> resizeDoc;
    private static Map<String, Object> queriesDoc;
    private static Path bundle;
    private static Engine engine;
    /** The two-image (NLVR2) and match-score (retrieval) vectors, by kind. */
    private static final Map<String, Map<String, Object>> kindDocs = new LinkedHashMap<>();
    private static final Map<String, Engine> kindEngines = new LinkedHashMap<>();
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
        for (String kind : new String[] {"nlvr2", "retrieval"}) {
            Map<String, Object> doc = Golden.json(vectors().resolve("queries-" + kind + ".json"));
            kindDocs.put(kind, doc);
            kindEngines.put(kind, Engine.load(Golden.repo().resolve((String) doc.get("bundle")), new ReplayStageRunner.Factory(doc),
                    new Engine.Options()));
        }
    }

    @AfterClass
    public static void report() {
        if (engine != null) engine.close();
        for (Engine e : kindEngines.values()) e.close();
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

    /** A generated image as the engine takes it. */
    private static ImageFiles.Decoded image(Map<String, Object> spec) {
        return new ImageFiles.Decoded(argb(spec), w(spec), h(spec));
    }

    /** A query's images: an NLVR2 query's two (`images`: left, right), another query's one. */
    private static List<ImageFiles.Decoded> images(Map<String, Object> q) {
        if (!q.containsKey("images")) return Collections.singletonList(image(q));
        List<ImageFiles.Decoded> out = new ArrayList<>();
        for (Object spec : Json.arr(q.get("images"))) out.add(image(Json.obj(spec)));
        return out;
    }

    /** JSON text as a tree (test data: a parse error is a bug in the test). */
    private static Object parse(String text) {
        try {
            return Json.parse(text, 16);
        } catch (Json.ParseException exc) {
            throw new IllegalStateException(exc);
        }
    }

    private static Map<String, Object> firstQuery(Map<String, Object> doc) {
        return Json.obj(Json.arr(doc.get("queries")).get(0));
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
        try (BundleCopy copy = BundleCopy.of(bundle, "mmedge-adapted-")) {
            for (String[] edit : edits) {
                copy.edit(m -> Json.obj(m.get("tokenizer")).put(edit[0], parse(edit[1])));
                BundleException exc = BundleCopy.refused(BundleException.TOKENIZER, () ->
                        Engine.load(copy.dir, new ReplayStageRunner.Factory(queriesDoc, false), new Engine.Options()).close());
                assertTrue(exc.getMessage(), exc.getMessage().contains(edit[0]));
                count("misstated settings refused");
            }
        }
    }

    // ------------------------------------------------------------------ two images (NLVR2), a match score (retrieval)
    @Test
    public void nlvr2AndRetrievalVectorsWereMadeFromTheirBundles() throws Exception {
        for (Map.Entry<String, Map<String, Object>> k : kindDocs.entrySet()) {
            Map<String, Object> doc = k.getValue();
            Engine e = kindEngines.get(k.getKey());
            String sha = IO.sha256Hex(Files.readAllBytes(e.root().resolve("manifest.json")));
            assertEquals(k.getKey() + ": regenerate the vectors", doc.get("manifest_sha256"), sha);
            assertEquals(Golden.strings(doc.get("labels")), e.labels);
            assertEquals(Json.lng(doc.get("num_images")), e.numImages);
            assertEquals(doc.get("head"), e.head);
            assertEquals(doc.get("task"), e.manifest.task);
            assertTrue(k.getKey(), Json.arr(doc.get("queries")).size() >= 5);
        }
        Engine nlvr2 = kindEngines.get("nlvr2");
        Engine retrieval = kindEngines.get("retrieval");
        assertEquals(Arrays.asList(2, Manifest.SOFTMAX, "verify"), Arrays.<Object>asList(nlvr2.numImages, nlvr2.head, nlvr2.manifest.task));
        assertEquals(Arrays.asList(1, Manifest.MATCH_SCORE, "match", Arrays.asList("no", "yes")),
                Arrays.<Object>asList(retrieval.numImages, retrieval.head, retrieval.manifest.task, retrieval.labels));
        assertEquals(Arrays.asList(1, Manifest.SOFTMAX), Arrays.<Object>asList(engine.numImages, engine.head));
        long s = nlvr2.preprocessor.size();
        for (Manifest.KeepRatio group : nlvr2.manifest.keepRatios) {
            Manifest.Stage stage = nlvr2.manifest.stages.get(group.stages.get(0));
            assertArrayEquals(new long[] {1, 2, 3, s, s}, stage.input("pixel_values").shape);
            assertArrayEquals(new long[] {2, group.keptTokens}, stage.output("kept_index").shape);
        }
    }

    @Test
    public void nlvr2AndRetrievalQueries() {
        for (Map.Entry<String, Map<String, Object>> k : kindDocs.entrySet()) {
            String kind = k.getKey();
            Map<String, Object> doc = k.getValue();
            Engine e = kindEngines.get(kind);
            boolean match = Manifest.MATCH_SCORE.equals(doc.get("head"));
            Map<String, Object> tolerance = Json.obj(doc.get("tolerance"));
            double logitsAbs = Json.num(tolerance.get("logits_abs"));
            double confidenceAbs = Json.num(tolerance.get("confidence_abs"));
            int s = e.preprocessor.size();
            int patches = e.manifest.patchesPerImage();
            for (Object o : Json.arr(doc.get("queries"))) {
                Map<String, Object> q = Json.obj(o);
                String name = kind + " " + q.get("name");
                String text = (String) q.get("text");
                List<ImageFiles.Decoded> images = images(q);
                Engine.Inputs in = e.preprocess(images, text);
                assertArrayEquals(name + " input_ids", Golden.ints(q.get("input_ids")), in.text.inputIds);
                assertArrayEquals(name + " text_mask", Golden.ints(q.get("text_mask")), in.text.textMask);
                int[] shape = Golden.ints(q.get("pixel_values_shape"));
                assertArrayEquals(name, kind.equals("nlvr2") ? new int[] {1, 2, 3, s, s} : new int[] {1, 3, s, s}, shape);
                long values = 1;
                for (int d : shape) values *= d;
                assertEquals(name, values, in.pixelValues.length);
                assertEquals(name + ": pixel_values", q.get("pixel_values_sha256"), IO.sha256Hex(IO.float32LE(in.pixelValues)));
                List<String> resized = kind.equals("nlvr2") ? Golden.strings(q.get("resized_rgb_sha256"))
                        : Collections.singletonList((String) q.get("resized_rgb_sha256"));
                List<String> got = new ArrayList<>();
                for (Preprocessor.Result r : in.images) got.add(IO.sha256Hex(r.resizedBytes()));
                assertEquals(name + ": each image's resized 8-bit RGB", resized, got);
                for (int i = 0; i < images.size(); i++) { // each image prepared alone: image i's planes are its own
                    Manifest m = e.manifest;
                    float[] one = Preprocessor.stretched(s, m.mean, m.std, m.scale).run(images.get(i).argb, images.get(i).width,
                            images.get(i).height).pixelValues;
                    assertArrayEquals(name + " image " + i, one, Arrays.copyOfRange(in.pixelValues, i * one.length, (i + 1) * one.length), 0f);
                }
                count(kind + " queries preprocessed bit-identical");
                for (Map.Entry<String, Object> entry : Json.obj(q.get("by_keep_ratio")).entrySet()) {
                    double ratio = Double.parseDouble(entry.getKey());
                    Map<String, Object> want = Json.obj(entry.getValue());
                    String where = name + " at " + ratio;
                    Engine.AllExits exits = e.allExits(images, text, ratio);
                    assertArrayEquals(where + " kept tokens", Golden.ints(want.get("kept_index")), exits.keptVisualTokens);
                    int kept = e.manifest.keepRatio(ratio).keptTokens;
                    assertEquals(where, e.numImages * kept, exits.keptIndex.length);
                    for (int i = 0; i < e.numImages; i++) { // image i's patch j is i * N + j, k per image
                        int inImage = 0;
                        for (int v : exits.keptIndex) if (v >= i * patches && v < (i + 1) * patches) inImage++;
                        assertEquals(where + " image " + i + "'s kept patches", kept, inImage);
                    }
                    for (int i = 0; i < exits.logits.length; i++) {
                        List<Object> logits = Json.arr(Json.arr(want.get("logits")).get(i));
                        assertEquals(where, e.labels.size(), exits.logits[i].length);
                        for (int j = 0; j < logits.size(); j++) {
                            assertEquals(where + " exit " + i + " logit " + j, Json.num(logits.get(j)), exits.logits[i][j], logitsAbs);
                        }
                        assertEquals(where + " exit " + i + " confidence", Json.num(Json.arr(want.get("confidence")).get(i)),
                                exits.confidences[i], confidenceAbs);
                        assertEquals(where + " softmax max " + i, Json.num(Json.arr(want.get("max_probability")).get(i)),
                                exits.maxProbabilities[i], logitsAbs);
                        assertEquals(where + " answer " + i, Json.arr(want.get("answers")).get(i), e.labels.get(exits.answers[i]));
                        if (match) {
                            assertEquals("a match-score head's logits are [0, s]", 0f, exits.logits[i][0], 0f);
                            assertEquals(where + " exit " + i + " match score", Json.num(Json.arr(want.get("match_score")).get(i)),
                                    exits.matchScores[i], logitsAbs);
                            assertEquals(1 / (1 + Math.exp(-(double) exits.logits[i][1])), exits.matchScores[i], 0);
                        }
                    }
                    if (!match) assertEquals(null, exits.matchScores);
                    for (Object r : Json.arr(want.get("policies"))) {
                        Map<String, Object> row = Json.obj(r);
                        Policy policy = Policy.fromJson(Json.obj(row.get("policy")));
                        Engine.Prediction p = e.predict(images, text, policy, ratio);
                        assertEquals(where + " exit " + policy, Json.lng(row.get("exit_index")), p.exitIndex);
                        assertEquals(where + " answer " + policy, row.get("answer"), p.answer);
                        assertArrayEquals(Golden.ints(want.get("kept_index")), p.keptVisualTokens);
                        if (match) {
                            assertEquals(where + " match score " + policy, Json.num(row.get("match_score")), p.matchScore, logitsAbs);
                            assertEquals(p.matchScore > 0.5 ? "yes" : "no", p.answer);
                            assertEquals("max(sigmoid, 1 - sigmoid)", Math.max(p.matchScore, 1 - p.matchScore), p.maxProbability, 1e-6);
                        } else {
                            assertEquals(null, p.matchScore);
                        }
                        count(kind + " policy decisions (exit and answer)");
                    }
                }
                Map<String, Object> d = Json.obj(q.get("default"));
                Engine.Prediction p = e.predict(images, text, null, null);
                assertEquals(name + " default keep ratio", Json.num(d.get("keep_ratio")), p.keepRatio, 0);
                assertEquals(name + " default exit", Json.lng(d.get("exit_index")), p.exitIndex);
                assertEquals(name + " default answer", d.get("answer"), p.answer);
                if (match) assertEquals(name + " default match score", Json.num(d.get("match_score")), p.matchScore, logitsAbs);
                count(kind + " default predictions");
            }
        }
    }

    /**
     * A two-image bundle takes [left, right]; another count is an ImageCountException (an
     * ImageException), from predict, allExits and preprocess alike, as is two images for a one-image
     * bundle, whose one image may also come as a list of one.
     */
    @Test
    public void imageCountsAndOrder() {
        Engine nlvr2 = kindEngines.get("nlvr2");
        Map<String, Object> q = firstQuery(kindDocs.get("nlvr2"));
        List<ImageFiles.Decoded> pair = images(q);
        ImageFiles.Decoded a = pair.get(0);
        ImageFiles.Decoded b = pair.get(1);
        String text = (String) q.get("text");
        assertTrue(nlvr2.labels.contains(nlvr2.predict(pair, text, null, null).answer));
        // the order matters: [right, left] is another pixel_values tensor, which the recordings do not have
        try {
            nlvr2.allExits(Arrays.asList(b, a), text, null);
            fail("[right, left] ran as [left, right]");
        } catch (BackendException exc) {
            assertTrue(exc.getMessage(), exc.getMessage().contains("no recording"));
        }
        Map<String, Object> third = new LinkedHashMap<>();
        for (Object[] kv : new Object[][] {{"width", 40L}, {"height", 40L}, {"channels", 3L}, {"pattern", "noise"}, {"seed", 53L}}) {
            third.put((String) kv[0], kv[1]);
        }
        ImageFiles.Decoded c = image(third);
        List<List<ImageFiles.Decoded>> wrong = Arrays.asList(Collections.singletonList(a), Arrays.asList(a, b, c),
                Collections.<ImageFiles.Decoded>emptyList(), null);
        int[] counts = {1, 3, 0, 0};
        for (int i = 0; i < wrong.size(); i++) {
            List<ImageFiles.Decoded> bad = wrong.get(i);
            List<Runnable> calls = Arrays.<Runnable>asList(() -> nlvr2.predict(bad, text, null, null),
                    () -> nlvr2.allExits(bad, text, null), () -> nlvr2.preprocess(bad, text));
            for (Runnable call : calls) {
                try {
                    call.run();
                    fail("no ImageCountException for " + counts[i] + " images");
                } catch (ImageCountException exc) {
                    assertEquals(Arrays.asList(2, counts[i]), Arrays.asList(exc.expected, exc.got));
                    assertTrue(exc.getMessage(), exc.getMessage().contains("reads 2 images per query, got " + counts[i]));
                    assertTrue(exc.getMessage(), exc.getMessage().contains("predict(Arrays.asList(left, right), text"));
                    count("image counts refused");
                }
            }
        }
        try {
            nlvr2.predict(a.argb, a.width, a.height, text, null, null);
            fail("one image ran on a two-image bundle");
        } catch (ImageCountException exc) {
            assertEquals(1, exc.got);
        }
        // a bad image in the list is the image's own error
        try {
            nlvr2.predict(Arrays.asList(a, new ImageFiles.Decoded(new int[16], 4, 4)), text, null, null);
            fail("a 4 x 4 image was taken");
        } catch (ImageException exc) {
            assertTrue(exc.getClass().getName(), !(exc instanceof ImageCountException));
        }
        for (String kind : new String[] {"vqa", "retrieval"}) {
            Engine one = kind.equals("vqa") ? engine : kindEngines.get(kind);
            Map<String, Object> query = firstQuery(kind.equals("vqa") ? queriesDoc : kindDocs.get(kind));
            ImageFiles.Decoded image = image(query);
            String question = (String) query.get("text");
            try {
                one.predict(Arrays.asList(image, image), question, null, null);
                fail(kind + ": two images ran on a one-image bundle");
            } catch (ImageCountException exc) {
                assertEquals(Arrays.asList(1, 2), Arrays.asList(exc.expected, exc.got));
                assertTrue(exc.getMessage(), exc.getMessage().contains("reads 1 image per query, got 2"));
            }
            Engine.Prediction single = one.predict(image.argb, image.width, image.height, question, Policy.of("full"), null);
            Engine.Prediction listed = one.predict(Collections.singletonList(image), question, Policy.of("full"), null);
            assertEquals(Arrays.<Object>asList(single.answer, single.exitIndex, single.confidence, single.matchScore),
                    Arrays.<Object>asList(listed.answer, listed.exitIndex, listed.confidence, listed.matchScore));
        }
    }

    @Test
    public void matchProbabilityIsTheSigmoidOfTheScore() {
        assertEquals(0.5, Engine.matchProbability(new float[] {0, 0}), 0);
        assertEquals("at 0.5 the answer is labels[0], no", 0, Controller.argmax(new float[] {0, 0}));
        assertEquals(1 / (1 + Math.exp(-2)), Engine.matchProbability(new float[] {0, 2}), 0);
        assertTrue(Engine.matchProbability(new float[] {0, -3}) < 0.5 && Engine.matchProbability(new float[] {0, 1e-7f}) > 0.5);
        assertEquals(1.0, Engine.matchProbability(new float[] {0, 800}), 0);
        assertEquals(0.0, Engine.matchProbability(new float[] {0, -800}), 0);
        assertEquals("double precision: exp of the float difference", 1 / (1 + Math.exp((double) 0.1f - (double) 0.3f)),
                Engine.matchProbability(new float[] {0.1f, 0.3f}), 0);
    }

    /**
     * The NLVR2 and retrieval manifests are checked for consistency (inconsistent) and the schema,
     * each refusal before any stage is opened; values no runtime reads are the schema's.
     */
    @Test
    public void nlvr2AndRetrievalConsistency() throws Exception {
        Map<String, Object> nlvr2Doc = kindDocs.get("nlvr2");
        try (BundleCopy copy = BundleCopy.of(kindEngines.get("nlvr2").root(), "mmedge-nlvr2-")) {
            long s = kindEngines.get("nlvr2").preprocessor.size();
            // stage 0 of a two-image bundle takes [1, 2, 3, S, S]
            copy.edit(m -> {
                for (Object stage : Json.obj(m.get("stages")).values()) {
                    if (Json.lng(Json.obj(stage).get("stage")) != 0) continue;
                    Json.obj(Json.arr(Json.obj(stage).get("inputs")).get(0)).put("shape", Arrays.<Object>asList(1L, 3L, s, s));
                }
            });
            String message = refusedBeforeOpening(copy, nlvr2Doc, BundleException.INCONSISTENT);
            assertTrue(message, message.contains("takes pixel_values [1, 3, 32, 32], preprocessing gives [1, 2, 3, 32, 32]"));
            // two images without modality pruning or in-graph graphs
            copy.edit(m -> m.put("in_graph", parse("{\"inputs\": [\"pixel_values\", \"input_ids\", \"text_mask\", "
                    + "\"threshold\"], \"outputs\": [\"logits\", \"confidence\", \"exit_index\", \"kept_index\"], "
                    + "\"by_keep_ratio\": {}}")));
            message = refusedBeforeOpening(copy, nlvr2Doc, BundleException.INCONSISTENT);
            assertTrue(message, message.contains("two images per query has no modality_pruning or in_graph"));
            copy.edit(m -> {
                Map<String, Object> later = Json.obj(Json.obj(m.get("stages")).get("k16_stage1"));
                Map<String, Object> pruning = Json.obj(parse("{\"after_stage\": 0, \"seq_len\": 25, \"exit_flops\": "
                        + "[{\"keep_ratio\": 1.0, \"exit_flops\": [1, 2]}, {\"keep_ratio\": 0.5, \"exit_flops\": [1, 2]}], "
                        + "\"rule\": {\"signal\": \"visual_norm\", \"prune_when\": \"below\", \"threshold\": 0, "
                        + "\"enabled\": false, \"source\": \"export\"}}"));
                Map<String, Object> stage = new LinkedHashMap<>();
                stage.put("name", "text_stage1");
                stage.put("stage", 1L);
                stage.put("layers", Arrays.<Object>asList(1L));
                stage.put("inputs", later.get("inputs"));
                stage.put("outputs", later.get("outputs"));
                stage.put("flops", 1L);
                pruning.put("stages", Arrays.<Object>asList(stage));
                m.put("modality_pruning", pruning);
            });
            message = refusedBeforeOpening(copy, nlvr2Doc, BundleException.INCONSISTENT);
            assertTrue(message, message.contains("two images per query has no modality_pruning or in_graph"));
            // two images with format 1's preparation
            copy.edit(m -> {
                Map<String, Object> pre = Json.obj(m.get("preprocessing"));
                pre.put("resize", "pillow-bilinear");
                pre.put("pad_color", Arrays.<Object>asList(118L, 118L, 124L));
            });
            message = refusedBeforeOpening(copy, nlvr2Doc, BundleException.INCONSISTENT);
            assertTrue(message, message.contains("preprocessing.num_images 2 needs resize 'pillow-bicubic'"));
            copy.edit(m -> Json.obj(m.get("preprocessing")).put("num_images", 3L));
            refusedBeforeOpening(copy, nlvr2Doc, BundleException.SCHEMA);
            count("NLVR2 manifests refused");
        }
        Map<String, Object> retrievalDoc = kindDocs.get("retrieval");
        try (BundleCopy copy = BundleCopy.of(kindEngines.get("retrieval").root(), "mmedge-retrieval-")) {
            copy.edit(m -> m.put("labels", Arrays.<Object>asList("yes", "no")));
            String message = refusedBeforeOpening(copy, retrievalDoc, BundleException.INCONSISTENT);
            assertTrue(message, message.contains("head 'match-score' needs task 'match' and labels [no, yes]"));
            copy.edit(m -> m.put("task", "vqa"));
            refusedBeforeOpening(copy, retrievalDoc, BundleException.INCONSISTENT);
            copy.edit(m -> m.put("head", "sigmoid"));
            refusedBeforeOpening(copy, retrievalDoc, BundleException.SCHEMA);
            count("retrieval manifests refused");
            // an explicit softmax head: the same logits read as a plain yes / no classifier, without a match score
            copy.edit(m -> m.put("head", "softmax"));
            try (Engine e = Engine.load(copy.dir, new ReplayStageRunner.Factory(retrievalDoc, false), new Engine.Options())) {
                Map<String, Object> q = firstQuery(retrievalDoc);
                Engine.Prediction p = e.predict(Collections.singletonList(image(q)), (String) q.get("text"), null, null);
                assertEquals(Json.obj(q.get("default")).get("answer"), p.answer);
                assertEquals(null, p.matchScore);
            }
        }
    }

    private static String refusedBeforeOpening(BundleCopy copy, Map<String, Object> doc, String code) {
        ReplayStageRunner.Factory f = new ReplayStageRunner.Factory(doc, false);
        BundleException exc = BundleCopy.refused(code, () -> Engine.load(copy.dir, f, new Engine.Options()).close());
        assertEquals("no stage was opened", null, f.last);
        return exc.getMessage();
    }

    /** Both load at another keep ratio, self-check (two grey images for NLVR2) and warm up: no unsupported refusal. */
    @Test
    public void nlvr2AndRetrievalLoadAtAnotherKeepRatioAndWarmUp() {
        for (Map<String, Object> doc : kindDocs.values()) {
            Engine.Options o = new Engine.Options();
            o.keepRatio = 0.5;
            ReplayStageRunner.Factory f = new ReplayStageRunner.Factory(doc);
            try (Engine e = Engine.load(Golden.repo().resolve((String) doc.get("bundle")), f, o)) {
                assertEquals(0.5, e.keepRatio(), 0);
                int selfCheck = f.last.calls;
                assertEquals("the self-check runs every stage of every keep ratio", 4, selfCheck);
                e.warmUp(1, 0.5);
                assertEquals(selfCheck + 2, f.last.calls);
                assertTrue(e.stageMs("k8_stage1") != null);
            }
        }
    }
}
