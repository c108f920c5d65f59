package dev.mmedge.core;

import java.util.List;

/**
 * One hypothesis' key/value cache (docs/bundle-format.md "Captioning bundles", "The key/value
 * cache"): per decoder layer a key and a value cache of H x P x hd float32 (head, position,
 * channel), all zeros when a caption starts. Graphs take the caches of their layers stacked in
 * layer order ({@code [n, 1, H, P, hd]}) and give them back with one position written; the runtime
 * replaces those layers' caches with them. A layer's array is never written after it is stored, so
 * {@link #copy()} (a new hypothesis from one word's candidates) shares the arrays.
 */
public final class KvCache {
    private final float[][] keys;
    private final float[][] values;
    private final int heads;
    private final int positions;
    private final int headDim;

    private KvCache(float[][] keys, float[][] values, int heads, int positions, int headDim) {
        this.keys = keys;
        this.values = values;
        this.heads = heads;
        this.positions = positions;
        this.headDim = headDim;
    }

    /** Zero caches for `layers` layers of heads x positions x headDim. */
    public static KvCache zeros(int layers, int heads, int positions, int headDim) {
        float[] zero = new float[heads * positions * headDim];
        float[][] k = new float[layers][];
        float[][] v = new float[layers][];
        for (int i = 0; i < layers; i++) {
            k[i] = zero; // never written: shared
            v[i] = zero;
        }
        return new KvCache(k, v, heads, positions, headDim);
    }

    /** A cache that shares this one's layer arrays (replacing a layer of one leaves the other as it is). */
    public KvCache copy() {
        return new KvCache(keys.clone(), values.clone(), heads, positions, headDim);
    }

    public int layers() {
        return keys.length;
    }

    /** The key caches of `layers`, stacked: float32 [n, 1, H, P, hd]. */
    public Tensor stackKeys(List<Integer> layers) {
        return stack(keys, layers);
    }

    /** The value caches of `layers`, stacked: float32 [n, 1, H, P, hd]. */
    public Tensor stackValues(List<Integer> layers) {
        return stack(values, layers);
    }

    private Tensor stack(float[][] caches, List<Integer> layers) {
        int size = heads * positions * headDim;
        float[] out = new float[layers.size() * size];
        for (int j = 0; j < layers.size(); j++) System.arraycopy(caches[layers.get(j)], 0, out, j * size, size);
        return Tensor.float32(out, layers.size(), 1, heads, positions, headDim);
    }

    /** Replaces the caches of `layers` with a graph's present_k / present_v ([n, 1, H, P, hd], layer j at index j). */
    public void replace(List<Integer> layers, Tensor presentK, Tensor presentV) {
        unstack(keys, layers, presentK, "present_k");
        unstack(values, layers, presentV, "present_v");
    }

    private void unstack(float[][] caches, List<Integer> layers, Tensor present, String what) {
        long[] want = {layers.size(), 1, heads, positions, headDim};
        if (!present.hasShape(want)) {
            throw new BackendException("the backend gave " + what + " " + present + ", the graph declares "
                    + java.util.Arrays.toString(want), null);
        }
        int size = heads * positions * headDim;
        float[] data = present.floats();
        for (int j = 0; j < layers.size(); j++) {
            float[] layer = new float[size];
            System.arraycopy(data, j * size, layer, 0, size);
            caches[layers.get(j)] = layer;
        }
    }
}
