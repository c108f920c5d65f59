// A bundle's tokenizer.json is parsed once: the loader's strict parse (json.ts) is what the
// tokenizer is built from; JSON.parse never sees the file (word, WordPiece and BERT tokenizers).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import test from "node:test";

import { BertWordPieceTokenizer, NodeDirectorySource, WordTokenizer, loadManifest } from "../dist/index.js";
import { REPO } from "../test-support/helpers.mjs";

const BUNDLES = [
  ["word", join(REPO, "models/vqa-default/bundles/vqa-default-onnx.mmedge"), WordTokenizer],
  ["bert-wordpiece", join(REPO, "tests/vectors/adapted/tiny-vilt-onnx.mmedge"), BertWordPieceTokenizer],
];

for (const [kind, bundle, cls] of BUNDLES) {
  test(`loadManifest parses the ${kind} tokenizer.json once, strictly`, async () => {
    const text = readFileSync(join(bundle, "tokenizer.json"), "utf8");
    const seen = [];
    const parse = JSON.parse;
    JSON.parse = function (value, ...rest) {
      seen.push(String(value));
      return parse.call(this, value, ...rest);
    };
    let loaded;
    try {
      loaded = await loadManifest(new NodeDirectorySource(bundle));
    } finally {
      JSON.parse = parse;
    }
    assert.ok(loaded.tokenizer instanceof cls);
    assert.equal(loaded.tokenizer.kind, kind === "word" ? loaded.manifest.tokenizer.kind ?? "word" : kind);
    assert.ok(!seen.some((s) => s === text || s.includes('"model"')), "tokenizer.json went through JSON.parse again");
    // the same tokenizer as the stand-alone constructor builds from the bytes
    const alone = kind === "word" ? WordTokenizer.fromJSON(text, loaded.manifest.tokenizer.lowercase)
      : BertWordPieceTokenizer.fromBertJSON(text, loaded.manifest.tokenizer.max_length);
    assert.deepEqual([...loaded.tokenizer.vocab], [...alone.vocab]);
    assert.equal(loaded.tokenizer.maxLength, alone.maxLength);
    const query = "What colour is the small circle left of the square?";
    assert.deepEqual(loaded.tokenizer.encode(query), alone.encode(query));
  });
}
