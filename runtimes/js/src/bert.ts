/**
 * BERT's WordPiece tokenizer (`tokenizer.kind` "bert-wordpiece", docs/bundle-format.md, "Adapted
 * encoders"): what Hugging Face `tokenizers` runs for `transformers.BertTokenizer`
 * (BertNormalizer + BertPreTokenizer + WordPiece + the "[CLS] $text [SEP]" template), as the Python
 * runtime does it (mmedge/adapt/text.py), in this order:
 *
 *  1. special tokens (the manifest's `special_tokens`, the file's special added tokens) are found in
 *     the raw text first, leftmost, longest first, and kept whole;
 *  2. each other segment is normalised, code point by code point:
 *     - clean_text: U+0000, U+FFFD and every code point of category Cc, Cf, Co or Cs (except tab,
 *       LF, CR) removed; then every white-space code point (WHITE_SPACE) becomes a space;
 *     - handle_chinese_chars: a space on either side of each CJK ideograph (CJK_RANGES);
 *     - strip_accents: NFD, then every code point of category Mn removed;
 *     - lowercase: each code point lowercased on its own (full mapping, no final-sigma rule);
 *  3. split on white space (dropped) and punctuation (ASCII 33-47, 58-64, 91-96, 123-126, or
 *     category P*: each its own word);
 *  4. WordPiece on each word (WordPieceTokenizer.split: greedy longest match, "##" continuations,
 *     [UNK] for a word of more than max_input_chars_per_word code points or with no split);
 *  5. [CLS] + the first max_length - 2 pieces + [SEP], [PAD] up to max_length; the mask is 1 on
 *     [CLS], the pieces and [SEP]. An empty text gives [CLS] [SEP].
 *
 * Categories and case mappings come from the JavaScript engine's Unicode tables (`\p{..}`,
 * `normalize`, `toLowerCase`); they differ from the reference's (Python 3.11, Unicode 14) only on
 * code points assigned or changed since, which the golden vectors avoid.
 */

import { BundleError } from "./errors.js";
import {
  checkText, PAD, parseTokenizerJSON, UNK, WordPieceTokenizer, type Encoding, type TokenizerKind,
} from "./tokenizer.js";

export const BERT_WORDPIECE = "bert-wordpiece";
export const CLS = "[CLS]";
export const SEP = "[SEP]";
/** The only template this runtime fills in (the manifest's `tokenizer.template`). */
export const BERT_TEMPLATE = [CLS, "$text", SEP] as const;

/** Code points with the Unicode White_Space property (Rust's char::is_whitespace, Python's WHITE_SPACE). */
const WHITE_SPACE = "\\t\\n\\v\\f\\r \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";
const WHITE_SPACE_RE = new RegExp(`[${WHITE_SPACE}]`, "u");
const WHITE_SPACE_ALL = new RegExp(`[${WHITE_SPACE}]`, "gu");
/** What clean_text removes: NUL, U+FFFD, and categories Cc, Cf, Co, Cs except tab, LF and CR (Cn stays). */
const CONTROL_ALL = /[\0\ufffd]|(?![\t\n\r])[\p{Cc}\p{Cf}\p{Co}\p{Cs}]/gu;
/** The CJK ideograph ranges of `tokenizers`' is_chinese_char (U+2B920, not U+2B820, as it has them). */
export const CJK_RANGES: ReadonlyArray<readonly [number, number]> = [
  [0x4e00, 0x9fff], [0x3400, 0x4dbf], [0x20000, 0x2a6df], [0x2a700, 0x2b73f], [0x2b740, 0x2b81f],
  [0x2b920, 0x2ceaf], [0xf900, 0xfaff], [0x2f800, 0x2fa1f],
];
const hex = (cp: number) => `\\u{${cp.toString(16)}}`;
const CJK_ALL = new RegExp(`[${CJK_RANGES.map(([lo, hi]) => `${hex(lo)}-${hex(hi)}`).join("")}]`, "gu");
const MARK_ALL = /\p{Mn}/gu;
const ONE_CODE_POINT = /[^]/gu;
/** ASCII punctuation (33-47, 58-64, 91-96, 123-126) or Unicode category P*. */
const PUNCTUATION_RE = /[\x21-\x2f\x3a-\x40\x5b-\x60\x7b-\x7e]|\p{P}/u;

/** The normaliser's switches (BertNormalizer; strip_accents already resolved: null follows lowercase). */
export interface BertNormalizerOptions {
  lowercase: boolean;
  stripAccents: boolean;
  cleanText: boolean;
  handleChineseChars: boolean;
}

/** BertNormalizer over one segment of text (steps 2 above). */
export function bertNormalize(text: string, o: BertNormalizerOptions): string {
  let s = text;
  if (o.cleanText) s = s.replace(CONTROL_ALL, "").replace(WHITE_SPACE_ALL, " ");
  if (o.handleChineseChars) s = s.replace(CJK_ALL, " $& ");
  if (o.stripAccents) s = s.normalize("NFD").replace(MARK_ALL, "");
  if (o.lowercase) s = s.replace(ONE_CODE_POINT, (c) => c.toLowerCase());
  return s;
}

/** BertPreTokenizer: words split at white space (dropped) and punctuation (a word of its own). */
export function bertPreTokenize(text: string): string[] {
  const words: string[] = [];
  let current = "";
  for (const c of text) {
    if (WHITE_SPACE_RE.test(c)) {
      if (current) words.push(current);
      current = "";
    } else if (PUNCTUATION_RE.test(c)) {
      if (current) words.push(current);
      current = "";
      words.push(c);
    } else {
      current += c;
    }
  }
  if (current) words.push(current);
  return words;
}

/** The raw text cut at special tokens: [segment, isSpecial], leftmost match, the longest token first. */
export function specialSegments(text: string, specials: readonly string[]): Array<[string, boolean]> {
  const points = (s: string) => [...s].length;
  const sorted = specials.map((s, i) => [s, points(s), i] as const)
    .sort((a, b) => b[1] - a[1] || a[2] - b[2]).map(([s]) => s); // longest (in code points) first, stable
  const out: Array<[string, boolean]> = [];
  let start = 0;
  let i = 0;
  while (i < text.length && sorted.length > 0) {
    const hit = sorted.find((s) => text.startsWith(s, i));
    if (hit === undefined) {
      i++;
      continue;
    }
    if (i > start) out.push([text.slice(start, i), false]);
    out.push([hit, true]);
    i = start = i + hit.length;
  }
  if (start < text.length) out.push([text.slice(start), false]);
  return out;
}

/** What a bundle's tokenizer.json gives, to compare with the manifest's `tokenizer` (Python's manifest_fields). */
export interface BertFields {
  kind: typeof BERT_WORDPIECE;
  max_length: number;
  lowercase: boolean;
  strip_accents: boolean;
  clean_text: boolean;
  handle_chinese_chars: boolean;
  continuing_subword_prefix: string;
  max_input_chars_per_word: number;
  template: string[];
  special_tokens: string[];
  cls_id: number;
  sep_id: number;
  pad_id: number;
  unk_id: number;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** BERT WordPiece with the "[CLS] $text [SEP]" template, padded to maxLength. */
export class BertWordPieceTokenizer extends WordPieceTokenizer {
  readonly normalizer: BertNormalizerOptions;
  readonly specialTokens: readonly string[];

  constructor(vocab: Map<string, number> | Record<string, number>, maxLength: number, normalizer: BertNormalizerOptions,
    specialTokens: readonly string[] = [], continuingSubwordPrefix = "##", maxInputCharsPerWord = 100) {
    super(vocab, maxLength, continuingSubwordPrefix, maxInputCharsPerWord, normalizer.lowercase);
    const missing = [CLS, SEP, PAD, UNK].filter((t) => !this.vocab.has(t));
    if (missing.length > 0) throw new BundleError(`the WordPiece vocabulary lacks ${missing.join(", ")}`);
    if (!Number.isInteger(maxLength) || maxLength < 2) {
      throw new BundleError(`max_length ${maxLength} leaves no room for [CLS] and [SEP]`);
    }
    this.normalizer = { ...normalizer };
    this.specialTokens = [...specialTokens];
  }

  override get kind(): TokenizerKind {
    return BERT_WORDPIECE;
  }

  get clsId(): number {
    return this.vocab.get(CLS)!;
  }

  get sepId(): number {
    return this.vocab.get(SEP)!;
  }

  /**
   * A BERT tokenizer from the bytes of a tokenizer.json (what `BertTokenizer.save_pretrained`
   * writes: a WordPiece model, BertNormalizer, BertPreTokenizer) and the manifest's max_length;
   * BundleError otherwise. The file's settings are read as the Python runtime reads them (absent:
   * BertNormalizer's defaults); `manifestFields` gives them for the comparison with the manifest.
   */
  static fromBertJSON(data: Uint8Array | string, maxLength: number): BertWordPieceTokenizer {
    return BertWordPieceTokenizer.fromBertParsed(parseTokenizerJSON(data), maxLength);
  }

  /**
   * A BERT tokenizer from a tokenizer.json already parsed (the bundle loader's strict parse: the
   * file is parsed once); the same checks as fromBertJSON after its parse.
   */
  static fromBertParsed(root: unknown, maxLength: number): BertWordPieceTokenizer {
    const model = isObject(root) ? root.model : undefined;
    const norm = isObject(root) ? root.normalizer ?? {} : undefined;
    const pre = isObject(root) && isObject(root.pre_tokenizer) ? root.pre_tokenizer.type : undefined;
    if (!isObject(model) || model.type !== "WordPiece" || !isObject(norm) || norm.type !== "BertNormalizer" ||
      pre !== "BertPreTokenizer" || !isObject(model.vocab)) {
      throw new BundleError("the bundle's tokenizer.json is not a BERT WordPiece tokenizer (a WordPiece model with a " +
        "vocab, BertNormalizer, BertPreTokenizer); export the bundle again");
    }
    const problems: string[] = [];
    // as Python reads them: absent -> BertNormalizer's default, null -> false (strip_accents: null follows lowercase)
    const flag = (name: string, fallback: boolean): boolean => {
      const v = norm[name];
      if (v === undefined) return fallback;
      if (v !== null && typeof v !== "boolean") problems.push(`normalizer.${name} must be true, false or null`);
      return v === true;
    };
    const lowercase = flag("lowercase", true);
    const stripAccents = norm.strip_accents === undefined || norm.strip_accents === null ? lowercase
      : flag("strip_accents", lowercase);
    const cleanText = flag("clean_text", true);
    const handleChineseChars = flag("handle_chinese_chars", true);
    const prefix = model.continuing_subword_prefix ?? "##";
    if (typeof prefix !== "string" || prefix.length === 0) problems.push("model.continuing_subword_prefix must be a non-empty string");
    const longest = model.max_input_chars_per_word ?? 100;
    if (typeof longest !== "number" || !Number.isSafeInteger(longest) || longest < 1) {
      problems.push("model.max_input_chars_per_word must be a positive integer");
    }
    if ((model.unk_token ?? UNK) !== UNK) problems.push(`model.unk_token must be ${JSON.stringify(UNK)}`);
    const vocab = new Map<string, number>();
    for (const [word, id] of Object.entries(model.vocab as Record<string, unknown>)) {
      if (typeof id !== "number" || !Number.isSafeInteger(id) || id < 0) {
        problems.push("model.vocab ids must be non-negative integers");
        break;
      }
      vocab.set(word, id);
    }
    const added = isObject(root) ? (root as Record<string, unknown>).added_tokens ?? [] : [];
    const specials: string[] = [];
    if (!Array.isArray(added)) problems.push("added_tokens must be a list");
    else {
      for (const t of added) {
        if (!isObject(t)) continue;
        if (t.special === true) {
          if (typeof t.content === "string" && t.content.length > 0) specials.push(t.content);
          else problems.push("a special added token has no content");
        }
      }
    }
    if (problems.length > 0) {
      throw new BundleError(`the bundle's tokenizer.json is not a valid BERT tokenizer: ${problems.join("; ")}; ` +
        "export the bundle again");
    }
    return new BertWordPieceTokenizer(vocab, maxLength, { lowercase, stripAccents, cleanText, handleChineseChars },
      specials, prefix as string, longest as number);
  }

  /** What a bundle must state to reproduce this tokenizer (the manifest's `tokenizer`, less `file`). */
  manifestFields(): BertFields {
    const n = this.normalizer;
    return {
      kind: BERT_WORDPIECE, max_length: this.maxLength, lowercase: n.lowercase, strip_accents: n.stripAccents,
      clean_text: n.cleanText, handle_chinese_chars: n.handleChineseChars,
      continuing_subword_prefix: this.continuingSubwordPrefix, max_input_chars_per_word: this.maxInputCharsPerWord,
      template: [...BERT_TEMPLATE], special_tokens: [...this.specialTokens], cls_id: this.clsId, sep_id: this.sepId,
      pad_id: this.padId, unk_id: this.unkId,
    };
  }

  /** Steps 2 and 3 on one segment: its words. */
  words(segment: string): string[] {
    return bertPreTokenize(bertNormalize(segment, this.normalizer));
  }

  /**
   * The WordPiece pieces of a text (no [CLS] / [SEP]); with `limit`, only the first `limit`
   * (the splitting stops there). TextError for a text that is not a string or has more than
   * MAX_TEXT_CHARS code points.
   */
  override tokenize(text: string, limit = Infinity): string[] {
    checkText(text);
    const out: string[] = [];
    for (const [segment, special] of specialSegments(text, this.specialTokens)) {
      if (special) {
        out.push(segment);
        continue;
      }
      for (const word of this.words(segment)) {
        out.push(...this.split(word));
        if (out.length >= limit) return out.slice(0, limit);
      }
    }
    return out.length > limit ? out.slice(0, limit) : out;
  }

  /** [CLS] pieces [SEP] [PAD]... and the mask, int32 of length max_length; an empty text is [CLS] [SEP]. */
  override encode(text: string): Encoding {
    const room = this.maxLength - 2;
    const pieces = this.tokenize(text, room + 1);
    const truncated = pieces.length > room;
    const used = truncated ? pieces.slice(0, room) : pieces;
    const inputIds = new Int32Array(this.maxLength).fill(this.padId);
    const textMask = new Int32Array(this.maxLength);
    const unk = this.unkId;
    [CLS, ...used, SEP].forEach((token, i) => {
      inputIds[i] = this.vocab.get(token) ?? unk;
      textMask[i] = 1;
    });
    if (!truncated) return { inputIds, textMask, tokens: pieces, truncated };
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
