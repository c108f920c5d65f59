/**
 * Strict JSON, as docs/bundle-format.md fixes it for manifest.json, manifest.sig and tokenizer.json
 * (every runtime reads these files the same way, so that none accepts what another refuses):
 *
 *  - UTF-8 only, and no byte-order mark (EF BB BF);
 *  - RFC 8259 grammar and nothing more: no `NaN`, `Infinity`, comments, trailing commas, single
 *    quotes, control characters inside strings, or whitespace other than space, tab, CR, LF;
 *  - no object with the same key twice (after unescaping: "a" and "\u0061" are the same key);
 *  - no number that overflows an IEEE double (`1e400`), and no integer written without fraction or
 *    exponent beyond +-(2^53 - 1) (runtimes would read it differently); `1.0` is a number, not an
 *    integer token (see `integerToken`);
 *  - no escaped surrogate (`\ud800`) without its pair;
 *  - nesting at most `maxDepth` levels (32): the top-level value is level 1, each object or array
 *    inside adds one.
 *
 * JSON.parse can tell none of the duplicate keys, the overflow or the lone surrogates, so this is
 * a parser of its own: one pass over the text, no recursion deeper than `maxDepth`, building the
 * same values JSON.parse would (keys such as `__proto__` become own data properties).
 */

export const MAX_JSON_DEPTH = 32;
/** 2^53 - 1: the largest integer every runtime (double, int64, JavaScript number) reads exactly. */
export const MAX_SAFE_JSON_INTEGER = Number.MAX_SAFE_INTEGER;

/** Why a text is not strict JSON: `offset` is the character index in the text. */
export class StrictJsonError extends Error {
  constructor(message: string, readonly offset: number) {
    super(`${message} at character ${offset}`);
    this.name = "StrictJsonError";
  }
}

export interface StrictJsonOptions {
  /** Deepest nesting allowed (default 32). */
  maxDepth?: number;
}

export interface StrictJsonResult {
  value: unknown;
  /**
   * For each key of the top-level object whose value is a number: the number as written (e.g.
   * `1`, `1.0`, `1e0`), so that a caller can require an integer token (`schema_version`).
   */
  topLevelNumbers: Map<string, string>;
}

/** True when a number as written has neither fraction nor exponent (`1`, `-3`; not `1.0`, `1e0`). */
export function integerToken(raw: string): boolean {
  return /^-?(0|[1-9][0-9]*)$/.test(raw);
}

const decoder = (): TextDecoder => new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** The text of UTF-8 bytes without a byte-order mark; StrictJsonError otherwise. */
export function decodeStrictUtf8(data: Uint8Array): string {
  if (data.length >= 3 && data[0] === 0xef && data[1] === 0xbb && data[2] === 0xbf) {
    throw new StrictJsonError("a UTF-8 byte-order mark (EF BB BF) starts the file; JSON files here have none", 0);
  }
  try {
    return decoder().decode(data);
  } catch (exc) {
    throw new StrictJsonError(`not valid UTF-8 (${String((exc as Error).message ?? exc)})`, 0);
  }
}

/** Parses UTF-8 bytes (or a string) as strict JSON; StrictJsonError says what is wrong. */
export function parseStrictJson(input: Uint8Array | string, options: StrictJsonOptions = {}): StrictJsonResult {
  const text = typeof input === "string" ? input : decodeStrictUtf8(input);
  if (typeof input === "string" && text.charCodeAt(0) === 0xfeff) {
    throw new StrictJsonError("a byte-order mark (U+FEFF) starts the text", 0);
  }
  return new Parser(text, options.maxDepth ?? MAX_JSON_DEPTH).parseDocument();
}

const WS_SPACE = 0x20;
const WS_TAB = 0x09;
const WS_LF = 0x0a;
const WS_CR = 0x0d;

function isDigit(c: number): boolean {
  return c >= 0x30 && c <= 0x39;
}

function defineOwn(target: Record<string, unknown>, key: string, value: unknown): void {
  if (key === "__proto__") {
    Object.defineProperty(target, key, { value, writable: true, enumerable: true, configurable: true });
  } else {
    target[key] = value;
  }
}

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x61 + 10;
  if (c >= 0x41 && c <= 0x46) return c - 0x41 + 10;
  return -1;
}

class Parser {
  private pos = 0;
  private readonly topLevelNumbers = new Map<string, string>();

  constructor(private readonly text: string, private readonly maxDepth: number) {}

  private fail(message: string, at = this.pos): never {
    throw new StrictJsonError(message, at);
  }

  private skipWhitespace(): void {
    const t = this.text;
    let p = this.pos;
    for (;;) {
      const c = t.charCodeAt(p);
      if (c === WS_SPACE || c === WS_LF || c === WS_CR || c === WS_TAB) p++;
      else break;
    }
    this.pos = p;
  }

  parseDocument(): StrictJsonResult {
    this.skipWhitespace();
    if (this.pos >= this.text.length) this.fail("empty document");
    const value = this.parseValue(1);
    this.skipWhitespace();
    if (this.pos < this.text.length) this.fail("unexpected text after the JSON value");
    return { value, topLevelNumbers: this.topLevelNumbers };
  }

  private describe(at: number): string {
    if (at >= this.text.length) return "the end of the text";
    const code = this.text.codePointAt(at)!;
    const ch = String.fromCodePoint(code);
    return code < 0x20 || code === 0x7f ? `character U+${code.toString(16).padStart(4, "0")}` : JSON.stringify(ch);
  }

  /** A value at nesting level `depth` (objects and arrays at that level count as level `depth`). */
  private parseValue(depth: number): unknown {
    const t = this.text;
    const c = t.charCodeAt(this.pos);
    switch (c) {
      case 0x7b: // {
        return this.parseObject(depth);
      case 0x5b: // [
        return this.parseArray(depth);
      case 0x22: // "
        return this.parseString();
      case 0x74: // t
        return this.literal("true", true);
      case 0x66: // f
        return this.literal("false", false);
      case 0x6e: // n
        return this.literal("null", null);
      default:
        if (c === 0x2d || isDigit(c)) return this.parseNumber().value;
        if (t.startsWith("NaN", this.pos) || t.startsWith("Infinity", this.pos)) {
          this.fail("NaN and Infinity are not JSON");
        }
        return this.fail(`unexpected ${this.describe(this.pos)}`);
    }
  }

  private literal<T>(word: string, value: T): T {
    if (!this.text.startsWith(word, this.pos)) this.fail(`unexpected ${this.describe(this.pos)}`);
    this.pos += word.length;
    return value;
  }

  private enter(depth: number): void {
    if (depth > this.maxDepth) this.fail(`nested deeper than ${this.maxDepth} levels`);
  }

  private parseObject(depth: number): Record<string, unknown> {
    this.enter(depth);
    const t = this.text;
    const out: Record<string, unknown> = {};
    const seen = new Set<string>();
    this.pos++; // {
    this.skipWhitespace();
    if (t.charCodeAt(this.pos) === 0x7d) {
      this.pos++;
      return out;
    }
    for (;;) {
      if (t.charCodeAt(this.pos) !== 0x22) this.fail(`expected a key string, found ${this.describe(this.pos)}`);
      const keyAt = this.pos;
      const key = this.parseString();
      if (seen.has(key)) this.fail(`duplicate key ${JSON.stringify(key.length > 60 ? key.slice(0, 57) + "..." : key)}`, keyAt);
      seen.add(key);
      this.skipWhitespace();
      if (t.charCodeAt(this.pos) !== 0x3a) this.fail(`expected ':', found ${this.describe(this.pos)}`);
      this.pos++;
      this.skipWhitespace();
      let value: unknown;
      const vc = t.charCodeAt(this.pos);
      if (depth === 1 && (vc === 0x2d || isDigit(vc))) {
        const number = this.parseNumber();
        this.topLevelNumbers.set(key, number.raw);
        value = number.value;
      } else {
        value = this.parseValue(depth + 1);
      }
      defineOwn(out, key, value);
      this.skipWhitespace();
      const sep = t.charCodeAt(this.pos);
      if (sep === 0x2c) {
        this.pos++;
        this.skipWhitespace();
        continue;
      }
      if (sep === 0x7d) {
        this.pos++;
        return out;
      }
      this.fail(`expected ',' or '}', found ${this.describe(this.pos)}`);
    }
  }

  private parseArray(depth: number): unknown[] {
    this.enter(depth);
    const t = this.text;
    const out: unknown[] = [];
    this.pos++; // [
    this.skipWhitespace();
    if (t.charCodeAt(this.pos) === 0x5d) {
      this.pos++;
      return out;
    }
    for (;;) {
      out.push(this.parseValue(depth + 1));
      this.skipWhitespace();
      const sep = t.charCodeAt(this.pos);
      if (sep === 0x2c) {
        this.pos++;
        this.skipWhitespace();
        continue;
      }
      if (sep === 0x5d) {
        this.pos++;
        return out;
      }
      this.fail(`expected ',' or ']', found ${this.describe(this.pos)}`);
    }
  }

  private parseNumber(): { value: number; raw: string } {
    const t = this.text;
    const start = this.pos;
    let p = start;
    if (t.charCodeAt(p) === 0x2d) p++;
    const first = t.charCodeAt(p);
    if (first === 0x30) {
      p++;
      if (isDigit(t.charCodeAt(p))) this.fail("a number may not have a leading zero", p);
    } else if (isDigit(first)) {
      while (isDigit(t.charCodeAt(p))) p++;
    } else {
      if (t.startsWith("Infinity", p)) this.fail("NaN and Infinity are not JSON", start);
      this.fail("a minus sign without digits", p);
    }
    let integer = true;
    if (t.charCodeAt(p) === 0x2e) {
      integer = false;
      p++;
      if (!isDigit(t.charCodeAt(p))) this.fail("a decimal point without digits after it", p);
      while (isDigit(t.charCodeAt(p))) p++;
    }
    const e = t.charCodeAt(p);
    if (e === 0x65 || e === 0x45) {
      integer = false;
      p++;
      const sign = t.charCodeAt(p);
      if (sign === 0x2b || sign === 0x2d) p++;
      if (!isDigit(t.charCodeAt(p))) this.fail("an exponent without digits", p);
      while (isDigit(t.charCodeAt(p))) p++;
    }
    const raw = t.slice(start, p);
    const value = Number(raw);
    if (!Number.isFinite(value)) {
      this.fail(`the number ${raw.length > 40 ? raw.slice(0, 37) + "..." : raw} overflows a double`, start);
    }
    if (integer && Math.abs(value) > MAX_SAFE_JSON_INTEGER) {
      // Number() rounds: 9007199254740992 (2^53) reads as itself, but so does 2^53 + 1
      this.fail(`the integer ${raw.length > 40 ? raw.slice(0, 37) + "..." : raw} is beyond +-(2^53 - 1)`, start);
    }
    this.pos = p;
    return { value, raw };
  }

  private parseString(): string {
    const t = this.text;
    let p = this.pos + 1; // after the opening quote
    let out = "";
    let chunkStart = p;
    for (;;) {
      if (p >= t.length) this.fail("a string is not closed", this.pos);
      const c = t.charCodeAt(p);
      if (c === 0x22) {
        out += t.slice(chunkStart, p);
        this.pos = p + 1;
        return out;
      }
      if (c < 0x20) this.fail(`an unescaped control character U+${c.toString(16).padStart(4, "0")} in a string`, p);
      if (c !== 0x5c) {
        // a lone surrogate cannot come from valid UTF-8; a string input may hold one
        if (c >= 0xd800 && c <= 0xdbff) {
          const next = t.charCodeAt(p + 1);
          if (!(next >= 0xdc00 && next <= 0xdfff)) this.fail("an unpaired surrogate in a string", p);
          p += 2;
          continue;
        }
        if (c >= 0xdc00 && c <= 0xdfff) this.fail("an unpaired surrogate in a string", p);
        p++;
        continue;
      }
      out += t.slice(chunkStart, p);
      const esc = t.charCodeAt(p + 1);
      switch (esc) {
        case 0x22: out += '"'; p += 2; break;
        case 0x5c: out += "\\"; p += 2; break;
        case 0x2f: out += "/"; p += 2; break;
        case 0x62: out += "\b"; p += 2; break;
        case 0x66: out += "\f"; p += 2; break;
        case 0x6e: out += "\n"; p += 2; break;
        case 0x72: out += "\r"; p += 2; break;
        case 0x74: out += "\t"; p += 2; break;
        case 0x75: { // \uXXXX
          const unit = this.hex4(p + 2);
          if (unit >= 0xd800 && unit <= 0xdbff) {
            if (t.charCodeAt(p + 6) !== 0x5c || t.charCodeAt(p + 7) !== 0x75) {
              this.fail(`an unpaired surrogate escape \\u${unit.toString(16)}`, p);
            }
            const low = this.hex4(p + 8);
            if (!(low >= 0xdc00 && low <= 0xdfff)) this.fail(`an unpaired surrogate escape \\u${unit.toString(16)}`, p);
            out += String.fromCharCode(unit, low);
            p += 12;
          } else if (unit >= 0xdc00 && unit <= 0xdfff) {
            this.fail(`an unpaired surrogate escape \\u${unit.toString(16)}`, p);
          } else {
            out += String.fromCharCode(unit);
            p += 6;
          }
          break;
        }
        default:
          this.fail(`an invalid escape ${this.describe(p + 1)} in a string`, p);
      }
      chunkStart = p;
    }
  }

  private hex4(at: number): number {
    let v = 0;
    for (let i = 0; i < 4; i++) {
      const h = hexValue(this.text.charCodeAt(at + i));
      if (h < 0) this.fail("an invalid \\u escape", at - 2);
      v = (v << 4) | h;
    }
    return v;
  }
}
