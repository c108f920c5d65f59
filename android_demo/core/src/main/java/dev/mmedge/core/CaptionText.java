package dev.mmedge.core;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * Generated ids to words and text (docs/bundle-format.md "Captioning bundles", "Words and text"):
 * the vocabulary's string of each id before the first [EOS] ("[UNK]" for an id without an entry),
 * joined by one space. No detokenisation: punctuation is a word of its own, and a generated special
 * id other than [EOS] ([PAD], [UNK], [BOS]) appears as its token string.
 */
final class CaptionText {
    private final Map<Integer, String> byId = new HashMap<>();
    private final int eosId;

    CaptionText(WordTokenizer tokenizer, int eosId) {
        for (Map.Entry<String, Integer> e : tokenizer.vocab().entrySet()) byId.put(e.getValue(), e.getKey());
        this.eosId = eosId;
    }

    /** One word per id before the first [EOS]. */
    List<String> words(int[] ids) {
        List<String> out = new ArrayList<>();
        for (int id : ids) {
            if (id == eosId) break;
            String word = byId.get(id);
            out.add(word == null ? WordTokenizer.UNK : word);
        }
        return out;
    }

    static String text(List<String> words) {
        return String.join(" ", words);
    }
}
