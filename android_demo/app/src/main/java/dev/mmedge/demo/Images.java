package dev.mmedge.demo;

import android.graphics.Bitmap;
import android.graphics.BitmapFactory;
import android.media.ExifInterface;

import dev.mmedge.core.ImageException;
import dev.mmedge.core.ImageFiles;

import java.io.ByteArrayInputStream;
import java.io.IOException;

/**
 * Image files and Android bitmaps as the core's ARGB input, as docs/bundle-format.md ("Image")
 * says, so that the app gives the model what the Python and JavaScript runtimes give it:
 * <ul>
 *   <li>PNG: decoded by the core ({@link ImageFiles#decode}), not by BitmapFactory: the EXIF
 *       orientation of an eXIf chunk applied, grey, grey+alpha, palette (with tRNS), 1/2/4-bit and
 *       16-bit samples (the high byte) exactly as the spec says, whatever Skia does with them;</li>
 *   <li>JPEG, WebP and anything else BitmapFactory reads: a CMYK / YCCK JPEG is refused first
 *       ({@link ImageFiles#check}); the pixels come from BitmapFactory (ARGB_8888, not
 *       premultiplied); BitmapFactory ignores the EXIF orientation, so it is read (the core parses
 *       JPEG and WebP EXIF; ExifInterface for other formats, e.g. HEIF) and applied with
 *       {@link ImageFiles#orient}.</li>
 * </ul>
 * Not run on a device from this repository (no Android SDK in its CI): the core's part is tested
 * on the JVM against tests/vectors/golden/image-modes.json; the BitmapFactory / ExifInterface part
 * is not.
 */
final class Images {
    private Images() {
    }

    /** An ARGB image: what Bitmap.getPixels gives. */
    static final class Argb {
        final int[] pixels;
        final int width;
        final int height;

        Argb(int[] pixels, int width, int height) {
            this.pixels = pixels;
            this.width = width;
            this.height = height;
        }
    }

    /**
     * Decoding options for the model's input: ARGB_8888, not premultiplied (a premultiplied bitmap
     * has already lost the colour of semi-transparent pixels), no density scaling.
     */
    static BitmapFactory.Options decodeOptions() {
        BitmapFactory.Options o = new BitmapFactory.Options();
        o.inPreferredConfig = Bitmap.Config.ARGB_8888;
        o.inPremultiplied = false;
        o.inScaled = false;
        return o;
    }

    static Argb decode(byte[] encoded) {
        ImageFiles.check(encoded); // CMYK refused, before any decoder sees it
        if ("png".equals(ImageFiles.format(encoded))) {
            ImageFiles.Decoded d = ImageFiles.decode(encoded);
            return new Argb(d.argb, d.width, d.height);
        }
        Bitmap bitmap = BitmapFactory.decodeByteArray(encoded, 0, encoded.length, decodeOptions());
        if (bitmap == null) throw new ImageException("cannot decode this image (not a PNG, JPEG, WebP, ...)");
        Argb px = pixels(bitmap);
        int orientation = ImageFiles.exifOrientation(encoded);
        if (orientation == 0) orientation = platformOrientation(encoded);
        ImageFiles.Decoded oriented = ImageFiles.orient(new ImageFiles.Decoded(px.pixels, px.width, px.height), orientation);
        return new Argb(oriented.argb, oriented.width, oriented.height);
    }

    /** The EXIF orientation (1..8) of a format the core does not parse, from Android's ExifInterface; 1 when none. */
    private static int platformOrientation(byte[] encoded) {
        try {
            ExifInterface exif = new ExifInterface(new ByteArrayInputStream(encoded));
            int value = exif.getAttributeInt(ExifInterface.TAG_ORIENTATION, ExifInterface.ORIENTATION_NORMAL);
            return value >= 1 && value <= 8 ? value : 1;
        } catch (IOException | RuntimeException unreadable) {
            return 1; // no readable EXIF: as stored
        }
    }

    static Argb pixels(Bitmap bitmap) {
        Bitmap b = bitmap.getConfig() == Bitmap.Config.ARGB_8888 ? bitmap : bitmap.copy(Bitmap.Config.ARGB_8888, false);
        int w = b.getWidth();
        int h = b.getHeight();
        int[] px = new int[w * h];
        b.getPixels(px, 0, w, 0, 0, w, h);
        return new Argb(px, w, h);
    }
}
