package dev.mmedge.core;

/**
 * A bundle is missing, incomplete, tampered with or of an unknown schema version
 * (mmedge/errors.py BundleError). {@link #code()} is the refusal's stable reason code (the table of
 * docs/bundle-format.md, the same strings in every runtime: {@code hash-mismatch}, {@code unlisted},
 * {@code signature-invalid}, ...); {@link #path()} and {@link #reason()} say which file and why,
 * when one file was refused.
 */
public class BundleException extends MMEdgeException {
    /** Why a bundle file was refused, when it was a problem with the file itself. */
    public enum Reason { MISSING, LINK, NOT_REGULAR, TOO_LARGE, UNREADABLE }

    // The reason codes (docs/bundle-format.md, "Refusals"); code() is one of these.
    /** A refusal without a more precise code (not used by the loader). */
    public static final String BUNDLE = "bundle";
    public static final String MANIFEST_MISSING = "manifest-missing";
    public static final String MANIFEST_NOT_REGULAR = "manifest-not-regular";
    public static final String MANIFEST_TOO_LARGE = "manifest-too-large";
    public static final String JSON = "json";
    public static final String SCHEMA_VERSION = "schema-version";
    public static final String SCHEMA = "schema";
    public static final String INCONSISTENT = "inconsistent";
    public static final String PATH = "path";
    public static final String UNLISTED = "unlisted";
    public static final String FILE_MISSING = "file-missing";
    public static final String FILE_NOT_REGULAR = "file-not-regular";
    public static final String SIZE_MISMATCH = "size-mismatch";
    public static final String HASH_MISMATCH = "hash-mismatch";
    public static final String TOKENIZER = "tokenizer";
    public static final String SIGNATURE_MISSING = "signature-missing";
    public static final String SIGNATURE_MALFORMED = "signature-malformed";
    public static final String SIGNATURE_KEY = "signature-key";
    public static final String SIGNATURE_INVALID = "signature-invalid";
    public static final String ROLLBACK = "rollback";
    public static final String SELF_CHECK = "self-check";
    public static final String UNSUPPORTED = "unsupported";

    private final String code;
    private final String path;
    private final Reason reason;

    public BundleException(String code, String message) {
        this(code, message, null, null, null);
    }

    public BundleException(String code, String message, Throwable cause) {
        this(code, message, cause, null, null);
    }

    public BundleException(String code, String message, Throwable cause, String path, Reason reason) {
        super(message, cause);
        this.code = code == null ? BUNDLE : code;
        this.path = path;
        this.reason = reason;
    }

    /** A refusal of code {@link #BUNDLE} (kept for callers that predate the codes). */
    public BundleException(String message) {
        this(BUNDLE, message, null, null, null);
    }

    /** A refusal of code {@link #BUNDLE} with a cause (kept for callers that predate the codes). */
    public BundleException(String message, Throwable cause) {
        this(BUNDLE, message, cause, null, null);
    }

    /** The same refusal with another code (the message, cause, path and reason kept). */
    public BundleException withCode(String newCode) {
        BundleException out = new BundleException(newCode, getMessage(), getCause(), path, reason);
        out.setStackTrace(getStackTrace());
        return out;
    }

    /** The stable reason code ("hash-mismatch", "unlisted", ...; "bundle" when none applies). */
    public String code() {
        return code;
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
