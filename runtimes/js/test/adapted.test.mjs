// Bundles of an encoder adapted by `mmedge adapt` (docs/bundle-format.md, "Adapted encoders"): the
// golden vectors of tests/vectors/adapted (scripts/make_adapted_vectors.py) on the committed tiny ViLT
// bundle: BERT tokenizer cases, Pillow bicubic resamples, the image preparation, and queries end to
// end through onnxruntime-node, bit for bit where the spec says so.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import test from "node:test";
import * as ort from "onnxruntime-node";

import {
  BertWordPieceTokenizer, BundleError, Engine, ImageError, NodeDirectorySource, TextError, axisCoefficients,
  bertNormalize, decideOffline, makePolicy, preprocessImage, preprocessStretched, resample, resizeSquare, verticalFirst,
} from "../dist/index.js";
import { GOLDEN, REPO, copyBundle, editManifest, generated, policyOf, readJson, sha256 } from "../test-support/helpers.mjs";

const VECTORS = join(REPO, "tests/vectors/adapted");
const tokenizerDoc = readJson(join(VECTORS, "tokenizer.json"));
const resizeDoc = readJson(join(VECTORS, "resize.json"));
const queriesDoc = readJson(join(VECTORS, "queries.json"));
const bundlePath = join(REPO, queriesDoc.bundle);
const stats = { tokenizer: 0, tokenizerErrors: 0, resample: 0, images: 0, refused: 0, queries: 0, policies: 0,
  maxLogitsErr: 0, maxConfErr: 0 };


const textOf = (c) => (c.text !== undefined ? c.text : c.repeat.text.repeat(c.repeat.count));

let engine;

test.before(async () => {
  engine = await Engine.load(new NodeDirectorySource(bundlePath), { ort, onWarning: () => {} });
});

test.after(async () => {
  await engine?.dispose();
  console.log(`# adapted agreement (JavaScript): ${JSON.stringify(stats)}`);
});

test("the adapted vectors were made from this bundle's manifest", () => {
  const sha = sha256(readFileSync(join(bundlePath, "manifest.json")));
  for (const doc of [tokenizerDoc, resizeDoc, queriesDoc]) assert.equal(doc.manifest_sha256, sha, "regenerate the vectors");
  assert.equal(engine.manifest.preprocessing.resize, "pillow-bicubic");
  assert.equal(engine.tokenizer.kind, "bert-wordpiece");
});

test("the generator gives the Python generator's first bytes", () => {
  assert.deepEqual([...generated({ width: 4, height: 1, channels: 1, pattern: "noise", seed: 1 }).data], [0, 4, 157, 18]);
  assert.deepEqual([...generated({ width: 8, height: 1, channels: 1, pattern: "noise", seed: 2024 }).data],
    [31, 159, 70, 141, 45, 99, 86, 53]);
  assert.deepEqual([...generated({ width: 4, height: 1, channels: 1, pattern: "binary", seed: 1 }).data], [0, 0, 255, 0]);
});

test("tokenizer cases: pieces, ids and masks bit-identical, errors the same", async (t) => {
  const file = BertWordPieceTokenizer.fromBertJSON(readFileSync(join(REPO, tokenizerDoc.tokenizer)), tokenizerDoc.max_length);
  assert.ok(tokenizerDoc.cases.length >= 60);
  for (const c of tokenizerDoc.cases) {
    const text = textOf(c);
    await t.test(JSON.stringify(text).slice(0, 60), () => {
      for (const tok of [file, engine.tokenizer]) {
        if (c.error) {
          assert.equal(c.error, "TextError");
          assert.throws(() => tok.encode(text), TextError);
          continue;
        }
        const got = tok.encode(text);
        assert.deepEqual([...got.inputIds], c.input_ids, "input_ids");
        assert.deepEqual([...got.textMask], c.text_mask, "text_mask");
        assert.equal(got.truncated, c.truncated, "truncated");
        if (c.tokens) assert.deepEqual(got.tokens, c.tokens, "pieces");
        else assert.equal(got.tokens.length, c.token_count, "piece count");
      }
      if (c.error) stats.tokenizerErrors++;
      else stats.tokenizer++;
    });
  }
});

test("the normaliser's steps one by one", () => {
  const all = { lowercase: true, stripAccents: true, cleanText: true, handleChineseChars: true };
  assert.equal(bertNormalize("a\u0000b\ufffdc\u200bd\te\u0085f", all), "abcd ef");
  assert.equal(bertNormalize("中文x", all), " 中  文 x");
  assert.equal(bertNormalize("\u{2b820}\u{2b920}", all), "\u{2b820} \u{2b920} "); // tokenizers' ranges
  assert.equal(bertNormalize("ÉΣİ", all), "eσi");
  assert.equal(bertNormalize("ÉΣİ", { ...all, stripAccents: false }), "éσi\u0307");
  assert.equal(bertNormalize("É\u0378", { ...all, lowercase: false }), "E\u0378"); // unassigned code points stay
  assert.equal(bertNormalize("a\u0000b", { ...all, cleanText: false }), "a\u0000b");
});

test("resample cases: Pillow's BICUBIC resize bit for bit, any size", async (t) => {
  assert.ok(resizeDoc.resample.length >= 80);
  for (const c of resizeDoc.resample) {
    await t.test(`${c.width}x${c.height} -> ${c.out_width}x${c.out_height} ${c.pattern}`, () => {
      const both = c.width !== c.out_width && c.height !== c.out_height;
      const order = both && verticalFirst(c.width, c.height, c.out_width, c.out_height) ? ["vertical", "horizontal"]
        : [...(c.width !== c.out_width ? ["horizontal"] : []), ...(c.height !== c.out_height ? ["vertical"] : [])];
      assert.deepEqual(order, c.passes, "Pillow 13's pass order");
      const out = resample(generated(c), c.out_width, c.out_height, "bicubic");
      assert.equal(out.data.length, c.out_width * c.out_height * 3);
      assert.equal(sha256(out.data), c.sha256);
      stats.resample++;
    });
  }
});

test("the general resample with the bilinear filter is the format-1 square resize", () => {
  for (const [n, m] of [[9, 32], [100, 32], [413, 48], [32, 17]]) {
    const image = generated({ width: n, height: n, channels: 3, pattern: "noise", seed: 77 + n });
    const rgb = { width: n, height: n, data: image.data };
    assert.deepEqual(resample(image, m, m, "bilinear").data, resizeSquare(rgb, m).data, `${n} -> ${m}`);
  }
  const c = axisCoefficients(64, 32, "bicubic"); // scale 2: support 4, nine taps at most
  assert.equal(c.ksize, 9);
  for (let o = 0; o < 32; o++) {
    let sum = 0;
    for (let j = 0; j < c.count[o]; j++) sum += c.k[o * c.ksize + j];
    assert.ok(Math.abs(sum - (1 << 22)) <= c.count[o], `coefficients of ${o} sum to 2^22`);
  }
});

test("image cases: the Engine's preparation (composite, stretch, normalise) bit for bit", async (t) => {
  for (const c of resizeDoc.images) {
    await t.test(`${c.width}x${c.height}x${c.channels} ${c.pattern}`, () => {
      const image = generated(c);
      if (c.refused) {
        assert.throws(() => engine.preprocess(image, "x"), ImageError);
        stats.refused++;
        return;
      }
      const inputs = engine.preprocess(image, "x");
      assert.equal(sha256(inputs.resized), c.resized_rgb_sha256, "resized 8-bit RGB");
      assert.equal(sha256(new Uint8Array(inputs.pixelValues.buffer)), c.pixel_values_sha256, "pixel_values");
      stats.images++;
    });
  }
});

for (const q of queriesDoc.queries) {
  test(`query ${q.name}`, async (t) => {
    stats.queries++;
    const image = generated(q);
    const inputs = engine.preprocess(image, q.text);
    assert.deepEqual([...inputs.inputIds], q.input_ids, "input_ids");
    assert.deepEqual([...inputs.textMask], q.text_mask, "text_mask");
    assert.equal(sha256(inputs.resized), q.resized_rgb_sha256, "resized 8-bit RGB");
    assert.equal(sha256(new Uint8Array(inputs.pixelValues.buffer)), q.pixel_values_sha256, "pixel_values");
    const tol = queriesDoc.tolerance;
    for (const [key, want] of Object.entries(q.by_keep_ratio)) {
      await t.test(`keep ratio ${key}`, async () => {
        const ratio = Number(key);
        const exits = await engine.allExits(image, q.text, { keepRatio: ratio });
        assert.deepEqual(exits.keptVisualTokens, want.kept_index, "kept tokens");
        exits.logits.forEach((logits, i) => {
          want.logits[i].forEach((v, j) => {
            const err = Math.abs(logits[j] - v);
            stats.maxLogitsErr = Math.max(stats.maxLogitsErr, err);
            assert.ok(err <= tol.logits_abs, `exit ${i} logit ${j}: ${logits[j]} vs ${v}`);
          });
          const cerr = Math.abs(exits.confidences[i] - want.confidence[i]);
          stats.maxConfErr = Math.max(stats.maxConfErr, cerr);
          assert.ok(cerr <= tol.confidence_abs, `exit ${i} confidence`);
          assert.ok(Math.abs(exits.maxProbabilities[i] - want.max_probability[i]) <= tol.logits_abs, "softmax max");
        });
        assert.deepEqual(exits.answers.map((a) => engine.labels[a]), want.answers, "answers");
        for (const row of want.policies) {
          const policy = makePolicy(policyOf(row.policy));
          assert.equal(decideOffline(policy, exits.answers, exits.confidences, exits.maxProbabilities), row.exit_index);
          const p = await engine.predict(image, q.text, { policy, keepRatio: ratio });
          assert.equal(p.exitIndex, row.exit_index, `predict exit ${JSON.stringify(row.policy)}`);
          assert.equal(p.answer, row.answer, `predict answer ${JSON.stringify(row.policy)}`);
          assert.deepEqual(p.keptVisualTokens, want.kept_index);
          stats.policies++;
        }
      });
    }
    const p = await engine.predict(image, q.text);
    assert.equal(p.keepRatio, q.default.keep_ratio);
    assert.equal(p.exitIndex, q.default.exit_index, "default exit");
    assert.equal(p.answer, q.default.answer, "default answer");
  });
}

async function refusal(edit, base = bundlePath) {
  const [bundle, cleanup] = copyBundle(base);
  try {
    editManifest(bundle, edit);
    await Engine.load(new NodeDirectorySource(bundle), { ort });
    return null;
  } catch (exc) {
    assert.ok(exc instanceof BundleError, `a BundleError, got ${exc?.constructor?.name}: ${exc?.message}`);
    return exc;
  } finally {
    cleanup();
  }
}

test("a tokenizer setting the manifest misstates is refused (tokenizer)", async () => {
  for (const [key, value] of [["lowercase", false], ["strip_accents", false], ["special_tokens", []], ["cls_id", 3],
    ["template", ["[CLS]", "$text"]], ["max_input_chars_per_word", 50]]) {
    const exc = await refusal((m) => { m.tokenizer[key] = value; });
    assert.equal(exc?.code, "tokenizer", `${key}: ${exc?.message}`);
    assert.match(exc.message, new RegExp(key));
  }
});

test("two images per query (NLVR2) and a match-score head (retrieval) are refused (unsupported)", async () => {
  const nlvr2 = await refusal((m) => {  // what `mmedge export` writes for an adapted NLVR2 model
    m.preprocessing.num_images = 2;
    m.task = "verify";
    m.labels = ["False", "True"];
    for (const s of Object.values(m.stages)) {
      if (s.stage === 0) s.inputs[0].shape = [1, 2, 3, m.preprocessing.image_size, m.preprocessing.image_size];
    }
  });
  assert.equal(nlvr2?.code, "unsupported", nlvr2?.message);
  assert.match(nlvr2.message, /2 images per query/);
  const retrieval = await refusal((m) => { m.head = "match-score"; m.task = "match"; m.labels = ["no", "yes"]; });
  assert.equal(retrieval?.code, "unsupported", retrieval?.message);
  assert.match(retrieval.message, /match-score/);
  // values no runtime reads are the schema's; an explicit softmax head is the classifier the runtime runs
  assert.equal((await refusal((m) => { m.preprocessing.num_images = 3; }))?.code, "schema");
  assert.equal((await refusal((m) => { m.head = "sigmoid"; }))?.code, "schema");
  assert.equal((await refusal((m) => { m.head = "softmax"; })), null);
});

test("the adapted preparation's own fields are required, and format 1's where it is format 1 (schema)", async () => {
  assert.equal((await refusal((m) => { delete m.preprocessing.fit; }))?.code, "schema");
  assert.equal((await refusal((m) => { delete m.tokenizer.cls_id; }))?.code, "schema");
  // but a format-1 resize needs pad_color and the fixed scale
  assert.equal((await refusal((m) => { m.preprocessing.resize = "pillow-bilinear"; }))?.code, "schema");
});

test("the shipped format-1 bundle, its manifest switched to the adapted rules, runs them", async () => {
  const shipped = join(REPO, readJson(join(GOLDEN, "queries.json")).bundle);
  const [bundle, cleanup] = copyBundle(shipped);
  try {
    editManifest(bundle, (m) => {
      Object.assign(m.preprocessing, { resize: "pillow-bicubic", fit: "stretch", num_images: 1, scale: 1 / 255 });
      delete m.preprocessing.pad_color;
    });
    const stretched = await Engine.load(new NodeDirectorySource(bundle), { ort });
    try {
      const p = stretched.manifest.preprocessing;
      const image = generated({ width: 90, height: 40, channels: 4, pattern: "noise", seed: 5 });
      const got = stretched.preprocess(image, "is there a red circle ?");
      const want = preprocessStretched(image, { imageSize: p.image_size, scale: p.scale, mean: p.mean, std: p.std });
      assert.deepEqual(got.pixelValues, want.pixelValues);
      const padded = preprocessImage(image, { imageSize: p.image_size, padColor: [118, 118, 124], mean: p.mean, std: p.std });
      assert.notDeepEqual(got.resized, padded.resized, "stretched, not padded");
    } finally {
      await stretched.dispose();
    }
  } finally {
    cleanup();
  }
  // its WordLevel tokenizer.json is not a BERT tokenizer
  const exc = await refusal((m) => {
    Object.assign(m.tokenizer, { kind: "bert-wordpiece", strip_accents: true, clean_text: true, handle_chinese_chars: true,
      continuing_subword_prefix: "##", max_input_chars_per_word: 100, template: ["[CLS]", "$text", "[SEP]"],
      special_tokens: [], cls_id: 2, sep_id: 3 });
    delete m.tokenizer.split_regex;
  }, shipped);
  assert.equal(exc?.code, "tokenizer", exc?.message);
  assert.match(exc.message, /BERT WordPiece/);
});
