// Tampered and hostile bundles are refused with the right typed error, before any stage is opened.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { appendFileSync, readFileSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import { join } from "node:path";
import test from "node:test";
import * as ort from "onnxruntime-node";

import {
  BundleError, ConfigError, Engine, FetchSource, MemorySource, NodeDirectorySource, SignatureError, loadManifest,
} from "../dist/index.js";
import { GOLDEN, REPO, copyBundle, editManifest, newKeyPair, readJson, readPng, signBundle } from "../test-support/helpers.mjs";

const golden = readJson(join(GOLDEN, "queries.json"));
const BUNDLE = join(REPO, golden.bundle);
const load = (dir, options = {}) => Engine.load(new NodeDirectorySource(dir), { ort, ...options });
const stageFile = (dir) => {
  const m = JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8"));
  return m.artifacts.find((a) => a.format === "onnx").stages[m.keep_ratios[0].stages[1]].file;
};

/** Runs `body` on a fresh copy of the bundle, removed afterwards. */
async function withCopy(body) {
  const [dir, cleanup] = copyBundle(BUNDLE);
  try {
    await body(dir);
  } finally {
    cleanup();
  }
}

/** `promise` rejects with a `type` whose message matches `pattern` and whose reason code is `code`. */
async function refused(promise, type, pattern, code) {
  await assert.rejects(promise, (exc) => {
    assert.ok(exc instanceof type, `expected ${type.name}, got ${exc?.constructor?.name}: ${exc?.message}`);
    if (type === BundleError) assert.ok(!(exc instanceof SignatureError), "not a signature problem");
    if (pattern) assert.match(exc.message, pattern);
    if (code) assert.equal(exc.code, code, `reason code of: ${exc.message}`);
    assert.ok(exc.message.length < 1200, "short message");
    return true;
  });
}

test("the untouched copy loads", () => withCopy(async (dir) => {
  const engine = await load(dir);
  await engine.dispose();
}));

test("an explicit tokenizer kind \"word\" (the default) loads", () => withCopy(async (dir) => {
  editManifest(dir, (m) => { m.tokenizer.kind = "word"; });
  const engine = await load(dir);
  assert.equal(engine.tokenizer.kind, "word");
  await engine.dispose();
}));

test("a flipped byte in a stage file: hash mismatch", () => withCopy(async (dir) => {
  const path = join(dir, stageFile(dir));
  const bytes = readFileSync(path);
  bytes[Math.floor(bytes.length / 2)] ^= 0x01;
  writeFileSync(path, bytes);
  await refused(load(dir), BundleError, /hash mismatch/, "hash-mismatch");
}));

test("a truncated stage file and a missing one", () => withCopy(async (dir) => {
  const path = join(dir, stageFile(dir));
  writeFileSync(path, readFileSync(path).subarray(0, 100));
  await refused(load(dir), BundleError, /size mismatch/, "size-mismatch");
  rmSync(path);
  await refused(load(dir), BundleError, /missing/, "file-missing");
}));

test("a stage file grown past its listed size", () => withCopy(async (dir) => {
  appendFileSync(join(dir, stageFile(dir)), Buffer.from([0]));
  await refused(load(dir), BundleError, /size mismatch|over the \d+ bytes/, "size-mismatch");
}));

test("edited manifest (labels permuted) without a key: loads, which is why apps ship a key", () => withCopy(async (dir) => {
  editManifest(dir, (m) => { m.labels = [...m.labels.slice(1), m.labels[0]]; });
  const engine = await load(dir);
  assert.notEqual(engine.labels[0], readJson(join(BUNDLE, "manifest.json")).labels[0]);
  await engine.dispose();
}));

test("signatures: valid loads; labels permuted after signing, unsigned, other key, malformed: SignatureError", () => withCopy(async (dir) => {
  const keys = newKeyPair();
  signBundle(dir, keys);
  const engine = await load(dir, { verifyKey: keys.publicPem });
  await engine.dispose();
  const asBytes = await load(dir, { verifyKey: new TextEncoder().encode(keys.publicPem) });
  await asBytes.dispose();

  await refused(load(dir, { verifyKey: newKeyPair().publicPem }), SignatureError, /another key/, "signature-key");

  const sig = readFileSync(join(dir, "manifest.sig"));
  editManifest(dir, (m) => { m.labels = [...m.labels.slice(1), m.labels[0]]; });
  await refused(load(dir, { verifyKey: keys.publicPem }), SignatureError, /does not match/, "signature-invalid");

  rmSync(join(dir, "manifest.sig"));
  await refused(load(dir, { verifyKey: keys.publicPem }), SignatureError, /not signed/, "signature-missing");

  signBundle(dir, keys);
  const record = JSON.parse(readFileSync(join(dir, "manifest.sig"), "utf8"));
  writeFileSync(join(dir, "manifest.sig"), JSON.stringify({ ...record, algorithm: "rsa" }));
  await refused(load(dir, { verifyKey: keys.publicPem }), SignatureError, /malformed/, "signature-malformed");
  writeFileSync(join(dir, "manifest.sig"), JSON.stringify({ ...record, signature: "not base64!" }));
  await refused(load(dir, { verifyKey: keys.publicPem }), SignatureError, /malformed/, "signature-malformed");
  writeFileSync(join(dir, "manifest.sig"), Buffer.alloc(5000, 0x20));
  await refused(load(dir, { verifyKey: keys.publicPem }), SignatureError, /manifest.sig/, "signature-malformed");
  writeFileSync(join(dir, "manifest.sig"), sig); // the signature of the original manifest
  await refused(load(dir, { verifyKey: keys.publicPem }), SignatureError, /does not match/, "signature-invalid");

  await refused(load(dir, { verifyKey: "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VuAyEA" + "A".repeat(43) + "=\n-----END PUBLIC KEY-----\n" }),
    SignatureError, /not an Ed25519/, "signature-key");
  await refused(load(dir, { verifyKey: "ssh-ed25519 AAAA" }), SignatureError, /PEM/, "signature-key");
}));

test("path traversal in a stage file and in files", () => withCopy(async (dir) => {
  const original = readFileSync(join(dir, "manifest.json"), "utf8");
  const rel = stageFile(dir);
  editManifest(dir, (m) => {
    for (const a of m.artifacts) for (const s of Object.values(a.stages)) if (s.file === rel) s.file = `../../${rel}`;
  });
  await refused(load(dir), BundleError, /relative path|inside the bundle/, "path");
  writeFileSync(join(dir, "manifest.json"), original);
  editManifest(dir, (m) => {
    m.files[`onnx/../../../etc/passwd`] = { sha256: "0".repeat(64), bytes: 1 };
  });
  await refused(load(dir), BundleError, /relative path|inside the bundle|not normalised/, "path");
  writeFileSync(join(dir, "manifest.json"), original);
  editManifest(dir, (m) => { m.files["onnx/a\u0000b"] = { sha256: "0".repeat(64), bytes: 1 }; });
  await refused(load(dir), BundleError, /NUL/, "path");
  writeFileSync(join(dir, "manifest.json"), original);
  editManifest(dir, (m) => { m.files["manifest.sig"] = { sha256: "0".repeat(64), bytes: 1 }; });
  await refused(load(dir), BundleError, /may not list/, "path");
}));

test("a symlinked tokenizer (and a symlinked directory on the way)", () => withCopy(async (dir) => {
  const real = join(dir, "..", "tokenizer-elsewhere.json");
  writeFileSync(real, readFileSync(join(dir, "tokenizer.json")));
  rmSync(join(dir, "tokenizer.json"));
  symlinkSync(real, join(dir, "tokenizer.json"));
  await refused(load(dir), BundleError, /link/, "file-not-regular");
}));

test("a symlinked stage directory", () => withCopy(async (dir) => {
  const rel = stageFile(dir);
  const folder = rel.split("/").slice(0, -1).join("/");
  execFileSync("mv", [join(dir, folder), join(dir, "..", "moved")]);
  symlinkSync(join(dir, "..", "moved"), join(dir, folder));
  await refused(load(dir), BundleError, /link/, "file-not-regular");
}));

test("a FIFO in place of a stage file is refused without blocking", { skip: process.platform === "win32" }, () => withCopy(async (dir) => {
  const path = join(dir, stageFile(dir));
  rmSync(path);
  execFileSync("mkfifo", [path]);
  await refused(load(dir), BundleError, /not regular/, "file-not-regular");
}));

test("an oversized manifest (over 8 MiB)", () => withCopy(async (dir) => {
  const text = readFileSync(join(dir, "manifest.json"), "utf8");
  writeFileSync(join(dir, "manifest.json"), text + " ".repeat(8 * 1024 * 1024));
  await refused(load(dir), BundleError, /over 8388608 bytes/, "manifest-too-large");
}));

test("deep nesting: 33 levels, and a million", () => withCopy(async (dir) => {
  const original = readFileSync(join(dir, "manifest.json"), "utf8");
  editManifest(dir, (m) => {
    let v = 1;
    for (let i = 0; i < 31; i++) v = [v]; // manifest (1) > model (2) > config (3) > deep: 3 + 31 = 34 levels
    m.model.config.deep = v;
  });
  await refused(load(dir), BundleError, /nests deeper than 32/, "json");
  const tooDeep = original.replace('"model": {', `"x": ${"[".repeat(1_000_000)}${"]".repeat(1_000_000)}, "model": {`);
  writeFileSync(join(dir, "manifest.json"), tooDeep);
  await refused(load(dir), BundleError, /nests deeper than 32/, "json");
  // exactly 32 levels are fine
  editManifest(dir, () => JSON.parse(original));
  editManifest(dir, (m) => {
    let v = 1;
    for (let i = 0; i < 29; i++) v = [v];
    m.model.config.deep = v;
  });
  const engine = await load(dir);
  await engine.dispose();
}));

test("schema_version 1.0, \"1\", 2 and missing", () => withCopy(async (dir) => {
  const original = readFileSync(join(dir, "manifest.json"), "utf8");
  assert.match(original, /"schema_version": 1,/);
  for (const bad of ["1.0", "1e0", "\"1\"", "2", "true"]) {
    writeFileSync(join(dir, "manifest.json"), original.replace(/"schema_version": 1,/, `"schema_version": ${bad},`));
    await refused(load(dir), BundleError, /schema_version/, "schema-version");
  }
  writeFileSync(join(dir, "manifest.json"), original.replace(/"schema_version": 1,/, ""));
  await refused(load(dir), BundleError, /schema_version/, "schema-version");
}));

test("not JSON, not UTF-8, not an object, a BOM", () => withCopy(async (dir) => {
  const original = readFileSync(join(dir, "manifest.json"));
  writeFileSync(join(dir, "manifest.json"), "{\"schema_version\": 1,");
  await refused(load(dir), BundleError, /not valid JSON/, "json");
  writeFileSync(join(dir, "manifest.json"), Buffer.concat([original.subarray(0, 10), Buffer.from([0xff, 0xfe]), original.subarray(10)]));
  await refused(load(dir), BundleError, /UTF-8/, "json");
  writeFileSync(join(dir, "manifest.json"), "[1]");
  await refused(load(dir), BundleError, /object/, "json");
  writeFileSync(join(dir, "manifest.json"), Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), original]));
  await refused(load(dir), BundleError, /byte-order mark/, "json");
  rmSync(join(dir, "manifest.json"));
  await refused(load(dir), BundleError, /no manifest.json/, "manifest-missing");
}));

test("schema and consistency violations", () => withCopy(async (dir) => {
  const original = readFileSync(join(dir, "manifest.json"), "utf8");
  const cases = [
    [(m) => { m.labels = Array.from({ length: 65537 }, (_, i) => `l${i}`); }, /schema/],
    [(m) => { m.preprocessing.image_size = 5000; }, /schema/],
    [(m) => { delete m.tokenizer; }, /schema/],
    [(m) => { m.thresholds.keep_ratio = 0.3; }, /inconsistent/],
    [(m) => { m.exit_layers = [...m.exit_layers].reverse(); }, /inconsistent/],
    [(m) => { m.tokenizer.unk_id = m.tokenizer.pad_id; }, /inconsistent/],
    [(m) => { m.keep_ratios[0].stages = [...m.keep_ratios[0].stages].reverse(); }, /inconsistent/],
    [(m) => { m.keep_ratios[0].stages[1] = "constructor"; }, /inconsistent/],
    [(m) => { m.labels = m.labels.slice(0, -1); }, /inconsistent/],
    [(m) => { m.tokenizer.max_length = 23; }, /inconsistent/],
    [(m) => { m.model.config.vocab_size = 3; }, /tokenizer does not fit/],
    [(m) => { m.tokenizer.kind = "wordpiece"; }, /schema/],
    [(m) => { m.tokenizer.kind = "bpe"; }, /schema/],
    [(m) => { Object.assign(m.tokenizer, { kind: "wordpiece", continuing_subword_prefix: "##", max_input_chars_per_word: 100 }); },
      /tokenizer does not fit.*word tokenizer, the manifest says kind "wordpiece".*export the bundle again/],
  ];
  for (const [edit, pattern] of cases) {
    writeFileSync(join(dir, "manifest.json"), original);
    editManifest(dir, edit);
    const code = String(pattern).includes("schema") ? "schema" : String(pattern).includes("inconsistent") ? "inconsistent"
      : "tokenizer";
    await refused(load(dir), BundleError, pattern, code);
  }
}));

test("load options: ConfigError for bad arguments, BundleError for what the bundle lacks", () => withCopy(async (dir) => {
  await assert.rejects(Engine.load(new NodeDirectorySource(dir), {}), ConfigError);
  await assert.rejects(load(dir, { precision: "fp16" }), ConfigError);
  await assert.rejects(load(dir, { keepRatio: 0.33 }), ConfigError);
  await assert.rejects(load(dir, { policy: { kind: "patience", patience: 0 } }), ConfigError);
  await refused(load(dir, { precision: "int8" }), BundleError, /no onnxruntime int8/, "unsupported");
  await refused(load(dir, { format: "ort" }), BundleError, /no onnxruntime fp32 artifact in format ort/, "unsupported");
  const m = readJson(join(dir, "manifest.json"));
  if (m.in_graph) {
    await assert.rejects(load(dir, { mode: "in-graph", policy: "full" }), ConfigError);
    const engine = await load(dir, { mode: "in-graph" });
    const image = readPng(join(GOLDEN, golden.queries[0].image));
    await assert.rejects(engine.predict(image, "is there a red circle ?", { policy: "patience" }), ConfigError);
    await assert.rejects(engine.allExits(image, "is there a red circle ?"), ConfigError);
    await engine.dispose();
  }
}));

test("the verified bytes are the ones used: a file swapped after loading changes nothing", () => withCopy(async (dir) => {
  const engine = await load(dir);
  const image = readPng(join(GOLDEN, golden.queries[0].image));
  const before = await engine.predict(image, golden.queries[0].text, { policy: "full" });
  writeFileSync(join(dir, stageFile(dir)), "garbage");
  const after = await engine.predict(image, golden.queries[0].text, { policy: "full" });
  assert.equal(after.answer, before.answer);
  await engine.dispose();
}));

/** Every file of a directory, by bundle-relative path. */
function readTree(root, rel = "") {
  const out = {};
  for (const name of readdirSync(join(root, rel))) {
    const member = rel ? `${rel}/${name}` : name;
    if (statSync(join(root, member)).isDirectory()) Object.assign(out, readTree(root, member));
    else out[member] = new Uint8Array(readFileSync(join(root, member)));
  }
  return out;
}

test("MemorySource: the same checks and answers as the directory", async () => {
  const files = readTree(BUNDLE);
  const engine = await Engine.load(new MemorySource(files, "memory"), { ort });
  const q = golden.queries[0];
  const p = await engine.predict(readPng(join(GOLDEN, q.image)), q.text);
  assert.equal(p.answer, q.default.answer);
  assert.equal(p.exitIndex, q.default.exit_index);
  await engine.dispose();
  const rel = stageFile(BUNDLE);
  const bad = { ...files, [rel]: files[rel].slice(1) };
  await refused(Engine.load(new MemorySource(bad), { ort }), BundleError, /size mismatch/, "size-mismatch");
  const flipped = new Uint8Array(files[rel]);
  flipped[100] ^= 1;
  await refused(Engine.load(new MemorySource({ ...files, [rel]: flipped }), { ort }), BundleError, /hash mismatch/, "hash-mismatch");
  // a member the manifest does not list: MemorySource knows its members, so it is refused
  await refused(Engine.load(new MemorySource({ ...files, "extra.bin": new Uint8Array(3) }), { ort }), BundleError,
    /does not list: "extra.bin"/, "unlisted");
});

test("FetchSource over HTTP: loads, predicts, and enforces the size limits", () => withCopy(async (dir) => {
  const server = createServer((req, res) => {
    const rel = decodeURIComponent(new URL(req.url, "http://x").pathname.replace(/^\/bundle\//, ""));
    try {
      const data = readFileSync(join(dir, rel));
      res.writeHead(200, { "content-type": "application/octet-stream" });
      res.end(data);
    } catch {
      res.writeHead(404);
      res.end();
    }
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  try {
    const url = `http://127.0.0.1:${server.address().port}/bundle`;
    const engine = await Engine.load(new FetchSource(url), { ort });
    const q = golden.queries[1];
    const p = await engine.predict(readPng(join(GOLDEN, q.image)), q.text);
    assert.equal(p.answer, q.default.answer);
    await engine.dispose();
    const keys = newKeyPair();
    await refused(Engine.load(new FetchSource(url), { ort, verifyKey: keys.publicPem }), SignatureError, /not signed/);
    const path = join(dir, stageFile(dir));
    const bytes = readFileSync(path);
    writeFileSync(path, Buffer.concat([bytes, Buffer.from("x")]));
    await refused(Engine.load(new FetchSource(url), { ort }), BundleError, /size mismatch|over the \d+ bytes/, "size-mismatch");
    writeFileSync(path, bytes);
    // HTTP cannot list a directory: an extra served file is never requested, so it does not matter
    writeFileSync(join(dir, "extra.bin"), "x");
    const extra = await Engine.load(new FetchSource(url), { ort });
    await extra.dispose();
    appendFileSync(join(dir, "manifest.json"), " ".repeat(8 * 1024 * 1024));
    await refused(Engine.load(new FetchSource(url), { ort }), BundleError, /over 8388608 bytes/, "manifest-too-large");
  } finally {
    server.close();
  }
}));

test("loadManifest alone reads only manifest.json before the checks pass", async () => {
  const reads = [];
  const inner = new NodeDirectorySource(BUNDLE);
  const spy = { name: "spy", read: (p, n) => { reads.push(p); return inner.read(p, n); } };
  const files = readTree(BUNDLE);
  const m = JSON.parse(new TextDecoder().decode(files["manifest.json"]));
  m.thresholds.keep_ratio = 0.3;
  const bad = { name: "bad", read: async (p, n) => { reads.push(p); return p === "manifest.json" ? new TextEncoder().encode(JSON.stringify(m)) : inner.read(p, n); } };
  await refused(loadManifest(bad), BundleError, /inconsistent/, "inconsistent");
  assert.deepEqual(reads, ["manifest.json"]);
  reads.length = 0;
  const loaded = await loadManifest(spy);
  assert.equal(reads[0], "manifest.json");
  assert.equal(reads.length, 1 + Object.keys(loaded.manifest.files).length);
});

test("shared ONNX weights: a changed weights file, one outside the stages' folder, one not listed", () => withCopy(async (dir) => {
  const m = JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8"));
  const weights = m.artifacts.find((a) => a.format === "onnx").external_data;
  assert.equal(weights, "onnx/fp32/weights.bin");
  const path = join(dir, weights);
  const bytes = readFileSync(path);
  bytes[bytes.length - 5] ^= 0x01;
  writeFileSync(path, bytes);
  await refused(load(dir), BundleError, /hash mismatch/, "hash-mismatch");
})
  .then(() => withCopy(async (dir) => {
    editManifest(dir, (m) => {
      m.files["weights.bin"] = m.files["onnx/fp32/weights.bin"];
      for (const a of m.artifacts) if (a.external_data) a.external_data = "weights.bin";
    });
    execFileSync("cp", [join(dir, "onnx/fp32/weights.bin"), join(dir, "weights.bin")]);
    await refused(load(dir), BundleError, /not in the same folder/, "inconsistent");
  }))
  .then(() => withCopy(async (dir) => {
    editManifest(dir, (m) => {
      for (const a of m.artifacts) if (a.external_data) a.external_data = "onnx/fp32/other.bin";
    });
    await refused(load(dir), BundleError, /other\.bin/, "unlisted");
  })));
