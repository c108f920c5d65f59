package dev.mmedge.core;

import java.util.Arrays;

/**
 * A dense tensor passed to and from a {@link StageRunner}: float32, int32 or int64 data in
 * row-major order with its shape. Backends convert to and from their own tensor types.
 */
public final class Tensor {
    public final String dtype;
    private final long[] shape;
    private final float[] floats;
    private final int[] ints;
    private final long[] longs;

    private Tensor(String dtype, long[] shape, float[] floats, int[] ints, long[] longs) {
        long n = 1;
        for (long d : shape) {
            if (d < 0) throw new IllegalArgumentException("negative dimension in " + Arrays.toString(shape));
            n *= d;
        }
        int length = floats != null ? floats.length : ints != null ? ints.length : longs.length;
        if (n != length) throw new IllegalArgumentException(length + " values for shape " + Arrays.toString(shape));
        this.dtype = dtype;
        this.shape = shape.clone();
        this.floats = floats;
        this.ints = ints;
        this.longs = longs;
    }

    public static Tensor float32(float[] data, long... shape) {
        return new Tensor("float32", shape, data, null, null);
    }

    public static Tensor int32(int[] data, long... shape) {
        return new Tensor("int32", shape, null, data, null);
    }

    public static Tensor int64(long[] data, long... shape) {
        return new Tensor("int64", shape, null, null, data);
    }

    public long[] shape() {
        return shape.clone();
    }

    public boolean hasShape(long[] want) {
        return Arrays.equals(shape, want);
    }

    public int size() {
        return floats != null ? floats.length : ints != null ? ints.length : longs.length;
    }

    /** float32 data (the array itself, not a copy); IllegalStateException for an integer tensor. */
    public float[] floats() {
        if (floats == null) throw new IllegalStateException("a " + dtype + " tensor has no float data");
        return floats;
    }

    /** int32 data; int64 data converted (kept_index may come back as int64 from some backends). */
    public int[] ints() {
        if (ints != null) return ints;
        if (longs != null) {
            int[] out = new int[longs.length];
            for (int i = 0; i < out.length; i++) out[i] = Math.toIntExact(longs[i]);
            return out;
        }
        throw new IllegalStateException("a float32 tensor has no integer data");
    }

    /** int64 data (the array itself) or null. */
    public long[] longs() {
        return longs;
    }

    @Override
    public String toString() {
        return "Tensor(" + dtype + ", " + Arrays.toString(shape) + ")";
    }
}
