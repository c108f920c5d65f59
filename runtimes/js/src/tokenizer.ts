/**
 * The word-level tokenizer (Hugging Face `tokenizers` WordLevel layout), as the spec's "Text"
 * section says: lowercase (full Unicode mapping, locale-independent), split into runs of word
 * characters or runs of characters that are neither word characters nor spaces, look each piece up
 * (unknown -> unk_id), truncate on the right to max_length, pad on the right with pad_id.
 */

import { BundleError, TextError, short } from "./errors.js";

export const PAD = "[PAD]";
export const UNK = "[UNK]";

/**
 * `\w+|[^\w\s]+` as Python 3's `re` reads it on str: a word character is general category L or N,
 * or `_`; a space is exactly the set below (not JavaScript's `\s`, which adds U+FEFF and differs on
 * U+180E / U+001C-U+001F / U+0085).
 */
const SPACES = "\\t\\n\\v\\f\\r\\x1c-\\x1f \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";
export const SPLIT_PATTERN = `[\\p{L}\\p{N}_]+|[^\\p{L}\\p{N}_${SPACES}]+`;

function splitRegex(): RegExp {
  return new RegExp(SPLIT_PATTERN, "gu");
}

export interface Encoding {
  /** int32 ids, length max_length: the token ids then pad_id. */
  inputIds: Int32Array;
  /** int32, 1 for each real token, 0 for padding. */
  textMask: Int32Array;
  /** The pieces the text was split into (before truncation). */
  tokens: string[];
  /** True when the text had more than max_length tokens and the tail was dropped. */
  truncated: boolean;
}

export class WordTokenizer {
  readonly vocab: ReadonlyMap<string, number>;

  constructor(vocab: Map<string, number> | Record<string, number>, readonly maxLength: number,
    readonly lowercase = true) {
    this.vocab = vocab instanceof Map ? new Map(vocab) : new Map(Object.entries(vocab));
  }

  /** A tokenizer from the bytes of a tokenizer.json (WordLevel); BundleError when it is not one. */
  static fromJSON(data: Uint8Array | string, lowercase = true): WordTokenizer {
    let parsed: unknown;
    try {
      const text = typeof data === "string" ? data : new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(data);
      if (jsonDepthExceeds(text, 32)) throw new Error("nested more than 32 levels deep");
      parsed = JSON.parse(text);
    } catch (exc) {
      throw new BundleError(`the bundle's tokenizer.json cannot be parsed as UTF-8 JSON (${short(String((exc as Error).message), 120)}); ` +
        "export the bundle again", { cause: exc });
    }
    const root = parsed as { model?: { type?: unknown; vocab?: unknown }; truncation?: { max_length?: unknown } };
    const model = isObject(root) ? root.model : undefined;
    if (!isObject(model) || model.type !== "WordLevel" || !isObject(model.vocab)) {
      throw new BundleError("the bundle's tokenizer.json is not a WordLevel tokenizer (model.type, model.vocab); " +
        "export the bundle again");
    }
    const truncation = root.truncation;
    const maxLength = isObject(truncation) ? truncation.max_length : undefined;
    if (typeof maxLength !== "number" || !Number.isInteger(maxLength) || maxLength < 1) {
      throw new BundleError("the bundle's tokenizer.json has no truncation.max_length; export the bundle again");
    }
    const vocab = new Map<string, number>();
    for (const [word, id] of Object.entries(model.vocab as Record<string, unknown>)) {
      vocab.set(word, id as number); // ids are checked against the manifest by checkTokenizer
    }
    return new WordTokenizer(vocab, maxLength, lowercase);
  }

  get padId(): number {
    return this.vocab.get(PAD)!;
  }

  get unkId(): number {
    return this.vocab.get(UNK)!;
  }

  /** The pieces of a text: lowercased, then split by the spec's regular expression. */
  tokenize(text: string): string[] {
    const source = this.lowercase ? text.toLowerCase() : text;
    return source.match(splitRegex()) ?? [];
  }

  /** Token ids and mask, both int32 of length max_length; TextError when nothing is left to ask. */
  encode(text: string): Encoding {
    if (typeof text !== "string") throw new TextError(`text must be a string, got ${text === null ? "null" : typeof text}`);
    const tokens = this.tokenize(text);
    if (tokens.length === 0) {
      throw new TextError("text is empty (no word or punctuation left after splitting); pass a question or " +
        "statement such as 'is there a red circle ?'");
    }
    const truncated = tokens.length > this.maxLength;
    const used = truncated ? tokens.slice(0, this.maxLength) : tokens;
    const inputIds = new Int32Array(this.maxLength).fill(this.padId);
    const textMask = new Int32Array(this.maxLength);
    const unk = this.unkId;
    used.forEach((piece, i) => {
      inputIds[i] = this.vocab.get(piece) ?? unk;
      textMask[i] = 1;
    });
    return { inputIds, textMask, tokens, truncated };
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * True when JSON text nests objects/arrays deeper than `limit` (strings skipped); run before
 * JSON.parse so that hostile input never reaches a deep parse.
 */
export function jsonDepthExceeds(text: string, limit: number): boolean {
  let depth = 0;
  const n = text.length;
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) {
      for (i++; i < n; i++) {
        const d = text.charCodeAt(i);
        if (d === 0x5c) i++;
        else if (d === 0x22) break;
      }
    } else if (c === 0x7b || c === 0x5b) {
      if (++depth > limit) return true;
    } else if (c === 0x7d || c === 0x5d) {
      depth--;
    }
  }
  return false;
}
