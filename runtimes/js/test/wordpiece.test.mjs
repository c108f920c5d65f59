// WordPiece tokenizer: the golden cases of tests/vectors/golden/tokenizer-wordpiece.json (made by the
// Python reference, mmedge/data/tokenizer.py), a hand-made vocabulary, strict file checks, and the
// manifest agreement check (tokenizer.kind, continuing_subword_prefix, max_input_chars_per_word).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import test from "node:test";

import {
  BundleError, ConfigError, MAX_TEXT_CHARS, TextError, WordPieceTokenizer, WordTokenizer, checkTokenizer,
} from "../dist/index.js";
import { GOLDEN, REPO, readJson, runTokenizerCases } from "../test-support/helpers.mjs";

const cases = readJson(join(GOLDEN, "tokenizer-wordpiece.json"));
const goldenFile = readFileSync(join(REPO, cases.tokenizer));

test("golden WordPiece cases: tokens, ids and masks bit-identical, errors the same", async (t) => {
  assert.equal(cases.format, "mmedge-golden-tokenizer-1");
  assert.equal(cases.kind, "wordpiece");
  const tokenizer = WordTokenizer.fromJSON(goldenFile);
  assert.ok(tokenizer instanceof WordPieceTokenizer);
  assert.equal(tokenizer.kind, "wordpiece");
  assert.equal(tokenizer.maxLength, cases.max_length);
  assert.equal(tokenizer.continuingSubwordPrefix, cases.continuing_subword_prefix);
  assert.equal(tokenizer.maxInputCharsPerWord, cases.max_input_chars_per_word);
  await runTokenizerCases(t, tokenizer, cases, TextError);
});

const HAND_VOCAB = { "[PAD]": 0, "[UNK]": 1, un: 2, "##believ": 3, "##able": 4, a: 5, "##a": 6, "?": 7 };

function handFile(model = {}, maxLength = 8) {
  return JSON.stringify({
    truncation: { direction: "Right", max_length: maxLength, strategy: "LongestFirst", stride: 0 },
    model: {
      type: "WordPiece", unk_token: "[UNK]", continuing_subword_prefix: "##", max_input_chars_per_word: 12,
      vocab: HAND_VOCAB, ...model,
    },
  });
}

test("hand-made WordPiece vocabulary: greedy longest match, [UNK] for the whole word", () => {
  const t = WordTokenizer.fromJSON(handFile());
  assert.ok(t instanceof WordPieceTokenizer);
  assert.equal(t.kind, "wordpiece");
  assert.equal(t.continuingSubwordPrefix, "##");
  assert.equal(t.maxInputCharsPerWord, 12);
  assert.deepEqual(t.tokenize("Unbelievable ?"), ["un", "##believ", "##able", "?"]);
  assert.deepEqual(t.tokenize("unbelievably"), ["[UNK]"]); // "##ly" has no match: the found pieces are dropped
  assert.deepEqual(t.tokenize(`${"a".repeat(12)} ${"a".repeat(13)}`), ["a", ...Array(11).fill("##a"), "[UNK]"]);
  const e = t.encode("un ?");
  assert.deepEqual(e.tokens, ["un", "?"]);
  assert.deepEqual([...e.inputIds], [2, 7, 0, 0, 0, 0, 0, 0]);
  assert.deepEqual([...e.textMask], [1, 1, 0, 0, 0, 0, 0, 0]);
  assert.equal(e.truncated, false);
  // truncation counts subword tokens
  const long = t.encode("aaaaaaaaaaaa");
  assert.equal(long.tokens.length, 12);
  assert.equal(long.truncated, true);
  assert.deepEqual([...long.inputIds], [5, 6, 6, 6, 6, 6, 6, 6]);
  assert.deepEqual([...long.textMask], [1, 1, 1, 1, 1, 1, 1, 1]);
  assert.throws(() => t.encode(" \t "), TextError);
  assert.throws(() => t.encode(null), TextError);
  // words that name Object properties are plain unknown words
  assert.deepEqual(t.tokenize("constructor __proto__"), ["[UNK]", "[UNK]"]);
});

test("WordPiece counts code points, not UTF-16 units", () => {
  const vocab = { "[PAD]": 0, "[UNK]": 1, "𝒶": 2, "##𝒶": 3, "𝒶𝒶": 4 };
  const t = new WordPieceTokenizer(vocab, 8, "##", 3, false);
  // 3 code points (6 UTF-16 units): split, longest first
  assert.deepEqual(t.tokenize("𝒶𝒶𝒶"), ["𝒶𝒶", "##𝒶"]);
  // 4 code points: over max_input_chars_per_word
  assert.deepEqual(t.tokenize("𝒶𝒶𝒶𝒶"), ["[UNK]"]);
  // a lone piece of a surrogate pair is never produced
  const one = new WordPieceTokenizer({ "[PAD]": 0, "[UNK]": 1, "\ud835": 2 }, 4, "##", 100, false);
  assert.deepEqual(one.tokenize("𝒶"), ["[UNK]"]);
});

test("a custom continuing_subword_prefix", () => {
  const t = WordTokenizer.fromJSON(handFile({
    continuing_subword_prefix: "@@", vocab: { "[PAD]": 0, "[UNK]": 1, re: 2, "@@d": 3, "##d": 4 },
  }));
  assert.equal(t.continuingSubwordPrefix, "@@");
  assert.deepEqual(t.tokenize("red"), ["re", "@@d"]);
});

test("a WordPiece tokenizer.json with a bad field is a BundleError", () => {
  const bad = [
    handFile({ max_input_chars_per_word: 0 }),
    handFile({ max_input_chars_per_word: -3 }),
    handFile({ max_input_chars_per_word: 1.5 }),
    handFile({ max_input_chars_per_word: "100" }),
    handFile({ max_input_chars_per_word: undefined }), // missing
    handFile({ continuing_subword_prefix: undefined }), // missing
    handFile({ continuing_subword_prefix: "" }),
    handFile({ continuing_subword_prefix: 7 }),
    handFile({ unk_token: "<unk>" }),
    handFile({ vocab: [] }),
    handFile({ vocab: "[PAD]" }),
    handFile({ vocab: { "[PAD]": 0, "[UNK]": -1 } }),
    handFile({ vocab: { "[PAD]": 0, "[UNK]": 1.5 } }),
    handFile({ vocab: { "[PAD]": 0, "[UNK]": "1" } }),
    handFile({ vocab: { "[PAD]": 0, "[UNK]": null } }),
    handFile({}, 0),
    JSON.stringify({ truncation: { max_length: 8 }, model: { type: "WordPieces", vocab: HAND_VOCAB } }),
  ];
  for (const text of bad) {
    assert.throws(() => WordTokenizer.fromJSON(text), (exc) => {
      assert.ok(exc instanceof BundleError, `${text.slice(0, 200)}: ${exc}`);
      assert.match(exc.message, /export the bundle again/);
      return true;
    }, text.slice(0, 200));
  }
  assert.throws(() => WordTokenizer.fromJSON(handFile({ max_input_chars_per_word: 0 })), /max_input_chars_per_word/);
  assert.throws(() => WordTokenizer.fromJSON(handFile({ continuing_subword_prefix: undefined })), /continuing_subword_prefix/);
  assert.throws(() => new WordPieceTokenizer(HAND_VOCAB, 8, "", 100), ConfigError);
  assert.throws(() => new WordPieceTokenizer(HAND_VOCAB, 8, "##", 0), ConfigError);
  // a WordLevel file is still a plain word tokenizer
  const word = WordTokenizer.fromJSON(JSON.stringify({ truncation: { max_length: 8 }, model: { type: "WordLevel", vocab: HAND_VOCAB } }));
  assert.ok(!(word instanceof WordPieceTokenizer));
  assert.equal(word.kind, "word");
});

/** The parts of a manifest checkTokenizer reads. */
function manifestFor(tokenizer) {
  return {
    model: { config: { vocab_size: 200 } },
    tokenizer: { file: "tokenizer.json", max_length: 8, lowercase: true, split_regex: "", pad_id: 0, unk_id: 1, ...tokenizer },
  };
}

test("the tokenizer's kind and WordPiece settings must equal the manifest's", () => {
  const wordpiece = WordTokenizer.fromJSON(handFile());
  const word = WordTokenizer.fromJSON(JSON.stringify({ truncation: { max_length: 8 }, model: { type: "WordLevel", vocab: HAND_VOCAB } }));
  const wp = { kind: "wordpiece", continuing_subword_prefix: "##", max_input_chars_per_word: 12 };
  checkTokenizer(wordpiece, manifestFor(wp));
  checkTokenizer(word, manifestFor({}));
  checkTokenizer(word, manifestFor({ kind: "word" }));
  const refused = [
    [wordpiece, {}, /wordpiece tokenizer, the manifest says kind "word"/],
    [wordpiece, { kind: "word" }, /kind "word"/],
    [word, wp, /word tokenizer, the manifest says kind "wordpiece"/],
    [wordpiece, { ...wp, continuing_subword_prefix: "@@" }, /continuing_subword_prefix/],
    [wordpiece, { ...wp, max_input_chars_per_word: 100 }, /max_input_chars_per_word 12 vs the manifest's 100/],
    [wordpiece, { kind: "wordpiece" }, /continuing_subword_prefix.*max_input_chars_per_word/],
  ];
  for (const [tokenizer, spec, pattern] of refused) {
    assert.throws(() => checkTokenizer(tokenizer, manifestFor(spec)), (exc) => {
      assert.ok(exc instanceof BundleError, String(exc));
      assert.match(exc.message, pattern);
      assert.match(exc.message, /export the bundle again/);
      return true;
    }, JSON.stringify(spec));
  }
});

test("the golden WordPiece file agrees with the golden vectors' manifest fields", () => {
  const tokenizer = WordTokenizer.fromJSON(goldenFile);
  const ids = [...tokenizer.vocab.values()];
  checkTokenizer(tokenizer, {
    model: { config: { vocab_size: Math.max(...ids) + 1 } },
    tokenizer: {
      file: "tokenizer.json", max_length: cases.max_length, lowercase: true, split_regex: "", pad_id: 0, unk_id: 1,
      kind: cases.kind, continuing_subword_prefix: cases.continuing_subword_prefix,
      max_input_chars_per_word: cases.max_input_chars_per_word,
    },
  });
});

// ------------------------------------------------------------------ bounded work (issue 31, defect 6)
const CAP = 65_536; // the spec's cap, in code points; every runtime refuses a longer text

test("a text over 65,536 code points is a TextError, in every tokenizer kind", () => {
  assert.equal(MAX_TEXT_CHARS, CAP);
  const word = WordTokenizer.fromJSON(JSON.stringify({ truncation: { max_length: 8 }, model: { type: "WordLevel", vocab: HAND_VOCAB } }));
  for (const t of [WordTokenizer.fromJSON(handFile()), word]) {
    assert.throws(() => t.encode("a".repeat(CAP + 1)), (exc) => {
      assert.ok(exc instanceof TextError, String(exc));
      assert.match(exc.message, /65,537 characters, more than the 65,536/);
      return true;
    });
    assert.throws(() => t.tokenize("a ".repeat(CAP)), TextError);
    assert.throws(() => t.encode(`${"what is this ? ".repeat(66_666)}abcdefghij`), /1,000,000 characters/);
    // code points are counted, as Python's len counts them: 65,536 astral characters (131,072 UTF-16 units) pass
    assert.equal(t.encode("\u{1d4b6}".repeat(CAP)).truncated, false);
    assert.throws(() => t.encode("\u{1d4b6}".repeat(CAP) + "a"), TextError);
    // a lone surrogate is one code point, as in Python
    assert.throws(() => t.encode("\ud800".repeat(CAP + 1)), TextError);
  }
});

test("a long text under the cap: encode splits only the first max_length + 1 tokens, ids as the full algorithm's", () => {
  const vocab = { "[PAD]": 0, "[UNK]": 1, a: 2, "##a": 3, aa: 4, "##aa": 5, "?": 6 };
  const t = new WordPieceTokenizer(vocab, 8, "##", 100);
  const text = `${"a".repeat(99)} `.repeat(Math.floor(CAP / 100)) + "a".repeat(CAP % 100);
  assert.equal(text.length, CAP);
  let splits = 0;
  const split = t.split;
  t.split = function counted(word) {
    splits++;
    return split.call(this, word);
  };
  const start = performance.now();
  const e = t.encode(text);
  const ms = performance.now() - start;
  assert.equal(splits, 1); // the first word gives 50 tokens: more than 8 + 1, nothing else is split
  assert.ok(ms < 500, `encode took ${ms.toFixed(1)} ms`);
  assert.equal(e.truncated, true);
  const full = t.tokenize(text); // the untruncated algorithm
  assert.equal(full.length, 655 * 50 + 18);
  assert.deepEqual([...e.inputIds], full.slice(0, 8).map((tok) => vocab[tok]));
  assert.deepEqual([...e.textMask], [1, 1, 1, 1, 1, 1, 1, 1]);
  assert.deepEqual(e.tokens, full); // made on first access
  assert.deepEqual(t.tokenize(text, 3), ["aa", "##aa", "##aa"]);
  // a word over max_input_chars_per_word is one [UNK] without being scanned
  assert.deepEqual(t.tokenize("a".repeat(CAP)), ["[UNK]"]);
});
