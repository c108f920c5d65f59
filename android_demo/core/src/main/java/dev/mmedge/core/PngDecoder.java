package dev.mmedge.core;

import java.io.ByteArrayOutputStream;
import java.nio.charset.StandardCharsets;
import java.util.zip.CRC32;
import java.util.zip.DataFormatException;
import java.util.zip.Inflater;

/**
 * A PNG decoder in plain Java (no Android or AWT dependency), so that the app and the JVM tests turn
 * a PNG file into the runtime's ARGB input exactly as docs/bundle-format.md ("Image") says, whatever
 * the platform's decoder does with 16-bit samples, grey or EXIF:
 * <ul>
 *   <li>grey (any depth) becomes R = G = B (1-bit: 0 / 255; 2-bit: v * 85; 4-bit: v * 17);</li>
 *   <li>grey+alpha and RGBA keep their alpha; a palette with a tRNS chunk gives each entry its alpha
 *       (entries past the chunk are opaque); a grey or RGB colour key (tRNS) is ignored, as Pillow
 *       does;</li>
 *   <li>16-bit samples keep their high byte ({@code v >> 8});</li>
 *   <li>the EXIF orientation of an eXIf chunk is NOT applied here: {@link ImageFiles#decode} applies it.</li>
 * </ul>
 * Output: ARGB ints, row-major, not premultiplied (what {@code Bitmap.getPixels} gives for an
 * ARGB_8888 bitmap decoded with {@code inPremultiplied = false}). Corrupt files (bad CRC, truncated
 * or excess image data, unknown critical chunks) are refused with an {@link ImageException}.
 */
public final class PngDecoder {
    static final byte[] SIGNATURE = {(byte) 0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    /** Pillow's MAX_IMAGE_PIXELS: a larger image is refused before any pixel memory is allocated. */
    public static final long MAX_PIXELS = 89_478_485L;

    private PngDecoder() {
    }

    /** A decoded PNG: ARGB pixels (orientation not applied) and the raw eXIf chunk (TIFF bytes) or null. */
    public static final class Result {
        public final int[] argb;
        public final int width;
        public final int height;
        /** The eXIf chunk's bytes (a TIFF header and IFDs), or null. */
        public final byte[] exif;
        /** The IHDR colour type (0 grey, 2 RGB, 3 palette, 4 grey+alpha, 6 RGBA) and bit depth. */
        public final int colourType;
        public final int bitDepth;

        Result(int[] argb, int width, int height, byte[] exif, int colourType, int bitDepth) {
            this.argb = argb;
            this.width = width;
            this.height = height;
            this.exif = exif;
            this.colourType = colourType;
            this.bitDepth = bitDepth;
        }
    }

    public static boolean isPng(byte[] data) {
        if (data == null || data.length < SIGNATURE.length) return false;
        for (int i = 0; i < SIGNATURE.length; i++) if (data[i] != SIGNATURE[i]) return false;
        return true;
    }

    private static int u32(byte[] d, int at) {
        return ((d[at] & 0xff) << 24) | ((d[at + 1] & 0xff) << 16) | ((d[at + 2] & 0xff) << 8) | (d[at + 3] & 0xff);
    }

    private static ImageException bad(String what) {
        return new ImageException("cannot decode this PNG (" + what + "): it may be truncated or corrupt");
    }

    /** Decodes a PNG file's bytes; ImageException when they are not a PNG this decoder reads. */
    public static Result decode(byte[] data) {
        if (!isPng(data)) throw new ImageException("not a PNG file (no PNG signature)");
        int pos = SIGNATURE.length;
        int width = -1;
        int height = -1;
        int depth = 0;
        int colourType = -1;
        int interlace = 0;
        byte[] palette = null;
        byte[] trns = null;
        byte[] exif = null;
        ByteArrayOutputStream idat = new ByteArrayOutputStream();
        boolean seenIdat = false;
        boolean ended = false;
        CRC32 crc = new CRC32();
        while (!ended) {
            if (pos + 12 > data.length) throw bad("truncated chunk");
            long length = u32(data, pos) & 0xffffffffL;
            if (length > data.length - pos - 12) throw bad("chunk longer than the file");
            String type = new String(data, pos + 4, 4, StandardCharsets.ISO_8859_1);
            int body = pos + 8;
            int n = (int) length;
            crc.reset();
            crc.update(data, pos + 4, 4 + n);
            if ((int) crc.getValue() != u32(data, body + n)) throw bad("CRC mismatch in chunk " + type);
            pos = body + n + 4;
            if (width < 0 && !type.equals("IHDR")) throw bad("first chunk is not IHDR");
            switch (type) {
                case "IHDR":
                    if (width >= 0 || n != 13) throw bad("bad IHDR");
                    width = u32(data, body);
                    height = u32(data, body + 4);
                    depth = data[body + 8] & 0xff;
                    colourType = data[body + 9] & 0xff;
                    if (data[body + 10] != 0 || data[body + 11] != 0) throw bad("unknown compression or filter method");
                    interlace = data[body + 12] & 0xff;
                    if (interlace > 1) throw bad("unknown interlace method");
                    if (!validDepth(colourType, depth)) throw bad("colour type " + colourType + " with bit depth " + depth);
                    if (width <= 0 || height <= 0) throw bad("image size " + width + " x " + height);
                    if ((long) width * height > MAX_PIXELS) {
                        throw new ImageException("image is " + (width & 0xffffffffL) + "x" + (height & 0xffffffffL)
                                + ": more than " + MAX_PIXELS + " pixels; downscale it first");
                    }
                    break;
                case "PLTE":
                    if (n % 3 != 0 || n == 0 || n > 768) throw bad("bad PLTE");
                    palette = java.util.Arrays.copyOfRange(data, body, body + n);
                    break;
                case "tRNS":
                    trns = java.util.Arrays.copyOfRange(data, body, body + n);
                    break;
                case "eXIf":
                    exif = java.util.Arrays.copyOfRange(data, body, body + n);
                    break;
                case "IDAT":
                    idat.write(data, body, n);
                    seenIdat = true;
                    break;
                case "IEND":
                    ended = true;
                    break;
                default:
                    if ((type.charAt(0) & 0x20) == 0) throw bad("unknown critical chunk " + type);
                    break; // ancillary chunks (gAMA, iCCP, sRGB, tEXt, ...) are ignored, as Pillow's conversion does
            }
        }
        if (!seenIdat) throw bad("no image data");
        if (colourType == 3 && palette == null) throw bad("palette image without PLTE");
        int channels = colourType == 0 ? 1 : colourType == 2 ? 3 : colourType == 3 ? 1 : colourType == 4 ? 2 : 4;
        int[] argb = new int[width * height];
        byte[] raw = inflate(idat.toByteArray(), rawSize(width, height, channels, depth, interlace));
        int bitsPerPixel = channels * depth;
        int bpp = Math.max(1, bitsPerPixel / 8);
        if (interlace == 0) {
            unfilterAndStore(raw, 0, width, height, bitsPerPixel, bpp, colourType, depth, palette, trns, argb, width, 0, 0, 1, 1);
        } else {
            int offset = 0;
            for (int[] pass : ADAM7) {
                int pw = (width - pass[0] + pass[2] - 1) / pass[2];
                int ph = (height - pass[1] + pass[3] - 1) / pass[3];
                if (pw <= 0 || ph <= 0) continue;
                unfilterAndStore(raw, offset, pw, ph, bitsPerPixel, bpp, colourType, depth, palette, trns, argb, width,
                        pass[0], pass[1], pass[2], pass[3]);
                offset += ph * (1 + stride(pw, bitsPerPixel));
            }
        }
        return new Result(argb, width, height, exif, colourType, depth);
    }

    /** x0, y0, dx, dy of the seven Adam7 passes. */
    private static final int[][] ADAM7 = {{0, 0, 8, 8}, {4, 0, 8, 8}, {0, 4, 4, 8}, {2, 0, 4, 4}, {0, 2, 2, 4},
        {1, 0, 2, 2}, {0, 1, 1, 2}};

    private static boolean validDepth(int colourType, int depth) {
        switch (colourType) {
            case 0: return depth == 1 || depth == 2 || depth == 4 || depth == 8 || depth == 16;
            case 3: return depth == 1 || depth == 2 || depth == 4 || depth == 8;
            case 2: case 4: case 6: return depth == 8 || depth == 16;
            default: return false;
        }
    }

    private static long stride(long width, int bitsPerPixel) {
        return (width * bitsPerPixel + 7) / 8;
    }

    private static long rawSize(int width, int height, int channels, int depth, int interlace) {
        int bits = channels * depth;
        if (interlace == 0) return (long) height * (1 + stride(width, bits));
        long total = 0;
        for (int[] pass : ADAM7) {
            long pw = (width - pass[0] + pass[2] - 1) / pass[2];
            long ph = (height - pass[1] + pass[3] - 1) / pass[3];
            if (pw > 0 && ph > 0) total += ph * (1 + stride(pw, bits));
        }
        return total;
    }

    private static byte[] inflate(byte[] compressed, long expected) {
        if (expected > Integer.MAX_VALUE - 16) throw new ImageException("image too large to decode");
        byte[] out = new byte[(int) expected];
        Inflater inflater = new Inflater();
        try {
            inflater.setInput(compressed);
            int got = 0;
            while (got < out.length) {
                int n = inflater.inflate(out, got, out.length - got);
                if (n == 0) {
                    if (inflater.finished() || inflater.needsInput()) throw bad("image data is truncated");
                    if (inflater.needsDictionary()) throw bad("image data needs a preset dictionary");
                }
                got += n;
            }
            // anything beyond the image is refused, as libpng does ("too much image data")
            byte[] probe = new byte[1];
            if (!inflater.finished() && inflater.inflate(probe) > 0) throw bad("more image data than the image holds");
            return out;
        } catch (DataFormatException exc) {
            throw bad("bad zlib data: " + exc.getMessage());
        } finally {
            inflater.end();
        }
    }

    private static int paeth(int a, int b, int c) {
        int p = a + b - c;
        int pa = Math.abs(p - a);
        int pb = Math.abs(p - b);
        int pc = Math.abs(p - c);
        if (pa <= pb && pa <= pc) return a;
        return pb <= pc ? b : c;
    }

    /** Unfilters one (sub)image of `w` x `h` at raw[offset..] and stores its pixels at (x0 + x * dx, y0 + y * dy). */
    private static void unfilterAndStore(byte[] raw, int offset, int w, int h, int bitsPerPixel, int bpp, int colourType,
                                         int depth, byte[] palette, byte[] trns, int[] argb, int fullWidth,
                                         int x0, int y0, int dx, int dy) {
        int rowBytes = (int) stride(w, bitsPerPixel);
        byte[] prev = new byte[rowBytes];
        byte[] row = new byte[rowBytes];
        int at = offset;
        for (int y = 0; y < h; y++) {
            int filter = raw[at++] & 0xff;
            System.arraycopy(raw, at, row, 0, rowBytes);
            at += rowBytes;
            switch (filter) {
                case 0:
                    break;
                case 1:
                    for (int i = bpp; i < rowBytes; i++) row[i] = (byte) (row[i] + row[i - bpp]);
                    break;
                case 2:
                    for (int i = 0; i < rowBytes; i++) row[i] = (byte) (row[i] + prev[i]);
                    break;
                case 3:
                    for (int i = 0; i < rowBytes; i++) {
                        int left = i >= bpp ? row[i - bpp] & 0xff : 0;
                        row[i] = (byte) (row[i] + ((left + (prev[i] & 0xff)) >> 1));
                    }
                    break;
                case 4:
                    for (int i = 0; i < rowBytes; i++) {
                        int left = i >= bpp ? row[i - bpp] & 0xff : 0;
                        int upLeft = i >= bpp ? prev[i - bpp] & 0xff : 0;
                        row[i] = (byte) (row[i] + paeth(left, prev[i] & 0xff, upLeft));
                    }
                    break;
                default:
                    throw bad("unknown row filter " + filter);
            }
            int base = (y0 + y * dy) * fullWidth;
            for (int x = 0; x < w; x++) argb[base + x0 + x * dx] = pixel(row, x, colourType, depth, palette, trns);
            byte[] t = prev;
            prev = row;
            row = t;
        }
    }

    /** One sample: 8-bit value (16-bit: the high byte; 1/2/4-bit grey scaled to 0..255; palette: the index). */
    private static int sample(byte[] row, int index, int depth, boolean scale) {
        switch (depth) {
            case 8:
                return row[index] & 0xff;
            case 16:
                return row[2 * index] & 0xff; // big-endian: the high byte
            default: {
                int perByte = 8 / depth;
                int b = row[index / perByte] & 0xff;
                int shift = 8 - depth * (index % perByte + 1);
                int v = (b >> shift) & ((1 << depth) - 1);
                return scale ? v * 255 / ((1 << depth) - 1) : v;
            }
        }
    }

    private static int pixel(byte[] row, int x, int colourType, int depth, byte[] palette, byte[] trns) {
        int r;
        int g;
        int b;
        int a = 255;
        switch (colourType) {
            case 0:
                r = g = b = sample(row, x, depth, true);
                break;
            case 2:
                r = sample(row, 3 * x, depth, false);
                g = sample(row, 3 * x + 1, depth, false);
                b = sample(row, 3 * x + 2, depth, false);
                break;
            case 3: {
                int i = sample(row, x, depth, false);
                if (3 * i + 2 < palette.length) {
                    r = palette[3 * i] & 0xff;
                    g = palette[3 * i + 1] & 0xff;
                    b = palette[3 * i + 2] & 0xff;
                } else {
                    r = g = b = 0; // an index past the palette: black, as Pillow's zero-filled palette gives
                }
                if (trns != null && i < trns.length) a = trns[i] & 0xff;
                break;
            }
            case 4:
                r = g = b = sample(row, 2 * x, depth, false);
                a = sample(row, 2 * x + 1, depth, false);
                break;
            default:
                r = sample(row, 4 * x, depth, false);
                g = sample(row, 4 * x + 1, depth, false);
                b = sample(row, 4 * x + 2, depth, false);
                a = sample(row, 4 * x + 3, depth, false);
                break;
        }
        return (a << 24) | (r << 16) | (g << 8) | b;
    }
}
