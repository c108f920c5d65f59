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

/** A bundle is missing, incomplete, tampered with or of an unknown schema version. */
export class BundleError extends MMEdgeError {
  /** The bundle-relative path concerned, when one file is. */
  readonly path?: string;
  /** What was wrong with that file, when the file itself was refused. */
  readonly reason?: FileProblem;

  constructor(message: string, options?: { cause?: unknown; path?: string; reason?: FileProblem }) {
    super(message, options);
    this.path = options?.path;
    this.reason = options?.reason;
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
