package dev.mmedge.core;

import java.text.Normalizer;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * BERT's WordPiece tokenizer (manifest tokenizer.kind "bert-wordpiece", docs/bundle-format.md
 * "Adapted encoders"): what Hugging Face {@code tokenizers} runs for {@code transformers.BertTokenizer}
 * (BertNormalizer, BertPreTokenizer, WordPiece, the "[CLS] $text [SEP]" template), as the Python
 * runtime does it (mmedge/adapt/text.py), in this order:
 * <ol>
 *   <li>the special tokens (the file's special added tokens) are found in the raw text first,
 *       leftmost, the longest first, and kept whole;</li>
 *   <li>each other segment is normalised code point by code point: clean_text (U+0000, U+FFFD and
 *       every code point of category Cc, Cf, Co or Cs except tab, LF and CR removed, then white space
 *       as a space), handle_chinese_chars (a space on either side of each CJK ideograph of
 *       {@link #CJK_RANGES}), strip_accents (NFD, then category Mn removed), lowercase (each code
 *       point on its own, {@code toLowerCase(Locale.ROOT)});</li>
 *   <li>split on white space (dropped) and punctuation (ASCII 33-47, 58-64, 91-96, 123-126, or
 *       category P*: a word of its own);</li>
 *   <li>WordPiece on each word ({@link WordPieceTokenizer#subwords});</li>
 *   <li>[CLS] + the first max_length - 2 pieces + [SEP], [PAD] up to max_length; the mask is 1 on
 *       [CLS], the pieces and [SEP]. An empty text gives [CLS] [SEP].</li>
 * </ol>
 * Categories, NFD and case mappings come from Java's tables (Java 17: Unicode 13; Android: its
 * ICU's); they differ from the reference (Python 3.11, Unicode 14) only on code points assigned or
 * changed since, which the golden vectors avoid.
 */
public final class BertWordPieceTokenizer extends WordPieceTokenizer {
    public static final String CLS = "[CLS]";
    public static final String SEP = "[SEP]";
    /** The only template this runtime fills in (the manifest's tokenizer.template). */
    public static final List<String> TEMPLATE = Collections.unmodifiableList(Arrays.asList(CLS, "$text", SEP));
    /** The CJK ideograph ranges of {@code tokenizers}' is_chinese_char (from U+2B920, not U+2B820, as it has them). */
    public static final int[][] CJK_RANGES = {{0x4E00, 0x9FFF}, {0x3400, 0x4DBF}, {0x20000, 0x2A6DF}, {0x2A700, 0x2B73F},
        {0x2B740, 0x2B81F}, {0x2B920, 0x2CEAF}, {0xF900, 0xFAFF}, {0x2F800, 0x2FA1F}};

    private final boolean lowercaseText;
    private final boolean stripAccents;
    private final boolean cleanText;
    private final boolean handleChineseChars;
    private final List<String> specialTokens;
    /** The special tokens, longest (in code points) first, in file order among equals. */
    private final List<String> bySize;

    public BertWordPieceTokenizer(Map<String, Integer> vocab, int maxLength, boolean lowercase, boolean stripAccents,
            boolean cleanText, boolean handleChineseChars, List<String> specialTokens, String continuingSubwordPrefix,
            int maxInputCharsPerWord) {
        super(vocab, maxLength, lowercase, continuingSubwordPrefix, maxInputCharsPerWord);
        List<String> missing = new ArrayList<>();
        for (String t : Arrays.asList(CLS, SEP, PAD, UNK)) if (!vocab.containsKey(t)) missing.add(t);
        if (!missing.isEmpty()) throw new BundleException("the WordPiece vocabulary lacks " + missing);
        if (maxLength < 2) throw new BundleException("max_length " + maxLength + " leaves no room for [CLS] and [SEP]");
        this.lowercaseText = lowercase;
        this.stripAccents = stripAccents;
        this.cleanText = cleanText;
        this.handleChineseChars = handleChineseChars;
        this.specialTokens = Collections.unmodifiableList(new ArrayList<>(specialTokens));
        List<String> sorted = new ArrayList<>(specialTokens);
        sorted.sort((a, b) -> a.codePointCount(0, a.length()) > b.codePointCount(0, b.length()) ? -1
                : a.codePointCount(0, a.length()) < b.codePointCount(0, b.length()) ? 1 : 0); // stable
        this.bySize = sorted;
    }

    /**
     * A BERT tokenizer from the bytes of a tokenizer.json (a WordPiece model, BertNormalizer,
     * BertPreTokenizer: what {@code BertTokenizer.save_pretrained} writes) and the manifest's
     * max_length; its settings are read as the Python runtime reads them (absent: BertNormalizer's
     * defaults; null: false, strip_accents null follows lowercase). BundleException otherwise.
     */
    public static BertWordPieceTokenizer fromBertJson(byte[] data, int maxLength) {
        Object parsed = parseJson(data);
        Map<String, Object> root = parsed instanceof Map ? Json.obj(parsed) : Collections.<String, Object>emptyMap();
        Object model = root.get("model");
        Object normalizer = root.get("normalizer");
        Object norm = normalizer == null || normalizer == Json.NULL ? new LinkedHashMap<String, Object>() : normalizer;
        Object pre = root.get("pre_tokenizer");
        Object preType = pre instanceof Map ? Json.obj(pre).get("type") : null;
        if (!(model instanceof Map) || !"WordPiece".equals(Json.obj(model).get("type")) || !(norm instanceof Map)
                || !"BertNormalizer".equals(Json.obj(norm).get("type")) || !"BertPreTokenizer".equals(preType)
                || !(Json.obj(model).get("vocab") instanceof Map)) {
            throw new BundleException("the bundle's tokenizer.json is not a BERT WordPiece tokenizer (a WordPiece model with "
                    + "a vocab, BertNormalizer, BertPreTokenizer); export the bundle again");
        }
        Map<String, Object> wp = Json.obj(model);
        Map<String, Object> n = Json.obj(norm);
        List<String> problems = new ArrayList<>();
        boolean lowercase = flag(n, "lowercase", true, problems);
        Object strip = n.get("strip_accents");
        boolean stripAccents = strip == null || strip == Json.NULL ? lowercase : flag(n, "strip_accents", lowercase, problems);
        boolean cleanText = flag(n, "clean_text", true, problems);
        boolean chinese = flag(n, "handle_chinese_chars", true, problems);
        Object prefix = wp.containsKey("continuing_subword_prefix") ? wp.get("continuing_subword_prefix") : "##";
        if (!(prefix instanceof String) || ((String) prefix).isEmpty()) {
            problems.add("model.continuing_subword_prefix must be a non-empty string");
        }
        Object longest = wp.containsKey("max_input_chars_per_word") ? wp.get("max_input_chars_per_word") : Long.valueOf(100);
        if (!(longest instanceof Long) || (Long) longest < 1 || (Long) longest > Integer.MAX_VALUE) {
            problems.add("model.max_input_chars_per_word must be a positive integer");
        }
        Object unk = wp.containsKey("unk_token") ? wp.get("unk_token") : UNK;
        if (!UNK.equals(unk)) problems.add("model.unk_token must be \"" + UNK + "\"");
        Map<String, Integer> vocab = new LinkedHashMap<>();
        for (Map.Entry<String, Object> e : Json.obj(wp.get("vocab")).entrySet()) {
            Object id = e.getValue();
            if (!(id instanceof Long) || (Long) id < 0 || (Long) id > Integer.MAX_VALUE) {
                problems.add("model.vocab ids must be non-negative integers");
                break;
            }
            vocab.put(e.getKey(), (int) (long) (Long) id);
        }
        List<String> specials = new ArrayList<>();
        Object added = root.get("added_tokens");
        if (added instanceof List) {
            for (Object t : Json.arr(added)) {
                if (!(t instanceof Map) || !Boolean.TRUE.equals(Json.obj(t).get("special"))) continue;
                Object content = Json.obj(t).get("content");
                if (content instanceof String && !((String) content).isEmpty()) specials.add((String) content);
                else problems.add("a special added token has no content");
            }
        } else if (added != null && added != Json.NULL) {
            problems.add("added_tokens must be a list");
        }
        if (!problems.isEmpty()) {
            throw new BundleException("the bundle's tokenizer.json is not a valid BERT tokenizer: " + String.join("; ", problems)
                    + "; export the bundle again");
        }
        return new BertWordPieceTokenizer(vocab, maxLength, lowercase, stripAccents, cleanText, chinese, specials,
                (String) prefix, (int) (long) (Long) longest);
    }

    /** A normaliser switch: absent gives the default, null false, a boolean itself; anything else is a problem. */
    private static boolean flag(Map<String, Object> n, String name, boolean fallback, List<String> problems) {
        if (!n.containsKey(name)) return fallback;
        Object v = n.get(name);
        if (v != Json.NULL && !(v instanceof Boolean)) problems.add("normalizer." + name + " must be true, false or null");
        return Boolean.TRUE.equals(v);
    }

    @Override
    public String kind() {
        return KIND_BERT_WORDPIECE;
    }

    public int clsId() {
        return id(CLS);
    }

    public int sepId() {
        return id(SEP);
    }

    public List<String> specialTokens() {
        return specialTokens;
    }

    /**
     * What a bundle must state to reproduce this tokenizer: the manifest's tokenizer section less
     * {@code file} (mmedge.adapt.text.BertWordPiece.manifest_fields), in JSON types.
     */
    public Map<String, Object> manifestFields() {
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("kind", KIND_BERT_WORDPIECE);
        out.put("max_length", (long) maxLength());
        out.put("lowercase", lowercaseText);
        out.put("strip_accents", stripAccents);
        out.put("clean_text", cleanText);
        out.put("handle_chinese_chars", handleChineseChars);
        out.put("continuing_subword_prefix", continuingSubwordPrefix());
        out.put("max_input_chars_per_word", (long) maxInputCharsPerWord());
        out.put("template", new ArrayList<Object>(TEMPLATE));
        out.put("special_tokens", new ArrayList<Object>(specialTokens));
        out.put("cls_id", (long) clsId());
        out.put("sep_id", (long) sepId());
        out.put("pad_id", (long) padId());
        out.put("unk_id", (long) unkId());
        return out;
    }

    // ------------------------------------------------------------------------------ the rules
    static boolean isCjk(int cp) {
        for (int[] r : CJK_RANGES) if (cp >= r[0] && cp <= r[1]) return true;
        return false;
    }

    /** Code points with the Unicode White_Space property (Python's WHITE_SPACE, Rust's char::is_whitespace). */
    static boolean isWhiteSpace(int cp) {
        return (cp >= 0x09 && cp <= 0x0d) || cp == 0x20 || cp == 0x85 || cp == 0xa0 || cp == 0x1680
                || (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 || cp == 0x202f || cp == 0x205f
                || cp == 0x3000;
    }

    /** What clean_text removes besides NUL and U+FFFD: categories Cc, Cf, Co, Cs except tab, LF, CR (not Cn). */
    static boolean isControl(int cp) {
        if (cp == '\t' || cp == '\n' || cp == '\r') return false;
        int t = Character.getType(cp);
        return t == Character.CONTROL || t == Character.FORMAT || t == Character.PRIVATE_USE || t == Character.SURROGATE;
    }

    /** ASCII punctuation (33-47, 58-64, 91-96, 123-126) or general category P*. */
    static boolean isPunctuation(int cp) {
        if ((cp >= 33 && cp <= 47) || (cp >= 58 && cp <= 64) || (cp >= 91 && cp <= 96) || (cp >= 123 && cp <= 126)) return true;
        switch (Character.getType(cp)) {
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

    /** BertNormalizer over one segment (step 2). */
    public String normalize(String text) {
        String s = text;
        StringBuilder out = new StringBuilder(s.length() + 8);
        if (cleanText) {
            for (int i = 0; i < s.length(); ) {
                int cp = s.codePointAt(i);
                i += Character.charCount(cp);
                if (cp == 0 || cp == 0xfffd || isControl(cp)) continue;
                if (isWhiteSpace(cp)) out.append(' ');
                else out.appendCodePoint(cp);
            }
            s = out.toString();
            out.setLength(0);
        }
        if (handleChineseChars) {
            for (int i = 0; i < s.length(); ) {
                int cp = s.codePointAt(i);
                i += Character.charCount(cp);
                if (isCjk(cp)) out.append(' ').appendCodePoint(cp).append(' ');
                else out.appendCodePoint(cp);
            }
            s = out.toString();
            out.setLength(0);
        }
        if (stripAccents) {
            String nfd = Normalizer.normalize(s, Normalizer.Form.NFD);
            for (int i = 0; i < nfd.length(); ) {
                int cp = nfd.codePointAt(i);
                i += Character.charCount(cp);
                if (Character.getType(cp) != Character.NON_SPACING_MARK) out.appendCodePoint(cp);
            }
            s = out.toString();
            out.setLength(0);
        }
        if (lowercaseText) {
            for (int i = 0; i < s.length(); ) {
                int cp = s.codePointAt(i);
                int next = i + Character.charCount(cp);
                out.append(s.substring(i, next).toLowerCase(Locale.ROOT)); // each code point alone: no final sigma
                i = next;
            }
            s = out.toString();
        }
        return s;
    }

    /** BertPreTokenizer (step 3): words split at white space (dropped) and punctuation (a word of its own). */
    public static List<String> preTokenize(String text) {
        List<String> words = new ArrayList<>();
        int start = -1;
        for (int i = 0; i < text.length(); ) {
            int cp = text.codePointAt(i);
            int next = i + Character.charCount(cp);
            if (isWhiteSpace(cp) || isPunctuation(cp)) {
                if (start >= 0) words.add(text.substring(start, i));
                start = -1;
                if (!isWhiteSpace(cp)) words.add(text.substring(i, next));
            } else if (start < 0) {
                start = i;
            }
            i = next;
        }
        if (start >= 0) words.add(text.substring(start));
        return words;
    }

    /** The raw text cut at special tokens (step 1): {segment, "1" when special else "0"}. */
    List<String[]> segments(String text) {
        List<String[]> out = new ArrayList<>();
        int start = 0;
        int i = 0;
        while (i < text.length() && !bySize.isEmpty()) {
            String hit = null;
            for (String s : bySize) {
                if (text.startsWith(s, i)) {
                    hit = s;
                    break;
                }
            }
            if (hit == null) {
                i++;
                continue;
            }
            if (i > start) out.add(new String[] {text.substring(start, i), "0"});
            out.add(new String[] {hit, "1"});
            i = start = i + hit.length();
        }
        if (start < text.length()) out.add(new String[] {text.substring(start), "0"});
        return out;
    }

    /**
     * The WordPiece pieces of a text (no [CLS] / [SEP]); the first {@code limit} only (the splitting
     * stops there). TextException for null or more than MAX_TEXT_CHARS code points.
     */
    @Override
    public List<String> tokenize(String text, int limit) {
        checkText(text);
        List<String> out = new ArrayList<>();
        for (String[] segment : segments(text)) {
            if (segment[1].equals("1")) {
                out.add(segment[0]);
                continue;
            }
            for (String word : preTokenize(normalize(segment[0]))) {
                out.addAll(subwords(word));
                if (out.size() >= limit) return new ArrayList<>(out.subList(0, limit));
            }
        }
        return out.size() > limit ? new ArrayList<>(out.subList(0, limit)) : out;
    }

    /** [CLS] pieces [SEP] [PAD]... and the mask, of length max_length; an empty text is [CLS] [SEP]. */
    @Override
    public Encoding encode(String text) {
        int room = maxLength() - 2;
        List<String> pieces = tokenize(text, room + 1);
        boolean truncated = pieces.size() > room;
        List<String> used = truncated ? pieces.subList(0, room) : pieces;
        int[] ids = new int[maxLength()];
        int[] mask = new int[maxLength()];
        Arrays.fill(ids, padId());
        List<String> tokens = new ArrayList<>();
        tokens.add(CLS);
        tokens.addAll(used);
        tokens.add(SEP);
        int unk = unkId();
        for (int i = 0; i < tokens.size(); i++) {
            Integer id = id(tokens.get(i));
            ids[i] = id == null ? unk : id;
            mask[i] = 1;
        }
        List<String> all = truncated ? new WordTokenizer.Whole(this, text) : Collections.unmodifiableList(pieces);
        return new Encoding(ids, mask, all, truncated);
    }
}
