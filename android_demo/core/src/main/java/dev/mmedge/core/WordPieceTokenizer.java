package dev.mmedge.core;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;

/**
 * The WordPiece tokenizer (Hugging Face WordPiece layout, manifest tokenizer.kind "wordpiece"), as
 * docs/bundle-format.md "Text" says and mmedge/data/tokenizer.py WordPieceTokenizer does: the same
 * lowercasing and word/punctuation pieces as {@link WordTokenizer}, then each piece split greedily
 * from its start into the longest vocabulary entries, every entry after the first written with the
 * continuing-subword prefix ("##"). A piece of more than max_input_chars_per_word code points, or
 * one with a position where no entry matches, becomes one [UNK] as a whole. Truncation, padding
 * and the empty-text error are those of {@link WordTokenizer#encode}, over the subwords.
 *
 * <p>Lengths and slices are in Unicode code points, as Python's str counts them (not UTF-16 chars).
 * {@link BertWordPieceTokenizer} splits BERT's words with {@link #subwords} too.
 */
public class WordPieceTokenizer extends WordTokenizer {
    private final String prefix;
    private final int maxInputCharsPerWord;
    /** The longest vocabulary entry in UTF-16 chars: no slice of more code points can match (a shortcut, same result). */
    private final int longestEntry;
    /** The same for the entries that start with the prefix, counted after the prefix. */
    private final int longestContinuation;

    public WordPieceTokenizer(Map<String, Integer> vocab, int maxLength, boolean lowercase, String continuingSubwordPrefix,
            int maxInputCharsPerWord) {
        super(vocab, maxLength, lowercase);
        if (continuingSubwordPrefix == null || continuingSubwordPrefix.isEmpty()) {
            throw new IllegalArgumentException("continuing_subword_prefix must be a non-empty string");
        }
        if (maxInputCharsPerWord < 1) throw new IllegalArgumentException("max_input_chars_per_word must be positive");
        this.prefix = continuingSubwordPrefix;
        this.maxInputCharsPerWord = maxInputCharsPerWord;
        int longest = 0;
        int continuation = 0;
        for (String entry : vocab.keySet()) { // UTF-16 lengths: bounds on any slice's code points, surrogates or not
            longest = Math.max(longest, entry.length());
            if (entry.startsWith(prefix)) continuation = Math.max(continuation, entry.length() - prefix.length());
        }
        this.longestEntry = longest;
        this.longestContinuation = continuation;
    }

    @Override
    public String kind() {
        return KIND_WORDPIECE;
    }

    @Override
    public String continuingSubwordPrefix() {
        return prefix;
    }

    @Override
    public int maxInputCharsPerWord() {
        return maxInputCharsPerWord;
    }

    /** The subwords of one piece of the text ({@link #tokenize} stops once it has enough). */
    @Override
    protected List<String> pieceTokens(String piece) {
        return subwords(piece);
    }

    /**
     * The subwords of one piece: greedy longest-match-first from its start; [UNK] alone when the
     * piece is over max_input_chars_per_word code points or some position has no match. Each
     * position tries at most the longest entry's length of slices: O(piece length x longest entry).
     */
    public List<String> subwords(String word) {
        // over twice as many chars as allowed code points: too many code points, without counting them
        if (word.length() > 2L * maxInputCharsPerWord) return Collections.singletonList(UNK);
        int n = word.codePointCount(0, word.length());
        if (n > maxInputCharsPerWord) return Collections.singletonList(UNK);
        int[] at = new int[n + 1]; // the char offset of each code point, and the end
        for (int i = 0, off = 0; i <= n; i++) {
            at[i] = off;
            if (i < n) off = word.offsetByCodePoints(off, 1);
        }
        List<String> out = new ArrayList<>();
        int start = 0;
        while (start < n) {
            String found = null;
            int end = Math.min(n, start + (start == 0 ? longestEntry : longestContinuation));
            for (; end > start; end--) {
                String piece = word.substring(at[start], at[end]);
                String sub = start == 0 ? piece : prefix + piece;
                if (id(sub) != null) {
                    found = sub;
                    break;
                }
            }
            if (found == null) return Collections.singletonList(UNK);
            out.add(found);
            start = end;
        }
        return out;
    }
}
