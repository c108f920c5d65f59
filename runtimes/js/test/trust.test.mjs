// The refusals of issue 31 (docs/bundle-format.md), each with its reason code: strict JSON in
// manifest.json / manifest.sig / tokenizer.json, unlisted members, rollback, a graph's external
// data, values in the load-time self-check, the fixed rules and modality_pruning consistency, and
// captioning bundles (not implemented here). tests/vectors/negative/ covers the shared cases; these
// add the JavaScript-specific ones (sources, options, in-graph mode).
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import test from "node:test";
import * as ort from "onnxruntime-node";

import {
  BundleError, ConfigError, Engine, MemorySource, NodeDirectorySource, REASON_CODES, SignatureError,
  checkRelease, externalDataLocations, loadManifest,
} from "../dist/index.js";
import { GOLDEN, REPO, copyBundle, editManifest, newKeyPair, readJson, signBundle } from "../test-support/helpers.mjs";

const golden = readJson(join(GOLDEN, "queries.json"));
const BUNDLE = join(REPO, golden.bundle);
const load = (dir, options = {}) => Engine.load(new NodeDirectorySource(dir), { ort, ...options });
const sha = (bytes) => createHash("sha256").update(bytes).digest("hex");

async function withCopy(body) {
  const [dir, cleanup] = copyBundle(BUNDLE);
  try {
    await body(dir);
  } finally {
    cleanup();
  }
}

async function refused(promise, code, pattern, type = BundleError) {
  await assert.rejects(promise, (exc) => {
    assert.ok(exc instanceof type, `expected ${type.name}, got ${exc?.constructor?.name}: ${exc?.message}`);
    assert.equal(exc.code, code, `code of: ${exc.message}`);
    if (pattern) assert.match(exc.message, pattern);
    return true;
  });
}

/** Rewrites a listed file and its files entry (size and hash), as a tamperer who also edits the manifest would. */
function rewriteListed(dir, rel, bytes) {
  writeFileSync(join(dir, rel), bytes);
  editManifest(dir, (m) => { m.files[rel] = { sha256: sha(bytes), bytes: bytes.length }; });
}

function readTree(root, rel = "") {
  const out = {};
  for (const name of readdirSync(join(root, rel))) {
    const member = rel ? `${rel}/${name}` : name;
    if (statSync(join(root, member)).isDirectory()) Object.assign(out, readTree(root, member));
    else out[member] = new Uint8Array(readFileSync(join(root, member)));
  }
  return out;
}

test("every BundleError has a reason code; the default is \"bundle\"", () => {
  assert.equal(new BundleError("x").code, "bundle");
  assert.equal(new SignatureError("x", { code: "signature-key" }).code, "signature-key");
  assert.ok(REASON_CODES.includes("unlisted") && REASON_CODES.includes("self-check") && REASON_CODES.length === 22);
});

test("strict JSON in manifest.json: duplicate keys, overflow, big integers, lone surrogates -> json", () => withCopy(async (dir) => {
  const original = readFileSync(join(dir, "manifest.json"), "utf8");
  const put = (text) => writeFileSync(join(dir, "manifest.json"), text);
  const probe = (value) => original.replace('"name": ', `"probe": ${value}, "name": `);
  assert.notEqual(probe(1), original);
  for (const [value, pattern] of [["1e400", /overflows/], ["-1e400", /overflows/], ["9007199254740993", /beyond/],
    ['"\\ud800"', /surrogate/], ['"\\udc00\\ud800"', /surrogate/], ["NaN", /NaN/], ["-Infinity", /NaN|Infinity|minus/]]) {
    put(probe(value));
    await refused(load(dir), "json", pattern);
  }
  put(original.replace('"name": ', '"name": "twice", "name": '));
  await refused(load(dir), "json", /duplicate key "name"/);
  put(probe("[9007199254740991, -9007199254740991, \"\\ud83d\\ude00\", 1e-400]")); // allowed
  const engine = await load(dir);
  await engine.dispose();
}));

test("strict JSON in tokenizer.json -> tokenizer; in manifest.sig -> signature-malformed", () => withCopy(async (dir) => {
  const tokenizer = readFileSync(join(dir, "tokenizer.json"), "utf8");
  assert.match(tokenizer, /"\[PAD\]": 0/);
  const manifest = readFileSync(join(dir, "manifest.json"));
  for (const [bytes, pattern] of [
    [Buffer.from(tokenizer.replace('"[PAD]": 0', '"[PAD]": 0, "[PAD]": 0')), /duplicate key "\[PAD\]"/],
    [Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(tokenizer)]), /byte-order mark/],
    [Buffer.from(tokenizer.replace('"[PAD]": 0', '"[PAD]": 0, "x": 1e999')), /overflows/],
  ]) {
    writeFileSync(join(dir, "manifest.json"), manifest);
    rewriteListed(dir, "tokenizer.json", bytes);
    await refused(load(dir), "tokenizer", pattern);
  }
  writeFileSync(join(dir, "manifest.json"), manifest);
  writeFileSync(join(dir, "tokenizer.json"), tokenizer);
  const keys = newKeyPair();
  signBundle(dir, keys);
  const record = readFileSync(join(dir, "manifest.sig"), "utf8");
  assert.match(record, /"algorithm": "ed25519"/);
  for (const bad of [
    record.replace('"algorithm": "ed25519"', '"algorithm": "ed25519", "algorithm": "ed25519"'),
    "\ufeff" + record,
    record.replace('"algorithm": "ed25519"', '"algorithm": "ed25519", "n": 1e400'),
  ]) {
    writeFileSync(join(dir, "manifest.sig"), bad);
    await refused(load(dir, { verifyKey: keys.publicPem }), "signature-malformed", /malformed/, SignatureError);
  }
  // a fingerprint that is not this key's, whatever it is, is another key's (as the Python runtime says)
  writeFileSync(join(dir, "manifest.sig"), JSON.stringify({ ...JSON.parse(record), public_key_sha256: 5 }));
  await refused(load(dir, { verifyKey: keys.publicPem }), "signature-key", /another key/, SignatureError);
  writeFileSync(join(dir, "manifest.sig"), record);
  const engine = await load(dir, { verifyKey: keys.publicPem });
  await engine.dispose();
}));

test("unlisted members of a directory bundle: files, folders, links, FIFOs, anywhere -> unlisted", () => withCopy(async (dir) => {
  const cases = [
    ["notes.txt", () => writeFileSync(join(dir, "notes.txt"), "x")],
    ["onnx/fp32/extra.onnx", () => writeFileSync(join(dir, "onnx/fp32/extra.onnx"), "x")],
    ["onnx/int8", () => mkdirSync(join(dir, "onnx/int8"))],
    ["other", () => { mkdirSync(join(dir, "other/deeper"), { recursive: true }); writeFileSync(join(dir, "other/deeper/x"), "x"); }],
    ["onnx/fp32/weights-link.bin", () => symlinkSync("weights.bin", join(dir, "onnx/fp32/weights-link.bin"))],
    ["outside-link", () => symlinkSync("/etc", join(dir, "outside-link"))],
  ];
  for (const [rel, make] of cases) {
    make();
    await refused(load(dir), "unlisted", new RegExp(rel.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")));
    rmSync(join(dir, rel.split("/")[0] === "onnx" ? rel : rel.split("/")[0]), { recursive: true, force: true });
  }
  if (process.platform !== "win32") {
    const { execFileSync } = await import("node:child_process");
    execFileSync("mkfifo", [join(dir, "onnx/pipe")]);
    await refused(load(dir), "unlisted", /special file.*onnx\/pipe/); // never opened: no hang
    rmSync(join(dir, "onnx/pipe"));
  }
  // manifest.sig (not listed) is allowed beside manifest.json; the clean copy loads again
  signBundle(dir, newKeyPair());
  const engine = await load(dir);
  await engine.dispose();
}));

test("unlisted members of a MemorySource, and a listed file's problems keep their own codes", async () => {
  const files = readTree(BUNDLE);
  await refused(loadManifest(new MemorySource({ ...files, "onnx/fp32/x.bin": new Uint8Array(1) })), "unlisted", /x\.bin/);
  await refused(loadManifest(new MemorySource({ ...files, "../escape": new Uint8Array(1) })), "unlisted", /escape/);
  const loaded = await loadManifest(new MemorySource({ ...files, "manifest.sig": new Uint8Array(1) }));
  assert.equal(loaded.manifest.name, readJson(join(BUNDLE, "manifest.json")).name);
  const missing = { ...files };
  delete missing["tokenizer.json"];
  await refused(loadManifest(new MemorySource(missing)), "file-missing", /missing: tokenizer\.json/);
});

test("rollback: minSequence and expectName against the manifest's release", () => withCopy(async (dir) => {
  const original = readFileSync(join(dir, "manifest.json"));
  const keys = newKeyPair();
  // no release: fine without options, refused when the app asks for a minimum or a name
  signBundle(dir, keys);
  (await load(dir, { verifyKey: keys.publicPem })).dispose();
  await refused(load(dir, { verifyKey: keys.publicPem, minSequence: 0 }), "rollback", /no release section/);
  await refused(load(dir, { expectName: "vqa-default.mmedge" }), "rollback", /no release section/);
  editManifest(dir, (m) => { m.release = { name: "vqa-default.mmedge", sequence: 1700000000000 }; });
  signBundle(dir, keys);
  for (const options of [{}, { minSequence: 1700000000000 }, { minSequence: 0, expectName: "vqa-default.mmedge" }]) {
    const engine = await load(dir, { verifyKey: keys.publicPem, ...options });
    assert.equal(engine.manifest.release.sequence, 1700000000000);
    await engine.dispose();
  }
  await refused(load(dir, { verifyKey: keys.publicPem, minSequence: 1700000000001 }), "rollback", /below the app's minimum/);
  await refused(load(dir, { verifyKey: keys.publicPem, expectName: "vqa-default" }), "rollback", /expects "vqa-default"/);
  // the section is checked by the schema first
  for (const release of [{ name: "a b", sequence: 1 }, { name: "x", sequence: -1 }, { name: "x", sequence: 2 ** 53 },
    { name: "x" }, { name: "x", sequence: 1, extra: 1 }, { name: "", sequence: 1 }, { name: "x", sequence: 1.5 }]) {
    writeFileSync(join(dir, "manifest.json"), original);
    editManifest(dir, (m) => { m.release = release; });
    await refused(load(dir), release.sequence === 2 ** 53 ? "json" : "schema");
  }
  // bad options are the app's mistake
  for (const options of [{ minSequence: -1 }, { minSequence: 1.5 }, { minSequence: "5" }, { minSequence: 2 ** 53 },
    { expectName: 5 }, { expectName: "" }]) {
    await assert.rejects(load(dir, options), ConfigError, JSON.stringify(options));
    await assert.rejects(loadManifest(new NodeDirectorySource(dir), options), ConfigError);
  }
  assert.doesNotThrow(() => checkRelease({ release: { name: "a", sequence: 3 } }, { minSequence: 3, expectName: "a" }));
  assert.throws(() => checkRelease({ release: { name: "a", sequence: 3 } }, { minSequence: 4 }), /below/);
}));

test("a captioning bundle is refused as unsupported, with a clear message", () => withCopy(async (dir) => {
  writeFileSync(join(dir, "manifest.json"), JSON.stringify({ schema_version: 1, kind: "caption", name: "caption-default" }));
  await refused(load(dir), "unsupported", /caption bundle.*classifier bundle only.*Python runtime/);
  await refused(loadManifest(new NodeDirectorySource(dir)), "unsupported");
  for (const kind of ["classifier", "foo", 5, null]) {
    writeFileSync(join(dir, "manifest.json"), JSON.stringify({ schema_version: 1, kind }));
    await refused(load(dir), "unsupported", /does not implement/);
  }
  // the version check comes first
  writeFileSync(join(dir, "manifest.json"), JSON.stringify({ schema_version: 2, kind: "caption" }));
  await refused(load(dir), "schema-version");
}));

test("a graph's external data: only its listed weights file", () => withCopy(async (dir) => {
  const m = readJson(join(dir, "manifest.json"));
  const rel = m.artifacts[0].stages[m.keep_ratios[0].stages[0]].file;
  const bytes = readFileSync(join(dir, rel));
  assert.deepEqual(externalDataLocations(bytes), ["weights.bin"]);
  const swap = (from, to) => {
    const i = bytes.indexOf(Buffer.from(from));
    assert.ok(i > 0);
    return Buffer.concat([bytes.subarray(0, i), Buffer.from(to), bytes.subarray(i + from.length)]);
  };
  // the same name length keeps the protobuf lengths right
  rewriteListed(dir, rel, swap("weights.bin", "weights.bim"));
  await refused(load(dir), "unlisted", /reads external data from "weights\.bim", not the listed external_data/);
  rewriteListed(dir, rel, swap("weights.bin", "/etc/passwd"));
  await refused(load(dir), "unlisted", /\/etc\/passwd/);
  rewriteListed(dir, rel, bytes.subarray(0, bytes.length - 7));
  await refused(load(dir), "self-check", /not a well-formed ONNX file/);
  assert.deepEqual(externalDataLocations(new Uint8Array(0)), []);
  assert.throws(() => externalDataLocations(Uint8Array.from([0x3a, 0x05, 1])), /truncated/);
}));

test("weights full of NaN: refused by the self-check in staged and in-graph mode", () => withCopy(async (dir) => {
  const m = readJson(join(dir, "manifest.json"));
  const weights = m.artifacts.find((a) => a.external_data).external_data;
  const nan = Buffer.alloc(statSync(join(dir, weights)).size);
  for (let i = 0; i + 4 <= nan.length; i += 4) nan.writeFloatLE(NaN, i);
  rewriteListed(dir, weights, nan);
  await refused(load(dir), "self-check", /NaN on a test query/);
  if (m.in_graph) await refused(load(dir, { mode: "in-graph" }), "self-check", /NaN on a test query/);
  // an app that turns the self-check off gets what it asked for
  const engine = await load(dir, { selfCheck: false });
  await refused(engine.selfCheck(), "self-check");
  await engine.dispose();
}));

test("the fixed rules of format version 1 and modality_pruning consistency -> inconsistent", () => withCopy(async (dir) => {
  const original = readFileSync(join(dir, "manifest.json"), "utf8");
  const edits = [
    (m) => { m.preprocessing.mean = [0.485, 0.456, 0.406]; },
    (m) => { m.preprocessing.std = [0.5, 0.5, 0.25]; },
    (m) => { m.preprocessing.scale = 0.004; },
    (m) => { m.preprocessing.pad_color = [0, 0, 0]; },
    (m) => { m.tokenizer.lowercase = false; },
    (m) => { m.tokenizer.split_regex = "\\S+"; },
  ];
  for (const edit of edits) {
    writeFileSync(join(dir, "manifest.json"), original);
    editManifest(dir, edit);
    await refused(load(dir), "inconsistent", /format version 1 fixes it/);
  }
  const base = JSON.parse(original);
  const nExits = base.exit_layers.length;
  const hidden = base.stages[base.keep_ratios[0].stages[1]].inputs[0].shape;
  const seq = 1 + base.tokenizer.max_length;
  const pruning = (after = nExits - 2) => ({
    after_stage: after, seq_len: seq,
    stages: Array.from({ length: nExits - after - 1 }, (_, i) => ({
      name: `text_stage${after + 1 + i}`, stage: after + 1 + i, layers: [], flops: 0,
      inputs: [{ name: "hidden_in", shape: [1, seq, hidden[hidden.length - 1]], dtype: "float32" },
        { name: "attention_mask", shape: [1, seq], dtype: "float32" }],
      outputs: [{ name: "hidden", shape: [1, seq, hidden[hidden.length - 1]], dtype: "float32" },
        { name: "logits", shape: [1, base.labels.length], dtype: "float32" }, { name: "confidence", shape: [1], dtype: "float32" }],
    })),
    exit_flops: base.keep_ratios.map((k) => ({ keep_ratio: k.keep_ratio, exit_flops: new Array(nExits).fill(1) })),
    rule: { signal: "visual_norm", prune_when: "below", threshold: 0, enabled: false, source: "export" },
  });
  const named = (p, m) => {
    for (const a of m.artifacts) for (const s of p.stages) a.stages[s.name] = { file: a.stages[m.keep_ratios[0].stages[0]].file };
  };
  const variants = [
    (p) => { p.after_stage = nExits - 1; },
    (p) => { p.seq_len = seq + 1; },
    (p) => { p.stages[0].name = base.keep_ratios[0].stages[0]; },
    (p) => { p.exit_flops = p.exit_flops.slice(1); },
    (p) => { p.stages[0].outputs[1].shape = [1, 3]; },
    (p) => { p.stages[0].inputs.reverse(); },
  ];
  for (const variant of variants) {
    writeFileSync(join(dir, "manifest.json"), original);
    editManifest(dir, (m) => { m.modality_pruning = pruning(); variant(m.modality_pruning); named(m.modality_pruning, m); });
    await refused(load(dir), "inconsistent", /modality_pruning/);
  }
  writeFileSync(join(dir, "manifest.json"), original);
  editManifest(dir, (m) => { m.modality_pruning = pruning(); }); // not named by the artifacts
  await refused(load(dir), "inconsistent", /lacks the modality_pruning stages/);
}));

test("manifest.json that is a link, a directory or a FIFO -> manifest-not-regular", { skip: process.platform === "win32" }, () => withCopy(async (dir) => {
  const manifest = join(dir, "manifest.json");
  const bytes = readFileSync(manifest);
  writeFileSync(join(dir, "..", "real-manifest.json"), bytes);
  rmSync(manifest);
  symlinkSync(join(dir, "..", "real-manifest.json"), manifest);
  await refused(load(dir), "manifest-not-regular", /link/);
  rmSync(manifest);
  mkdirSync(manifest);
  await refused(load(dir), "manifest-not-regular", /not a regular file/);
  rmSync(manifest, { recursive: true });
  const { execFileSync } = await import("node:child_process");
  execFileSync("mkfifo", [manifest]);
  await refused(load(dir), "manifest-not-regular");
}));

test("manifest.sig that is not a regular file: unlisted without a key, signature-malformed with one", { skip: process.platform === "win32" }, () => withCopy(async (dir) => {
  mkdirSync(join(dir, "manifest.sig"));
  await refused(load(dir), "unlisted", /folder.*manifest\.sig/);
  await refused(load(dir, { verifyKey: newKeyPair().publicPem }), "signature-malformed", /manifest\.sig/, SignatureError);
  rmSync(join(dir, "manifest.sig"), { recursive: true });
  symlinkSync("tokenizer.json", join(dir, "manifest.sig"));
  await refused(load(dir), "unlisted", /symbolic link.*manifest\.sig/);
}));

test("an in_graph entry's int8 graph, ORT file and weights file are named paths: unlisted -> unlisted", () => withCopy(async (dir) => {
  const base = readJson(join(dir, "manifest.json"));
  assert.ok(base.in_graph, "the golden bundle has in-graph graphs");
  const key = Object.keys(base.in_graph.by_keep_ratio)[0];
  for (const field of ["int8_file", "int8_ort_file", "int8_external_data"]) {
    editManifest(dir, (m) => {
      m.in_graph.by_keep_ratio[key] = { ...base.in_graph.by_keep_ratio[key], [field]: "onnx/int8/missing.onnx" };
    });
    await refused(load(dir), "unlisted", new RegExp(`in_graph ${key.replace(".", "\\.")} int8.*missing\\.onnx`));
  }
}));

test("in_graph entries: an exported keep ratio each, once, with its kept_tokens -> inconsistent", () => withCopy(async (dir) => {
  const original = readFileSync(join(dir, "manifest.json"), "utf8");
  const base = JSON.parse(original);
  if (!base.in_graph) return;
  const key = Object.keys(base.in_graph.by_keep_ratio)[0];
  for (const [edit, pattern] of [
    [(e) => { e.keep_ratio = 0.3; }, /not exported/],
    [(e) => { e.kept_tokens += 1; }, /keeps \d+ tokens/],
  ]) {
    writeFileSync(join(dir, "manifest.json"), original);
    editManifest(dir, (m) => { edit(m.in_graph.by_keep_ratio[key]); });
    await refused(load(dir), "inconsistent", pattern);
  }
  writeFileSync(join(dir, "manifest.json"), original);
  editManifest(dir, (m) => { m.in_graph.by_keep_ratio[`${key}-again`] = { ...m.in_graph.by_keep_ratio[key] }; });
  await refused(load(dir), "inconsistent", /repeats keep ratio/);
}));

test("sizes are compared before anything is hashed; several failures give the first code of the spec's order", () => withCopy(async (dir) => {
  const m = readJson(join(dir, "manifest.json"));
  const stages = m.artifacts[0].stages;
  const [a, b] = Object.values(stages).map((s) => s.file);
  const bytesB = readFileSync(join(dir, b));
  bytesB[10] ^= 1;
  writeFileSync(join(dir, b), bytesB); // hash mismatch
  writeFileSync(join(dir, a), readFileSync(join(dir, a)).subarray(1)); // size mismatch
  await refused(load(dir), "size-mismatch", /size mismatch.*hash mismatch|size mismatch/);
  rmSync(join(dir, "tokenizer.json"));
  await refused(load(dir), "file-missing", /missing: tokenizer\.json/);
  // a source that only reads (no sizeOf) gives the same codes
  const inner = new NodeDirectorySource(dir);
  const plain = { name: "plain", read: (p, n) => inner.read(p, n) };
  await refused(loadManifest(plain), "file-missing");
}));
