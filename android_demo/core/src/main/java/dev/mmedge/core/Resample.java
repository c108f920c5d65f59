package dev.mmedge.core;

/**
 * Pillow's resampling (libImaging/Resample.c, what {@code Image.resize(size, filter)} runs on an
 * 8-bit image), bit for bit, for any input and output size, with Pillow's bilinear, bicubic and
 * lanczos filters (docs/bundle-format.md, "Adapted encoders" and "Generative VLM bundles";
 * runtimes/js/src/resample.ts is the same code):
 * <ol>
 *   <li>per axis, {@code precompute_coeffs}: for output index o, the input span [lo, lo + count)
 *       and one weight per input index, the filter at the distance to the span's centre (scaled
 *       down when shrinking: the filter widens), divided by their sum, then fixed point with
 *       PRECISION_BITS = 22 ({@code normalize_coeffs_8bpc});</li>
 *   <li>one 8-bit pass per axis whose size changes (a copy when neither does). When both change,
 *       Pillow 13 runs the vertical pass first, over the whole width, if the height shrinks by more
 *       pixels than twice the width does ({@code dy > 0 && dy > 2 * dx}); otherwise the horizontal
 *       pass first, over only the rows the vertical pass reads. Each output value is
 *       {@code clip8(2^21 + sum_j src[lo + j] * k_j)}, clip8 = clamp(acc >> 22, 0, 255).</li>
 * </ol>
 * The filter arithmetic is IEEE double in the C code's order of operations (Java's strict
 * floating point gives the same results); the integer sums stay below 2^31 as Pillow's do.
 */
public final class Resample {
    /** Pillow's PRECISION_BITS for 8-bit images. */
    public static final int PRECISION_BITS = 22;

    /** The filters implemented here (Pillow's {@code Image.Resampling.BILINEAR}, {@code BICUBIC} and {@code LANCZOS}). */
    public enum Filter {
        BILINEAR(1.0),
        BICUBIC(2.0),
        LANCZOS(3.0);

        /** Half-width of the filter at scale 1. */
        final double support;

        Filter(double support) {
            this.support = support;
        }

        /**
         * Pillow's bilinear_filter / bicubic_filter (a = -0.5) / lanczos_filter (sinc(x) x sinc(x / 3) on
         * -3 <= x < 3), in the C code's operation order.
         */
        double weight(double x) {
            if (this == LANCZOS) return -3.0 <= x && x < 3.0 ? sinc(x) * sinc(x / 3) : 0.0;
            if (x < 0.0) x = -x;
            if (this == BILINEAR) return x < 1.0 ? 1.0 - x : 0.0;
            final double a = -0.5;
            if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
            if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
            return 0.0;
        }

        /**
         * Pillow's sinc_filter: sin(pi x) / (pi x), 1 at 0. StrictMath.sin is fdlibm's, the same
         * bits on every JVM and on Android; libm's sin may differ in the last bit, which changes a
         * fixed-point weight only at a rounding boundary (tests/vectors/vlm/resize-lanczos.json).
         */
        private static double sinc(double x) {
            if (x == 0.0) return 1.0;
            x = x * Math.PI;
            return StrictMath.sin(x) / x;
        }

        /** The filter for a manifest's preprocessing.resample ("bilinear", "bicubic", "lanczos"). */
        public static Filter of(String name) {
            switch (name == null ? "" : name) {
                case "bilinear": return BILINEAR;
                case "bicubic": return BICUBIC;
                case "lanczos": return LANCZOS;
                default: throw new ConfigException("resample filter '" + name + "' unknown; choose bilinear, bicubic or lanczos",
                        "arguments");
            }
        }
    }

    private Resample() {
    }

    /** One axis's fixed-point coefficients (Pillow's bounds and normalised kk). */
    public static final class Axis {
        /** First input index of each output index. */
        public final int[] lo;
        /** Number of input indices of each output index. */
        public final int[] count;
        /** Fixed-point weights, ksize per output index (zeros after count). */
        public final int[] k;
        public final int ksize;

        /**
         * precompute_coeffs(inSize, 0, inSize, outSize) + normalize_coeffs_8bpc: scale = in / out,
         * filterscale = max(scale, 1), support = filter support x filterscale, ksize =
         * ceil(support) x 2 + 1; center = (o + 0.5) x scale, lo = max((int) (center - support +
         * 0.5), 0), count = min((int) (center + support + 0.5), in) - lo, w_j = filter((j + lo -
         * center + 0.5) x (1 / filterscale)) / their sum, k_j = (int) (w_j x 2^22 +/- 0.5).
         */
        public Axis(int inSize, int outSize, Filter filter) {
            double scale = (double) inSize / outSize;
            double filterscale = scale < 1.0 ? 1.0 : scale;
            double support = filter.support * filterscale;
            ksize = (int) Math.ceil(support) * 2 + 1;
            lo = new int[outSize];
            count = new int[outSize];
            k = new int[outSize * ksize];
            double[] w = new double[ksize];
            double ss = 1.0 / filterscale;
            for (int o = 0; o < outSize; o++) {
                double center = (o + 0.5) * scale;
                int xmin = Math.max((int) (center - support + 0.5), 0);
                int xmax = Math.min((int) (center + support + 0.5), inSize) - xmin;
                double total = 0.0;
                for (int j = 0; j < xmax; j++) {
                    double v = filter.weight((j + xmin - center + 0.5) * ss);
                    w[j] = v;
                    total += v;
                }
                for (int j = 0; j < xmax; j++) {
                    double v = total != 0.0 ? w[j] / total : w[j];
                    k[o * ksize + j] = v < 0 ? (int) (-0.5 + v * (1 << PRECISION_BITS)) : (int) (0.5 + v * (1 << PRECISION_BITS));
                }
                lo[o] = xmin;
                count[o] = xmax;
            }
        }
    }

    private static int clip8(int acc) {
        int v = acc >> PRECISION_BITS;
        return v < 0 ? 0 : v > 255 ? 255 : v;
    }

    /** Pillow 13's pass order when both sizes change: vertical first when dy > 0 and dy > 2 dx. */
    public static boolean verticalFirst(int inWidth, int inHeight, int width, int height) {
        int dy = inHeight - height;
        return dy > 0 && dy > 2 * (inWidth - width);
    }

    /** Horizontal pass: rows first .. first + rows - 1 of src (width w, ch channels) to outWidth columns. */
    private static int[] horizontal(int[] src, int w, int ch, Axis c, int outWidth, int first, int rows) {
        int[] out = new int[outWidth * rows * ch];
        int half = 1 << (PRECISION_BITS - 1);
        for (int y = 0; y < rows; y++) {
            int rowIn = (first + y) * w * ch;
            int rowOut = y * outWidth * ch;
            for (int o = 0; o < outWidth; o++) {
                int kBase = o * c.ksize;
                int xmin = c.lo[o];
                int n = c.count[o];
                for (int q = 0; q < ch; q++) {
                    int acc = half;
                    for (int j = 0; j < n; j++) acc += src[rowIn + (xmin + j) * ch + q] * c.k[kBase + j];
                    out[rowOut + o * ch + q] = clip8(acc);
                }
            }
        }
        return out;
    }

    /** Vertical pass: src (width w, ch channels; its row 0 is input row `first`) to outHeight rows. */
    private static int[] vertical(int[] src, int w, int ch, Axis c, int outHeight, int first) {
        int stride = w * ch;
        int[] out = new int[outHeight * stride];
        int half = 1 << (PRECISION_BITS - 1);
        for (int o = 0; o < outHeight; o++) {
            int kBase = o * c.ksize;
            int ymin = c.lo[o] - first;
            int n = c.count[o];
            for (int i = 0; i < stride; i++) {
                int acc = half;
                for (int j = 0; j < n; j++) acc += src[(ymin + j) * stride + i] * c.k[kBase + j];
                out[o * stride + i] = clip8(acc);
            }
        }
        return out;
    }

    /**
     * Pillow 13 {@code Image.resize((width, height), filter)} of an 8-bit image given as row-major
     * interleaved values (0..255), {@code channels} per pixel: a copy when neither size changes,
     * one pass when one does, both in Pillow 13's order otherwise.
     */
    public static int[] resize(int[] src, int inWidth, int inHeight, int channels, int width, int height, Filter filter) {
        if (width < 1 || height < 1) throw new ImageException("resample size must be positive, got " + width + " x " + height);
        if ((long) inWidth * inHeight * channels != src.length) {
            throw new ImageException("resample input has " + src.length + " values, not " + inWidth + " x " + inHeight + " x " + channels);
        }
        boolean needHorizontal = width != inWidth;
        boolean needVertical = height != inHeight;
        if (!needHorizontal && !needVertical) return src.clone();
        Axis vert = new Axis(inHeight, height, filter);
        if (needHorizontal && needVertical && verticalFirst(inWidth, inHeight, width, height)) {
            int[] tall = vertical(src, inWidth, channels, vert, height, 0);
            return horizontal(tall, inWidth, channels, new Axis(inWidth, width, filter), width, 0, height);
        }
        int[] current = src;
        int first = 0;
        if (needHorizontal) {
            first = vert.lo[0];
            int last = vert.lo[height - 1] + vert.count[height - 1];
            current = horizontal(src, inWidth, channels, new Axis(inWidth, width, filter), width, first, last - first);
        }
        return needVertical ? vertical(current, width, channels, vert, height, first) : current;
    }
}
