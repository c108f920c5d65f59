package dev.mmedge.core;

/**
 * A bundle is missing, incomplete, tampered with or of an unknown schema version
 * (mmedge/errors.py BundleError). {@link #path()} and {@link #reason()} say which file and why,
 * when one file was refused.
 */
public class BundleException extends MMEdgeException {
    /** Why a bundle file was refused, when it was a problem with the file itself. */
    public enum Reason { MISSING, LINK, NOT_REGULAR, TOO_LARGE, UNREADABLE }

    private final String path;
    private final Reason reason;

    public BundleException(String message) {
        this(message, null, null, null);
    }

    public BundleException(String message, Throwable cause) {
        this(message, cause, null, null);
    }

    public BundleException(String message, Throwable cause, String path, Reason reason) {
        super(message, cause);
        this.path = path;
        this.reason = reason;
    }

    /** The bundle-relative path concerned, or null. */
    public String path() {
        return path;
    }

    /** What was wrong with that file, or null. */
    public Reason reason() {
        return reason;
    }
}
