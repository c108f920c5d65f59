package dev.mmedge.core;

/** An input image cannot be used: wrong layout, too small, too large (mmedge/errors.py ImageError). */
public class ImageException extends MMEdgeException {
    public ImageException(String message) {
        super(message);
    }
}
