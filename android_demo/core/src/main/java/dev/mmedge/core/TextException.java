package dev.mmedge.core;

/** An input text cannot be used: nothing left after splitting (mmedge/errors.py TextError). */
public class TextException extends MMEdgeException {
    public TextException(String message) {
        super(message);
    }
}
