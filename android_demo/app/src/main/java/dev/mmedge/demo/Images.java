package dev.mmedge.demo;

import android.graphics.Bitmap;
import android.graphics.BitmapFactory;

import dev.mmedge.core.ImageException;

/** Android bitmaps as the core's ARGB input. */
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
        Bitmap bitmap = BitmapFactory.decodeByteArray(encoded, 0, encoded.length, decodeOptions());
        if (bitmap == null) throw new ImageException("cannot decode this image (not a PNG, JPEG, WebP, ...)");
        return pixels(bitmap);
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
