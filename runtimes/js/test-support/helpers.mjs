// Shared by the tests in test/ (kept outside test/ so that `node --test test/` does not count it).
import assert from "node:assert/strict";
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createHash, generateKeyPairSync, sign } from "node:crypto";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const { PNG } = require("pngjs");

export const PACKAGE = resolve(dirname(fileURLToPath(import.meta.url)), "..");
export const REPO = resolve(PACKAGE, "../..");
export const GOLDEN = join(REPO, "tests/vectors/golden");
export const CONTROLLER_VECTORS = join(REPO, "tests/vectors/controller.json");

export function readJson(path) {
  return JSON.parse(readFileSync(path, "utf8"));
}

export function sha256(bytes) {
  return createHash("sha256").update(bytes).digest("hex");
}

/** A PNG file as the runtime's image input: RGB for colour type 2, RGBA for 6 (grey is expanded to RGB). */
export function readPng(path) {
  const png = PNG.sync.read(readFileSync(path), { skipRescale: true });
  const { width, height } = png;
  const hasAlpha = png.colorType === 4 || png.colorType === 6 || png.alpha;
  if (hasAlpha) return { width, height, channels: 4, data: new Uint8Array(png.data) };
  const data = new Uint8Array(width * height * 3);
  for (let p = 0; p < width * height; p++) {
    data[p * 3] = png.data[p * 4];
    data[p * 3 + 1] = png.data[p * 4 + 1];
    data[p * 3 + 2] = png.data[p * 4 + 2];
  }
  return { width, height, channels: 3, data };
}

/** A copy of a bundle in a new temporary directory; returns [path, cleanup]. */
export function copyBundle(src) {
  const dir = mkdtempSync(join(tmpdir(), "mmedge-js-"));
  const dest = join(dir, "bundle.mmedge");
  cpSync(src, dest, { recursive: true });
  return [dest, () => rmSync(dir, { recursive: true, force: true })];
}

/** A fresh Ed25519 key pair: { publicPem, privateKey, rawPublic }. */
export function newKeyPair() {
  const { publicKey, privateKey } = generateKeyPairSync("ed25519");
  const publicPem = publicKey.export({ type: "spki", format: "pem" });
  const rawPublic = publicKey.export({ type: "spki", format: "der" }).subarray(12);
  return { publicPem, privateKey, rawPublic };
}

/** Writes bundle/manifest.sig in the spec's format, signing the manifest's bytes as they are. */
export function signBundle(bundle, keys) {
  const data = readFileSync(join(bundle, "manifest.json"));
  const record = {
    format: "mmedge-signature-1", algorithm: "ed25519", signed_file: "manifest.json",
    public_key_sha256: sha256(keys.rawPublic), signature: sign(null, data, keys.privateKey).toString("base64"),
  };
  writeFileSync(join(bundle, "manifest.sig"), JSON.stringify(record, null, 1) + "\n");
}

/** Rewrites a manifest.json (and, with `rehash`, nothing else: the files keep their hashes). */
export function editManifest(bundle, edit) {
  const path = join(bundle, "manifest.json");
  const manifest = JSON.parse(readFileSync(path, "utf8"));
  const result = edit(manifest) ?? manifest;
  writeFileSync(path, typeof result === "string" ? result : JSON.stringify(result, null, 1) + "\n");
}

/** The policy object of a test vector (snake_case) as the runtime takes it. */
export function policyOf(vector) {
  const out = { kind: vector.kind };
  if (vector.threshold !== undefined) out.threshold = vector.threshold;
  if (vector.patience !== undefined) out.patience = vector.patience;
  if (vector.budget_ms !== undefined) out.budgetMs = vector.budget_ms;
  return out;
}

/**
 * Runs every case of a golden tokenizer file (format mmedge-golden-tokenizer-1) as a subtest of `t`:
 * tokens, ids and masks bit-identical, the same errors. `TextError` is the runtime's error class.
 */
export async function runTokenizerCases(t, tokenizer, doc, TextError) {
  assert.ok(doc.cases.length > 0);
  for (const c of doc.cases) {
    await t.test(JSON.stringify(c.text).slice(0, 60), () => {
      if (c.error) {
        assert.equal(c.error, "TextError");
        assert.throws(() => tokenizer.encode(c.text), TextError);
        return;
      }
      const got = tokenizer.encode(c.text);
      assert.deepEqual(got.tokens, c.tokens);
      assert.deepEqual([...got.inputIds], c.input_ids);
      assert.deepEqual([...got.textMask], c.text_mask);
      assert.equal(got.truncated, c.tokens.length > doc.max_length);
    });
  }
}

/**
 * The vectors' image generator (xorshift32; `generator` in tests/vectors/adapted and caption): an
 * ImageInput of noise, or with pattern "binary" each byte thresholded to 0 / 255.
 */
export function generated({ width, height, channels, pattern, seed }) {
  const data = new Uint8Array(width * height * channels);
  let x = seed >>> 0;
  for (let i = 0; i < data.length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    const v = x >>> 24;
    data[i] = pattern === "binary" ? (v >= 128 ? 255 : 0) : v;
  }
  return { width, height, channels, data };
}

/**
 * Exit i of an allExits() result against its golden values: every logit within tol.logits_abs and the
 * confidence within tol.confidence_abs (logits_abs where the vectors give none); the largest errors are
 * kept in stats.maxLogitsErr / stats.maxConfErr.
 */
export function assertExitMatches(exits, want, i, tol, stats) {
  want.logits[i].forEach((v, j) => {
    const err = Math.abs(exits.logits[i][j] - v);
    stats.maxLogitsErr = Math.max(stats.maxLogitsErr, err);
    assert.ok(err <= tol.logits_abs, `exit ${i} logit ${j}: ${exits.logits[i][j]} vs ${v}`);
  });
  const cerr = Math.abs(exits.confidences[i] - want.confidence[i]);
  stats.maxConfErr = Math.max(stats.maxConfErr, cerr);
  assert.ok(cerr <= (tol.confidence_abs ?? tol.logits_abs), `exit ${i} confidence`);
}
