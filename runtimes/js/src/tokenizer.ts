/**
 * The tokenizers of the spec's "Text" section (Hugging Face `tokenizers` layout): lowercase (full
 * Unicode mapping, locale-independent), split into runs of word characters or runs of characters
 * that are neither word characters nor spaces, then
 *   - WordLevel (`kind` "word", class WordTokenizer): look each piece up (unknown -> unk_id);
 *   - WordPiece (`kind` "wordpiece", class WordPieceTokenizer): split each piece greedily into the
 *     longest vocabulary entries from its start, later ones written with the continuing-subword
 *     prefix ("##"); a piece with no such split, or longer than max_input_chars_per_word code
 *     points, becomes one [UNK];
 * then truncate on the right to max_length and pad on the right with pad_id.
 *
 * A text of more than MAX_TEXT_CHARS (65,536) code points is refused with TextError, as the Python
 * and Java runtimes refuse it; `encode` splits only until it has max_length + 1 tokens (one more
 * than fits says the text is truncated), so its work is bounded by the model, not by the text.
 */

import { BundleError, ConfigError, TextError, short } from "./errors.js";

export const PAD = "[PAD]";
export const UNK = "[UNK]";

/** The longest text a tokenizer takes, in Unicode code points (Python's len; a lone surrogate is one). */
export const MAX_TEXT_CHARS = 65_536;

/** `text` if it is a string of at most MAX_TEXT_CHARS code points; TextError otherwise. */
export function checkText(text: unknown): string {
  if (typeof text !== "string") throw new TextError(`text must be a string, got ${text === null ? "null" : typeof text}`);
  // a string of n UTF-16 units holds between n / 2 and n code points: count only when it matters
  if (text.length > MAX_TEXT_CHARS) {
    const n = codePointCount(text);
    if (n > MAX_TEXT_CHARS) {
      throw new TextError(`text has ${grouped(n)} characters, more than the ${grouped(MAX_TEXT_CHARS)} a tokenizer ` +
        "takes; pass a shorter text (the model reads only its first tokens)");
    }
  }
  return text;
}

/** 65536 -> "65,536", without depending on the platform's locale data. */
function grouped(n: number): string {
  return String(n).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
}

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
  /**
   * The pieces the text was split into (before truncation). When the text was truncated, encode
   * stopped splitting after max_length + 1 of them: the whole list is made on first access.
   */
  readonly tokens: string[];
  /** True when the text had more than max_length tokens and the tail was dropped. */
  truncated: boolean;
}


/** The bytes of a tokenizer.json parsed: UTF-8, nested at most 32 levels; BundleError otherwise. */
export function parseTokenizerJSON(data: Uint8Array | string): unknown {
  try {
    const text = typeof data === "string" ? data : new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(data);
    if (jsonDepthExceeds(text, 32)) throw new Error("nested more than 32 levels deep");
    return JSON.parse(text);
  } catch (exc) {
    throw new BundleError(`the bundle's tokenizer.json cannot be parsed as UTF-8 JSON (${short(String((exc as Error).message), 120)}); ` +
      "export the bundle again", { cause: exc });
  }
}

/**
 * The manifest's `tokenizer.kind`: the tokenizer.json model type (WordLevel or WordPiece), or BERT's
 * whole pipeline ("bert-wordpiece": bert.ts).
 */
export type TokenizerKind = "word" | "wordpiece" | "bert-wordpiece";

export class WordTokenizer {
  readonly vocab: ReadonlyMap<string, number>;
  /** The manifest's `tokenizer.kind` this tokenizer is ("word": WordLevel model). */
  get kind(): TokenizerKind {
    return "word";
  }

  constructor(vocab: Map<string, number> | Record<string, number>, readonly maxLength: number,
    readonly lowercase = true) {
    this.vocab = vocab instanceof Map ? new Map(vocab) : new Map(Object.entries(vocab));
  }

  /**
   * A tokenizer from the bytes of a tokenizer.json: a WordTokenizer for a WordLevel model, a
   * WordPieceTokenizer for a WordPiece model; BundleError when it is neither or a field is invalid.
   */
  static fromJSON(data: Uint8Array | string, lowercase = true): WordTokenizer {
    return WordTokenizer.fromParsed(parseTokenizerJSON(data), lowercase);
  }

  /**
   * A tokenizer from a tokenizer.json already parsed (the bundle loader's strict parse: the file is
   * parsed once); the same checks as fromJSON after its parse.
   */
  static fromParsed(parsed: unknown, lowercase = true): WordTokenizer {
    const root = parsed as { model?: Record<string, unknown>; truncation?: { max_length?: unknown } };
    const model = isObject(root) ? root.model : undefined;
    if (!isObject(model) || (model.type !== "WordLevel" && model.type !== "WordPiece") || !isObject(model.vocab)) {
      throw new BundleError("the bundle's tokenizer.json is not a WordLevel or WordPiece tokenizer (model.type, model.vocab); " +
        "export the bundle again");
    }
    const truncation = root.truncation;
    const maxLength = isObject(truncation) ? truncation.max_length : undefined;
    if (typeof maxLength !== "number" || !Number.isInteger(maxLength) || maxLength < 1) {
      throw new BundleError("the bundle's tokenizer.json has no truncation.max_length; export the bundle again");
    }
    const vocab = new Map<string, number>();
    for (const [word, id] of Object.entries(model.vocab as Record<string, unknown>)) {
      vocab.set(word, id as number); // WordLevel ids are checked against the manifest by checkTokenizer
    }
    if (model.type === "WordLevel") return new WordTokenizer(vocab, maxLength, lowercase);

    const problems: string[] = [];
    const prefix = model.continuing_subword_prefix;
    if (typeof prefix !== "string" || prefix.length === 0) {
      problems.push("model.continuing_subword_prefix must be a non-empty string");
    }
    const longest = model.max_input_chars_per_word;
    if (typeof longest !== "number" || !Number.isSafeInteger(longest) || longest < 1) {
      problems.push("model.max_input_chars_per_word must be a positive integer");
    }
    if (model.unk_token !== undefined && model.unk_token !== UNK) {
      problems.push(`model.unk_token must be ${JSON.stringify(UNK)}`);
    }
    if (![...vocab.values()].every((i) => typeof i === "number" && Number.isSafeInteger(i) && i >= 0)) {
      problems.push("model.vocab ids must be non-negative integers");
    }
    if (problems.length > 0) {
      throw new BundleError(`the bundle's tokenizer.json is not a valid WordPiece tokenizer: ${problems.join("; ")}; ` +
        "export the bundle again");
    }
    return new WordPieceTokenizer(vocab, maxLength, prefix as string, longest as number, lowercase);
  }

  get padId(): number {
    return this.vocab.get(PAD)!;
  }

  get unkId(): number {
    return this.vocab.get(UNK)!;
  }

  /**
   * The tokens of a text: lowercased, then split by the spec's regular expression (and, for
   * WordPiece, each piece into subwords). These are what truncation and padding count. With
   * `limit`, only the first `limit` tokens: the splitting stops there. TextError for a text that
   * is not a string or has more than MAX_TEXT_CHARS code points.
   */
  tokenize(text: string, limit = Infinity): string[] {
    checkText(text);
    const source = this.lowercase ? text.toLowerCase() : text;
    const out: string[] = [];
    const re = splitRegex();
    let m: RegExpExecArray | null;
    while (out.length < limit && (m = re.exec(source)) !== null) {
      for (const token of this.pieceTokens(m[0])) out.push(token);
    }
    return out.length > limit ? out.slice(0, limit) : out;
  }

  /** The tokens of one word/punctuation piece: the piece itself (WordPiece splits it further). */
  protected pieceTokens(piece: string): string[] {
    return [piece];
  }

  /** Token ids and mask, both int32 of length max_length; TextError when nothing is left to ask. */
  encode(text: string): Encoding {
    const tokens = this.tokenize(text, this.maxLength + 1);
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
    if (!truncated) return { inputIds, textMask, tokens, truncated };
    let all: string[] | undefined;
    const whole = () => (all ??= this.tokenize(text));
    return {
      inputIds, textMask, truncated,
      get tokens() {
        return whole();
      },
    };
  }
}

/**
 * The WordPiece tokenizer (Hugging Face `tokenizers` WordPiece model) over the same lowercased
 * word/punctuation pieces; greedy longest-match-first, lengths counted in code points.
 */
export class WordPieceTokenizer extends WordTokenizer {
  /** The longest vocabulary entry, in code points: no piece longer than this can match. */
  private readonly longestEntry: number;

  constructor(vocab: Map<string, number> | Record<string, number>, maxLength: number,
    readonly continuingSubwordPrefix = "##", readonly maxInputCharsPerWord = 100, lowercase = true) {
    super(vocab, maxLength, lowercase);
    if (typeof continuingSubwordPrefix !== "string" || continuingSubwordPrefix.length === 0) {
      throw new ConfigError("continuingSubwordPrefix must be a non-empty string", "WordPieceTokenizer arguments");
    }
    if (!Number.isSafeInteger(maxInputCharsPerWord) || maxInputCharsPerWord < 1) {
      throw new ConfigError("maxInputCharsPerWord must be a positive integer", "WordPieceTokenizer arguments");
    }
    let longest = 0;
    for (const entry of this.vocab.keys()) longest = Math.max(longest, codePointCount(entry));
    this.longestEntry = longest;
  }

  override get kind(): TokenizerKind {
    return "wordpiece";
  }

  protected override pieceTokens(piece: string): string[] {
    return this.split(piece);
  }

  /**
   * Greedy longest-match-first from the start; one [UNK] for the whole word when a part has no
   * match. Each position tries at most longestEntry slices: O(word length x longest entry).
   */
  split(word: string): string[] {
    if (word.length > 2 * this.maxInputCharsPerWord) return [UNK]; // more code points than allowed, uncounted
    const chars = Array.from(word); // code points, as Python and HF count characters
    if (chars.length > this.maxInputCharsPerWord) return [UNK];
    const out: string[] = [];
    let start = 0;
    while (start < chars.length) {
      // an entry has at most longestEntry code points (prefix included), so longer candidates cannot match
      let end = Math.min(chars.length, start + this.longestEntry);
      let found: string | undefined;
      for (; end > start; end--) {
        const piece = chars.slice(start, end).join("");
        const sub = start === 0 ? piece : this.continuingSubwordPrefix + piece;
        if (this.vocab.has(sub)) {
          found = sub;
          break;
        }
      }
      if (found === undefined) return [UNK];
      out.push(found);
      start = end;
    }
    return out;
  }
}

function codePointCount(text: string): number {
  let n = 0;
  for (const _ of text) n++;
  return n;
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
