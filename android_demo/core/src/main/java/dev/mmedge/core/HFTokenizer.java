package dev.mmedge.core;

import java.io.ByteArrayOutputStream;
import java.nio.charset.StandardCharsets;
import java.text.Normalizer;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * A generative VLM bundle's tokenizer ({@code tokenizer.kind} "hf-tokenizers": a Hugging Face
 * {@code tokenizers} tokenizer.json), used the way the Python runtime uses {@code tokenizers}
 * (mmedge/runtime/vlm_engine.py; runtimes/js/src/hf-tokenizer.ts is the same code):
 *
 * <pre>
 *   encode(text)  = Tokenizer.encode(text, add_special_tokens=False).ids
 *   decode(ids)   = Tokenizer.decode(ids, skip_special_tokens=True).strip()   (Python's str.strip)
 * </pre>
 *
 * The subset of {@code tokenizers} that mmedge's bundles carry, after its Rust source:
 * <ul>
 *   <li>added tokens (special or not), found first in the raw text (those with {@code normalized}
 *       false) and then in the normalised text (those with {@code normalized} true, matched
 *       normalised), leftmost-longest;</li>
 *   <li>normalisers {@code Lowercase} (each code point's own lowercase mapping, as Rust's
 *       char::to_lowercase: no final-sigma context), {@code NFC}, {@code NFD}, {@code NFKC},
 *       {@code NFKD} and a {@code Sequence} of them;</li>
 *   <li>pre-tokenizers {@code BertPreTokenizer} (split on white space, which is dropped, and around
 *       each punctuation character), {@code Digits} (each digit alone, or runs of digits),
 *       {@code ByteLevel} (GPT-2's split, then each piece's UTF-8 bytes as GPT-2's byte alphabet)
 *       and a {@code Sequence} of them;</li>
 *   <li>models {@code WordLevel} (the vocabulary, else the unknown token) and {@code BPE} (merges by
 *       rank, the leftmost pair first on a tie; no dropout, byte fallback, prefix or suffix);</li>
 *   <li>decoders none (tokens joined by spaces) and {@code ByteLevel} (bytes back, invalid UTF-8 as
 *       U+FFFD).</li>
 * </ul>
 * tests/vectors/vlm/tokenizer.json checks both kinds the bundles use (a WordLevel tokenizer with
 * Lowercase and BertPreTokenizer; a byte-level BPE with digits split, SmolVLM's layout) against
 * Python {@code tokenizers}. A tokenizer.json with any other component is refused at load
 * ({@code unsupported}: the Python runtime reads it, this one might not encode it the same way); a
 * file that is not a tokenizer is code {@code tokenizer}.
 */
public final class HFTokenizer {
    public static final String KIND = "hf-tokenizers";
    public static final List<String> MODELS = Collections.unmodifiableList(Arrays.asList("WordLevel", "BPE"));
    public static final List<String> NORMALIZERS =
            Collections.unmodifiableList(Arrays.asList("Lowercase", "NFC", "NFD", "NFKC", "NFKD", "Sequence"));
    public static final List<String> PRE_TOKENIZERS =
            Collections.unmodifiableList(Arrays.asList("BertPreTokenizer", "ByteLevel", "Digits", "Sequence"));
    public static final List<String> DECODERS = Collections.singletonList("ByteLevel");

    /** Unicode White_Space (Rust's char::is_whitespace), as a regex class body. */
    private static final String WHITE = "\\t\\n\\u000B\\f\\r \\u0085\\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000";
    /** GPT-2's pre-tokenization pattern (tokenizers' ByteLevel with use_regex), \s as White_Space. */
    private static final Pattern GPT2_SPLIT = Pattern.compile("'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" + WHITE
            + "\\p{L}\\p{N}]+|[" + WHITE + "]+(?![^" + WHITE + "])|[" + WHITE + "]+");
    private static final Pattern ONE_DIGIT = Pattern.compile("\\p{N}");
    private static final Pattern DIGIT_RUNS = Pattern.compile("\\p{N}+");
    /** GPT-2's byte to character table (bytes_to_unicode) and its inverse. */
    private static final String[] BYTE_CHAR = new String[256];
    private static final Map<Integer, Integer> CHAR_BYTE = new HashMap<>();

    static {
        int extra = 0;
        for (int b = 0; b < 256; b++) {
            boolean visible = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
            int cp = visible ? b : 256 + extra++;
            BYTE_CHAR[b] = new String(Character.toChars(cp));
            CHAR_BYTE.put(cp, b);
        }
    }

    /** One entry of added_tokens. */
    private static final class Added {
        final int id;
        final String content;
        final boolean special;
        final boolean normalized;

        Added(int id, String content, boolean special, boolean normalized) {
            this.id = id;
            this.content = content;
            this.special = special;
            this.normalized = normalized;
        }
    }

    /** An added token to look for in a text: its content (normalised or not) and the token. */
    private static final class Needle {
        final String content;
        final Added token;

        Needle(String content, Added token) {
            this.content = content;
            this.token = token;
        }
    }

    private interface Normalize {
        String apply(String text);
    }

    private interface PreTokenize {
        List<String> apply(List<String> pieces);
    }

    private final boolean bpe;
    private final Map<String, Integer> vocab = new HashMap<>();
    private final Map<Integer, String> idToToken = new HashMap<>();
    private final List<Added> added = new ArrayList<>();
    private final Set<Integer> specialIds = new HashSet<>();
    private final Normalize normalize;
    private final PreTokenize preTokenize;
    private final Integer unkId;
    private final Map<String, Integer> merges = new HashMap<>();
    private final boolean ignoreMerges;
    private final boolean byteLevelDecoder;
    private final List<Needle> rawAdded = new ArrayList<>();
    private final List<Needle> normalizedAdded = new ArrayList<>();

    private HFTokenizer(Map<String, Object> parsed) {
        Map<String, Object> model = Json.obj(parsed.get("model"));
        bpe = "BPE".equals(model.get("type"));
        for (Map.Entry<String, Object> e : Json.obj(model.get("vocab")).entrySet()) {
            int id = (int) Json.lng(e.getValue());
            vocab.put(e.getKey(), id);
            idToToken.put(id, e.getKey());
        }
        Object list = parsed.get("added_tokens");
        if (list instanceof List) {
            for (Object o : Json.arr(list)) {
                Map<String, Object> t = Json.obj(o);
                boolean special = Boolean.TRUE.equals(t.get("special"));
                Object norm = t.get("normalized");
                boolean normalized = norm == null ? !special : Boolean.TRUE.equals(norm);
                added.add(new Added((int) Json.lng(t.get("id")), (String) t.get("content"), special, normalized));
            }
        }
        for (Added t : added) {
            idToToken.put(t.id, t.content); // an added token's content wins
            if (t.special) specialIds.add(t.id);
        }
        normalize = normalizer(parsed.get("normalizer"));
        preTokenize = preTokenizer(parsed.get("pre_tokenizer"));
        Object unk = model.get("unk_token");
        unkId = unk instanceof String ? vocab.get(unk) : null;
        ignoreMerges = Boolean.TRUE.equals(model.get("ignore_merges"));
        if (bpe) {
            List<Object> pairs = Json.arr(model.get("merges"));
            for (int rank = 0; rank < pairs.size(); rank++) {
                String[] pair = pair(pairs.get(rank));
                String key = pair[0] + " " + pair[1];
                if (!merges.containsKey(key)) merges.put(key, rank);
            }
        }
        Object decoder = parsed.get("decoder");
        byteLevelDecoder = decoder instanceof Map && "ByteLevel".equals(Json.obj(decoder).get("type"));
        for (Added t : added) {
            if (t.normalized) normalizedAdded.add(new Needle(normalize.apply(t.content), t));
            else rawAdded.add(new Needle(t.content, t));
        }
    }

    /** A merge as tokenizer.json writes it: "a b" (older files) or ["a", "b"]; null when it is neither. */
    private static String[] pair(Object m) {
        if (m instanceof String) {
            String[] parts = ((String) m).split(" ", -1);
            return parts.length == 2 ? parts : null;
        }
        if (m instanceof List) {
            List<Object> l = Json.arr(m);
            if (l.size() == 2 && l.get(0) instanceof String && l.get(1) instanceof String) {
                return new String[] {(String) l.get(0), (String) l.get(1)};
            }
        }
        return null;
    }

    /**
     * A tokenizer from the bytes of a tokenizer.json (strict UTF-8 JSON nested at most 32 levels).
     * BundleException code {@code unsupported} for components this runtime does not implement,
     * {@code tokenizer} when it is not a tokenizer file.
     */
    public static HFTokenizer fromJson(byte[] data, String where) {
        Object parsed;
        try {
            parsed = Json.parse(data, BundleLoader.MAX_DEPTH);
        } catch (Json.ParseException exc) {
            throw new BundleException(BundleException.TOKENIZER, "the bundle's tokenizer file '" + BundleLoader.shortText(where, 80)
                    + "' is not strict UTF-8 JSON (" + BundleLoader.shortText(exc.getMessage(), 160) + "); export the bundle again",
                    exc, where, null);
        }
        if (!(parsed instanceof Map)) throw notATokenizer(where, "it must hold a JSON object");
        Map<String, Object> doc = Json.obj(parsed);
        List<String> missing = unsupportedParts(doc);
        if (!missing.isEmpty()) {
            throw new BundleException(BundleException.UNSUPPORTED, where + ": this runtime does not implement "
                    + String.join(", ", missing.subList(0, Math.min(5, missing.size()))) + " of a Hugging Face tokenizer (it reads "
                    + "models " + String.join(", ", MODELS) + "; normalisers " + String.join(", ", NORMALIZERS) + "; pre-tokenizers "
                    + String.join(", ", PRE_TOKENIZERS) + "; decoder " + String.join(", ", DECODERS) + "); the Python runtime "
                    + "reads it", null, where, null);
        }
        Map<String, Object> model = Json.obj(doc.get("model"));
        Object vocab = model.get("vocab");
        boolean ids = vocab instanceof Map;
        if (ids) {
            for (Object id : Json.obj(vocab).values()) ids &= id instanceof Long && (Long) id >= 0 && (Long) id <= Integer.MAX_VALUE;
        }
        if (!ids) throw notATokenizer(where, "model.vocab must map tokens to ids");
        if ("WordLevel".equals(model.get("type"))
                && !(model.get("unk_token") instanceof String && Json.obj(vocab).containsKey(model.get("unk_token")))) {
            throw notATokenizer(where, "a WordLevel model needs its unk_token in the vocabulary");
        }
        if ("BPE".equals(model.get("type"))) {
            boolean ok = model.get("merges") instanceof List;
            if (ok) for (Object m : Json.arr(model.get("merges"))) ok &= pair(m) != null;
            if (!ok) throw notATokenizer(where, "a BPE model needs its merges, each a pair of tokens");
        }
        Object added = doc.containsKey("added_tokens") && doc.get("added_tokens") != Json.NULL
                ? doc.get("added_tokens") : new ArrayList<>();
        boolean ok = added instanceof List;
        if (ok) {
            for (Object t : Json.arr(added)) {
                ok &= t instanceof Map && Json.obj(t).get("id") instanceof Long && (Long) Json.obj(t).get("id") >= 0
                        && (Long) Json.obj(t).get("id") <= Integer.MAX_VALUE && Json.obj(t).get("content") instanceof String
                        && !((String) Json.obj(t).get("content")).isEmpty();
            }
        }
        if (!ok) throw notATokenizer(where, "added_tokens must list tokens, each with an id and a non-empty content");
        return new HFTokenizer(doc);
    }

    private static BundleException notATokenizer(String where, String what) {
        return new BundleException(BundleException.TOKENIZER, where + " is not a Hugging Face tokenizer: " + what, null, where, null);
    }

    private static boolean isObject(Object v) {
        return v instanceof Map;
    }

    /** The components of a tokenizer.json this class does not implement (empty when it reads them all). */
    public static List<String> unsupportedParts(Map<String, Object> parsed) {
        List<String> out = new ArrayList<>();
        Object model = parsed.get("model");
        Object type = isObject(model) ? Json.obj(model).get("type") : model;
        if (!isObject(model) || !MODELS.contains(type)) {
            out.add("model " + BundleLoader.shortText(type == null || type == Json.NULL ? "none" : Json.write(type), 40));
        } else if ("BPE".equals(type)) {
            Map<String, Object> m = Json.obj(model);
            if (m.get("dropout") != null && m.get("dropout") != Json.NULL) out.add("BPE dropout (random merges)");
            if (Boolean.TRUE.equals(m.get("byte_fallback"))) out.add("BPE byte_fallback");
            if (Boolean.TRUE.equals(m.get("fuse_unk"))) out.add("BPE fuse_unk");
            for (String key : new String[] {"continuing_subword_prefix", "end_of_word_suffix"}) {
                if (m.get(key) instanceof String && !((String) m.get(key)).isEmpty()) out.add("BPE " + key);
            }
        }
        check(NORMALIZERS, "normalizers", parsed.get("normalizer"), "normalizer", out);
        check(PRE_TOKENIZERS, "pretokenizers", parsed.get("pre_tokenizer"), "pre_tokenizer", out);
        check(DECODERS, null, parsed.get("decoder"), "decoder", out);
        Object added = parsed.get("added_tokens");
        if (added instanceof List) {
            for (Object t : Json.arr(added)) {
                if (isObject(t) && (Boolean.TRUE.equals(Json.obj(t).get("single_word")) || Boolean.TRUE.equals(Json.obj(t).get("lstrip"))
                        || Boolean.TRUE.equals(Json.obj(t).get("rstrip")))) {
                    out.add("added tokens with single_word, lstrip or rstrip");
                    break;
                }
            }
        }
        return out;
    }

    private static void check(List<String> supported, String children, Object node, String where, List<String> out) {
        if (node == null || node == Json.NULL) return;
        Object type = isObject(node) ? Json.obj(node).get("type") : null;
        if (!supported.contains(type)) {
            out.add(where + " " + BundleLoader.shortText(type == null ? "null" : Json.write(type), 40));
        } else if ("Sequence".equals(type)) {
            Object list = Json.obj(node).get(children);
            if (!(list instanceof List)) {
                out.add(where + " Sequence without its list");
                return;
            }
            List<Object> l = Json.arr(list);
            for (int i = 0; i < l.size(); i++) check(supported, children, l.get(i), where + "[" + i + "]", out);
        }
    }

    // ------------------------------------------------------------------------------ components
    /** Rust's char::is_whitespace (Unicode White_Space). */
    static boolean isWhite(int c) {
        return c == 0x20 || (c >= 0x09 && c <= 0x0d) || c == 0x85 || c == 0xa0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200a)
                || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
    }

    /** BERT's punctuation: ASCII punctuation or Unicode category P. */
    static boolean isBertPunctuation(int c) {
        if ((c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126)) return true;
        switch (Character.getType(c)) {
            case Character.CONNECTOR_PUNCTUATION:
            case Character.DASH_PUNCTUATION:
            case Character.START_PUNCTUATION:
            case Character.END_PUNCTUATION:
            case Character.INITIAL_QUOTE_PUNCTUATION:
            case Character.FINAL_QUOTE_PUNCTUATION:
            case Character.OTHER_PUNCTUATION:
                return true;
            default:
                return false;
        }
    }

    /** Python's str.isspace(): White_Space and U+001C..U+001F. */
    static boolean isPythonSpace(int c) {
        return isWhite(c) || (c >= 0x1c && c <= 0x1f);
    }

    /** Python's {@code str.strip()}. */
    public static String pyStrip(String text) {
        int from = 0;
        int to = text.length();
        while (from < to && isPythonSpace(text.codePointAt(from))) from += Character.charCount(text.codePointAt(from));
        while (to > from && isPythonSpace(text.codePointBefore(to))) to -= Character.charCount(text.codePointBefore(to));
        return text.substring(from, to);
    }

    private static Normalize normalizer(Object node) {
        if (!isObject(node)) return t -> t;
        Map<String, Object> n = Json.obj(node);
        String type = (String) n.get("type");
        switch (type) {
            case "Lowercase":
                return t -> {
                    StringBuilder out = new StringBuilder(t.length());
                    for (int i = 0; i < t.length(); ) {
                        int cp = t.codePointAt(i);
                        // each code point alone: its full lowercase mapping, no context (final sigma)
                        out.append(new String(Character.toChars(cp)).toLowerCase(Locale.ROOT));
                        i += Character.charCount(cp);
                    }
                    return out.toString();
                };
            case "Sequence": {
                List<Normalize> steps = new ArrayList<>();
                for (Object c : Json.arr(n.get("normalizers"))) steps.add(normalizer(c));
                return t -> {
                    for (Normalize s : steps) t = s.apply(t);
                    return t;
                };
            }
            default: {
                Normalizer.Form form = Normalizer.Form.valueOf(type);
                return t -> Normalizer.normalize(t, form);
            }
        }
    }

    /** `text` split around the matches of `pattern`: the matches and the text between them, in order. */
    private static List<String> splitIsolated(String text, Pattern pattern) {
        List<String> out = new ArrayList<>();
        Matcher m = pattern.matcher(text);
        int at = 0;
        while (m.find()) {
            if (m.start() > at) out.add(text.substring(at, m.start()));
            if (m.end() > m.start()) out.add(m.group());
            at = m.end();
        }
        if (at < text.length()) out.add(text.substring(at));
        return out;
    }

    private static PreTokenize preTokenizer(Object node) {
        if (!isObject(node)) return p -> p;
        Map<String, Object> n = Json.obj(node);
        switch ((String) n.get("type")) {
            case "BertPreTokenizer":
                return pieces -> {
                    List<String> out = new ArrayList<>();
                    for (String p : pieces) {
                        StringBuilder word = new StringBuilder();
                        for (int i = 0; i < p.length(); ) {
                            int c = p.codePointAt(i);
                            i += Character.charCount(c);
                            if (isWhite(c) || isBertPunctuation(c)) {
                                if (word.length() > 0) out.add(word.toString());
                                word.setLength(0);
                                if (!isWhite(c)) out.add(new String(Character.toChars(c)));
                            } else {
                                word.appendCodePoint(c);
                            }
                        }
                        if (word.length() > 0) out.add(word.toString());
                    }
                    return out;
                };
            case "Digits": {
                Pattern pattern = Boolean.TRUE.equals(n.get("individual_digits")) ? ONE_DIGIT : DIGIT_RUNS;
                return pieces -> {
                    List<String> out = new ArrayList<>();
                    for (String p : pieces) {
                        if (ONE_DIGIT.matcher(p).find()) out.addAll(splitIsolated(p, pattern));
                        else out.add(p);
                    }
                    return out;
                };
            }
            case "ByteLevel": {
                boolean prefix = Boolean.TRUE.equals(n.get("add_prefix_space"));
                boolean regex = !Boolean.FALSE.equals(n.get("use_regex"));
                return pieces -> {
                    List<String> out = new ArrayList<>();
                    for (String p : pieces) {
                        String text = prefix && !p.startsWith(" ") ? " " + p : p;
                        for (String piece : regex ? splitIsolated(text, GPT2_SPLIT) : Collections.singletonList(text)) {
                            StringBuilder chars = new StringBuilder();
                            for (byte b : piece.getBytes(StandardCharsets.UTF_8)) chars.append(BYTE_CHAR[b & 0xff]);
                            out.add(chars.toString());
                        }
                    }
                    return out;
                };
            }
            default: { // Sequence
                List<PreTokenize> steps = new ArrayList<>();
                for (Object c : Json.arr(n.get("pretokenizers"))) steps.add(preTokenizer(c));
                return pieces -> {
                    for (PreTokenize s : steps) pieces = s.apply(pieces);
                    return pieces;
                };
            }
        }
    }

    // ------------------------------------------------------------------------------ encode, decode
    /** The ids of `text`, no special tokens added ({@code tokenizers}' encode(text, add_special_tokens=False)). */
    public List<Integer> encode(String text) {
        List<Integer> ids = new ArrayList<>();
        for (Object part : splitAdded(text, rawAdded)) {
            if (part instanceof Added) {
                ids.add(((Added) part).id);
                continue;
            }
            String normalized = normalize.apply((String) part);
            for (Object piece : splitAdded(normalized, normalizedAdded)) {
                if (piece instanceof Added) {
                    ids.add(((Added) piece).id);
                    continue;
                }
                for (String word : preTokenize.apply(Collections.singletonList((String) piece))) {
                    if (!word.isEmpty()) tokenize(word, ids);
                }
            }
        }
        return ids;
    }

    /**
     * The text of generated ids: special tokens skipped (ids outside the vocabulary too, as
     * {@code tokenizers} skips them), decoded, stripped of surrounding spaces (Python's str.strip).
     */
    public String decode(int[] ids) {
        List<String> tokens = new ArrayList<>();
        for (int id : ids) {
            if (specialIds.contains(id)) continue;
            String token = idToToken.get(id);
            if (token != null) tokens.add(token);
        }
        if (!byteLevelDecoder) return pyStrip(String.join(" ", tokens));
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        for (String token : tokens) {
            boolean alphabet = true;
            for (int i = 0; i < token.length() && alphabet; ) {
                int cp = token.codePointAt(i);
                alphabet = CHAR_BYTE.containsKey(cp);
                i += Character.charCount(cp);
            }
            if (alphabet) {
                for (int i = 0; i < token.length(); ) {
                    int cp = token.codePointAt(i);
                    bytes.write(CHAR_BYTE.get(cp));
                    i += Character.charCount(cp);
                }
            } else { // a token outside the byte alphabet (an added token): its own UTF-8
                byte[] own = token.getBytes(StandardCharsets.UTF_8);
                bytes.write(own, 0, own.length);
            }
        }
        return pyStrip(Utf8Lossy.decode(bytes.toByteArray()));
    }

    /** The id of a token (null when neither the vocabulary nor the added tokens have it). */
    public Integer tokenToId(String token) {
        for (Added t : added) if (t.content.equals(token)) return t.id;
        return vocab.get(token);
    }

    /** `text` cut around the added tokens among `needles` (leftmost, then longest): Strings and Added tokens. */
    private static List<Object> splitAdded(String text, List<Needle> needles) {
        List<Object> out = new ArrayList<>();
        if (needles.isEmpty()) {
            if (!text.isEmpty()) out.add(text);
            return out;
        }
        int from = 0;
        int at = 0;
        while (at < text.length()) {
            Needle best = null;
            for (Needle t : needles) {
                if ((best == null || t.content.length() > best.content.length()) && text.startsWith(t.content, at)) best = t;
            }
            if (best == null) {
                at++;
                continue;
            }
            if (at > from) out.add(text.substring(from, at));
            out.add(best.token);
            at += best.content.length();
            from = at;
        }
        if (from < text.length()) out.add(text.substring(from));
        return out;
    }

    /** One pre-tokenized word through the model, its ids appended to `ids`. */
    private void tokenize(String word, List<Integer> ids) {
        if (!bpe) {
            Integer id = vocab.get(word);
            ids.add(id != null ? id : unkId);
            return;
        }
        Integer whole = vocab.get(word);
        if (ignoreMerges && whole != null) {
            ids.add(whole);
            return;
        }
        // the word's characters (those outside the vocabulary become the unknown token, or are dropped)
        List<String> symbols = new ArrayList<>();
        for (int i = 0; i < word.length(); ) {
            int cp = word.codePointAt(i);
            i += Character.charCount(cp);
            String c = new String(Character.toChars(cp));
            if (vocab.containsKey(c)) symbols.add(c);
            else if (unkId != null) symbols.add(idToToken.get(unkId));
        }
        while (true) { // the pair of lowest rank, the leftmost on a tie, merged until none is left
            int best = -1;
            int bestRank = Integer.MAX_VALUE;
            for (int i = 0; i + 1 < symbols.size(); i++) {
                Integer rank = merges.get(symbols.get(i) + " " + symbols.get(i + 1));
                if (rank != null && rank < bestRank && vocab.containsKey(symbols.get(i) + symbols.get(i + 1))) {
                    best = i;
                    bestRank = rank;
                }
            }
            if (best < 0) break;
            symbols.set(best, symbols.get(best) + symbols.get(best + 1));
            symbols.remove(best + 1);
        }
        for (String s : symbols) ids.add(vocab.get(s));
    }

    /** UTF-8 decoding with each maximal invalid subsequence as one U+FFFD (Rust's from_utf8_lossy, WHATWG's decoder). */
    static final class Utf8Lossy {
        private Utf8Lossy() {
        }

        static String decode(byte[] b) {
            StringBuilder out = new StringBuilder(b.length);
            int i = 0;
            while (i < b.length) {
                int c = b[i] & 0xff;
                if (c < 0x80) {
                    out.append((char) c);
                    i++;
                    continue;
                }
                int need;
                int lower = 0x80;
                int upper = 0xbf;
                int cp;
                if (c >= 0xc2 && c <= 0xdf) {
                    need = 1;
                    cp = c & 0x1f;
                } else if (c >= 0xe0 && c <= 0xef) {
                    need = 2;
                    cp = c & 0x0f;
                    if (c == 0xe0) lower = 0xa0;
                    if (c == 0xed) upper = 0x9f;
                } else if (c >= 0xf0 && c <= 0xf4) {
                    need = 3;
                    cp = c & 0x07;
                    if (c == 0xf0) lower = 0x90;
                    if (c == 0xf4) upper = 0x8f;
                } else {
                    out.append('\uFFFD');
                    i++;
                    continue;
                }
                int j = i + 1;
                boolean ok = true;
                for (int k = 0; k < need; k++, j++) {
                    int d = j < b.length ? b[j] & 0xff : -1;
                    int lo = k == 0 ? lower : 0x80;
                    int hi = k == 0 ? upper : 0xbf;
                    if (d < lo || d > hi) {
                        ok = false;
                        break;
                    }
                    cp = (cp << 6) | (d & 0x3f);
                }
                if (!ok) {
                    out.append('\uFFFD'); // the maximal subpart read so far is one replacement
                    i = j;
                    continue;
                }
                out.appendCodePoint(cp);
                i = j;
            }
            return out.toString();
        }
    }
}
