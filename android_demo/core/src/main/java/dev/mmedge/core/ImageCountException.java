package dev.mmedge.core;

/**
 * A query gave a number of images the bundle does not read (mmedge/errors.py ImageCountError): a
 * two-image bundle (an adapted NLVR2 model, preprocessing.num_images 2) takes a list of two, left
 * then right; a one-image bundle one image (or a list of one).
 */
public class ImageCountException extends ImageException {
    /** Images per query the bundle reads. */
    public final int expected;
    /** Images the query gave. */
    public final int got;

    public ImageCountException(int expected, int got, String where) {
        super(where + " reads " + expected + " image" + (expected > 1 ? "s" : "") + " per query, got " + got + ": pass "
                + (expected > 1 ? "a list of " + expected + " images, e.g. predict(Arrays.asList(left, right), text, null, null)"
                : "one image, e.g. predict(argb, width, height, text, null, null)"));
        this.expected = expected;
        this.got = got;
    }
}
