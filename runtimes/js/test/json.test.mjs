// The strict JSON reader (src/json.ts) that manifest.json, manifest.sig and tokenizer.json go
// through: what it refuses (docs/bundle-format.md, JSON), and that it reads everything else
// exactly as JSON.parse does.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import test from "node:test";

import { StrictJsonError, integerToken, parseStrictJson } from "../dist/index.js";
import { GOLDEN, REPO, readJson } from "../test-support/helpers.mjs";

const enc = (s) => new TextEncoder().encode(s);
const parse = (s) => parseStrictJson(typeof s === "string" ? enc(s) : s).value;
const refuses = (input, pattern) => assert.throws(() => parse(input),
  (e) => e instanceof StrictJsonError && (!pattern || pattern.test(e.message)), `refuses ${String(input).slice(0, 60)}`);

test("reads what JSON.parse reads, value for value", () => {
  const texts = [
    "{}", "[]", '{"a": 1}', '{"a": [1, 2.5, -3e2, 0, -0, 1E+2, 1e-400, 0.1, 123456789.125]}',
    '{"s": "caf\\u00e9 \\ud83d\\ude00 \\"q\\" \\\\ \\/ \\b\\f\\n\\r\\t", "t": true, "f": false, "n": null}',
    ' \t\r\n{ "a" : { "b" : [ { } , [ ] ] } } \n', '"just a string"', "42", "null",
    `{"max": ${Number.MAX_SAFE_INTEGER}, "min": ${-Number.MAX_SAFE_INTEGER}, "big": 1.7976931348623157e308}`,
    '{"emoji": "😀", "cjk": "漢字", "nul": "\\u0000"}',
    '{"a": "[{\\"x\\": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}',
  ];
  for (const text of texts) assert.deepEqual(parse(text), JSON.parse(text), text);
  // random documents
  let seed = 7;
  const rand = (n) => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 8) % n;
  const value = (depth) => {
    const k = rand(depth > 6 ? 4 : 6);
    if (k === 0) return rand(2) ? rand(1e6) - 5e5 : (rand(1e6) - 5e5) / 1024;
    if (k === 1) return String.fromCharCode(...Array.from({ length: rand(8) }, () => rand(0x3000) + 32));
    if (k === 2) return [true, false, null][rand(3)];
    if (k === 3) return rand(1e9) * 1e-7;
    if (k === 4) return Array.from({ length: rand(5) }, () => value(depth + 1));
    const o = {};
    for (let i = rand(5); i > 0; i--) o[`k${rand(1000)}`] = value(depth + 1);
    return o;
  };
  for (let i = 0; i < 300; i++) {
    const text = JSON.stringify({ v: value(1) }, null, i % 3);
    assert.deepEqual(parse(text), JSON.parse(text));
  }
});

test("the shipped manifest, tokenizer and golden files parse to JSON.parse's values", () => {
  const bundle = join(REPO, readJson(join(GOLDEN, "queries.json")).bundle);
  for (const path of [join(bundle, "manifest.json"), join(bundle, "tokenizer.json"), join(GOLDEN, "queries.json"),
    join(GOLDEN, "tokenizer.json")]) {
    const bytes = readFileSync(path);
    assert.deepEqual(parse(new Uint8Array(bytes)), JSON.parse(bytes.toString("utf8")), path);
  }
});

test("a byte-order mark, invalid UTF-8 and lone surrogates in the bytes are refused", () => {
  refuses(new Uint8Array([0xef, 0xbb, 0xbf, ...enc("{}")]), /byte-order mark/);
  refuses(new Uint8Array([...enc('{"a": "'), 0xff, ...enc('"}')]), /UTF-8/);
  refuses(new Uint8Array([...enc('{"a": "'), 0xed, 0xa0, 0x80, ...enc('"}')]), /UTF-8/); // CESU-8 surrogate
  refuses(new Uint8Array([...enc('{"a": "'), 0xc0, 0xaf, ...enc('"}')]), /UTF-8/); // overlong
  assert.throws(() => parseStrictJson("\ufeff{}"), StrictJsonError);
  assert.throws(() => parseStrictJson('{"a": "\ud800"}'), /unpaired surrogate/);
  assert.throws(() => parseStrictJson('{"a": "\udc00x"}'), /unpaired surrogate/);
});

test("duplicate keys are refused at every level, also when spelled with escapes", () => {
  refuses('{"a": 1, "a": 1}', /duplicate key "a"/);
  refuses('{"x": {"b": 1, "c": 2, "b": 3}}', /duplicate key "b"/);
  refuses('[{"k": 1}, {"k": 1, "k": 2}]', /duplicate key/);
  refuses('{"a": 1, "\\u0061": 2}', /duplicate key "a"/);
  refuses('{"__proto__": 1, "__proto__": 2}', /duplicate key/);
  assert.deepEqual(parse('{"a": {"a": {"a": 1}}, "b": [{"a": 1}, {"a": 2}]}'), { a: { a: { a: 1 } }, b: [{ a: 1 }, { a: 2 }] });
});

test("__proto__ and other Object.prototype names are plain own keys", () => {
  const v = parse('{"__proto__": {"polluted": true}, "constructor": 1, "toString": 2}');
  assert.equal(Object.getPrototypeOf(v), Object.prototype);
  assert.ok(Object.prototype.hasOwnProperty.call(v, "__proto__"));
  assert.deepEqual(Object.keys(v), ["__proto__", "constructor", "toString"]);
  assert.equal({}.polluted, undefined);
  assert.deepEqual(v.__proto__, { polluted: true }); // eslint-disable-line no-proto
});

test("numbers: overflow and integers beyond 2^53-1 are refused; underflow and 1.0 are fine", () => {
  for (const bad of ["1e400", "-1e400", "1e309", "2e308", "1" + "0".repeat(400), "-" + "9".repeat(400) + ".5"]) {
    refuses(`{"n": ${bad}}`, /overflows a double/);
  }
  for (const bad of ["9007199254740992", "-9007199254740992", "9007199254740993", "12345678901234567890"]) {
    refuses(`{"n": ${bad}}`, /beyond/);
    refuses(`[${bad}]`, /beyond/);
  }
  assert.equal(parse(`{"n": ${2 ** 53 - 1}}`).n, 2 ** 53 - 1);
  assert.equal(parse(`{"n": -${2 ** 53 - 1}}`).n, -(2 ** 53 - 1));
  assert.equal(parse('{"n": 9007199254740993.0}').n, 9007199254740992); // not an integer token
  assert.equal(parse('{"n": 1e20}').n, 1e20);
  assert.equal(parse('{"n": 1e-400}').n, 0);
  assert.equal(parse('{"n": 1.7976931348623157e308}').n, Number.MAX_VALUE);
  for (const bad of ["01", "-01", "1.", ".5", "+1", "1e", "1e+", "-", "0x10", "1_000", "--1", "1.e3"]) refuses(`{"n": ${bad}}`);
  for (const bad of ["NaN", "Infinity", "-Infinity"]) refuses(`{"n": ${bad}}`, /NaN and Infinity|unexpected|minus/);
});

test("topLevelNumbers gives each top-level number as written; integerToken tells 1 from 1.0", () => {
  const r = parseStrictJson(enc('{"schema_version": 1.0, "a": {"schema_version": 1}, "b": -0, "c": 1e0, "d": "1"}'));
  assert.deepEqual([...r.topLevelNumbers], [["schema_version", "1.0"], ["b", "-0"], ["c", "1e0"]]);
  for (const yes of ["1", "0", "-0", "-12", "9007199254740991"]) assert.equal(integerToken(yes), true, yes);
  for (const no of ["1.0", "1e0", "1E0", "-1.5", "01", ""]) assert.equal(integerToken(no), false, no);
});

test("nesting: 32 levels are fine, 33 are refused; scalars and strings do not count", () => {
  const nest = (n) => "[".repeat(n) + "]".repeat(n);
  assert.doesNotThrow(() => parse(nest(32)));
  refuses(nest(33), /nested deeper than 32/);
  assert.doesNotThrow(() => parse(`{"a": ${nest(31)}}`));
  refuses(`{"a": ${nest(32)}}`, /nested deeper/);
  assert.doesNotThrow(() => parse(`${"[".repeat(31)}1, "[[[[", {}${"]".repeat(31)}`));
  refuses(`${"[".repeat(31)}1, {"a": {}}${"]".repeat(31)}`, /nested deeper/);
  // a million levels: refused at level 33, without a stack overflow
  refuses("[".repeat(1_000_000), /nested deeper/);
  refuses('{"a":'.repeat(1_000_000), /nested deeper/);
  assert.doesNotThrow(() => parseStrictJson(enc(nest(40)), { maxDepth: 40 }));
});

test("the grammar is RFC 8259's and no more", () => {
  for (const bad of [
    "", " ", "{", "}", "{]", '{"a" 1}', '{"a": 1,}', "[1,]", "[,1]", '{"a": 1 "b": 2}', "{'a': 1}", '{a: 1}',
    '{"a": 1} x', '{"a": 1}{}', "[1] [2]", '{"a": tru}', '{"a": True}', '{"a": nul}', '{"a": undefined}',
    '{"a": "x\ny"}', '{"a": "tab\there"}', '{"a": "\\x41"}', '{"a": "\\u12"}', '{"a": "\\u12G4"}', '{"a": "\\U0041"}',
    '{"a": "open}', '{"a": 1 /* c */}', '// c\n{}', '{"a":\u00a01}', '{"a":\u20281}', '{"a":\v1}', '{"a":\f1}',
    '{"a": "\\ud800"}', '{"a": "\\udc00"}', '{"a": "\\ud800\\u0041"}', '{"a": "\\ud800\\ud800"}', '{"a": "\\ud83d"}',
    '{"a": "x\\ud83d\\"}',
  ]) refuses(bad);
  assert.equal(parse('{"a": "\\ud83d\\ude00"}').a, "😀");
  assert.equal(parse('{"a": "\\uD83D\\uDE00"}').a, "😀");
});

test("errors say where", () => {
  assert.throws(() => parse('{"a": 1, "a": 2}'), (e) => e.offset === 9 && /at character 9/.test(e.message));
});

test("a 20 MB document parses in reasonable time", () => {
  const vocab = {};
  for (let i = 0; i < 600_000; i++) vocab[`word${i}\u00e9`] = i;
  const text = JSON.stringify({ model: { type: "WordLevel", vocab } });
  assert.ok(text.length > 10_000_000);
  const t0 = performance.now();
  const v = parse(text);
  const ms = performance.now() - t0;
  assert.equal(Object.keys(v.model.vocab).length, 600_000);
  assert.ok(ms < 20_000, `${ms} ms`);
});
