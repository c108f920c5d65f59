// Conformance: the golden vectors of docs/bundle-format.md ("Golden vectors") on the shipped bundle.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import test from "node:test";
import * as ort from "onnxruntime-node";

import { Engine, NodeDirectorySource, TextError, WordTokenizer, decideOffline, makePolicy } from "../dist/index.js";
import {
  GOLDEN, REPO, assertExitMatches, policyOf, readJson, readPng, runTokenizerCases, sha256,
} from "../test-support/helpers.mjs";

const golden = readJson(join(GOLDEN, "queries.json"));
const tokenizerCases = readJson(join(GOLDEN, "tokenizer.json"));
const bundlePath = join(REPO, golden.bundle);
const tol = golden.tolerance;
const stats = { queries: 0, ratios: 0, exits: 0, policies: 0, policiesAgree: 0, inGraph: 0, maxLogitsErr: 0, maxConfErr: 0 };

let staged;
let inGraph;

test.before(async () => {
  staged = await Engine.load(new NodeDirectorySource(bundlePath), { ort, format: "onnx" });
  if (staged.manifest.in_graph) inGraph = await Engine.load(new NodeDirectorySource(bundlePath), { ort, mode: "in-graph" });
});

test.after(async (t) => {
  await staged?.dispose();
  await inGraph?.dispose();
  console.log(`# golden agreement: ${JSON.stringify(stats)}`);
});

test("the golden vectors were made from this bundle's manifest", () => {
  assert.equal(golden.format, "mmedge-golden-1");
  assert.equal(sha256(readFileSync(join(bundlePath, "manifest.json"))), golden.manifest_sha256,
    "manifest.json differs from the one the golden vectors were made from: regenerate them");
});

test("tokenizer cases: tokens, ids and masks bit-identical, errors the same", async (t) => {
  const tokenizer = WordTokenizer.fromJSON(readFileSync(join(REPO, tokenizerCases.tokenizer)));
  assert.equal(tokenizer.maxLength, tokenizerCases.max_length);
  await runTokenizerCases(t, tokenizer, tokenizerCases, TextError);
});

for (const q of golden.queries) {
  test(`query ${q.name}`, async (t) => {
    stats.queries++;
    const image = readPng(join(GOLDEN, q.image));
    assert.equal(image.width, q.width);
    assert.equal(image.height, q.height);
    assert.equal(image.channels, q.mode === "RGBA" ? 4 : 3);
    const inputs = staged.preprocess(image, q.text);
    assert.deepEqual([...inputs.inputIds], q.input_ids, "input_ids");
    assert.deepEqual([...inputs.textMask], q.text_mask, "text_mask");
    assert.equal(sha256(inputs.resized), q.resized_rgb_sha256, "resized 8-bit RGB");
    assert.equal(sha256(new Uint8Array(inputs.pixelValues.buffer)), q.pixel_values_sha256, "pixel_values");
    for (const [key, want] of Object.entries(q.by_keep_ratio)) {
      const ratio = Number(key);
      await t.test(`keep ratio ${key}`, async (t2) => {
        stats.ratios++;
        const exits = await staged.allExits(image, q.text, { keepRatio: ratio });
        assert.deepEqual(exits.keptVisualTokens, want.kept_index, "kept tokens");
        assert.equal(exits.logits.length, want.logits.length);
        exits.logits.forEach((_, i) => {
          stats.exits++;
          assertExitMatches(exits, want, i, tol, stats);
        });
        assert.deepEqual(exits.answers.map((a) => staged.labels[a]), want.answers, "answers");
        for (const row of want.policies) {
          stats.policies++;
          const policy = makePolicy(policyOf(row.policy));
          const offline = decideOffline(policy, exits.answers, exits.confidences, exits.maxProbabilities);
          assert.equal(offline, row.exit_index, `offline ${JSON.stringify(row.policy)}`);
          const p = await staged.predict(image, q.text, { policy, keepRatio: ratio });
          assert.equal(p.exitIndex, row.exit_index, `predict exit ${JSON.stringify(row.policy)}`);
          assert.equal(p.answer, row.answer, `predict answer ${JSON.stringify(row.policy)}`);
          assert.deepEqual(p.keptVisualTokens, want.kept_index);
          assert.equal(p.exitLayer, staged.manifest.exit_layers[p.exitIndex]);
          stats.policiesAgree++;
        }
        for (const row of want.in_graph ?? []) {
          const p = await inGraph.predict(image, q.text, { policy: { kind: "confidence", threshold: row.threshold }, keepRatio: ratio });
          assert.equal(p.exitIndex, row.exit_index, `in-graph exit at ${row.threshold}`);
          assert.equal(p.answer, row.answer, `in-graph answer at ${row.threshold}`);
          assert.deepEqual(p.keptVisualTokens, want.kept_index, "in-graph kept tokens");
          stats.inGraph++;
        }
      });
    }
    const d = q.default;
    const p = await staged.predict(image, q.text);
    assert.equal(p.keepRatio, d.keep_ratio);
    assert.deepEqual({ ...staged.policy }, { ...makePolicy(policyOf(d.policy)) });
    assert.equal(p.exitIndex, d.exit_index, "default exit");
    assert.equal(p.answer, d.answer, "default answer");
    for (const k of ["preprocess", "total", ...staged.stagesFor(d.keep_ratio).slice(0, p.exitIndex + 1)]) {
      assert.equal(typeof p.timingsMs[k], "number", `timing ${k}`);
    }
  });
}
