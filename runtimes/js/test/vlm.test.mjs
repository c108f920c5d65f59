// Conformance of the generative VLM engine: the golden vectors of tests/vectors/vlm/ (made by
// scripts/make_vlm_vectors.py with the Python VLMEngine on onnxruntime) on the committed tiny SmolVLM
// bundle: Pillow's LANCZOS resample, the Hugging Face tokenizers, the image preparation, prompt ids,
// and every generation's tokens, exits, confidences and text; then the loading checks.
import assert from "node:assert/strict";
import { readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";
import test from "node:test";
import * as ort from "onnxruntime-node";

import {
  BundleError, CaptionEngine, ConfigError, Engine, HFTokenizer, MemorySource, NodeDirectorySource, SignatureError,
  VLM_MANIFEST_SCHEMA, VLMEngine, keptTokens, loadEngine, logSoftmax64, pyStrip, resample, topK, verticalFirst,
} from "../dist/index.js";
import { REPO, copyBundle, generated, newKeyPair, readJson, sha256 } from "../test-support/helpers.mjs";

const VECTORS = join(REPO, "tests/vectors/vlm");
const doc = readJson(join(VECTORS, "vectors.json"));
const resizeDoc = readJson(join(VECTORS, "resize-lanczos.json"));
const tokenizerDoc = readJson(join(VECTORS, "tokenizer.json"));
const bundleDir = join(REPO, doc.bundle);
const tol = doc.tolerance;
const images = Object.fromEntries(doc.images.map((e) => [e.name, generated(e)]));
const stats = { resample: 0, tokenizer: 0, generations: 0, tokens: 0, earlyExits: 0, maxConfErr: 0, maxLogprobErr: 0, ort: 0 };

/** The committed bundle as an in-memory source's files. */
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
  return files;
}

const files = bundleFiles();
const text = (bytes) => new TextDecoder().decode(bytes);
const bytes = (value) => new TextEncoder().encode(typeof value === "string" ? value : JSON.stringify(value));
/** The files with manifest.json edited by `edit(manifest)` (file hashes unchanged). */
function withManifest(edit, base = files) {
  const out = new Map(base);
  const m = JSON.parse(text(base.get("manifest.json")));
  edit(m);
  out.set("manifest.json", bytes(m));
  return out;
}
/** The files with `rel` replaced by `data` and its listed size and hash updated. */
function withFile(rel, data) {
  const out = withManifest((m) => { m.files[rel] = { bytes: data.length, sha256: sha256(data) }; });
  out.set(rel, data);
  return out;
}
const refused = (code) => (e) => e instanceof BundleError && e.code === code;
const quick = { ort, selfCheck: false };

/** The policy argument of a vector's setting. */
function policyOf(p) {
  if (p.kind === "full") return "full";
  return { kind: p.kind, ...(p.threshold !== undefined ? { threshold: p.threshold } : {}), ...(p.patience !== undefined ? { patience: p.patience } : {}) };
}

function assertRun(g, r, where) {
  assert.deepEqual(g.tokens, r.tokens, `${where}: tokens`);
  assert.deepEqual(g.exits, r.exits, `${where}: exits`);
  assert.equal(g.text, r.text, `${where}: text`);
  assert.equal(g.keptVisualTokens, r.kept_visual_tokens, `${where}: kept visual tokens`);
  assert.equal(g.confidences.length, r.confidences.length);
  g.confidences.forEach((c, i) => {
    const err = Math.abs(c - r.confidences[i]);
    stats.maxConfErr = Math.max(stats.maxConfErr, err);
    assert.ok(err <= tol.confidence_abs, `${where}: confidence ${i} ${c} vs ${r.confidences[i]}`);
  });
  if (r.logprob !== undefined) {
    const err = Math.abs(g.logprob - r.logprob);
    stats.maxLogprobErr = Math.max(stats.maxLogprobErr, err);
    assert.ok(err <= tol.logprob_abs, `${where}: logprob ${g.logprob} vs ${r.logprob}`);
  }
}

let engine;

test.before(async () => {
  engine = await VLMEngine.load(new MemorySource(files, "tiny-smolvlm-onnx.mmedge"), { ort });
});

test.after(async () => {
  await engine?.dispose();
  console.log(`# vlm agreement: ${JSON.stringify(stats)}`);
});

test("the vlm schema copy equals mmedge/adapt/vlm_manifest.schema.json", () => {
  assert.deepEqual(VLM_MANIFEST_SCHEMA, readJson(join(REPO, "mmedge/adapt/vlm_manifest.schema.json")));
});

test("the vectors belong to this bundle, which is small", () => {
  assert.equal(doc.format, "mmedge-vlm-vectors-1");
  assert.equal(sha256(files.get("manifest.json")), doc.manifest_sha256,
    "manifest.json differs from the one the vectors were made from: run python scripts/make_vlm_vectors.py");
  const total = [...files.values()].reduce((n, b) => n + b.length, 0);
  assert.ok(total < 1_000_000, `the bundle is ${total} bytes`);
  assert.equal(engine.manifest.preprocessing.resample, "lanczos");
  assert.equal(engine.numStages, 3);
});

test("resample cases: Pillow's LANCZOS resize bit for bit, any size", async (t) => {
  assert.equal(resizeDoc.format, "mmedge-lanczos-resize-1");
  assert.ok(resizeDoc.resample.length >= 70);
  for (const c of resizeDoc.resample) {
    await t.test(`${c.width}x${c.height} -> ${c.out_width}x${c.out_height} ${c.pattern}`, () => {
      const both = c.width !== c.out_width && c.height !== c.out_height;
      const order = both && verticalFirst(c.width, c.height, c.out_width, c.out_height) ? ["vertical", "horizontal"]
        : [...(c.width !== c.out_width ? ["horizontal"] : []), ...(c.height !== c.out_height ? ["vertical"] : [])];
      assert.deepEqual(order, c.passes, "Pillow 13's pass order");
      const out = resample(generated(c), c.out_width, c.out_height, "lanczos");
      assert.equal(out.data.length, c.out_width * c.out_height * 3);
      assert.equal(sha256(out.data), c.sha256);
      stats.resample++;
    });
  }
});

test("tokenizers: the bundle's WordLevel and a byte-level BPE encode and decode as Python tokenizers", async (t) => {
  assert.equal(tokenizerDoc.format, "mmedge-vlm-tokenizer-1");
  for (const [name, entry] of Object.entries(tokenizerDoc.tokenizers)) {
    const tokenizer = HFTokenizer.fromParsed(readJson(join(REPO, entry.file)), entry.file);
    await t.test(name, () => {
      for (const c of entry.cases) {
        if (c.text !== undefined) assert.deepEqual(tokenizer.encode(c.text), c.ids, `${name} encode ${JSON.stringify(c.text)}`);
        assert.equal(tokenizer.decode(c.ids), c.decoded, `${name} decode ${JSON.stringify(c.ids)}`);
        stats.tokenizer++;
      }
    });
  }
  assert.equal(pyStrip("\u001c a \u0085\u00a0"), "a");
  assert.equal(pyStrip("\ufeffa"), "\ufeffa", "U+FEFF is not a Python space");
});

test("a tokenizer.json this runtime does not implement is refused as unsupported", () => {
  const word = JSON.parse(text(files.get("tokenizer.json")));
  for (const [edit, what] of [
    [(t) => { t.model = { type: "Unigram", vocab: [["a", 0]] }; }, /model "Unigram"/],
    [(t) => { t.normalizer = { type: "Precompiled", precompiled_charsmap: "" }; }, /normalizer "Precompiled"/],
    [(t) => { t.pre_tokenizer = { type: "Sequence", pretokenizers: [{ type: "Metaspace" }] }; }, /pre_tokenizer\[0\] "Metaspace"/],
    [(t) => { t.decoder = { type: "WordPiece" }; }, /decoder "WordPiece"/],
    [(t) => { t.added_tokens[0].single_word = true; }, /single_word/],
  ]) {
    const t = structuredClone(word);
    edit(t);
    assert.throws(() => HFTokenizer.fromParsed(t, "tokenizer.json"), (e) => e instanceof BundleError && e.code === "unsupported" && what.test(e.message));
  }
  assert.throws(() => HFTokenizer.fromParsed([1], "tokenizer.json"), refused("tokenizer"));
});

test("kept tokens: max(1, round(r x M)) with Python's round, halves to even", () => {
  for (const c of doc.kept_tokens) assert.equal(keptTokens(c.keep_ratio, c.num_image_tokens), c.kept, JSON.stringify(c));
  assert.deepEqual(topK([1, 3, 3, 2, NaN, 3], 4), [1, 2, 5, 3], "largest first, ties to the lower index, NaN last");
  const lp = logSoftmax64([1, 2, 3]);
  assert.ok(Math.abs(Math.exp(lp[0]) + Math.exp(lp[1]) + Math.exp(lp[2]) - 1) < 1e-12);
});

test("images: stretched with Pillow's LANCZOS and normalised as the Python runtime does", () => {
  for (const e of doc.images) {
    const { resized, pixelValues } = engine.preprocess(images[e.name]);
    assert.equal(sha256(resized), e.resized_rgb_sha256, `${e.name}: resized 8-bit RGB`);
    assert.equal(sha256(new Uint8Array(pixelValues.buffer, pixelValues.byteOffset, pixelValues.byteLength)), e.pixel_values_sha256,
      `${e.name}: pixel_values`);
    e.pixel_values_sample.forEach((v, i) => assert.equal(pixelValues[i * 97], v));
  }
});

test("every generation: tokens, exits, text exact; confidences and scores within tolerance", async (t) => {
  assert.ok(doc.margins.confidence > 1e-5 && doc.margins.max_probability > 1e-5,
    "the vectors do not hang on a near tie with a threshold");
  for (const q of doc.queries) {
    await t.test(`${q.image}: ${q.prompt}`, async () => {
      assert.deepEqual(engine.promptIds(q.prompt), q.prompt_ids, "prompt ids");
      for (const r of q.runs) {
        const where = `${q.image} ${JSON.stringify(r.policy)} keep ${r.keep_ratio} beam ${r.beam} kv ${r.kv}`;
        const g = await engine.generate(images[q.image], q.prompt, {
          maxNewTokens: r.max_new_tokens, beam: r.beam, policy: policyOf(r.policy), keepRatio: r.keep_ratio, kv: r.kv,
        });
        assertRun(g, r, where);
        assert.deepEqual(g.promptIds, q.prompt_ids);
        assert.ok(g.firstTokenMs > 0 && g.timingsMs.total >= g.firstTokenMs && g.timingsMs.vision > 0 && g.timingsMs.head > 0);
        stats.generations++;
        stats.tokens += g.tokens.length;
        stats.earlyExits += g.exits.filter((x) => x < engine.numStages - 1).length;
      }
    });
  }
  assert.ok(stats.earlyExits > 50, "the policies took early exits");
});

test("the bundle's defaults and caption()", async () => {
  assert.equal(engine.policy.kind, "confidence");
  assert.equal(engine.policy.threshold, doc.thresholds.confidence);
  assert.equal(engine.keepRatio, 0.5);
  for (const r of doc.defaults) {
    const g = r.call === "generate" ? await engine.generate(images[r.image], r.prompt)
      : await engine.caption(images[r.image], { maxNewTokens: r.max_new_tokens });
    assertRun(g, r, `${r.call} ${r.image}`);
    assert.equal(g.keepRatio, r.keep_ratio);
  }
  // a policy name takes the bundle's threshold, as in Python
  const byName = await engine.generate(images.wide, doc.queries[0].prompt, { policy: "max_probability", keepRatio: 1 });
  const explicit = await engine.generate(images.wide, doc.queries[0].prompt, {
    policy: { kind: "max_probability", threshold: doc.thresholds.confidence, patience: 2 }, keepRatio: 1 });
  assert.deepEqual([byName.tokens, byName.exits], [explicit.tokens, explicit.exits]);
});

test("the ORT-format artifact generates the same", async () => {
  const inOrt = await VLMEngine.load(new MemorySource(files), { ort, format: "ort" });
  try {
    assert.equal(inOrt.artifact.format, "ort");
    for (const q of doc.queries.slice(0, 2)) {
      for (const r of q.runs.filter((_, i) => i % 3 === 0)) {
        const g = await inOrt.generate(images[q.image], q.prompt, {
          maxNewTokens: r.max_new_tokens, beam: r.beam, policy: policyOf(r.policy), keepRatio: r.keep_ratio, kv: r.kv,
        });
        assertRun(g, r, `ort ${q.image} ${JSON.stringify(r.policy)} ${r.keep_ratio} ${r.beam} ${r.kv}`);
        stats.ort++;
      }
    }
  } finally {
    await inOrt.dispose();
  }
});

test("the head runs once per token under the confidence policy, at every exit under max_probability", async () => {
  const calls = [];
  const counting = {
    Tensor: ort.Tensor,
    InferenceSession: {
      create: async (model, options) => {
        const session = await ort.InferenceSession.create(model, options);
        const name = engineGraphs.shift();
        return { run: (feeds) => { calls.push(name); return session.run(feeds); }, release: () => session.release() };
      },
    },
  };
  const engineGraphs = Object.keys(engine.manifest.layout.graphs);
  const counted = await VLMEngine.load(new MemorySource(files), { ort: counting, selfCheck: false });
  const q = doc.queries[0];
  const once = await counted.generate(images[q.image], q.prompt, { policy: { kind: "confidence", threshold: 0 }, keepRatio: 1, maxNewTokens: 8 });
  assert.ok(once.tokens.length > 2 && once.exits.slice(1).every((x) => x === 0));
  assert.equal(calls.filter((c) => c === "head").length, once.tokens.length);
  assert.equal(calls.filter((c) => c === "step2").length, 1, "step2: the prefill only (kv copy fills the rest)");
  assert.equal(calls.filter((c) => c === "fill0").length, once.tokens.length - 1);
  calls.length = 0;
  const every = await counted.generate(images[q.image], q.prompt, { policy: { kind: "max_probability", threshold: 1 }, keepRatio: 1, maxNewTokens: 8 });
  assert.equal(calls.filter((c) => c === "head").length, 1 + 3 * (every.tokens.length - 1));
  calls.length = 0;
  const recompute = await counted.generate(images[q.image], q.prompt, { policy: { kind: "confidence", threshold: 0 }, kv: "recompute", keepRatio: 1, maxNewTokens: 8 });
  assert.equal(calls.filter((c) => c === "step2").length, recompute.tokens.length, "recompute runs the skipped stages");
  assert.equal(calls.filter((c) => c.startsWith("fill")).length, 0);
  await counted.dispose();
});

test("bad generation arguments are ConfigErrors", async () => {
  const image = images.wide;
  const prompt = doc.queries[0].prompt;
  for (const [options, what] of [
    [{ keepRatio: 0 }, /keep ratio 0 must be a number in \(0, 1\]/],
    [{ keepRatio: 1.5 }, /keep ratio 1.5/],
    [{ keepRatio: Number.NaN }, /keepRatio must be a number/],
    [{ keepRatio: "0.5" }, /keepRatio must be a number/],
    [{ maxNewTokens: 0 }, /maxNewTokens 0/],
    [{ maxNewTokens: 2.5 }, /maxNewTokens 2.5/],
    [{ maxNewTokens: 60 }, /maxNewTokens 60 must be from 1 to/],
    [{ beam: 0 }, /beam 0/],
    [{ beam: 17 }, /beam 17/],
    [{ kv: "share" }, /kv "share" unknown/],
    [{ policy: "sometimes" }, /policy "sometimes" unknown/],
    [{ task: "summary" }, /task "summary" unknown/],
    [{ task: 1 }, /task number unknown/],
  ]) {
    await assert.rejects(engine.generate(image, prompt, options), (e) => e instanceof ConfigError && what.test(e.message), JSON.stringify(options));
  }
  await assert.rejects(engine.generate(image, "   "), (e) => e instanceof ConfigError && /non-empty/.test(e.message));
  await assert.rejects(engine.generate({ width: 4, height: 4, channels: 3, data: new Uint8Array(48) }, prompt), /at least 8/);
  // any keep ratio in (0, 1] runs, not only those the prefilter was distilled at
  const quarter = await engine.generate(image, prompt, { keepRatio: 0.07, maxNewTokens: 3 });
  assert.equal(quarter.keptVisualTokens, 1);
  // the engine still works after refusals
  assertRun(await engine.generate(images[doc.queries[0].image], prompt, {
    maxNewTokens: doc.queries[0].runs[0].max_new_tokens, policy: "full", keepRatio: 1, kv: "copy" }), doc.queries[0].runs[0], "after errors");
});

/** The vectors' greedy run (kv copy, the bundle's default token limit) of `prompt` on `image` under policy `kind` at `keepRatio`. */
function vectorRun(image, prompt, kind, keepRatio) {
  const q = doc.queries.find((x) => x.image === image && x.prompt === prompt);
  const r = q.runs.find((x) => x.policy.kind === kind && x.keep_ratio === keepRatio && x.beam === 1 && x.kv === "copy" &&
    x.max_new_tokens === engine.manifest.tokenizer.max_new_tokens);
  assert.ok(r, `no vector for ${image} ${prompt} ${kind} ${keepRatio}`);
  return r;
}

test("thresholds.tasks: caption() and generate({ task }) take the task's setting; call and load options override", async (t) => {
  const captionPrompt = engine.manifest.tokenizer.caption_prompt;
  const question = "What color is the circle?";
  const { confidence: conf, max_probability: maxp } = doc.thresholds;
  // caption: max_probability at keep 1; answer: patience 2 at keep 0.5 (the top level: confidence at keep 0.5)
  const tasks = {
    caption: { policy: "max_probability", threshold: maxp, patience: 3, keep_ratio: 1 },
    answer: { policy: "patience", threshold: maxp, patience: 2, keep_ratio: 0.5 },
  };
  const captionRun = vectorRun("wide", captionPrompt, "max_probability", 1);
  const answerRun = vectorRun("wide", question, "patience", 0.5);
  assert.equal(captionRun.policy.threshold, maxp);
  assert.equal(answerRun.policy.patience, 2);
  const topRun = doc.defaults.find((r) => r.call === "generate" && r.image === "wide");
  assert.equal(topRun.prompt, question);
  // the bundle copied to a temporary directory with the tasks in its manifest (unsigned; manifest.json is not in files)
  const [dir, cleanup] = copyBundle(bundleDir);
  const tasksFiles = withManifest((m) => { m.thresholds.tasks = tasks; });
  writeFileSync(join(dir, "manifest.json"), tasksFiles.get("manifest.json"));
  const tasked = await VLMEngine.load(new NodeDirectorySource(dir), { ort });
  t.after(async () => {
    await tasked.dispose();
    cleanup();
  });

  await t.test("settings(task): the task's own where the bundle holds it, else the top level", () => {
    const top = tasked.settings();
    assert.deepEqual([top.policy.kind, top.policy.threshold, top.keepRatio], ["confidence", conf, 0.5]);
    assert.deepEqual(tasked.settings(null), top);
    const c = tasked.settings("caption");
    assert.deepEqual([c.policy.kind, c.policy.threshold, c.policy.patience, c.keepRatio], ["max_probability", maxp, 3, 1]);
    const a = tasked.settings("answer");
    assert.deepEqual([a.policy.kind, a.policy.patience, a.keepRatio], ["patience", 2, 0.5]);
    // a bundle without tasks: every task has the top-level setting
    for (const task of [undefined, "caption", "answer"]) {
      const s = engine.settings(task);
      assert.deepEqual([s.policy.kind, s.policy.threshold, s.keepRatio], ["confidence", conf, 0.5]);
    }
    assert.throws(() => tasked.settings("summary"), (e) => e instanceof ConfigError && /task "summary" unknown/.test(e.message));
  });

  await t.test("caption() and generate({ task }) give the vectors' run under the task's setting", async () => {
    assertRun(await tasked.caption(images.wide), captionRun, "caption() under tasks.caption");
    assertRun(await tasked.generate(images.wide, captionPrompt, { task: "caption" }), captionRun, "task caption");
    assertRun(await tasked.caption(images.wide, { task: "caption" }), captionRun, "caption() told task caption");
    const answer = await tasked.generate(images.wide, question, { task: "answer" });
    assertRun(answer, answerRun, "task answer");
    assert.equal(answer.keepRatio, 0.5);
    // no task: the top-level setting, as the bundle without tasks
    for (const options of [{}, { task: undefined }, { task: null }]) {
      assertRun(await tasked.generate(images.wide, question, options), topRun, `no task ${JSON.stringify(options)}`);
    }
    assertRun(await tasked.generate(images.wide, captionPrompt), vectorRun("wide", captionPrompt, "confidence", 0.5),
      "the caption prompt without a task");
    // a bundle without tasks: the task changes nothing
    assertRun(await engine.generate(images.wide, question, { task: "answer" }), topRun, "task answer, no tasks in the bundle");
  });

  await t.test("options given to the call override the task's setting; a policy name takes the task's threshold", async () => {
    assertRun(await tasked.caption(images.wide, { keepRatio: 0.5 }), vectorRun("wide", captionPrompt, "max_probability", 0.5),
      "caption() at keep 0.5: the task's policy");
    assertRun(await tasked.caption(images.wide, { policy: "full" }), vectorRun("wide", captionPrompt, "full", 1),
      "caption() under full: the task's keep ratio");
    assertRun(await tasked.caption(images.wide, { policy: { kind: "confidence", threshold: conf }, keepRatio: 0.5 }),
      vectorRun("wide", captionPrompt, "confidence", 0.5), "caption() with both given");
    // "max_probability" by name under task answer: the answer entry's threshold (maxp), not the top level's (conf)
    assertRun(await tasked.generate(images.wide, question, { task: "answer", policy: "max_probability" }),
      vectorRun("wide", question, "max_probability", 0.5), "task answer, max_probability by name");
  });

  await t.test("options given to load() apply to every task", async () => {
    const keep1 = await VLMEngine.load(new NodeDirectorySource(dir), { ...quick, keepRatio: 1 });
    try {
      assert.deepEqual(["caption", "answer", undefined].map((task) => keep1.settings(task).keepRatio), [1, 1, 1]);
      assert.equal(keep1.settings("answer").policy.kind, "patience");
      assertRun(await keep1.generate(images.wide, question, { task: "answer" }), vectorRun("wide", question, "patience", 1),
        "load keep 1, task answer");
      assertRun(await keep1.generate(images.wide, question, { task: "answer", keepRatio: 0.5 }), answerRun,
        "load keep 1, call keep 0.5");
    } finally {
      await keep1.dispose();
    }
    const byName = await VLMEngine.load(new NodeDirectorySource(dir), { ...quick, policy: "max_probability" });
    try {
      // a policy name at load takes each setting's own threshold and patience
      const [c, a, top] = ["caption", "answer", undefined].map((task) => byName.settings(task));
      assert.deepEqual([c.policy.kind, c.policy.threshold, c.policy.patience, c.keepRatio], ["max_probability", maxp, 3, 1]);
      assert.deepEqual([a.policy.kind, a.policy.threshold, a.policy.patience, a.keepRatio], ["max_probability", maxp, 2, 0.5]);
      assert.deepEqual([top.policy.kind, top.policy.threshold, top.keepRatio], ["max_probability", conf, 0.5]);
      assertRun(await byName.generate(images.wide, question, { task: "answer" }), vectorRun("wide", question, "max_probability", 0.5),
        "load max_probability by name, task answer");
    } finally {
      await byName.dispose();
    }
    const full = await VLMEngine.load(new NodeDirectorySource(dir), { ...quick, policy: { kind: "full" } });
    try {
      assertRun(await full.caption(images.wide), vectorRun("wide", captionPrompt, "full", 1), "load full, caption()");
      assertRun(await full.generate(images.wide, question, { task: "answer" }), vectorRun("wide", question, "full", 0.5),
        "load full, task answer");
      assertRun(await full.generate(images.wide, question, { task: "answer", policy: "patience" }), answerRun,
        "load full, call patience by name");
    } finally {
      await full.dispose();
    }
  });

  await t.test("an unknown task is refused as a bad argument", async () => {
    for (const task of ["summary", "Caption", "", 0, true]) {
      await assert.rejects(tasked.generate(images.wide, question, { task }),
        (e) => e instanceof ConfigError && /unknown; choose one of "caption", "answer"/.test(e.message), JSON.stringify(task));
    }
    for (const task of ["answer", "summary", null]) {
      await assert.rejects(tasked.caption(images.wide, { task }),
        (e) => e instanceof ConfigError && /caption\(\) generates a caption/.test(e.message), JSON.stringify(task));
    }
    assertRun(await tasked.caption(images.wide), captionRun, "after refusals");
  });
});

test("thresholds.tasks at load: the schema and the consistency check", async () => {
  const setting = { policy: "confidence", threshold: 0.5, patience: 2, keep_ratio: 0.5 };
  const ok = await VLMEngine.load(new MemorySource(withManifest((m) => { m.thresholds.tasks = { answer: setting }; })), quick);
  assert.equal(ok.settings("answer").policy.threshold, 0.5);
  assert.equal(ok.settings("caption").policy.threshold, doc.thresholds.confidence);
  await ok.dispose();
  await assert.rejects(VLMEngine.load(new MemorySource(withManifest((m) => {
    m.thresholds.tasks = { caption: { ...setting, keep_ratio: 1 }, answer: { ...setting, keep_ratio: 0.25 } };
  })), quick), (e) => refused("inconsistent")(e) &&
    /thresholds\.tasks\.answer\.keep_ratio 0\.25 is not one of the keep ratios \[1,0\.5\]/.test(e.message) && !/tasks\.caption/.test(e.message));
  const { patience, ...missing } = setting;
  for (const [tasks, what] of [
    [{ caption: { ...setting, kv: "copy" } }, "an extra field"],
    [{ answer: missing }, "a missing field"],
    [{ summary: setting }, "an unknown task"],
    [{}, "no task"],
    [{ caption: { ...setting, policy: "latency_budget" } }, "a policy a bundle cannot hold"],
    [{ caption: { ...setting, threshold: 2 } }, "a threshold above 1"],
    [{ answer: { ...setting, keep_ratio: 0 } }, "keep ratio 0"],
    [{ answer: { ...setting, patience: 1.5 } }, "a fractional patience"],
  ]) {
    await assert.rejects(VLMEngine.load(new MemorySource(withManifest((m) => { m.thresholds.tasks = tasks; })), quick),
      refused("schema"), what);
  }
  assert.equal(patience, 2);
});

test("loading: every check of the spec applies to a generative VLM bundle", async (t) => {
  await t.test("loadEngine opens it as a VLMEngine; Engine and CaptionEngine refuse it as unsupported", async () => {
    const any = await loadEngine(new NodeDirectorySource(bundleDir), quick);
    assert.ok(any instanceof VLMEngine);
    await any.dispose();
    const classifier = await loadEngine(new NodeDirectorySource(join(REPO, "models/vqa-default/bundles/vqa-default-onnx.mmedge")), quick);
    assert.ok(classifier instanceof Engine);
    await classifier.dispose();
    // the caption vectors' bundle on disk lacks its rebuilt weights: CaptionEngine's own check says so
    await assert.rejects(loadEngine(new NodeDirectorySource(join(REPO, "tests/vectors/caption/caption-default.mmedge")), quick),
      refused("file-missing"));
    await assert.rejects(Engine.load(new MemorySource(files), { ort }), (e) => refused("unsupported")(e) && /VLMEngine\.load/.test(e.message));
    await assert.rejects(CaptionEngine.load(new MemorySource(files), { ort }), refused("unsupported"));
  });
  await t.test("a changed graph or tokenizer file is a hash mismatch", async () => {
    for (const rel of ["onnx/fp32/weights.bin", "tokenizer.json"]) {
      const bad = new Map(files);
      const w = new Uint8Array(files.get(rel));
      w[w.length - 2] ^= 1;
      bad.set(rel, w);
      await assert.rejects(VLMEngine.load(new MemorySource(bad), quick), (e) => refused("hash-mismatch")(e) && e.path === rel);
    }
  });
  await t.test("a missing tokenizer is file-missing", async () => {
    const bad = new Map(files);
    bad.delete("tokenizer.json");
    await assert.rejects(VLMEngine.load(new MemorySource(bad), quick), (e) => refused("file-missing")(e) && e.path === "tokenizer.json");
  });
  await t.test("a tokenizer that does not fit the manifest", async () => {
    const noBlock = withManifest((m) => { m.tokenizer.prompt_before = m.tokenizer.prompt_before.replace(/<image>/g, ""); });
    await assert.rejects(VLMEngine.load(new MemorySource(noBlock), quick), (e) => refused("tokenizer")(e) && /image tokens/.test(e.message));
    const notJson = withFile("tokenizer.json", bytes("{\"a\": 1, \"a\": 2}"));
    await assert.rejects(VLMEngine.load(new MemorySource(notJson), quick), refused("tokenizer"));
    const unigram = JSON.parse(text(files.get("tokenizer.json")));
    unigram.model = { type: "Unigram", vocab: [["a", 0]], unk_id: 0 };
    await assert.rejects(VLMEngine.load(new MemorySource(withFile("tokenizer.json", bytes(unigram))), quick), refused("unsupported"));
  });
  await t.test("schema, consistency and paths", async () => {
    await assert.rejects(VLMEngine.load(new MemorySource(withManifest((m) => { m.thresholds.keep_ratio = 2; })), quick), refused("schema"));
    await assert.rejects(VLMEngine.load(new MemorySource(withManifest((m) => { m.thresholds.keep_ratio = 0.25; })), quick),
      (e) => refused("inconsistent")(e) && /keep_ratio 0.25/.test(e.message));
    await assert.rejects(VLMEngine.load(new MemorySource(withManifest((m) => { m.layout.stage_layers = [[0], [2], [1]]; })), quick), refused("inconsistent"));
    await assert.rejects(VLMEngine.load(new MemorySource(withManifest((m) => { m.tokenizer.max_new_tokens = m.layout.max_slots; })), quick), refused("inconsistent"));
    await assert.rejects(VLMEngine.load(new MemorySource(withManifest((m) => { delete m.layout.graphs.fill1; })), quick),
      (e) => refused("inconsistent")(e) && /export it again/.test(e.message));
    await assert.rejects(VLMEngine.load(new MemorySource(withManifest((m) => { m.tokenizer.file = "../tokenizer.json"; })), quick), refused("path"));
    const extra = new Map(files);
    extra.set("notes.txt", bytes("x"));
    await assert.rejects(VLMEngine.load(new MemorySource(extra), quick), refused("unlisted"));
    await assert.rejects(VLMEngine.load(new MemorySource(withManifest((m) => { m.schema_version = 2; })), quick), refused("schema-version"));
  });
  await t.test("signature and rollback", async () => {
    const keys = newKeyPair();
    const { sign } = await import("node:crypto");
    const signed = new Map(files);
    const record = {
      format: "mmedge-signature-1", algorithm: "ed25519", signed_file: "manifest.json",
      public_key_sha256: sha256(keys.rawPublic), signature: sign(null, files.get("manifest.json"), keys.privateKey).toString("base64"),
    };
    signed.set("manifest.sig", bytes(record));
    const ok = await VLMEngine.load(new MemorySource(signed), { ...quick, verifyKey: keys.publicPem });
    await ok.dispose();
    await assert.rejects(VLMEngine.load(new MemorySource(files), { ...quick, verifyKey: keys.publicPem }),
      (e) => e instanceof SignatureError && e.code === "signature-missing");
    const tampered = withManifest((m) => { m.thresholds.threshold = 0.9; }, signed);
    await assert.rejects(VLMEngine.load(new MemorySource(tampered), { ...quick, verifyKey: keys.publicPem }),
      (e) => e instanceof SignatureError && e.code === "signature-invalid");
    const sequence = engine.manifest.release.sequence;
    await assert.rejects(VLMEngine.load(new MemorySource(files), { ...quick, minSequence: sequence + 1 }), refused("rollback"));
    await assert.rejects(VLMEngine.load(new MemorySource(files), { ...quick, expectName: "another" }), refused("rollback"));
  });
  await t.test("artifacts and load options", async () => {
    await assert.rejects(VLMEngine.load(new MemorySource(files), { ...quick, precision: "int8" }),
      (e) => refused("unsupported")(e) && /no onnxruntime int8 artifact/.test(e.message));
    for (const [options, what] of [
      [{ precision: "fp16" }, /precision "fp16"/], [{ format: "pte" }, /format "pte"/], [{ keepRatio: 0 }, /keep ratio 0/],
      [{ kv: "x" }, /kv "x"/], [{ policy: { kind: "confidence", threshold: 2 } }, /threshold 2/], [{ minSequence: -1 }, /minSequence/],
    ]) {
      await assert.rejects(VLMEngine.load(new MemorySource(files), { ...quick, ...options }), (e) => e instanceof ConfigError && what.test(e.message));
    }
    await assert.rejects(VLMEngine.load(new MemorySource(files), {}), (e) => e instanceof ConfigError && /ort must be/.test(e.message));
    const custom = await VLMEngine.load(new MemorySource(files), { ...quick, keepRatio: 0.3, policy: "full", kv: "recompute" });
    assert.deepEqual([custom.keepRatio, custom.policy.kind, custom.kv], [0.3, "full", "recompute"]);
    await custom.dispose();
  });
  await t.test("a graph onnxruntime cannot open, or one that fails, is a self-check refusal", async () => {
    await assert.rejects(VLMEngine.load(new MemorySource(withFile("onnx/fp32/head.onnx", bytes("not onnx"))), { ort }), refused("self-check"));
    const swapped = withManifest((m) => {
      const a = m.artifacts.find((x) => x.format === "onnx");
      a.stages.head.file = "onnx/fp32/embed.onnx";  // a graph with other inputs
    });
    await assert.rejects(VLMEngine.load(new MemorySource(swapped), { ort }), refused("self-check"));
  });
});
