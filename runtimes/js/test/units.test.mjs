import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import test from "node:test";

import { TextError, WordTokenizer, jsonDepthExceeds, memberProblem, parseManifest, BundleError, sha256Fallback, sha256Hex } from "../dist/index.js";

test("the SHA-256 fallback equals node:crypto at every padding boundary", async () => {
  for (const n of [0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 1000, 100003]) {
    const data = new Uint8Array(randomBytes(n));
    const want = createHash("sha256").update(data).digest("hex");
    assert.equal(Buffer.from(sha256Fallback(data)).toString("hex"), want, `${n} bytes`);
    assert.equal(await sha256Hex(data), want);
  }
});

test("tokenizer: words that name Object properties are plain unknown words", () => {
  const t = new WordTokenizer({ "[PAD]": 0, "[UNK]": 1, red: 2 }, 6);
  const e = t.encode("constructor __proto__ toString red hasOwnProperty");
  assert.deepEqual([...e.inputIds], [1, 1, 1, 2, 1, 0]);
  assert.deepEqual([...e.textMask], [1, 1, 1, 1, 1, 0]);
  const long = t.encode("red red red red red red red red");
  assert.equal(long.truncated, true);
  assert.deepEqual([...long.inputIds], [2, 2, 2, 2, 2, 2]);
  assert.throws(() => t.encode(""), TextError);
  assert.throws(() => t.encode(42), TextError);
  // U+FEFF and U+180E are not spaces (unlike JavaScript's \s): they form punctuation runs
  assert.deepEqual(t.tokenize("a\ufeffb c\u180e"), ["a", "\ufeff", "b", "c", "\u180e"]);
  assert.deepEqual(t.tokenize("x\u001cy\u0085z"), ["x", "y", "z"]);
});

test("tokenizer.json that is not a WordLevel tokenizer is a BundleError", () => {
  assert.throws(() => WordTokenizer.fromJSON('{"model": {"type": "BPE"}}'), BundleError);
  assert.throws(() => WordTokenizer.fromJSON('{"model": {"type": "WordLevel", "vocab": {}}}'), BundleError);
  assert.throws(() => WordTokenizer.fromJSON("[".repeat(100000)), BundleError);
  assert.throws(() => WordTokenizer.fromJSON(new Uint8Array([0xff])), BundleError);
});

test("member paths", () => {
  for (const ok of ["a", "onnx/fp32/k9_stage0.onnx", "a..b/c", ".hidden/x"]) assert.equal(memberProblem(ok), null, ok);
  for (const bad of ["", "/abs", "a//b", "a/./b", "../x", "a/..", "a\\b", "a\0b", "a/", "x".repeat(513), 5]) {
    assert.notEqual(memberProblem(bad), null, String(bad));
  }
});

test("JSON depth is checked without parsing; strings do not count", () => {
  assert.equal(jsonDepthExceeds("[[[]]]", 3), false);
  assert.equal(jsonDepthExceeds("[[[[]]]]", 3), true);
  assert.equal(jsonDepthExceeds('["[[[[\\"[[["]', 1), false);
  const enc = (s) => new TextEncoder().encode(s);
  assert.equal(parseManifest(enc('{"a": "[[[[", "schema_version" : 1}')).schema_version, 1);
  assert.throws(() => parseManifest(enc('{"b": {"schema_version": 1}, "schema_version": 1.0}')), /schema_version 1.0/);
  assert.equal(parseManifest(enc('{"b": {"schema_version": 1.0}, "schema_version": 1}')).schema_version, 1);
  // a key given twice is refused outright (runtimes that keep the first or the last would disagree)
  assert.throws(() => parseManifest(enc('{"schema_version": 1.0, "schema_version": 1}')),
    (e) => e instanceof BundleError && e.code === "json" && /duplicate key "schema_version"/.test(e.message));
  assert.equal(parseManifest(enc('{"b": {"schema_version": 2}, "schema_version":1}')).schema_version, 1);
  assert.throws(() => parseManifest(enc('{"schema_version": -1}')), BundleError);
});
