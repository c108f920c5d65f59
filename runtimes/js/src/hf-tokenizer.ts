/**
 * A generative VLM bundle's tokenizer (`tokenizer.kind` "hf-tokenizers": a Hugging Face `tokenizers`
 * tokenizer.json), used the way the Python runtime uses `tokenizers` (mmedge/runtime/vlm_engine.py):
 *
 *   encode(text)  = Tokenizer.encode(text, add_special_tokens=False).ids
 *   decode(ids)   = Tokenizer.decode(ids, skip_special_tokens=True).strip()   (Python's str.strip)
 *
 * The subset of `tokenizers` that mmedge's bundles carry, implemented here after its Rust source:
 *
 *  - added tokens (special or not), found first in the raw text (those with `normalized` false) and
 *    then in the normalised text (those with `normalized` true, matched normalised), leftmost-longest;
 *  - normalisers `Lowercase` (each character's own lowercase mapping, as Rust's char::to_lowercase:
 *    no final-sigma context), `NFC`, `NFD`, `NFKC`, `NFKD` and a `Sequence` of them;
 *  - pre-tokenizers `BertPreTokenizer` (split on white space, which is dropped, and around each
 *    punctuation character), `Digits` (each digit alone, or runs of digits), `ByteLevel` (GPT-2's
 *    split, then each piece's UTF-8 bytes as GPT-2's byte alphabet) and a `Sequence` of them;
 *  - models `WordLevel` (the vocabulary, else the unknown token) and `BPE` (merges by rank, the
 *    leftmost pair first on a tie; no dropout, byte fallback, prefix or suffix);
 *  - decoders none (tokens joined by spaces) and `ByteLevel` (bytes back, invalid UTF-8 as U+FFFD).
 *
 * That covers the tiny teachers' tokenizers (WordLevel, Lowercase, BertPreTokenizer) and the layout
 * of SmolVLM's (byte-level BPE with digits split); tests/vectors/vlm/tokenizer.json checks both against
 * Python `tokenizers` (the BPE one trained here: SmolVLM's own file cannot be downloaded here). A tokenizer.json with anything else is refused at load as not implemented (code
 * `unsupported`: the Python runtime reads it, this one might not encode it the same way); a file
 * that is not a tokenizer is code `tokenizer`.
 */

import { BundleError, short } from "./errors.js";

/** The components of tokenizer.json this module implements. */
export const HF_SUPPORTED = {
  model: ["WordLevel", "BPE"],
  normalizer: ["Lowercase", "NFC", "NFD", "NFKC", "NFKD", "Sequence"],
  pre_tokenizer: ["BertPreTokenizer", "ByteLevel", "Digits", "Sequence"],
  decoder: ["ByteLevel"],
} as const;

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v);

/** Unicode White_Space (Rust's char::is_whitespace; Python's str.isspace() adds U+001C..U+001F). */
const WHITE = "\\t\\n\\v\\f\\r \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";
const PY_STRIP = new RegExp(`^[${WHITE}\\x1c-\\x1f]+|[${WHITE}\\x1c-\\x1f]+$`, "gu");
const IS_WHITE = new RegExp(`[${WHITE}]`, "u");
/** BERT's punctuation: ASCII punctuation or Unicode category P. */
const IS_BERT_PUNCT = /[!-/:-@[-`{-~]|\p{P}/u;
const IS_DIGIT = /\p{N}/u;
/** GPT-2's pre-tokenization pattern (tokenizers' ByteLevel, use_regex), \s as White_Space. */
const GPT2_SPLIT = new RegExp(`'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^${WHITE}\\p{L}\\p{N}]+|[${WHITE}]+(?![^${WHITE}])|[${WHITE}]+`, "gu");

/** Python's `str.strip()` (JavaScript's trim() removes U+FEFF and keeps U+001C..U+001F, U+0085). */
export function pyStrip(text: string): string {
  return text.replace(PY_STRIP, "");
}

/** GPT-2's byte -> character table (bytes_to_unicode) and its inverse. */
const BYTE_CHAR: string[] = [];
const CHAR_BYTE = new Map<string, number>();
{
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    const visible = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    const ch = String.fromCodePoint(visible ? b : 256 + extra++);
    BYTE_CHAR.push(ch);
    CHAR_BYTE.set(ch, b);
  }
}

/** The components of a tokenizer.json this runtime does not implement (empty when it reads them all). */
export function unsupportedParts(parsed: Json): string[] {
  const out: string[] = [];
  const check = (part: keyof typeof HF_SUPPORTED, node: unknown, where: string): void => {
    if (node === null || node === undefined) return;
    const type = isObject(node) ? node.type : undefined;
    if (!(HF_SUPPORTED[part] as readonly unknown[]).includes(type)) {
      out.push(`${where} ${short(JSON.stringify(type) ?? String(type), 40)}`);
    } else if (type === "Sequence") {
      const children = (node as Json)[part === "normalizer" ? "normalizers" : "pretokenizers"];
      if (!Array.isArray(children)) out.push(`${where} Sequence without its list`);
      else children.forEach((c, i) => check(part, c, `${where}[${i}]`));
    }
  };
  const model = parsed.model;
  if (!isObject(model) || !(HF_SUPPORTED.model as readonly unknown[]).includes(model.type)) {
    out.push(`model ${short(JSON.stringify(isObject(model) ? model.type : model) ?? "none", 40)}`);
  } else if (model.type === "BPE") {
    if (model.dropout !== null && model.dropout !== undefined) out.push("BPE dropout (random merges)");
    if (model.byte_fallback === true) out.push("BPE byte_fallback");
    if (model.fuse_unk === true) out.push("BPE fuse_unk");
    for (const key of ["continuing_subword_prefix", "end_of_word_suffix"]) {
      if (typeof model[key] === "string" && (model[key] as string).length > 0) out.push(`BPE ${key}`);
    }
  }
  check("normalizer", parsed.normalizer, "normalizer");
  check("pre_tokenizer", parsed.pre_tokenizer, "pre_tokenizer");
  check("decoder", parsed.decoder, "decoder");
  const added = Array.isArray(parsed.added_tokens) ? parsed.added_tokens : [];
  if (added.some((t) => isObject(t) && (t.single_word === true || t.lstrip === true || t.rstrip === true))) {
    out.push("added tokens with single_word, lstrip or rstrip");
  }
  return out;
}

interface AddedToken {
  id: number;
  content: string;
  special: boolean;
  normalized: boolean;
}

type Normalize = (text: string) => string;
type PreTokenize = (pieces: string[]) => string[];

/** Splits `text` around the matches of `pattern` (global): matches and the text between them, in order. */
function splitIsolated(text: string, pattern: RegExp): string[] {
  const out: string[] = [];
  let at = 0;
  for (const m of text.matchAll(pattern)) {
    if (m.index! > at) out.push(text.slice(at, m.index));
    if (m[0].length > 0) out.push(m[0]);
    at = m.index! + m[0].length;
  }
  if (at < text.length) out.push(text.slice(at));
  return out;
}

function makeNormalizer(node: unknown): Normalize {
  if (!isObject(node)) return (t) => t;
  switch (node.type) {
    case "Lowercase":
      return (t) => Array.from(t, (c) => c.toLowerCase()).join("");
    case "Sequence": {
      const steps = (node.normalizers as unknown[]).map(makeNormalizer);
      return (t) => steps.reduce((s, f) => f(s), t);
    }
    default:
      return (t) => t.normalize(node.type as "NFC" | "NFD" | "NFKC" | "NFKD");
  }
}

function makePreTokenizer(node: unknown): PreTokenize {
  if (!isObject(node)) return (pieces) => pieces;
  switch (node.type) {
    case "BertPreTokenizer":
      return (pieces) => pieces.flatMap((p) => {
        const out: string[] = [];
        let word = "";
        for (const c of p) {
          if (IS_WHITE.test(c) || IS_BERT_PUNCT.test(c)) {
            if (word) out.push(word);
            word = "";
            if (!IS_WHITE.test(c)) out.push(c);
          } else {
            word += c;
          }
        }
        if (word) out.push(word);
        return out;
      });
    case "Digits": {
      const pattern = node.individual_digits === true ? /\p{N}/gu : /\p{N}+/gu;
      return (pieces) => pieces.flatMap((p) => (IS_DIGIT.test(p) ? splitIsolated(p, pattern) : [p]));
    }
    case "ByteLevel": {
      const prefix = node.add_prefix_space === true;
      const regex = node.use_regex !== false;
      const encoder = new TextEncoder();
      return (pieces) => pieces.flatMap((p) => {
        const text = prefix && !p.startsWith(" ") ? ` ${p}` : p;
        return (regex ? splitIsolated(text, GPT2_SPLIT) : [text])
          .map((piece) => Array.from(encoder.encode(piece), (b) => BYTE_CHAR[b]).join(""));
      });
    }
    default: {  // Sequence
      const steps = (node.pretokenizers as unknown[]).map(makePreTokenizer);
      return (pieces) => steps.reduce((ps, f) => f(ps), pieces);
    }
  }
}

/** A Hugging Face tokenizer.json, as a VLM bundle's prompt and generated ids need it. */
export class HFTokenizer {
  readonly kind = "hf-tokenizers";
  private readonly vocab: Map<string, number>;
  private readonly idToToken = new Map<number, string>();
  private readonly added: AddedToken[];
  private readonly specialIds: Set<number>;
  private readonly normalize: Normalize;
  private readonly preTokenize: PreTokenize;
  private readonly model: "WordLevel" | "BPE";
  private readonly unkId: number | undefined;
  private readonly merges = new Map<string, number>();
  private readonly ignoreMerges: boolean;
  private readonly byteLevelDecoder: boolean;
  private readonly rawAdded: AddedToken[];
  private readonly normalizedAdded: { content: string; token: AddedToken }[];

  private constructor(parsed: Json) {
    const model = parsed.model as Json;
    this.model = model.type as "WordLevel" | "BPE";
    this.vocab = new Map(Object.entries(model.vocab as Record<string, number>));
    for (const [token, id] of this.vocab) this.idToToken.set(id, token);
    this.added = ((parsed.added_tokens as Json[] | undefined) ?? []).map((t) => ({
      id: t.id as number, content: t.content as string, special: t.special === true,
      normalized: t.normalized === undefined ? t.special !== true : t.normalized === true,
    }));
    for (const t of this.added) this.idToToken.set(t.id, t.content);  // an added token's content wins
    this.specialIds = new Set(this.added.filter((t) => t.special).map((t) => t.id));
    this.normalize = makeNormalizer(parsed.normalizer);
    this.preTokenize = makePreTokenizer(parsed.pre_tokenizer);
    this.unkId = typeof model.unk_token === "string" ? this.vocab.get(model.unk_token) : undefined;
    this.ignoreMerges = model.ignore_merges === true;
    if (this.model === "BPE") {
      (model.merges as unknown[]).forEach((m, rank) => {
        const pair = Array.isArray(m) ? m : String(m).split(" ");
        const key = `${pair[0]} ${pair[1]}`;
        if (!this.merges.has(key)) this.merges.set(key, rank);
      });
    }
    this.byteLevelDecoder = isObject(parsed.decoder) && parsed.decoder.type === "ByteLevel";
    this.rawAdded = this.added.filter((t) => !t.normalized);
    this.normalizedAdded = this.added.filter((t) => t.normalized).map((t) => ({ content: this.normalize(t.content), token: t }));
  }

  /**
   * From a parsed tokenizer.json (strict JSON, parsed by the caller). BundleError code `unsupported`
   * for components this runtime does not implement, `tokenizer` when it is not a tokenizer file.
   */
  static fromParsed(parsed: unknown, where: string): HFTokenizer {
    const fail = (what: string) => new BundleError(`${where} is not a Hugging Face tokenizer: ${what}`, { path: where, code: "tokenizer" });
    if (!isObject(parsed)) throw fail("it must hold a JSON object");
    const missing = unsupportedParts(parsed);
    if (missing.length > 0) {
      throw new BundleError(`${where}: this runtime does not implement ${missing.slice(0, 5).join(", ")} of a Hugging Face ` +
        `tokenizer (it reads models ${HF_SUPPORTED.model.join(", ")}; normalisers ${HF_SUPPORTED.normalizer.join(", ")}; ` +
        `pre-tokenizers ${HF_SUPPORTED.pre_tokenizer.join(", ")}; decoder ${HF_SUPPORTED.decoder.join(", ")}); ` +
        "the Python runtime reads it", { path: where, code: "unsupported" });
    }
    const model = parsed.model as Json;
    const vocab = model.vocab;
    if (!isObject(vocab) || !Object.values(vocab).every((i) => Number.isSafeInteger(i) && (i as number) >= 0)) {
      throw fail("model.vocab must map tokens to ids");
    }
    if (model.type === "WordLevel" && (typeof model.unk_token !== "string" || !(model.unk_token in vocab))) {
      throw fail("a WordLevel model needs its unk_token in the vocabulary");
    }
    if (model.type === "BPE" && (!Array.isArray(model.merges) ||
      !model.merges.every((m) => (typeof m === "string" && m.split(" ").length === 2) ||
        (Array.isArray(m) && m.length === 2 && m.every((x) => typeof x === "string"))))) {
      throw fail("a BPE model needs its merges, each a pair of tokens");
    }
    const added = parsed.added_tokens ?? [];
    if (!Array.isArray(added) || !added.every((t) => isObject(t) && Number.isSafeInteger(t.id) && (t.id as number) >= 0 &&
      typeof t.content === "string" && t.content.length > 0)) {
      throw fail("added_tokens must list tokens, each with an id and a non-empty content");
    }
    return new HFTokenizer(parsed);
  }

  /** The ids of `text`, no special tokens added (`tokenizers`' encode(text, add_special_tokens=False)). */
  encode(text: string): number[] {
    const ids: number[] = [];
    for (const part of this.splitAdded(text, this.rawAdded.map((t) => ({ content: t.content, token: t })))) {
      if (typeof part !== "string") {
        ids.push(part.id);
        continue;
      }
      const normalized = this.normalize(part);
      for (const piece of this.splitAdded(normalized, this.normalizedAdded)) {
        if (typeof piece !== "string") ids.push(piece.id);
        else for (const word of this.preTokenize([piece])) if (word.length > 0) ids.push(...this.tokenize(word));
      }
    }
    return ids;
  }

  /**
   * The text of generated ids: special tokens skipped (ids outside the vocabulary too, as
   * `tokenizers` skips them), decoded, stripped of surrounding spaces (Python's str.strip).
   */
  decode(ids: readonly number[]): string {
    const tokens = ids.filter((id) => !this.specialIds.has(id)).flatMap((id) => {
      const token = this.idToToken.get(id);
      return token === undefined ? [] : [token];
    });
    if (!this.byteLevelDecoder) return pyStrip(tokens.join(" "));
    const bytes: number[] = [];
    const encoder = new TextEncoder();
    for (const token of tokens) {
      const chars = Array.from(token);
      if (chars.every((c) => CHAR_BYTE.has(c))) for (const c of chars) bytes.push(CHAR_BYTE.get(c)!);
      else bytes.push(...encoder.encode(token));  // a token outside the byte alphabet: its own UTF-8
    }
    return pyStrip(new TextDecoder("utf-8", { fatal: false, ignoreBOM: true }).decode(new Uint8Array(bytes)));
  }

  /** The id of a token (undefined when neither the vocabulary nor the added tokens have it). */
  tokenToId(token: string): number | undefined {
    return this.added.find((t) => t.content === token)?.id ?? this.vocab.get(token);
  }

  /** `text` cut around the added tokens among `tokens` (leftmost, then longest): strings and tokens. */
  private splitAdded(text: string, tokens: { content: string; token: AddedToken }[]): (string | AddedToken)[] {
    if (tokens.length === 0) return text.length > 0 ? [text] : [];
    const out: (string | AddedToken)[] = [];
    let from = 0;
    let at = 0;
    while (at < text.length) {
      let best: { content: string; token: AddedToken } | undefined;
      for (const t of tokens) {
        if ((best === undefined || t.content.length > best.content.length) && text.startsWith(t.content, at)) best = t;
      }
      if (best === undefined) {
        at++;
        continue;
      }
      if (at > from) out.push(text.slice(from, at));
      out.push(best.token);
      at += best.content.length;
      from = at;
    }
    if (from < text.length) out.push(text.slice(from));
    return out;
  }

  /** One pre-tokenized word through the model. */
  private tokenize(word: string): number[] {
    if (this.model === "WordLevel") return [this.vocab.get(word) ?? this.unkId!];
    const whole = this.vocab.get(word);
    if (this.ignoreMerges && whole !== undefined) return [whole];
    // the word's characters (those outside the vocabulary become the unknown token, or are dropped)
    const symbols: string[] = [];
    for (const c of word) {
      if (this.vocab.has(c)) symbols.push(c);
      else if (this.unkId !== undefined) symbols.push(this.idToToken.get(this.unkId)!);
    }
    for (;;) {  // the pair of lowest rank, the leftmost on a tie, merged until none is left
      let best = -1;
      let bestRank = Infinity;
      for (let i = 0; i + 1 < symbols.length; i++) {
        const rank = this.merges.get(`${symbols[i]} ${symbols[i + 1]}`);
        if (rank !== undefined && rank < bestRank && this.vocab.has(symbols[i] + symbols[i + 1])) {
          best = i;
          bestRank = rank;
        }
      }
      if (best < 0) break;
      symbols.splice(best, 2, symbols[best] + symbols[best + 1]);
    }
    return symbols.map((s) => this.vocab.get(s)!);
  }
}
