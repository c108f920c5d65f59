/**
 * Typed errors, mirroring the Python runtime (`mmedge/errors.py`). Every message says what is
 * wrong and what to do.
 */

/** Base class of every error the runtime raises on purpose. */
export class MMEdgeError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** Why a bundle file was refused, when it was a problem with the file itself. */
export type FileProblem = "missing" | "link" | "not-regular" | "too-large" | "unreadable";

/**
 * The reason codes of docs/bundle-format.md: every runtime (Python, JavaScript, Java) gives the
 * same code for the same refusal, so the negative golden vectors (tests/vectors/negative/) can
 * check them all. `bundle` is the default of a refusal the table does not name.
 */
export const REASON_CODES = [
  "bundle",
  "manifest-missing",
  "manifest-not-regular",
  "manifest-too-large",
  "json",
  "schema-version",
  "schema",
  "inconsistent",
  "path",
  "unlisted",
  "file-missing",
  "file-not-regular",
  "size-mismatch",
  "hash-mismatch",
  "tokenizer",
  "signature-missing",
  "signature-malformed",
  "signature-key",
  "signature-invalid",
  "rollback",
  "self-check",
  "unsupported",
] as const;

export type ReasonCode = (typeof REASON_CODES)[number];

export interface BundleErrorOptions {
  cause?: unknown;
  /** The bundle-relative path concerned, when one file is. */
  path?: string;
  /** What was wrong with that file, when the file itself was refused. */
  reason?: FileProblem;
  /** The reason code (default "bundle"). */
  code?: ReasonCode;
}

/** A bundle is missing, incomplete, tampered with or of an unknown schema version. */
export class BundleError extends MMEdgeError {
  /** The bundle-relative path concerned, when one file is. */
  readonly path?: string;
  /** What was wrong with that file, when the file itself was refused. */
  readonly reason?: FileProblem;
  /** Why the bundle was refused, one of REASON_CODES (stable across runtimes). */
  readonly code: ReasonCode;

  constructor(message: string, options?: BundleErrorOptions) {
    super(message, options);
    this.path = options?.path;
    this.reason = options?.reason;
    this.code = options?.code ?? "bundle";
  }
}

/** A bundle's signature is missing, malformed, or does not match the manifest and key. */
export class SignatureError extends BundleError {}

/** An argument, option or policy is invalid. `problems` lists each problem in one line. */
export class ConfigError extends MMEdgeError {
  readonly problems: string[];

  constructor(problems: string[] | string, source = "config") {
    const list = typeof problems === "string" ? [problems] : [...problems];
    super(`invalid ${source}:\n${list.map((p) => `  - ${p}`).join("\n")}`);
    this.problems = list;
  }
}

/** An input image cannot be used (wrong layout, too small, too large). */
export class ImageError extends MMEdgeError {}

/**
 * A query gave a number of images the bundle does not read (the Python runtime's ImageCountError): a
 * two-image bundle (NLVR2, `preprocessing.num_images` 2) takes an array of two, `[left, right]`; a
 * one-image bundle one image (or an array of one).
 */
export class ImageCountError extends ImageError {
  /** Images per query the bundle reads. */
  readonly expected: number;
  /** Images the query gave. */
  readonly got: number;

  constructor(expected: number, got: number, where = "the bundle") {
    const how = expected > 1 ? `an array of ${expected} images, e.g. predict([left, right], text)`
      : "one image ({width, height, data, channels?}), e.g. predict(image, text)";
    super(`${where} reads ${expected} image${expected > 1 ? "s" : ""} per query, got ${got}: pass ${how}`);
    this.expected = expected;
    this.got = got;
  }
}

/** An input text cannot be used (not a string, or empty after splitting). */
export class TextError extends MMEdgeError {}

/** A message part cut to `limit` characters. */
export function short(text: string, limit = 200): string {
  return text.length <= limit ? text : text.slice(0, limit - 3) + "...";
}

/** At most ten names, each cut to 80 characters, as the Python runtime quotes them. */
export function listing(names: string[], max = 10): string {
  const shown = names.slice(0, max).map((n) => short(String(n), 80)).join(", ");
  return names.length > max ? `${shown} (and ${names.length - max} more)` : shown;
}
