package dev.mmedge.core;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNotSame;
import static org.junit.Assert.assertSame;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.junit.Test;

/**
 * The rules of the captioning search that the golden vectors cannot pin because a trained model
 * never ties (docs/bundle-format.md "Captioning bundles", "Greedy and beam search", "Words and
 * text"): ties between ids go to the lower id, equal scores keep the order candidates were listed
 * in, the final choice is by score per id with the first on ties, a done hypothesis runs nothing;
 * and the small pieces under the engine: log-softmax, the keep-ratio tag, the cache, the text.
 */
public class CaptionSearchTest {
    private static final int EOS = 3;
    private static final Engine.Clock CLOCK = () -> 0L;

    /** Words from a table: the logits for each hypothesis (by its ids), every word exit 0; counts the words run. */
    private static final class Table implements BeamSearch.Words {
        final Map<String, float[]> logits = new HashMap<>();
        final List<String> ran = new ArrayList<>();
        float[] otherwise;

        Table put(int[] ids, double... probabilities) {
            float[] z = new float[probabilities.length];
            for (int i = 0; i < z.length; i++) z[i] = (float) Math.log(probabilities[i]);
            logits.put(Arrays.toString(ids), z);
            return this;
        }

        @Override
        public BeamSearch.Word next(BeamSearch.Hypothesis h, int position) {
            assertEquals("a word runs at the position after its hypothesis' ids", h.ids.length, position);
            String key = Arrays.toString(h.ids);
            ran.add(key);
            float[] z = logits.containsKey(key) ? logits.get(key) : otherwise;
            return new BeamSearch.Word(z, 0, 0.5);
        }
    }

    private static BeamSearch.Result search(Table t, int beam, int maxLen) {
        return BeamSearch.search(t, KvCache.zeros(1, 1, 1, 1), beam, maxLen, EOS, CLOCK);
    }

    @Test
    public void equalIdsGoToTheLowerIdAndEqualScoresKeepTheirOrder() {
        Table t = new Table();
        t.otherwise = new float[] {0f, 0f, 0f, 0f}; // every id equally likely, always
        BeamSearch.Result r = search(t, 2, 2);
        // position 0: ids 0 and 1 (the lower of four equal ids); position 1: candidates [0,0] [0,1] [1,0] [1,1]
        // all score 2 ln(1/4): the stable sort keeps the first two listed, and the final choice the first
        assertArrayEquals(new int[] {0, 0}, r.best.ids);
        assertEquals(2 * Math.log(0.25), r.best.score, 1e-12);
        assertEquals(Arrays.asList("[]", "[0]", "[1]"), t.ran);
        assertEquals(2, r.positionMs.length);
        assertArrayEquals(new int[] {1}, BeamSearch.topIds(new double[] {0, 2, 2, 1}, 1));
        assertArrayEquals(new int[] {1, 2, 3, 0}, BeamSearch.topIds(new double[] {0, 2, 2, 1}, 9));
        assertArrayEquals(new int[] {0, 1}, BeamSearch.topIds(new double[] {-0.0, 0.0}, 2)); // -0.0 == 0.0: by id
    }

    @Test
    public void theResultIsTheBestScorePerIdAndADoneHypothesisRunsNothing() {
        Table t = new Table()
                .put(new int[0], 0.4, 0.05, 0.05, 0.5)   // [EOS] -0.693 (done), [0] -0.916
                .put(new int[] {0}, 0.95, 0.02, 0.02, 0.01); // [0, 0] -0.967
        t.otherwise = new float[] {0f, 0f, 0f, 0f};
        BeamSearch.Result r = search(t, 2, 2);
        // by score [EOS] leads (-0.693 > -0.967); per id [0, 0] does (-0.483 > -0.693)
        assertArrayEquals(new int[] {0, 0}, r.best.ids);
        assertEquals(Math.log(0.4) + Math.log(0.95), r.best.score, 1e-6);
        assertEquals("the done [EOS] hypothesis ran no word at position 1", Arrays.asList("[]", "[0]"), t.ran);
        // greedy takes the one hypothesis, whatever its length
        Table g = new Table().put(new int[0], 0.4, 0.05, 0.05, 0.5);
        BeamSearch.Result one = search(g, 1, 5);
        assertArrayEquals(new int[] {EOS}, one.best.ids);
        assertEquals("stops once every hypothesis is done", Collections.singletonList("[]"), g.ran);
        assertEquals(1, one.positionMs.length);
    }

    @Test
    public void withoutEosTheSearchStopsAtMaxLen() {
        Table t = new Table();
        t.otherwise = new float[] {0f, 1f, 0f, 0f};
        BeamSearch.Result r = search(t, 3, 4);
        assertArrayEquals(new int[] {1, 1, 1, 1}, r.best.ids);
        assertArrayEquals(new int[] {0, 0, 0, 0}, r.best.exits);
        assertEquals(4, r.positionMs.length);
    }

    @Test
    public void logSoftmaxInDoublePrecision() {
        double[] lp = BeamSearch.logSoftmax(new float[] {1f, 2f, 3f});
        double lse = Math.log(Math.exp(-2) + Math.exp(-1) + 1);
        assertEquals(-2 - lse, lp[0], 1e-15);
        assertEquals(-lse, lp[2], 1e-15);
        double[] big = BeamSearch.logSoftmax(new float[] {1000f, 0f});
        assertEquals(0.0, big[0], 0.0);
        assertEquals(-1000.0, big[1], 1e-9);
    }

    @Test
    public void keepRatioTagsArePythonsG() {
        String[][] cases = {{"1", "1"}, {"0.5", "0.5"}, {"0.25", "0.25"}, {"0.1", "0.1"}, {"0.333333", "0.3333333333"},
                {"0.666667", "0.6666666666"}, {"1e-05", "0.00001"}, {"0.0001", "0.0001"}, {"100", "100"}, {"1e+06", "1000000"}};
        for (String[] c : cases) assertEquals(c[0], CaptionManifest.formatG(Double.parseDouble(c[1])));
        assertEquals("k0.5", CaptionManifest.ratioTag(0.5));
        assertEquals("step2_k1", CaptionManifest.stepGraph(2, 1.0));
        assertEquals("encoder_k0.25", CaptionManifest.encoderGraph(0.25));
    }

    @Test
    public void cachesAreStackedInLayerOrderAndCopiesShareNothingWritable() {
        KvCache a = KvCache.zeros(3, 1, 2, 1);
        float[] present = {1, 2, 3, 4}; // two layers of H=1 x P=2 x hd=1
        a.replace(Arrays.asList(2, 0), Tensor.float32(present, 2, 1, 1, 2, 1), Tensor.float32(present.clone(), 2, 1, 1, 2, 1));
        assertArrayEquals(new float[] {3, 4, 0, 0, 1, 2}, a.stackKeys(Arrays.asList(0, 1, 2)).floats(), 0f);
        assertArrayEquals(new long[] {1, 1, 1, 2, 1}, a.stackValues(Collections.singletonList(2)).shape());
        KvCache b = a.copy();
        b.replace(Collections.singletonList(0), Tensor.float32(new float[] {9, 9}, 1, 1, 1, 2, 1),
                Tensor.float32(new float[] {9, 9}, 1, 1, 1, 2, 1));
        assertArrayEquals("the copy's write leaves the original", new float[] {3, 4}, a.stackKeys(Collections.singletonList(0)).floats(), 0f);
        assertArrayEquals(new float[] {9, 9}, b.stackKeys(Collections.singletonList(0)).floats(), 0f);
        Tensor stacked = a.stackKeys(Collections.singletonList(2));
        assertNotSame(stacked.floats(), a.stackKeys(Collections.singletonList(2)).floats());
        try {
            a.replace(Collections.singletonList(0), Tensor.float32(new float[4], 2, 1, 1, 2, 1), Tensor.float32(new float[4], 2, 1, 1, 2, 1));
            org.junit.Assert.fail("a present of 2 layers for 1 layer is refused");
        } catch (BackendException expected) {
            assertSame(BackendException.class, expected.getClass());
        }
    }

    @Test
    public void wordsAreTheVocabularyStringsBeforeTheFirstEos() {
        Map<String, Integer> vocab = new HashMap<>();
        String[] words = {"[PAD]", "[UNK]", "[BOS]", "[EOS]", ".", "a", "red"};
        for (int i = 0; i < words.length; i++) vocab.put(words[i], i);
        CaptionText text = new CaptionText(new WordTokenizer(vocab, 24, true), 3);
        List<String> w = text.words(new int[] {5, 6, 4, 2, 0, 99, 3, 5});
        assertEquals(Arrays.asList("a", "red", ".", "[BOS]", "[PAD]", "[UNK]"), w);
        assertEquals("a red . [BOS] [PAD] [UNK]", CaptionText.text(w));
        assertEquals(Collections.emptyList(), text.words(new int[] {3}));
        assertEquals("", CaptionText.text(text.words(new int[0])));
    }
}
