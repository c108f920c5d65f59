package dev.mmedge.core;

import java.nio.charset.StandardCharsets;

/**
 * Image FILES as the runtime's ARGB input, by docs/bundle-format.md ("Image"), in its order:
 * <ol>
 *   <li>the EXIF orientation (tag 274, values 2..8: mirrored and/or rotated) is applied first, so the
 *       model sees the image as a viewer shows it; 1 or absent: as stored;</li>
 *   <li>grey becomes RGB, grey+alpha and a palette with transparency keep an alpha, 16-bit samples
 *       keep their high byte ({@link PngDecoder});</li>
 *   <li>CMYK (a JPEG with four components, CMYK or YCCK) is refused with an {@link ImageException}:
 *       its colours depend on a colour profile;</li>
 *   <li>then {@link Preprocessor} (transparency composited over pad_color, pad, resize, normalise).</li>
 * </ol>
 * PNG is decoded here entirely ({@link #decode}); JPEG and WebP pixels come from the platform
 * (Android's BitmapFactory), after {@link #check} and with {@link #exifOrientation} applied by
 * {@link #orient} (BitmapFactory ignores the EXIF orientation).
 */
public final class ImageFiles {
    /** EXIF tag 274. */
    public static final int ORIENTATION_TAG = 0x0112;
    public static final String CMYK_REFUSED = "CMYK images are not accepted: their colours depend on a colour profile; "
            + "convert it to RGB first (e.g. with the profile, in an image editor)";

    private ImageFiles() {
    }

    /** An image as the runtime takes it: ARGB ints, row-major, not premultiplied, oriented. */
    public static final class Decoded {
        public final int[] argb;
        public final int width;
        public final int height;

        public Decoded(int[] argb, int width, int height) {
            this.argb = argb;
            this.width = width;
            this.height = height;
        }
    }

    /** "png", "jpeg", "webp", or null for a format this class does not know. */
    public static String format(byte[] data) {
        if (PngDecoder.isPng(data)) return "png";
        if (data != null && data.length >= 3 && (data[0] & 0xff) == 0xff && (data[1] & 0xff) == 0xd8 && (data[2] & 0xff) == 0xff) {
            return "jpeg";
        }
        if (data != null && data.length >= 12 && ascii(data, 0, 4).equals("RIFF") && ascii(data, 8, 4).equals("WEBP")) {
            return "webp";
        }
        return null;
    }

    private static String ascii(byte[] d, int at, int n) {
        return new String(d, at, n, StandardCharsets.ISO_8859_1);
    }

    /** ImageException for a file the spec refuses before decoding (today: a CMYK / YCCK JPEG). */
    public static void check(byte[] data) {
        if ("jpeg".equals(format(data)) && jpegComponents(data) == 4) throw new ImageException(CMYK_REFUSED);
    }

    /** A PNG file as the runtime's input: decoded, its EXIF orientation applied. */
    public static Decoded decode(byte[] data) {
        check(data);
        if (!PngDecoder.isPng(data)) {
            throw new ImageException("only PNG files are decoded here; decode " + (format(data) == null ? "this image"
                    : format(data).toUpperCase(java.util.Locale.ROOT)) + " with the platform (Bitmap), then apply "
                    + "ImageFiles.exifOrientation with ImageFiles.orient");
        }
        PngDecoder.Result png = PngDecoder.decode(data);
        int orientation = png.exif == null ? 1 : tiffOrientation(png.exif, 0, png.exif.length);
        return orient(new Decoded(png.argb, png.width, png.height), orientation);
    }

    // ------------------------------------------------------------------ EXIF
    /**
     * The EXIF orientation (1..8) of a PNG (eXIf chunk), JPEG (APP1 "Exif") or WebP (EXIF chunk)
     * file: 1 when it has none or a value outside 1..8 (or unreadable EXIF), 0 for a format this
     * class does not parse (the caller then asks the platform, e.g. Android's ExifInterface).
     */
    public static int exifOrientation(byte[] data) {
        String format = format(data);
        if (format == null) return 0;
        try {
            switch (format) {
                case "png":
                    return pngOrientation(data);
                case "jpeg":
                    return jpegOrientation(data);
                default:
                    return webpOrientation(data);
            }
        } catch (IndexOutOfBoundsException malformed) {
            return 1;
        }
    }

    private static int u16(byte[] d, int at, boolean little) {
        return little ? (d[at] & 0xff) | (d[at + 1] & 0xff) << 8 : (d[at] & 0xff) << 8 | (d[at + 1] & 0xff);
    }

    private static long u32(byte[] d, int at, boolean little) {
        return little ? (u16(d, at, true) | (long) u16(d, at + 2, true) << 16)
                : ((long) u16(d, at, false) << 16 | u16(d, at + 2, false));
    }

    /** Orientation in the first IFD of TIFF bytes d[off..off+len) (an "Exif\0\0" prefix is skipped); 1 when none. */
    static int tiffOrientation(byte[] d, int off, int len) {
        int end = off + len;
        if (len >= 6 && ascii(d, off, 4).equals("Exif") && d[off + 4] == 0 && d[off + 5] == 0) off += 6;
        if (end - off < 8) return 1;
        boolean little;
        if (d[off] == 'I' && d[off + 1] == 'I') little = true;
        else if (d[off] == 'M' && d[off + 1] == 'M') little = false;
        else return 1;
        if (u16(d, off + 2, little) != 42) return 1;
        long ifd = u32(d, off + 4, little);
        if (ifd < 8 || ifd + 2 > end - off) return 1;
        int at = off + (int) ifd;
        int count = u16(d, at, little);
        for (int i = 0; i < count; i++) {
            int entry = at + 2 + 12 * i;
            if (entry + 12 > end) return 1;
            if (u16(d, entry, little) != ORIENTATION_TAG) continue;
            int type = u16(d, entry + 2, little);
            long value;
            if (type == 3) value = u16(d, entry + 8, little); // SHORT
            else if (type == 4) value = u32(d, entry + 8, little); // LONG
            else return 1;
            return value >= 1 && value <= 8 ? (int) value : 1;
        }
        return 1;
    }

    private static int pngOrientation(byte[] d) {
        int pos = PngDecoder.SIGNATURE.length;
        while (pos + 12 <= d.length) {
            long length = u32(d, pos, false);
            if (length > d.length - pos - 12) return 1;
            String type = ascii(d, pos + 4, 4);
            if (type.equals("eXIf")) return tiffOrientation(d, pos + 8, (int) length);
            if (type.equals("IEND")) return 1;
            pos += 12 + (int) length;
        }
        return 1;
    }

    /** JPEG segments before the scan: calls back (marker, body offset, body length); stops at SOS. */
    private interface Segments {
        /** Returns true to stop. */
        boolean segment(int marker, int at, int length);
    }

    private static void jpegSegments(byte[] d, Segments visit) {
        int pos = 2;
        while (pos + 4 <= d.length) {
            if ((d[pos] & 0xff) != 0xff) return;
            int marker = d[pos + 1] & 0xff;
            if (marker == 0xff) { // fill byte
                pos++;
                continue;
            }
            if (marker == 0xd8 || marker == 0x01 || (marker >= 0xd0 && marker <= 0xd7)) { // no length
                pos += 2;
                continue;
            }
            if (marker == 0xda || marker == 0xd9) return; // start of scan / end of image
            int length = u16(d, pos + 2, false);
            if (length < 2 || pos + 2 + length > d.length) return;
            if (visit.segment(marker, pos + 4, length - 2)) return;
            pos += 2 + length;
        }
    }

    private static boolean isSof(int marker) {
        return marker >= 0xc0 && marker <= 0xcf && marker != 0xc4 && marker != 0xc8 && marker != 0xcc;
    }

    /** The number of colour components of a JPEG's frame (1 grey, 3 YCbCr / RGB, 4 CMYK / YCCK), or 0. */
    static int jpegComponents(byte[] d) {
        final int[] components = {0};
        jpegSegments(d, (marker, at, length) -> {
            if (isSof(marker) && length >= 6) {
                components[0] = d[at + 5] & 0xff;
                return true;
            }
            return false;
        });
        return components[0];
    }

    private static int jpegOrientation(byte[] d) {
        final int[] orientation = {1};
        jpegSegments(d, (marker, at, length) -> {
            if (marker == 0xe1 && length >= 6 && ascii(d, at, 4).equals("Exif") && d[at + 4] == 0 && d[at + 5] == 0) {
                orientation[0] = tiffOrientation(d, at, length);
                return true;
            }
            return false;
        });
        return orientation[0];
    }

    private static int webpOrientation(byte[] d) {
        int pos = 12;
        while (pos + 8 <= d.length) {
            String fourcc = ascii(d, pos, 4);
            long size = u32(d, pos + 4, true);
            if (size > d.length - pos - 8) return 1;
            if (fourcc.equals("EXIF")) return tiffOrientation(d, pos + 8, (int) size);
            pos += 8 + (int) size + (int) (size & 1);
        }
        return 1;
    }

    // ------------------------------------------------------------------ orientation
    /**
     * The image as a viewer shows it for an EXIF orientation (Pillow's ImageOps.exif_transpose):
     * 2 mirrored left-right, 3 rotated 180 degrees, 4 mirrored top-bottom, 5 transposed, 6 rotated
     * 90 degrees clockwise, 7 transversed, 8 rotated 90 degrees counter-clockwise; 5 to 8 swap width
     * and height. 0, 1 or anything else: the image itself.
     */
    public static Decoded orient(Decoded in, int orientation) {
        if (orientation < 2 || orientation > 8) return in;
        int w = in.width;
        int h = in.height;
        boolean swap = orientation >= 5;
        int ow = swap ? h : w;
        int oh = swap ? w : h;
        int[] out = new int[in.argb.length];
        for (int y = 0; y < oh; y++) {
            for (int x = 0; x < ow; x++) {
                int sx;
                int sy;
                switch (orientation) {
                    case 2: sx = w - 1 - x; sy = y; break;
                    case 3: sx = w - 1 - x; sy = h - 1 - y; break;
                    case 4: sx = x; sy = h - 1 - y; break;
                    case 5: sx = y; sy = x; break;
                    case 6: sx = y; sy = h - 1 - x; break;
                    case 7: sx = w - 1 - y; sy = h - 1 - x; break;
                    default: sx = w - 1 - y; sy = x; break; // 8
                }
                out[y * ow + x] = in.argb[sy * w + sx];
            }
        }
        return new Decoded(out, ow, oh);
    }
}
