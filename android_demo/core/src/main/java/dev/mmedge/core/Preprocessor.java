package dev.mmedge.core;

/**
 * Image preprocessing on an ARGB {@code int[]} (what Android's {@code Bitmap.getPixels} gives:
 * row-major, one int per pixel, 0xAARRGGBB, not premultiplied), bit for bit as
 * docs/bundle-format.md "Inputs / Image" and Pillow do it:
 * <ol>
 *   <li>alpha composited over pad_color with Pillow's integer alpha_composite (alpha 255 is the identity);</li>
 *   <li>padded to a centred square of pad_color (an odd leftover pixel goes right / bottom);</li>
 *   <li>Pillow's BILINEAR resize (antialiasing triangle filter, two 8-bit fixed-point passes);</li>
 *   <li>float32 NCHW normalisation, each operation rounded to float32.</li>
 * </ol>
 * An adapted encoder's bundle ({@code preprocessing.resize} "pillow-bicubic", {@code fit} "stretch";
 * docs/bundle-format.md "Adapted encoders") is prepared by {@link #stretched} instead: transparency
 * over the grey {@link #BACKGROUND}, no padding, the image stretched to S x S with Pillow's BICUBIC
 * resample ({@link Resample}), then x = (float) (v * scale) and (x - mean) / std in float32.
 * On Android decode with {@code BitmapFactory.Options.inPremultiplied = false}: a premultiplied
 * bitmap has already lost the colour of semi-transparent pixels when getPixels un-premultiplies.
 */
public final class Preprocessor {
    public static final int MIN_SIDE = 8;
    public static final int MAX_SIDE = 16384;
    /** The scene background grey: what transparency is composited over when a bundle states no pad_color. */
    public static final int[] BACKGROUND = {118, 118, 124};
    /** preprocessing.resize of an adapted encoder's bundle: stretched with Pillow's bicubic filter. */
    public static final String ADAPTED_RESIZE = "pillow-bicubic";
    private static final int PRECISION_BITS = 22;

    /** Stage-0 image input and the 8-bit image it was made from. */
    public static final class Result {
        /** The resized image, S x S, row-major RGB bytes (0..255 as ints). */
        public final int[] resizedRgb;
        /** float32 [1, 3, S, S], channels R, G, B. */
        public final float[] pixelValues;
        public final int size;

        Result(int[] resizedRgb, float[] pixelValues, int size) {
            this.resizedRgb = resizedRgb;
            this.pixelValues = pixelValues;
            this.size = size;
        }

        /** The resized image as bytes (for hashing: numpy's uint8 (S, S, 3) layout). */
        public byte[] resizedBytes() {
            byte[] out = new byte[resizedRgb.length];
            for (int i = 0; i < out.length; i++) out[i] = (byte) resizedRgb[i];
            return out;
        }
    }

    private final int size;
    private final int[] padColor;
    private final boolean stretch;
    /** The stretch's resample filter (bicubic for adapted encoders, the manifest's for a VLM bundle). */
    private final Resample.Filter filter;
    private final float[][] lut = new float[3][256];

    /** From a checked manifest's preprocessing entry (an adapted encoder's: {@link #stretched}). */
    public Preprocessor(Manifest m) {
        this(m.imageSize, m.padColor, m.mean, m.std, m.scale, ADAPTED_RESIZE.equals(m.resize));
    }

    public Preprocessor(int imageSize, int[] padColor, double[] mean, double[] std, double scale) {
        this(imageSize, padColor, mean, std, scale, false);
    }

    private Preprocessor(int imageSize, int[] padColor, double[] mean, double[] std, double scale, boolean stretch) {
        this(imageSize, padColor, mean, std, scale, stretch, Resample.Filter.BICUBIC);
    }

    private Preprocessor(int imageSize, int[] padColor, double[] mean, double[] std, double scale, boolean stretch,
                         Resample.Filter filter) {
        this.size = imageSize;
        this.padColor = padColor.clone();
        this.stretch = stretch;
        this.filter = filter;
        if (stretch) { // x = float32(float64(v) * scale), then (x - mean) / std in float32
            for (int c = 0; c < 3; c++) {
                float meanF = (float) mean[c];
                float stdF = (float) std[c];
                for (int v = 0; v < 256; v++) lut[c][v] = ((float) (v * scale) - meanF) / stdF;
            }
            return;
        }
        // x = float32(v) / 255 (an integral 1 / scale is a division, as numpy divides), then (x - mean) / std in float32
        double inverse = 1.0 / scale;
        long divisor = Math.abs(inverse - Math.rint(inverse)) < 1e-6 ? Math.round(inverse) : 0;
        for (int c = 0; c < 3; c++) {
            float meanF = (float) mean[c];
            float stdF = (float) std[c];
            for (int v = 0; v < 256; v++) {
                float x = divisor != 0 ? (float) v / (float) divisor : (float) v * (float) scale;
                lut[c][v] = (x - meanF) / stdF;
            }
        }
    }

    /**
     * An adapted encoder's preprocessing: transparency over {@link #BACKGROUND}, the image stretched
     * to S x S with Pillow's bicubic filter (not padded), x = (float) (v * scale), (x - mean) / std.
     */
    public static Preprocessor stretched(int imageSize, double[] mean, double[] std, double scale) {
        return new Preprocessor(imageSize, BACKGROUND, mean, std, scale, true);
    }

    /**
     * A generative VLM bundle's preprocessing (docs/bundle-format.md "Generative VLM bundles",
     * Input): the same stretch with the manifest's {@code resample} filter (lanczos for SmolVLM),
     * x = (float) (v * rescale_factor), (x - mean) / std in float32.
     */
    public static Preprocessor stretched(int imageSize, double[] mean, double[] std, double scale, Resample.Filter filter) {
        return new Preprocessor(imageSize, BACKGROUND, mean, std, scale, true, filter);
    }

    public int size() {
        return size;
    }

    /** Whether this is an adapted encoder's (stretch, bicubic) or a VLM bundle's (stretch, its filter) preparation. */
    public boolean stretches() {
        return stretch;
    }

    /** Checks an ARGB input. */
    public static void check(int[] argb, int width, int height) {
        if (argb == null) throw new ImageException("image pixels are null; pass Bitmap.getPixels output (ARGB ints)");
        if (width < 1 || height < 1) throw new ImageException("image width and height must be positive, got " + width + " x " + height);
        if ((long) width * height != argb.length) {
            throw new ImageException("image has " + argb.length + " pixels; " + width + " x " + height + " needs "
                    + (long) width * height);
        }
        if (Math.min(width, height) < MIN_SIDE) {
            throw new ImageException("image is " + width + "x" + height + "; at least " + MIN_SIDE + " px per side is needed");
        }
        if (Math.max(width, height) > MAX_SIDE) {
            throw new ImageException("image is " + width + "x" + height + "; downscale it below " + MAX_SIDE + " px per side first");
        }
    }

    /** Pillow's alpha_composite of one channel value over an opaque background value. */
    static int compositeChannel(int src, int pad, long coef1, long coef2) {
        long t = src * coef1 + pad * coef2 + (128 << 7);
        return (int) ((((t >> 8) + t) >> 8) >> 7);
    }

    /** Step 1: interleaved RGB of an ARGB image, transparency composited over pad_color. */
    public static int[] toRgb(int[] argb, int[] padColor) {
        int n = argb.length;
        int[] out = new int[n * 3];
        for (int p = 0; p < n; p++) {
            int px = argb[p];
            int a = (px >>> 24) & 0xff;
            int r = (px >>> 16) & 0xff;
            int g = (px >>> 8) & 0xff;
            int b = px & 0xff;
            int o = p * 3;
            if (a == 255) { // coef1 = 255 * 2^7, coef2 = 0: the formula gives the value back (tested)
                out[o] = r;
                out[o + 1] = g;
                out[o + 2] = b;
            } else if (a == 0) {
                out[o] = padColor[0];
                out[o + 1] = padColor[1];
                out[o + 2] = padColor[2];
            } else {
                long coef1 = (long) a * 255 * 255 * 128 / ((long) a * 255 + 255L * (255 - a));
                long coef2 = 255L * 128 - coef1;
                out[o] = compositeChannel(r, padColor[0], coef1, coef2);
                out[o + 1] = compositeChannel(g, padColor[1], coef1, coef2);
                out[o + 2] = compositeChannel(b, padColor[2], coef1, coef2);
            }
        }
        return out;
    }

    /** Step 2: the image centred on a side x side canvas of pad_color. */
    static int[] padToSquare(int[] rgb, int w, int h, int[] padColor) {
        if (w == h) return rgb;
        int side = Math.max(w, h);
        int[] out = new int[side * side * 3];
        for (int p = 0; p < side * side; p++) {
            out[p * 3] = padColor[0];
            out[p * 3 + 1] = padColor[1];
            out[p * 3 + 2] = padColor[2];
        }
        int x0 = (side - w) / 2;
        int y0 = (side - h) / 2;
        for (int y = 0; y < h; y++) System.arraycopy(rgb, y * w * 3, out, ((y0 + y) * side + x0) * 3, w * 3);
        return out;
    }

    /** Pillow's precompute_coeffs + normalize_coeffs_8bpc for the bilinear filter, n -> m. */
    static final class Coefficients {
        final int[] lo;
        final int[] count;
        final int[] k;
        final int ksize;

        Coefficients(int n, int m) {
            double scale = (double) n / m;
            double filterscale = Math.max(scale, 1.0);
            double support = filterscale; // the bilinear filter's support is 1
            ksize = (int) Math.ceil(support) * 2 + 1;
            lo = new int[m];
            count = new int[m];
            k = new int[m * ksize];
            double ss = 1.0 / filterscale;
            double[] w = new double[ksize];
            for (int o = 0; o < m; o++) {
                double center = (o + 0.5) * scale;
                int xmin = Math.max((int) (center - support + 0.5), 0);
                int xmax = Math.min((int) (center + support + 0.5), n) - xmin;
                double total = 0;
                for (int j = 0; j < xmax; j++) {
                    double t = Math.abs((j + xmin - center + 0.5) * ss);
                    double weight = t < 1.0 ? 1.0 - t : 0.0;
                    w[j] = weight;
                    total += weight;
                }
                for (int j = 0; j < xmax; j++) {
                    double weight = total != 0 ? w[j] / total : w[j];
                    k[o * ksize + j] = weight < 0 ? (int) (-0.5 + weight * (1 << PRECISION_BITS))
                            : (int) (0.5 + weight * (1 << PRECISION_BITS));
                }
                lo[o] = xmin;
                count[o] = xmax;
            }
        }
    }

    private static int clip8(long acc) {
        long v = acc >> PRECISION_BITS;
        return v < 0 ? 0 : v > 255 ? 255 : (int) v;
    }

    /** Step 3: Pillow Image.resize((m, m), BILINEAR) of a square RGB image of side n. */
    static int[] resizeSquare(int[] src, int n, int m) {
        if (n == m) return src;
        Coefficients c = new Coefficients(n, m);
        int first = c.lo[0];
        int last = c.lo[m - 1] + c.count[m - 1];
        int rows = last - first;
        long half = 1L << (PRECISION_BITS - 1);
        int[] tmp = new int[rows * m * 3];
        for (int y = 0; y < rows; y++) { // horizontal pass over the rows the vertical pass reads
            int rowIn = (first + y) * n * 3;
            int rowOut = y * m * 3;
            for (int o = 0; o < m; o++) {
                int kBase = o * c.ksize;
                int xmin = c.lo[o];
                long r = half, g = half, b = half;
                for (int j = 0; j < c.count[o]; j++) {
                    long kj = c.k[kBase + j];
                    int p = rowIn + (xmin + j) * 3;
                    r += src[p] * kj;
                    g += src[p + 1] * kj;
                    b += src[p + 2] * kj;
                }
                tmp[rowOut + o * 3] = clip8(r);
                tmp[rowOut + o * 3 + 1] = clip8(g);
                tmp[rowOut + o * 3 + 2] = clip8(b);
            }
        }
        int[] out = new int[m * m * 3];
        for (int o = 0; o < m; o++) { // vertical pass, bounds shifted by `first`
            int kBase = o * c.ksize;
            int ymin = c.lo[o] - first;
            for (int x = 0; x < m; x++) {
                long r = half, g = half, b = half;
                for (int j = 0; j < c.count[o]; j++) {
                    long kj = c.k[kBase + j];
                    int p = ((ymin + j) * m + x) * 3;
                    r += tmp[p] * kj;
                    g += tmp[p + 1] * kj;
                    b += tmp[p + 2] * kj;
                }
                int q = (o * m + x) * 3;
                out[q] = clip8(r);
                out[q + 1] = clip8(g);
                out[q + 2] = clip8(b);
            }
        }
        return out;
    }

    /** Step 4: float32 [1, 3, S, S] from S x S interleaved RGB. */
    float[] normalize(int[] rgb) {
        int plane = size * size;
        float[] out = new float[3 * plane];
        for (int p = 0; p < plane; p++) {
            out[p] = lut[0][rgb[p * 3]];
            out[plane + p] = lut[1][rgb[p * 3 + 1]];
            out[2 * plane + p] = lut[2][rgb[p * 3 + 2]];
        }
        return out;
    }

    /** Steps 1 to 4 on an ARGB image (an adapted encoder's: composite, bicubic stretch, normalise). */
    public Result run(int[] argb, int width, int height) {
        check(argb, width, height);
        int[] rgb = toRgb(argb, padColor);
        if (stretch) {
            int[] resized = Resample.resize(rgb, width, height, 3, size, size, filter);
            return new Result(resized, normalize(resized), size);
        }
        int[] square = padToSquare(rgb, width, height, padColor);
        int[] resized = resizeSquare(square, Math.max(width, height), size);
        return new Result(resized, normalize(resized), size);
    }
}
