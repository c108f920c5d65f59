// Bundles of an encoder adapted by `mmedge adapt` (docs/bundle-format.md, "Adapted encoders"): the
// golden vectors of tests/vectors/adapted (scripts/make_adapted_vectors.py) on the committed tiny ViLT
// bundles: BERT tokenizer cases, Pillow bicubic resamples, the image preparation, and queries end to
// end through onnxruntime-node, bit for bit where the spec says so; for the VQA bundle, the NLVR2
// bundle (two images per query) and the retrieval bundle (head "match-score").
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import test from "node:test";
import * as ort from "onnxruntime-node";

import {
  BertWordPieceTokenizer, BundleError, Engine, ImageCountError, ImageError, NodeDirectorySource, TextError, argmax,
  axisCoefficients, bertNormalize, decideOffline, makePolicy, matchProbability, preprocessImage, preprocessStretched,
  resample, resizeSquare, verticalFirst,
} from "../dist/index.js";
import {
  GOLDEN, REPO, assertExitMatches, copyBundle, editManifest, generated, policyOf, readJson, sha256,
} from "../test-support/helpers.mjs";

const VECTORS = join(REPO, "tests/vectors/adapted");
const tokenizerDoc = readJson(join(VECTORS, "tokenizer.json"));
const resizeDoc = readJson(join(VECTORS, "resize.json"));
const queriesDoc = readJson(join(VECTORS, "queries.json"));
const bundlePath = join(REPO, queriesDoc.bundle);
// the two-image (NLVR2) and match-score (retrieval) bundles and their queries
const KINDS = {
  nlvr2: readJson(join(VECTORS, "queries-nlvr2.json")),
  retrieval: readJson(join(VECTORS, "queries-retrieval.json")),
};
const stats = { tokenizer: 0, tokenizerErrors: 0, resample: 0, images: 0, refused: 0, queries: 0, policies: 0,
  maxLogitsErr: 0, maxConfErr: 0, nlvr2Queries: 0, retrievalQueries: 0, kindPolicies: 0, maxMatchErr: 0 };


const textOf = (c) => (c.text !== undefined ? c.text : c.repeat.text.repeat(c.repeat.count));

let engine;
const engines = {};

test.before(async () => {
  engine = await Engine.load(new NodeDirectorySource(bundlePath), { ort, onWarning: () => {} });
  for (const [kind, doc] of Object.entries(KINDS)) {
    engines[kind] = await Engine.load(new NodeDirectorySource(join(REPO, doc.bundle)), { ort, onWarning: () => {} });
  }
});

test.after(async () => {
  await engine?.dispose();
  for (const e of Object.values(engines)) await e.dispose();
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
        exits.logits.forEach((_, i) => {
          assertExitMatches(exits, want, i, tol, stats);
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

// ------------------------------------------------------------------ two images (NLVR2), a match score (retrieval)
test("the NLVR2 and retrieval vectors were made from their bundles, which state two images and the match head", () => {
  for (const [kind, doc] of Object.entries(KINDS)) {
    const e = engines[kind];
    assert.equal(doc.manifest_sha256, sha256(readFileSync(join(REPO, doc.bundle, "manifest.json"))), `${kind}: regenerate the vectors`);
    assert.deepEqual(e.labels, doc.labels);
    assert.equal(e.numImages, doc.num_images);
    assert.equal(e.head, doc.head);
    assert.equal(e.manifest.task, doc.task);
    assert.ok(doc.queries.length >= 5, kind);
  }
  assert.deepEqual([engines.nlvr2.numImages, engines.nlvr2.head, engines.nlvr2.manifest.task], [2, "softmax", "verify"]);
  assert.deepEqual([engines.retrieval.numImages, engines.retrieval.head, engines.retrieval.manifest.task, engines.retrieval.labels],
    [1, "match-score", "match", ["no", "yes"]]);
  assert.deepEqual([engine.numImages, engine.head], [1, "softmax"]);
  const S = engines.nlvr2.imageSize;
  for (const name of engines.nlvr2.manifest.keep_ratios.map((k) => k.stages[0])) {
    const stage = engines.nlvr2.manifest.stages[name];
    assert.deepEqual(stage.inputs[0].shape, [1, 2, 3, S, S]);
    assert.equal(stage.outputs.find((t) => t.name === "kept_index").shape[0], 2, "kept_index [2, k]");
  }
});

/** A query's image argument: [left, right] for NLVR2, one image for retrieval. */
const queryImages = (kind, q) => (kind === "nlvr2" ? q.images.map((spec) => generated(spec)) : generated(q));

for (const [kind, doc] of Object.entries(KINDS)) {
  for (const q of doc.queries) {
    test(`${kind} query ${q.name}`, async (t) => {
      const e = engines[kind];
      const match = doc.head === "match-score";
      const image = queryImages(kind, q);
      const inputs = e.preprocess(image, q.text);
      assert.deepEqual([...inputs.inputIds], q.input_ids, "input_ids");
      assert.deepEqual([...inputs.textMask], q.text_mask, "text_mask");
      const S = e.imageSize;
      assert.equal(inputs.pixelValues.length, q.pixel_values_shape.reduce((a, b) => a * b, 1));
      assert.deepEqual(q.pixel_values_shape, kind === "nlvr2" ? [1, 2, 3, S, S] : [1, 3, S, S]);
      assert.equal(sha256(new Uint8Array(inputs.pixelValues.buffer)), q.pixel_values_sha256, "pixel_values");
      const rgb = kind === "nlvr2" ? q.resized_rgb_sha256 : [q.resized_rgb_sha256];
      assert.deepEqual(inputs.resizedImages.map((b) => sha256(b)), rgb, "each image's resized 8-bit RGB");
      assert.equal(inputs.resized.length, rgb.length * S * S * 3);
      if (kind === "nlvr2") {  // each image is prepared alone: image i's planes are its own preparation
        const p = e.manifest.preprocessing;
        image.forEach((im, i) => {
          const one = preprocessStretched(im, { imageSize: S, scale: p.scale, mean: p.mean, std: p.std });
          assert.deepEqual(inputs.pixelValues.subarray(i * 3 * S * S, (i + 1) * 3 * S * S), one.pixelValues, `image ${i}`);
        });
      }
      const tol = doc.tolerance;
      for (const [key, want] of Object.entries(q.by_keep_ratio)) {
        await t.test(`keep ratio ${key}`, async () => {
          const ratio = Number(key);
          const exits = await e.allExits(image, q.text, { keepRatio: ratio });
          assert.deepEqual(exits.keptVisualTokens, want.kept_index, "kept tokens");
          const group = e.manifest.keep_ratios.find((g) => g.keep_ratio === ratio);
          const N = (S / e.manifest.model.config.patch_size) ** 2;
          assert.equal(exits.keptIndex.length, e.numImages * group.kept_tokens);
          for (let i = 0; i < e.numImages; i++) {  // image i's patch j is i * N + j, k per image
            assert.equal(exits.keptIndex.filter((v) => v >= i * N && v < (i + 1) * N).length, group.kept_tokens, `image ${i}`);
          }
          exits.logits.forEach((logits, i) => {
            assert.equal(logits.length, e.labels.length);
            assertExitMatches(exits, want, i, tol, stats);
            assert.ok(Math.abs(exits.maxProbabilities[i] - want.max_probability[i]) <= tol.logits_abs, "softmax max");
            if (match) {
              assert.equal(logits[0], 0, "a match-score head's logits are [0, s]");
              const merr = Math.abs(exits.matchScores[i] - want.match_score[i]);
              stats.maxMatchErr = Math.max(stats.maxMatchErr, merr);
              assert.ok(merr <= tol.logits_abs, `exit ${i} match score ${exits.matchScores[i]} vs ${want.match_score[i]}`);
              assert.equal(exits.matchScores[i], 1 / (1 + Math.exp(-logits[1])));
            }
          });
          if (!match) assert.equal(exits.matchScores, undefined);
          assert.deepEqual(exits.answers.map((a) => e.labels[a]), want.answers, "answers");
          for (const row of want.policies) {
            const policy = makePolicy(policyOf(row.policy));
            assert.equal(decideOffline(policy, exits.answers, exits.confidences, exits.maxProbabilities), row.exit_index);
            const p = await e.predict(image, q.text, { policy, keepRatio: ratio });
            assert.equal(p.exitIndex, row.exit_index, `predict exit ${JSON.stringify(row.policy)}`);
            assert.equal(p.answer, row.answer, `predict answer ${JSON.stringify(row.policy)}`);
            assert.deepEqual(p.keptVisualTokens, want.kept_index);
            if (match) {
              assert.ok(Math.abs(p.matchScore - row.match_score) <= tol.logits_abs, `predict match score ${JSON.stringify(row.policy)}`);
              assert.equal(p.answer, p.matchScore > 0.5 ? "yes" : "no");
              assert.ok(Math.abs(p.maxProbability - Math.max(p.matchScore, 1 - p.matchScore)) <= 1e-6, "max(sigmoid, 1 - sigmoid)");
            } else {
              assert.equal(p.matchScore, undefined);
              assert.equal("matchScore" in p, false);
            }
            stats.kindPolicies++;
          }
        });
      }
      const p = await e.predict(image, q.text);
      assert.equal(p.keepRatio, q.default.keep_ratio);
      assert.equal(p.exitIndex, q.default.exit_index, "default exit");
      assert.equal(p.answer, q.default.answer, "default answer");
      if (match) assert.ok(Math.abs(p.matchScore - q.default.match_score) <= tol.logits_abs, "default match score");
      stats[`${kind}Queries`]++;
    });
  }
}

test("a two-image bundle takes [left, right]; another count is an ImageCountError, as is two for a one-image bundle", async () => {
  const nlvr2 = engines.nlvr2;
  const [a, b, c] = [51, 52, 53].map((seed) => generated({ width: 40, height: 40, channels: 3, pattern: "noise", seed }));
  const text = "is there a red circle left of the square";
  const p = await nlvr2.predict([a, b], text);
  assert.ok(nlvr2.labels.includes(p.answer));
  const swapped = await nlvr2.allExits([b, a], text);
  const exits = await nlvr2.allExits([a, b], text);
  assert.notDeepEqual(swapped.logits, exits.logits, "the order of the images matters (left, right)");
  for (const [bad, got] of [[a, 1], [[a], 1], [[a, b, c], 3], [[], 0]]) {
    for (const call of [() => nlvr2.predict(bad, text), () => nlvr2.allExits(bad, text), async () => nlvr2.preprocess(bad, text)]) {
      await assert.rejects(call(), (exc) => {
        assert.ok(exc instanceof ImageCountError && exc instanceof ImageError, `${exc?.constructor?.name}: ${exc?.message}`);
        assert.deepEqual([exc.expected, exc.got], [2, got]);
        assert.match(exc.message, /reads 2 images per query/);
        assert.match(exc.message, /predict\(\[left, right\], text\)/);
        return true;
      });
    }
  }
  // a bad image inside the array is the image's own error
  await assert.rejects(nlvr2.predict([a, { width: 4, height: 4, data: new Uint8Array(48) }], text),
    (exc) => exc instanceof ImageError && !(exc instanceof ImageCountError));
  for (const one of [engine, engines.retrieval]) {
    await assert.rejects(one.predict([a, b], text), (exc) => exc instanceof ImageCountError && exc.expected === 1 &&
      exc.got === 2 && /reads 1 image per query, got 2/.test(exc.message));
    const single = await one.predict(a, text, { policy: "full" });
    const listed = await one.predict([a], text, { policy: "full" });
    assert.deepEqual([listed.answer, listed.exitIndex, listed.confidence], [single.answer, single.exitIndex, single.confidence]);
  }
});

test("a match score is sigmoid(s) of logits [0, s]: yes above 0.5, no at exactly 0.5 (the first maximum)", () => {
  assert.equal(matchProbability([0, 0]), 0.5);
  assert.equal(argmax(new Float32Array([0, 0])), 0, "at 0.5 the answer is labels[0], no");
  assert.equal(matchProbability([0, 2]), 1 / (1 + Math.exp(-2)));
  assert.ok(matchProbability([0, -3]) < 0.5 && matchProbability([0, 1e-7]) > 0.5);
  assert.equal(matchProbability([0, 800]), 1);
  assert.equal(matchProbability([0, -800]), 0);
});

test("NLVR2 and retrieval manifests are checked for consistency (inconsistent) and the schema", async () => {
  const nlvr2 = join(REPO, KINDS.nlvr2.bundle);
  const retrieval = join(REPO, KINDS.retrieval.bundle);
  // stage 0 of a two-image bundle takes [1, 2, 3, S, S]
  let exc = await refusal((m) => {
    for (const s of Object.values(m.stages)) if (s.stage === 0) s.inputs[0].shape = [1, 3, m.preprocessing.image_size, m.preprocessing.image_size];
  }, nlvr2);
  assert.equal(exc?.code, "inconsistent", exc?.message);
  assert.match(exc.message, /\[1,2,3,32,32\]/);
  // a one-image bundle stating two images: its stage 0 takes one
  exc = await refusal((m) => { m.preprocessing.num_images = 2; });
  assert.equal(exc?.code, "inconsistent", exc?.message);
  // two images without modality pruning or in-graph graphs
  exc = await refusal((m) => {
    m.in_graph = { inputs: ["pixel_values", "input_ids", "text_mask", "threshold"],
      outputs: ["logits", "confidence", "exit_index", "kept_index"], by_keep_ratio: {} };
  }, nlvr2);
  assert.equal(exc?.code, "inconsistent", exc?.message);
  assert.match(exc.message, /two images per query has no modality_pruning or in_graph/);
  // match-score only with task match and labels [no, yes]
  exc = await refusal((m) => { m.labels = ["yes", "no"]; }, retrieval);
  assert.equal(exc?.code, "inconsistent", exc?.message);
  assert.match(exc.message, /match-score/);
  exc = await refusal((m) => { m.task = "vqa"; }, retrieval);
  assert.equal(exc?.code, "inconsistent", exc?.message);
  exc = await refusal((m) => { m.head = "match-score"; });  // the VQA bundle: six labels
  assert.equal(exc?.code, "inconsistent", exc?.message);
  // values no runtime reads are the schema's; an explicit softmax head is the classifier the runtime runs
  assert.equal((await refusal((m) => { m.preprocessing.num_images = 3; }))?.code, "schema");
  assert.equal((await refusal((m) => { m.preprocessing.num_images = 3; }, nlvr2))?.code, "schema");
  assert.equal((await refusal((m) => { m.head = "sigmoid"; }))?.code, "schema");
  assert.equal((await refusal((m) => { m.head = "softmax"; })), null);
  assert.equal((await refusal((m) => { m.preprocessing.num_images = 1; })), null);
});

test("an NLVR2 or retrieval bundle loads at another keep ratio, self-checks and warms up (no unsupported refusal)", async () => {
  for (const doc of Object.values(KINDS)) {
    const [bundle, cleanup] = copyBundle(join(REPO, doc.bundle));
    try {
      const e = await Engine.load(new NodeDirectorySource(bundle), { ort, keepRatio: 0.5 });
      assert.equal(e.keepRatio, 0.5);
      await e.warmUp(1);
      await e.dispose();
    } finally {
      cleanup();
    }
  }
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
