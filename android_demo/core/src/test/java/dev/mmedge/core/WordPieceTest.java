package dev.mmedge.core;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import dev.mmedge.core.testing.Golden;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.Consumer;
import org.junit.Test;

/**
 * The WordPiece tokenizer (docs/bundle-format.md "Text", kind "wordpiece") against the Python
 * reference's golden cases (tests/vectors/golden/tokenizer-wordpiece.json), a hand-made vocabulary,
 * code points rather than UTF-16 chars, strict tokenizer.json checks and the manifest's kind rules.
 * Whole bundles with a WordPiece tokenizer are in {@link TamperTest#wordPieceBundle}.
 */
public class WordPieceTest {
    private static int[] ints(Object list) {
        return Golden.ints(list);
    }

    private static List<String> strings(Object list) {
        return Golden.strings(list);
    }

    /** A tokenizer.json as mmedge/data/tokenizer.py writes it (WordPiece model), then edited. */
    private static byte[] tokenizerJson(Map<String, Integer> vocab, int maxLength, String prefix, int longest,
            Consumer<Map<String, Object>> change) {
        Map<String, Object> truncation = new LinkedHashMap<>();
        truncation.put("direction", "Right");
        truncation.put("max_length", (long) maxLength);
        Map<String, Object> v = new LinkedHashMap<>();
        for (Map.Entry<String, Integer> e : vocab.entrySet()) v.put(e.getKey(), (long) e.getValue());
        Map<String, Object> model = new LinkedHashMap<>();
        model.put("type", "WordPiece");
        model.put("unk_token", "[UNK]");
        model.put("continuing_subword_prefix", prefix);
        model.put("max_input_chars_per_word", (long) longest);
        model.put("vocab", v);
        Map<String, Object> doc = new LinkedHashMap<>();
        doc.put("version", "1.0");
        doc.put("truncation", truncation);
        doc.put("normalizer", Collections.singletonMap("type", "Lowercase"));
        doc.put("pre_tokenizer", Collections.singletonMap("type", "Whitespace"));
        doc.put("model", model);
        if (change != null) change.accept(doc);
        return Json.write(doc, 1).getBytes(StandardCharsets.UTF_8);
    }

    private static Map<String, Integer> vocab(Object... entryThenId) {
        Map<String, Integer> out = new LinkedHashMap<>();
        for (int i = 0; i < entryThenId.length; i += 2) out.put((String) entryThenId[i], (Integer) entryThenId[i + 1]);
        return out;
    }

    /** The brief's hand-made vocabulary. */
    private static final Map<String, Integer> UNBELIEVABLE = vocab("[PAD]", 0, "[UNK]", 1, "un", 2, "##believ", 3, "##able", 4,
            "a", 5, "##a", 6, "?", 7);

    private static String repeat(String s, int n) {
        StringBuilder b = new StringBuilder();
        for (int i = 0; i < n; i++) b.append(s);
        return b.toString();
    }

    @Test
    public void goldenCasesOfThePythonReference() throws Exception {
        Map<String, Object> cases = Golden.json(Golden.golden().resolve("tokenizer-wordpiece.json"));
        assertEquals("mmedge-golden-tokenizer-1", cases.get("format"));
        assertEquals("wordpiece", cases.get("kind"));
        Path file = Golden.repo().resolve((String) cases.get("tokenizer"));
        WordTokenizer tok = WordTokenizer.fromJson(Files.readAllBytes(file), true);
        assertTrue(tok instanceof WordPieceTokenizer);
        assertEquals(WordTokenizer.KIND_WORDPIECE, tok.kind());
        assertEquals(cases.get("continuing_subword_prefix"), tok.continuingSubwordPrefix());
        assertEquals(Json.lng(cases.get("max_input_chars_per_word")), tok.maxInputCharsPerWord());
        assertEquals(Json.lng(cases.get("max_length")), tok.maxLength());
        List<Object> all = Json.arr(cases.get("cases"));
        assertTrue(all.size() >= 30);
        int[] counts = Golden.checkTokenizerCases(tok, cases);
        int encodings = counts[0];
        int errors = counts[1];
        assertTrue(errors >= 3);
        System.out.println("# WordPiece golden agreement (Java core): " + encodings + " encodings and " + errors
                + " TextErrors, all equal");
    }

    @Test
    public void handMadeVocabulary() {
        WordTokenizer tok = WordTokenizer.fromJson(tokenizerJson(UNBELIEVABLE, 8, "##", 12, null), true);
        assertEquals("wordpiece", tok.kind());
        assertEquals("##", tok.continuingSubwordPrefix());
        assertEquals(12, tok.maxInputCharsPerWord());
        assertEquals(Arrays.asList("un", "##believ", "##able", "?"), tok.tokenize("Unbelievable ?"));
        // "unbeliev" then "##ably" has no match: the whole word is one [UNK], "un" and "##believ" discarded
        assertEquals(Collections.singletonList("[UNK]"), tok.tokenize("unbelievably"));
        List<String> want = new ArrayList<>();
        want.add("a");
        for (int i = 0; i < 11; i++) want.add("##a");
        want.add("[UNK]"); // 13 code points, more than 12
        WordTokenizer.Encoding many = tok.encode(repeat("a", 12) + " " + repeat("a", 13));
        assertEquals(want, many.tokens);
        assertTrue(many.truncated);
        assertArrayEquals(new int[] {5, 6, 6, 6, 6, 6, 6, 6}, many.inputIds);
        assertArrayEquals(new int[] {1, 1, 1, 1, 1, 1, 1, 1}, many.textMask);
        WordTokenizer.Encoding e = tok.encode("un ?");
        assertEquals(Arrays.asList("un", "?"), e.tokens);
        assertFalse(e.truncated);
        assertArrayEquals(new int[] {2, 7, 0, 0, 0, 0, 0, 0}, e.inputIds);
        assertArrayEquals(new int[] {1, 1, 0, 0, 0, 0, 0, 0}, e.textMask);
        assertArrayEquals(new int[] {1, 2, 1, 0, 0, 0, 0, 0}, tok.encode("zz un ??").inputIds);
        // the word/punctuation split is the word-level one: "un?" is two pieces
        assertEquals(Arrays.asList("un", "?"), tok.tokenize("UN?"));
        assertEquals(Arrays.asList("un", "?"), tok.words("UN ?"));
        for (String empty : new String[] {"", " \t\n", "\u3000"}) {
            try {
                tok.encode(empty);
                fail("no TextException for " + Json.write(empty));
            } catch (TextException expected) {
                assertTrue(expected.getMessage().contains("empty"));
            }
        }
    }

    @Test
    public void lengthsAreCodePointsNotUtf16Chars() {
        // U+1D482 MATHEMATICAL BOLD ITALIC SMALL A (a letter, Ll; two UTF-16 chars) and U+00E9
        String a = new String(Character.toChars(0x1d482));
        Map<String, Integer> v = vocab("[PAD]", 0, "[UNK]", 1, a, 2, "##" + a, 3, "é", 4, "##é", 5, a + "é", 6);
        WordTokenizer tok = WordTokenizer.fromJson(tokenizerJson(v, 8, "##", 4, null), true);
        assertEquals(Arrays.asList(a, "##" + a, "##" + a, "##" + a), tok.tokenize(a + a + a + a)); // 4 code points, 8 chars
        assertEquals(Collections.singletonList("[UNK]"), tok.tokenize(a + a + a + a + a)); // 5 code points
        assertEquals(Arrays.asList(a + "é", "##é", "##" + a), tok.tokenize(a + "éé" + a));
        assertArrayEquals(new int[] {6, 5, 3, 0, 0, 0, 0, 0}, tok.encode(a + "éé" + a).inputIds);
        assertEquals(Arrays.asList("é", "##é", "##é"), tok.tokenize("ÉÉÉ"));
        // a prefix other than "##", and an entry longer than any piece
        Map<String, Integer> w = vocab("[PAD]", 0, "[UNK]", 1, "ab", 2, "@@c", 3, "c", 4, "abcdefghij", 5);
        WordTokenizer at = WordTokenizer.fromJson(tokenizerJson(w, 4, "@@", 100, null), true);
        assertEquals(Arrays.asList("ab", "@@c", "@@c", "c", "[UNK]", "c"), at.tokenize("abcc c ##c"));
    }

    @Test
    public void wordLevelFilesStayWordLevel() throws Exception {
        Map<String, Object> cases = Golden.json(Golden.golden().resolve("tokenizer.json"));
        WordTokenizer tok = WordTokenizer.fromJson(Files.readAllBytes(Golden.repo().resolve((String) cases.get("tokenizer"))), true);
        assertFalse(tok instanceof WordPieceTokenizer);
        assertEquals("word", tok.kind());
        assertNull(tok.continuingSubwordPrefix());
        assertEquals(0, tok.maxInputCharsPerWord());
    }

    private static void refused(byte[] json, String expect) {
        try {
            WordTokenizer.fromJson(json, true);
            fail("accepted a tokenizer.json that should be refused for " + expect);
        } catch (BundleException exc) {
            assertTrue("message '" + exc.getMessage() + "' should contain " + expect, exc.getMessage().contains(expect));
            assertTrue(exc.getMessage().contains("export the bundle again"));
        }
    }

    private static Consumer<Map<String, Object>> model(Consumer<Map<String, Object>> change) {
        return doc -> change.accept(Json.obj(doc.get("model")));
    }

    @Test
    public void badWordPieceFilesAreRefused() {
        Map<String, Integer> v = UNBELIEVABLE;
        String longest = "max_input_chars_per_word";
        String prefix = "continuing_subword_prefix";
        refused(tokenizerJson(v, 8, "##", 0, null), longest);
        refused(tokenizerJson(v, 8, "##", -1, null), longest);
        refused(tokenizerJson(v, 8, "##", 1, model(m -> m.put(longest, 1.5))), longest);
        refused(tokenizerJson(v, 8, "##", 1, model(m -> m.put(longest, 100.0))), longest);
        refused(tokenizerJson(v, 8, "##", 1, model(m -> m.put(longest, "100"))), longest);
        refused(tokenizerJson(v, 8, "##", 1, model(m -> m.put(longest, 1L << 40))), longest);
        refused(tokenizerJson(v, 8, "##", 1, model(m -> m.remove(longest))), longest);
        refused(tokenizerJson(v, 8, "##", 1, model(m -> m.remove(prefix))), prefix);
        refused(tokenizerJson(v, 8, "", 1, null), prefix);
        refused(tokenizerJson(v, 8, "##", 1, model(m -> m.put(prefix, 5L))), prefix);
        refused(tokenizerJson(v, 8, "##", 1, model(m -> m.put(prefix, Json.NULL))), prefix);
        refused(tokenizerJson(v, 8, "##", 1, model(m -> m.put("unk_token", "<unk>"))), "unk_token");
        refused(tokenizerJson(v, 8, "##", 1, model(m -> Json.obj(m.get("vocab")).put("x", -1L))), "non-negative");
        refused(tokenizerJson(v, 8, "##", 1, model(m -> Json.obj(m.get("vocab")).put("x", 2.5))), "non-negative");
        refused(tokenizerJson(v, 8, "##", 1, model(m -> m.put("vocab", new ArrayList<Object>()))), "WordPiece");
        refused(tokenizerJson(v, 8, "##", 1, model(m -> m.put("type", "BPE"))), "not a WordLevel or WordPiece");
        refused(tokenizerJson(v, 8, "##", 1, d -> d.remove("truncation")), "max_length");
        // the file as written, and without an unk_token (HF writes one; the [UNK] id is checked by the loader)
        WordTokenizer.fromJson(tokenizerJson(v, 8, "##", 1, null), true);
        WordTokenizer.fromJson(tokenizerJson(v, 8, "##", 1, model(m -> m.remove("unk_token"))), true);
    }

    private static Map<String, Object> shippedManifest() throws Exception {
        return BundleLoader.parseManifest(Files.readAllBytes(Golden.bundle().resolve("manifest.json")), "manifest.json");
    }

    @Test
    public void manifestKindAndItsRules() throws Exception {
        Map<String, Object> raw = shippedManifest();
        Map<String, Object> tok = Json.obj(raw.get("tokenizer"));
        assertFalse("the shipped bundle is word-level, without a kind", tok.containsKey("kind"));
        Manifest m = new Manifest(raw);
        assertEquals("word", m.tokenizerKind);
        assertNull(m.continuingSubwordPrefix);
        assertEquals(0, m.maxInputCharsPerWord);
        assertTrue(BundleLoader.consistencyProblems(m).isEmpty());

        tok.put("kind", "wordpiece");
        tok.put("continuing_subword_prefix", "##");
        tok.put("max_input_chars_per_word", 100L);
        m = new Manifest(raw);
        assertEquals("wordpiece", m.tokenizerKind);
        assertEquals("##", m.continuingSubwordPrefix);
        assertEquals(100, m.maxInputCharsPerWord);
        assertTrue(BundleLoader.consistencyProblems(m).isEmpty());
        assertTrue(BundleLoader.schema().validate(raw).isEmpty());

        // the rules in code (for a tree that did not pass the schema) and in the schema
        Object[][] bad = {
            {"kind", "bpe", "tokenizer.kind"},
            {"continuing_subword_prefix", null, "continuing_subword_prefix"},
            {"continuing_subword_prefix", "", "continuing_subword_prefix"},
            {"continuing_subword_prefix", repeat("#", 17), "continuing_subword_prefix"},
            {"max_input_chars_per_word", null, "max_input_chars_per_word"},
            {"max_input_chars_per_word", 0L, "max_input_chars_per_word"},
            {"max_input_chars_per_word", 1025L, "max_input_chars_per_word"},
            {"max_input_chars_per_word", 2.5, "max_input_chars_per_word"},
        };
        for (Object[] b : bad) {
            Map<String, Object> r = shippedManifest();
            Map<String, Object> t = Json.obj(r.get("tokenizer"));
            t.put("kind", "wordpiece");
            t.put("continuing_subword_prefix", "##");
            t.put("max_input_chars_per_word", 100L);
            if (b[1] == null) t.remove((String) b[0]);
            else t.put((String) b[0], b[1]);
            List<String> problems = BundleLoader.consistencyProblems(new Manifest(r));
            assertEquals(Arrays.toString(b) + ": " + problems, 1, problems.size());
            assertTrue(problems.get(0), problems.get(0).contains((String) b[2]));
            assertFalse(Arrays.toString(b) + " passes the schema", BundleLoader.schema().validate(r).isEmpty());
        }
        // 16 code points (32 UTF-16 chars) is within 1..16; a word-level manifest ignores the WordPiece fields' absence
        Map<String, Object> r = shippedManifest();
        Map<String, Object> t = Json.obj(r.get("tokenizer"));
        t.put("kind", "wordpiece");
        t.put("continuing_subword_prefix", repeat(new String(Character.toChars(0x1d482)), 16));
        t.put("max_input_chars_per_word", 1024L);
        assertTrue(BundleLoader.consistencyProblems(new Manifest(r)).isEmpty());
        assertTrue(BundleLoader.schema().validate(r).isEmpty());
        t.put("kind", "word");
        assertTrue(BundleLoader.consistencyProblems(new Manifest(r)).isEmpty());
    }

    // ------------------------------------------------------------------ bounded work (issue 31, defect 6)
    private static final int CAP = 65_536; // the spec's cap, in code points: every runtime refuses a longer text

    private static void refused(WordTokenizer tok, String text, String message) {
        try {
            tok.encode(text);
            fail("no TextException for a text of " + text.length() + " chars");
        } catch (TextException expected) {
            assertTrue(expected.getMessage(), expected.getMessage().contains(message));
        }
    }

    @Test
    public void textOverTheCapIsRefusedInEveryKind() {
        assertEquals(CAP, WordTokenizer.MAX_TEXT_CHARS);
        WordTokenizer[] kinds = {WordTokenizer.fromJson(tokenizerJson(UNBELIEVABLE, 8, "##", 12, null), true),
            new WordTokenizer(UNBELIEVABLE, 8, true)};
        String astral = new String(Character.toChars(0x1d4b6));
        for (WordTokenizer tok : kinds) {
            refused(tok, repeat("a", CAP + 1), "text has 65,537 characters, more than the 65,536");
            refused(tok, repeat("what is this ? ", 66_666) + "abcdefghij", "1,000,000 characters");
            try {
                tok.tokenize(repeat("a ", CAP));
                fail("tokenize took a text over the cap");
            } catch (TextException expected) {
                // the same cap
            }
            // code points are counted, as Python's len counts them: 65,536 astral characters (131,072 chars) pass
            assertFalse(tok.encode(repeat(astral, CAP)).truncated);
            refused(tok, repeat(astral, CAP) + "a", "65,537 characters");
            refused(tok, repeat("\ud800", CAP + 1), "65,537 characters"); // a lone surrogate is one code point
        }
    }

    @Test
    public void longTextUnderTheCapStopsAfterMaxLengthTokens() {
        Map<String, Integer> v = vocab("[PAD]", 0, "[UNK]", 1, "a", 2, "##a", 3, "aa", 4, "##aa", 5, "?", 6);
        WordTokenizer tok = new WordPieceTokenizer(v, 8, true, "##", 100);
        String text = repeat(repeat("a", 99) + " ", CAP / 100) + repeat("a", CAP % 100);
        assertEquals(CAP, text.length());
        List<String> full = tok.tokenize(text); // the untruncated algorithm
        assertEquals(655 * 50 + 18, full.size());
        WordTokenizer.Encoding e = tok.encode(text);
        assertTrue(e.truncated);
        int[] want = new int[8];
        for (int i = 0; i < 8; i++) want[i] = v.get(full.get(i));
        assertArrayEquals(want, e.inputIds);
        assertArrayEquals(new int[] {1, 1, 1, 1, 1, 1, 1, 1}, e.textMask);
        assertEquals(full, e.tokens); // made on first use
        assertEquals(Arrays.asList("aa", "##aa", "##aa"), tok.tokenize(text, 3));
        assertEquals(Collections.singletonList("[UNK]"), tok.tokenize(repeat("a", CAP))); // over 100 code points
        // encode splits one word (50 tokens > 8 + 1); the whole text is 656 words: encode must be far cheaper
        long encode = Long.MAX_VALUE;
        long all = Long.MAX_VALUE;
        for (int round = 0; round < 7; round++) {
            long t0 = System.nanoTime();
            tok.encode(text);
            long t1 = System.nanoTime();
            tok.tokenize(text);
            long t2 = System.nanoTime();
            encode = Math.min(encode, t1 - t0);
            all = Math.min(all, t2 - t1);
        }
        assertTrue("encode " + encode / 1000 + " us vs whole text " + all / 1000 + " us", encode * 5 < all);
        assertTrue("encode took " + encode / 1000 + " us", encode < 50_000_000L);
    }
}
