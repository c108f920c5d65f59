package dev.mmedge.core;

/**
 * A backend failed to open or run a stage (mmedge/errors.py BackendUnavailableError for a missing
 * backend; a stage that fails at run time is reported with its name).
 */
public class BackendException extends MMEdgeException {
    public BackendException(String message, Throwable cause) {
        super(message, cause);
    }
}
