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

/** weights.json's rule: the model's safetensors tensors (some transposed) and inline bytes, zeros between. */
function rebuildWeights() {
  const st = readFileSync(join(REPO, recipe.safetensors));
  assert.equal(sha256(st), recipe.safetensors_sha256, "models/caption-default/model.safetensors changed");
  const headerBytes = Number(st.readBigUInt64LE(0));
  const header = JSON.parse(st.subarray(8, 8 + headerBytes).toString("utf8"));
  const base = 8 + headerBytes;
  const out = new Uint8Array(recipe.bytes);
  for (const s of recipe.segments) {
    let chunk;
    if (s.base64 !== undefined) {
      chunk = Buffer.from(s.base64, "base64");
    } else {
      const t = header[s.tensor];
      assert.equal(t.dtype, "F32");
      const raw = st.subarray(base + t.data_offsets[0], base + t.data_offsets[1]);
      if (!s.transpose) {
        chunk = raw;
      } else {
        const [r, c] = t.shape;
        const src = new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.length));
        const dst = new Float32Array(r * c);
        for (let i = 0; i < r; i++) for (let j = 0; j < c; j++) dst[j * r + i] = src[i * c + j];
        chunk = new Uint8Array(dst.buffer);
      }
    }
    assert.equal(chunk.length, s.length);
    out.set(chunk, s.offset);
  }
  return out;
}

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
  files.set(recipe.file, rebuildWeights());
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
