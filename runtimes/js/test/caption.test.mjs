// Conformance of the caption engine: the golden vectors of tests/vectors/caption/ (made by
// scripts/make_caption_vectors.py with the Python CaptionEngine on onnxruntime) on the committed
// captioning bundle, whose weights file is rebuilt here from models/caption-default/model.safetensors.
import assert from "node:assert/strict";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import test from "node:test";
import * as ort from "onnxruntime-node";

import {
  BundleError, CAPTION_MANIFEST_SCHEMA, CaptionEngine, Engine, MemorySource, NodeDirectorySource, logSoftmax,
} from "../dist/index.js";
import { rebuildCaptionWeights } from "../test-support/caption-weights.mjs";
import { REPO, generated, policyOf, readJson, readPng, sha256 } from "../test-support/helpers.mjs";

const VECTORS = join(REPO, "tests/vectors/caption");
const doc = readJson(join(VECTORS, "vectors.json"));
const recipe = readJson(join(REPO, doc.weights));
const bundleDir = join(REPO, doc.bundle);
const tol = doc.tolerance;
const stats = {
  images: 0, captions: 0, ids: 0, wordsAgree: 0, exitsAgree: 0, textsAgree: 0, encoderBitIdentical: 0, encoderOutputs: 0,
  maxConfErr: 0, maxLogprobErr: 0, maxCrossErr: 0,
};


const imageOf = (entry) => (entry.file ? readPng(join(VECTORS, entry.file)) : generated(entry));

/** The committed bundle plus the rebuilt weights, as an in-memory source. */
function bundleFiles() {
  const files = new Map();
  const walk = (dir) => {
    for (const name of readdirSync(dir)) {
      const path = join(dir, name);
      if (statSync(path).isDirectory()) walk(path);
      else files.set(relative(bundleDir, path).split("\\").join("/"), new Uint8Array(readFileSync(path)));
    }
  };
  walk(bundleDir);
  files.set(recipe.file, rebuildCaptionWeights(REPO, recipe));
  return files;
}

let files;
let engine;

test.before(async () => {
  files = bundleFiles();
  engine = await CaptionEngine.load(new MemorySource(files, "caption-default.mmedge"), { ort });
});

test.after(async () => {
  await engine?.dispose();
  console.log(`# caption agreement: ${JSON.stringify(stats)}`);
});

test("the caption schema copy equals mmedge/caption/caption_manifest.schema.json", () => {
  assert.deepEqual(CAPTION_MANIFEST_SCHEMA, readJson(join(REPO, "mmedge/caption/caption_manifest.schema.json")));
});

test("the vectors belong to this bundle, and its weights rebuild byte for byte", () => {
  assert.equal(doc.format, "mmedge-caption-vectors-1");
  assert.equal(sha256(readFileSync(join(bundleDir, "manifest.json"))), doc.manifest_sha256,
    "manifest.json differs from the one the vectors were made from: run python scripts/make_caption_vectors.py");
  assert.equal(sha256(files.get(recipe.file)), recipe.sha256);
  assert.equal(engine.manifest.files[recipe.file].sha256, recipe.sha256);
});

test("loading: every check of the spec applies to a captioning bundle", async (t) => {
  await t.test("the classifier Engine refuses it as unsupported", async () => {
    await assert.rejects(Engine.load(new MemorySource(files), { ort }), (e) => e instanceof BundleError && e.code === "unsupported");
  });
  await t.test("a changed weights file is a hash mismatch", async () => {
    const bad = new Map(files);
    const w = new Uint8Array(files.get(recipe.file));
    w[w.length - 1] ^= 1;
    bad.set(recipe.file, w);
    await assert.rejects(CaptionEngine.load(new MemorySource(bad), { ort }), (e) => e instanceof BundleError && e.code === "hash-mismatch");
  });
  await t.test("an edited graph description is inconsistent", async () => {
    const bad = new Map(files);
    const m = JSON.parse(new TextDecoder().decode(files.get("manifest.json")));
    m.graphs.fill0.outputs[0].shape[0] += 1;
    bad.set("manifest.json", new TextEncoder().encode(JSON.stringify(m)));
    await assert.rejects(CaptionEngine.load(new MemorySource(bad), { ort }), (e) => e instanceof BundleError && e.code === "inconsistent");
  });
  await t.test("a file the manifest does not list is refused", async () => {
    const bad = new Map(files);
    bad.set("extra.txt", new Uint8Array([1]));
    await assert.rejects(CaptionEngine.load(new MemorySource(bad), { ort }), (e) => e instanceof BundleError && e.code === "unlisted");
  });
  await t.test("a directory on disk without its weights file is refused (file-missing)", async () => {
    await assert.rejects(CaptionEngine.load(new NodeDirectorySource(bundleDir), { ort }), (e) => e instanceof BundleError && e.code === "file-missing");
  });
  await t.test("bad arguments", async () => {
    await assert.rejects(engine.captionPixels(new Float32Array(3 * 96 * 96), { beam: 0 }), /beam/);
    await assert.rejects(engine.captionPixels(new Float32Array(3 * 96 * 96), { maxLen: 25 }), /maxLen/);
    await assert.rejects(engine.captionPixels(new Float32Array(3 * 96 * 96), { kv: "nope" }), /kv/);
    await assert.rejects(engine.captionPixels(new Float32Array(3 * 96 * 96), { keepRatio: 0.25 }), /keep ratio/);
    await assert.rejects(engine.captionPixels(new Float32Array(3 * 96 * 96), { onWord: "print" }), /onWord must be a function/);
  });
});

test("logSoftmax in double precision", () => {
  const lp = logSoftmax(new Float32Array([1, 2, 3]));
  const sum = [...lp].reduce((a, b) => a + Math.exp(b), 0);
  assert.ok(Math.abs(sum - 1) < 1e-15);
});

for (const entry of doc.images) {
  test(`image ${entry.name}`, async () => {
    stats.images++;
    const image = imageOf(entry);
    const { resized, pixelValues } = engine.preprocess(image);
    assert.equal(sha256(resized), entry.resized_rgb_sha256, "resized 8-bit RGB");
    assert.equal(sha256(new Uint8Array(pixelValues.buffer)), entry.pixel_values_sha256, "pixel_values");
    for (const [key, want] of Object.entries(entry.by_keep_ratio)) {
      const ratio = Number(key);
      const enc = await engine.encode(pixelValues, ratio);
      for (const [name, got] of [["cross_k", enc.crossK], ["cross_v", enc.crossV]]) {
        const w = want.encoder[name];
        assert.deepEqual(enc.dims, w.shape);
        stats.encoderOutputs++;
        if (sha256(new Uint8Array(got.buffer, got.byteOffset, got.byteLength)) === w.sha256) stats.encoderBitIdentical++;
        w.sample.forEach((v, i) => {
          const err = Math.abs(got[i * doc.sample_stride] - v);
          stats.maxCrossErr = Math.max(stats.maxCrossErr, err);
          assert.ok(err <= tol.cross_abs, `${name}[${i * doc.sample_stride}] differs by ${err}`);
        });
      }
      for (const r of want.runs) {
        const where = `${entry.name} keep ${key} ${r.policy.kind} kv ${r.kv} beam ${r.beam} max_len ${r.max_len}`;
        const c = await engine.captionPixels(pixelValues, {
          policy: policyOf(r.policy), kv: r.kv, beam: r.beam, maxLen: r.max_len, keepRatio: ratio,
        });
        stats.captions++;
        stats.ids += r.tokens.length;
        const n = Math.min(c.tokens.length, r.tokens.length);
        for (let i = 0; i < n; i++) {
          if (c.tokens[i] === r.tokens[i]) stats.wordsAgree++;
          if (c.exits[i] === r.exits[i]) stats.exitsAgree++;
        }
        if (c.text === r.text) stats.textsAgree++;
        assert.deepEqual(c.tokens, r.tokens, `${where}: words`);
        assert.deepEqual(c.exits, r.exits, `${where}: exits`);
        assert.equal(c.text, r.text, `${where}: text`);
        assert.deepEqual(r.words.map((w) => engine.tokenizer.vocab.get(w)), r.tokens, `${where}: the vectors' words are their ids`);
        c.confidences.forEach((v, i) => {
          const err = Math.abs(v - r.confidences[i]);
          stats.maxConfErr = Math.max(stats.maxConfErr, err);
          assert.ok(err <= tol.confidence_abs, `${where}: confidence ${i} differs by ${err}`);
        });
        const lerr = Math.abs(c.logprob - r.logprob);
        stats.maxLogprobErr = Math.max(stats.maxLogprobErr, lerr);
        assert.ok(lerr <= tol.logprob_abs, `${where}: logprob differs by ${lerr}`);
        assert.ok(c.timingsMs.encoder >= 0 && c.timingsMs.total >= c.timingsMs.encoder, "timings");
        assert.ok(c.timingsMs[`step0_k${key}`] > 0, "per-graph timings");
        assert.ok(c.positionMs.length >= 1 && c.positionMs.length <= r.max_len, "one time per position run");
      }
    }
  });
}

test("caption(image) preprocesses, captions and times the whole call", async () => {
  const entry = doc.images[0];
  const want = entry.by_keep_ratio["1"].runs.find((r) => r.policy.kind === "full" && r.beam === 1 && r.kv === "copy");
  const c = await engine.caption(imageOf(entry), { policy: "full", keepRatio: 1, kv: "copy" });
  assert.equal(c.text, want.text);
  assert.deepEqual(c.words, want.text.split(" "));
  for (const k of ["preprocess", "encoder", "total"]) assert.ok(c.timingsMs[k] >= 0, k);
});

test("onWord: the caption word by word, each id with its exit and confidence, as it is written", async () => {
  const entry = doc.images[0];
  const want = entry.by_keep_ratio["1"].runs.find((r) => r.policy.kind === "confidence" && r.beam === 1 && r.max_len === 24);
  const { pixelValues } = engine.preprocess(imageOf(entry));
  const steps = [];
  let pending = false;
  const c = await engine.captionPixels(pixelValues, {
    policy: policyOf(want.policy), kv: want.kv, keepRatio: 1,
    onWord: async (step) => {
      assert.equal(pending, false, "the previous call's promise was awaited before this position ran");
      steps.push(step);
      pending = true;
      await new Promise((resolve) => setTimeout(resolve, 1));
      pending = false;
    },
  });
  assert.equal(c.text, want.text);
  assert.deepEqual(c.tokens, want.tokens);
  assert.equal(steps.length, want.tokens.length, "one call per generated id");
  steps.forEach((step, i) => {
    assert.equal(step.position, i);
    assert.equal(step.token, want.tokens[i]);
    assert.equal(step.exit, want.exits[i], `word ${i}: exit`);
    assert.ok(Math.abs(step.confidence - want.confidences[i]) <= tol.confidence_abs, `word ${i}: confidence`);
    assert.deepEqual(step.tokens, want.tokens.slice(0, i + 1));
    assert.deepEqual(step.exits, want.exits.slice(0, i + 1));
    const isEos = want.tokens[i] === engine.manifest.tokenizer.eos_id;
    assert.equal(step.word, isEos ? null : want.words[i], `word ${i}`);
    assert.deepEqual(step.words, want.text.split(" ").slice(0, isEos ? i : i + 1));
    assert.equal(step.done, i === want.tokens.length - 1 && want.tokens[i] === engine.manifest.tokenizer.eos_id);
    assert.ok(i === 0 || step.elapsedMs >= steps[i - 1].elapsedMs);
  });
  assert.ok(c.timingsMs.onWord >= steps.length, "the callbacks' time (each waited >= 1 ms) is reported");
  assert.ok(c.timingsMs.total >= c.timingsMs.onWord);
  const quiet = await engine.captionPixels(pixelValues, { policy: policyOf(want.policy), kv: want.kv, keepRatio: 1 });
  assert.equal(quiet.timingsMs.onWord, undefined, "no onWord time without a callback");
  assert.deepEqual(quiet.exits, c.exits);
});

test("onWord with a beam: one call per position, the leading hypothesis; an error in it ends the call", async () => {
  const entry = doc.images[0];
  const want = entry.by_keep_ratio["1"].runs.find((r) => r.policy.kind === "full" && r.beam === 3 && r.max_len === 5);
  const { pixelValues } = engine.preprocess(imageOf(entry));
  const steps = [];
  const c = await engine.captionPixels(pixelValues, {
    policy: policyOf(want.policy), kv: want.kv, beam: 3, maxLen: 5, keepRatio: 1, onWord: (step) => { steps.push(step); },
  });
  assert.deepEqual(c.tokens, want.tokens);
  assert.equal(steps.length, c.positionMs.length);
  steps.forEach((step, i) => assert.equal(step.tokens.length, i + 1, "a hypothesis with one id per position"));
  assert.deepEqual(steps.at(-1).tokens, c.tokens, "here the last leader is the caption chosen");

  await assert.rejects(
    engine.captionPixels(pixelValues, { onWord: (step) => { if (step.position === 2) throw new Error("stop at word 3"); } }),
    /stop at word 3/);
  await assert.rejects(engine.captionPixels(pixelValues, { onWord: () => Promise.reject(new Error("rejected")) }), /rejected/);
  const after = await engine.captionPixels(pixelValues, { policy: policyOf(want.policy), kv: want.kv, beam: 3, maxLen: 5, keepRatio: 1 });
  assert.deepEqual(after.tokens, want.tokens, "the engine still captions after a callback failed");
});
