package dev.mmedge.core;

/** Base class of every error the runtime raises on purpose (mmedge/errors.py MMEdgeError). */
public class MMEdgeException extends RuntimeException {
    public MMEdgeException(String message) {
        super(message);
    }

    public MMEdgeException(String message, Throwable cause) {
        super(message, cause);
    }
}
