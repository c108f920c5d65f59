package dev.mmedge.core;

import java.util.AbstractList;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * The word-level tokenizer (Hugging Face WordLevel layout), as docs/bundle-format.md "Text" says:
 * lowercase (Unicode full mapping, locale-independent), split into runs of word characters or runs
 * of characters that are neither word characters nor spaces, look each piece up (unknown: unk_id),
 * truncate on the right to max_length, pad on the right with pad_id.
 *
 * <p>A word character is one of general category L or N, or '_'; a space is exactly the set the
 * spec lists (Python's {@code \s} on str, not Java's). Java's tables are those of its Unicode
 * version (Java 17: Unicode 13; Android: its ICU's), which differ from the reference (Unicode 14)
 * only on characters assigned since, none of them in any vocabulary.
 *
 * <p>{@link #fromJson} reads either model type of the spec: a WordLevel file gives this class
 * ({@link #kind()} {@code "word"}), a WordPiece file gives a {@link WordPieceTokenizer}
 * ({@code "wordpiece"}), which splits each piece further into subwords before the lookup.
 *
 * <p>A text of more than {@link #MAX_TEXT_CHARS} (65,536) code points is refused with a
 * TextException, as the Python and JavaScript runtimes refuse it; {@link #encode} splits only until
 * it has max_length + 1 tokens (one more than fits says the text is truncated), so its work is
 * bounded by the model, not by the text.
 */
public class WordTokenizer {
    public static final String PAD = "[PAD]";
    public static final String UNK = "[UNK]";
    /** The rule the manifest repeats (format version 1 fixes it). */
    public static final String SPLIT_REGEX = "\\w+|[^\\w\\s]+";
    /** The manifest's tokenizer.kind of a WordLevel file (the default when the manifest has no kind). */
    public static final String KIND_WORD = "word";
    /** The manifest's tokenizer.kind of a WordPiece file. */
    public static final String KIND_WORDPIECE = "wordpiece";
    /** The manifest's tokenizer.kind of an adapted encoder's BERT tokenizer ({@link BertWordPieceTokenizer}). */
    public static final String KIND_BERT_WORDPIECE = "bert-wordpiece";
    /** The longest text a tokenizer takes, in Unicode code points (Python's len; a lone surrogate is one). */
    public static final int MAX_TEXT_CHARS = 65_536;

    /** Stage-0 text inputs. */
    public static final class Encoding {
        /** int32 ids, length max_length: the token ids then pad_id. */
        public final int[] inputIds;
        /** 1 for each real token, 0 for padding. */
        public final int[] textMask;
        /**
         * The tokens the text was split into (WordPiece: the subwords), before truncation. When the
         * text was truncated, encode stopped splitting after max_length + 1 of them: the whole list
         * is made on first use.
         */
        public final List<String> tokens;
        /** The text had more than max_length tokens and the tail was dropped. */
        public final boolean truncated;

        Encoding(int[] inputIds, int[] textMask, List<String> tokens, boolean truncated) {
            this.inputIds = inputIds;
            this.textMask = textMask;
            this.tokens = tokens;
            this.truncated = truncated;
        }
    }

    private final Map<String, Integer> vocab;
    private final int maxLength;
    private final boolean lowercase;
    private final int maxId;

    public WordTokenizer(Map<String, Integer> vocab, int maxLength, boolean lowercase) {
        this.vocab = Collections.unmodifiableMap(new HashMap<>(vocab));
        this.maxLength = maxLength;
        this.lowercase = lowercase;
        int top = -1;
        for (int id : vocab.values()) top = Math.max(top, id);
        this.maxId = top;
    }

    /** The bytes of a tokenizer.json parsed (UTF-8, nested at most MAX_DEPTH); BundleException otherwise. */
    static Object parseJson(byte[] data) {
        try {
            return Json.parse(data, BundleLoader.MAX_DEPTH);
        } catch (Json.ParseException exc) {
            throw new BundleException("the bundle's tokenizer.json cannot be parsed as UTF-8 JSON ("
                    + BundleLoader.shortText(exc.getMessage(), 120) + "); export the bundle again", exc);
        }
    }

    /**
     * A tokenizer from the bytes of a tokenizer.json: a WordLevel model gives a WordTokenizer, a
     * WordPiece model a {@link WordPieceTokenizer}; BundleException when it is neither or a field is
     * missing or of the wrong type.
     */
    public static WordTokenizer fromJson(byte[] data, boolean lowercase) {
        Object parsed = parseJson(data);
        Object model = parsed instanceof Map ? Json.obj(parsed).get("model") : null;
        Object type = model instanceof Map ? Json.obj(model).get("type") : null;
        boolean wordPiece = "WordPiece".equals(type);
        if (!(model instanceof Map) || !("WordLevel".equals(type) || wordPiece)
                || !(Json.obj(model).get("vocab") instanceof Map)) {
            throw new BundleException("the bundle's tokenizer.json is not a WordLevel or WordPiece tokenizer (model.type, "
                    + "model.vocab); export the bundle again");
        }
        Object truncation = Json.obj(parsed).get("truncation");
        Object max = truncation instanceof Map ? Json.obj(truncation).get("max_length") : null;
        if (!(max instanceof Long) || (Long) max < 1 || (Long) max > 1 << 20) {
            throw new BundleException("the bundle's tokenizer.json has no truncation.max_length; export the bundle again");
        }
        Map<String, Integer> vocab = new HashMap<>();
        for (Map.Entry<String, Object> e : Json.obj(Json.obj(model).get("vocab")).entrySet()) {
            Object id = e.getValue();
            if (!(id instanceof Long) || (Long) id < 0 || (Long) id > Integer.MAX_VALUE) {
                throw new BundleException("the bundle's tokenizer does not fit its manifest: token ids must be non-negative "
                        + "integers; export the bundle again");
            }
            vocab.put(e.getKey(), (int) (long) (Long) id);
        }
        int maxLength = (int) (long) (Long) max;
        if (!wordPiece) return new WordTokenizer(vocab, maxLength, lowercase);
        Map<String, Object> wp = Json.obj(model);
        Object prefix = wp.get("continuing_subword_prefix");
        if (!(prefix instanceof String) || ((String) prefix).isEmpty()) {
            throw new BundleException("the bundle's tokenizer.json WordPiece model needs continuing_subword_prefix, a "
                    + "non-empty string such as \"##\" (got " + (prefix == null ? "none" : BundleLoader.shortText(Json.write(prefix), 40))
                    + "); export the bundle again");
        }
        Object longest = wp.get("max_input_chars_per_word");
        if (!(longest instanceof Long) || (Long) longest < 1 || (Long) longest > Integer.MAX_VALUE) {
            throw new BundleException("the bundle's tokenizer.json WordPiece model needs max_input_chars_per_word, a "
                    + "positive integer such as 100 (got " + (longest == null ? "none" : BundleLoader.shortText(Json.write(longest), 40))
                    + "); export the bundle again");
        }
        Object unkToken = wp.get("unk_token");
        if (unkToken != null && !UNK.equals(unkToken)) {
            throw new BundleException("the bundle's tokenizer.json WordPiece model has unk_token "
                    + BundleLoader.shortText(Json.write(unkToken), 40) + ", not \"" + UNK + "\"; export the bundle again");
        }
        return new WordPieceTokenizer(vocab, maxLength, lowercase, (String) prefix, (int) (long) (Long) longest);
    }

    /** The manifest's tokenizer.kind this tokenizer is: {@link #KIND_WORD} or {@link #KIND_WORDPIECE}. */
    public String kind() {
        return KIND_WORD;
    }

    /** WordPiece: the prefix of subwords that continue a word (such as "##"); null for a word-level tokenizer. */
    public String continuingSubwordPrefix() {
        return null;
    }

    /** WordPiece: the most code points a piece may have before it becomes one [UNK]; 0 for a word-level tokenizer. */
    public int maxInputCharsPerWord() {
        return 0;
    }

    public int maxLength() {
        return maxLength;
    }

    /** The vocabulary (unmodifiable): each entry and its id. */
    public Map<String, Integer> vocab() {
        return vocab;
    }

    /** The id of a word, or null. */
    public Integer id(String word) {
        return vocab.get(word);
    }

    public int maxId() {
        return maxId;
    }

    public int padId() {
        return vocab.get(PAD);
    }

    public int unkId() {
        return vocab.get(UNK);
    }

    /** A word character: general category L (Lu, Ll, Lt, Lm, Lo) or N (Nd, Nl, No), or '_'. */
    public static boolean isWord(int cp) {
        if (cp == '_') return true;
        switch (Character.getType(cp)) {
            case Character.UPPERCASE_LETTER:
            case Character.LOWERCASE_LETTER:
            case Character.TITLECASE_LETTER:
            case Character.MODIFIER_LETTER:
            case Character.OTHER_LETTER:
            case Character.DECIMAL_DIGIT_NUMBER:
            case Character.LETTER_NUMBER:
            case Character.OTHER_NUMBER:
                return true;
            default:
                return false;
        }
    }

    /** A space as the spec defines it (Python's \s on str). */
    public static boolean isSpace(int cp) {
        return (cp >= 0x09 && cp <= 0x0d) || (cp >= 0x1c && cp <= 0x20) || cp == 0x85 || cp == 0xa0 || cp == 0x1680
                || (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 || cp == 0x202f || cp == 0x205f
                || cp == 0x3000;
    }

    /**
     * {@code text} if it has at most {@link #MAX_TEXT_CHARS} code points; TextException otherwise
     * (or when it is null).
     */
    public static String checkText(String text) {
        if (text == null) throw new TextException("text must be a string, got null");
        // a string of n UTF-16 chars holds between n / 2 and n code points: count only when it matters
        if (text.length() > MAX_TEXT_CHARS) {
            int n = text.codePointCount(0, text.length());
            if (n > MAX_TEXT_CHARS) {
                throw new TextException(String.format(Locale.ROOT, "text has %,d characters, more than the %,d a "
                        + "tokenizer takes; pass a shorter text (the model reads only its first tokens)", n, MAX_TEXT_CHARS));
            }
        }
        return text;
    }

    /**
     * The tokens of a text, each looked up in the vocabulary by {@link #encode}: here the pieces of
     * {@link #words}; a {@link WordPieceTokenizer} splits each piece further into subwords.
     * TextException for null or more than {@link #MAX_TEXT_CHARS} code points.
     */
    public final List<String> tokenize(String text) {
        return tokenize(text, Integer.MAX_VALUE);
    }

    /**
     * The first {@code limit} tokens of a text: the splitting stops there, so the work is bounded by
     * the limit ({@link BertWordPieceTokenizer} splits by BERT's rules instead).
     */
    public List<String> tokenize(String text, int limit) {
        return pieces(text, limit, true);
    }

    /** The tokens of one word/punctuation piece: the piece itself ({@link WordPieceTokenizer} splits it further). */
    protected List<String> pieceTokens(String piece) {
        return Collections.singletonList(piece);
    }

    /** The pieces of a text: lowercased, then runs of word characters or of other non-space characters. */
    public final List<String> words(String text) {
        return pieces(text, Integer.MAX_VALUE, false);
    }

    private List<String> pieces(String text, int limit, boolean split) {
        checkText(text);
        String s = lowercase ? text.toLowerCase(Locale.ROOT) : text;
        List<String> out = new ArrayList<>();
        int i = 0;
        int n = s.length();
        while (i < n && out.size() < limit) {
            int cp = s.codePointAt(i);
            if (isSpace(cp)) {
                i += Character.charCount(cp);
                continue;
            }
            boolean word = isWord(cp);
            int start = i;
            while (i < n) {
                int c = s.codePointAt(i);
                if (isSpace(c) || isWord(c) != word) break;
                i += Character.charCount(c);
            }
            String piece = s.substring(start, i);
            if (split) {
                out.addAll(pieceTokens(piece));
            } else {
                out.add(piece);
            }
        }
        return out.size() > limit ? new ArrayList<>(out.subList(0, limit)) : out;
    }

    /** Token ids and mask of length max_length; TextException when nothing is left to ask. */
    public Encoding encode(String text) {
        List<String> tokens = tokenize(text, maxLength == Integer.MAX_VALUE ? maxLength : maxLength + 1);
        if (tokens.isEmpty()) {
            throw new TextException("text is empty (no word or punctuation left after splitting); pass a question or "
                    + "statement such as 'is there a red circle ?'");
        }
        boolean truncated = tokens.size() > maxLength;
        int used = Math.min(tokens.size(), maxLength);
        int[] ids = new int[maxLength];
        int[] mask = new int[maxLength];
        int pad = padId();
        int unk = unkId();
        for (int i = 0; i < maxLength; i++) {
            if (i < used) {
                Integer id = vocab.get(tokens.get(i));
                ids[i] = id == null ? unk : id;
                mask[i] = 1;
            } else {
                ids[i] = pad;
            }
        }
        List<String> all = truncated ? new Whole(this, text) : Collections.unmodifiableList(tokens);
        return new Encoding(ids, mask, all, truncated);
    }

    /** Every token of a truncated text, made on first use (unmodifiable; shared by the subclasses). */
    static final class Whole extends AbstractList<String> {
        private final WordTokenizer tokenizer;
        private final String text;
        private volatile List<String> tokens;

        Whole(WordTokenizer tokenizer, String text) {
            this.tokenizer = tokenizer;
            this.text = text;
        }

        private List<String> tokens() {
            List<String> t = tokens;
            if (t == null) tokens = t = tokenizer.tokenize(text);
            return t;
        }

        @Override
        public String get(int index) {
            return tokens().get(index);
        }

        @Override
        public int size() {
            return tokens().size();
        }
    }
}
