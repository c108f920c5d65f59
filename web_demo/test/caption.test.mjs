// The demo's captioning mode in headless Chromium against the caption golden vectors
// (tests/vectors/caption/vectors.json, made with the Python CaptionEngine on onnxruntime): every
// golden caption (6 images x 44 settings: five exit policies, greedy and beam 3, kv copy and
// recompute, keep ratios 1 and 0.5, at most 24 or 5 ids) through the page's caption panel
// (window.mmedgeDemo.captionRuns: the image decoded like a chosen file, the mode radio and beam box
// set, the caption drawn word by word), checked id for id, exit for exit, confidences within the
// vectors' tolerance, and the words and exits the page shows; a sample image clicked; the full-depth
// and adaptive times shown (caption-latency.json); errors shown in the page; a screenshot.

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";

import { DEMO, ensureBuilt, median, openDemo, quantile, ROOT, RUNTIME, urlPath } from "./helpers.mjs";
import { encodeImage } from "./png-writer.mjs";

const VECTORS = path.join(ROOT, "tests", "vectors", "caption");
const CALIBRATION_RECORD = path.join(ROOT, "benchmarks", "results", "caption", "summary.json");
const LATENCY_RUNS = 20;
const WARMUP_RUNS = 3;

let doc;
let demo;
let info;
let eos;
let support; // runtimes/js/test-support/helpers.mjs: the vectors' image generator and policy objects
const agreement = { images: 0, captions: 0, idsMatched: 0, exitsMatched: 0, shownMatched: 0, byBeam: {}, byPolicy: {} };

const sha256 = (bytes) => createHash("sha256").update(bytes).digest("hex");
const round = (x) => Math.round(x * 1000) / 1000;

/** An image of the vectors for the hook: a served file's URL, or a generated image as PNG bytes. */
function imageOf(entry) {
  if (entry.file) return urlPath(path.join(VECTORS, entry.file));
  return { name: `${entry.name}.png`, bytes: Array.from(encodeImage(support.generated(entry))) };
}

/** Every golden run of an image with the hook's options for it (the mode radio as near as it goes). */
function runsOf(entry) {
  return Object.entries(entry.by_keep_ratio).flatMap(([key, v]) => v.runs.map((r) => ({
    key, want: r,
    options: {
      mode: r.policy.kind === "full" ? "full" : "adaptive", beam: r.beam, policy: support.policyOf(r.policy),
      keepRatio: Number(key), kv: r.kv, maxLen: r.max_len,
    },
  })));
}

function count(table, key, ok) {
  table[key] ??= { captions: 0, matched: 0 };
  table[key].captions++;
  if (ok) table[key].matched++;
}

/** One golden run against what the page returned and showed. */
function checkRun(entry, { key, want, options }, got) {
  const where = `${entry.name} keep ${key} ${want.policy.kind} kv ${want.kv} beam ${want.beam} max_len ${want.max_len}`;
  const idsOk = JSON.stringify(got.tokens) === JSON.stringify(want.tokens);
  const exitsOk = JSON.stringify(got.exits) === JSON.stringify(want.exits);
  const wordsShown = want.text ? want.text.split(" ") : [];
  const shownOk = JSON.stringify(got.shown.words) === JSON.stringify(wordsShown) &&
    JSON.stringify(got.shown.exits) === JSON.stringify(want.exits);
  agreement.captions++;
  if (idsOk) agreement.idsMatched++;
  if (exitsOk) agreement.exitsMatched++;
  if (shownOk) agreement.shownMatched++;
  count(agreement.byBeam, `beam ${want.beam}`, idsOk && exitsOk && shownOk);
  count(agreement.byPolicy, want.policy.kind, idsOk && exitsOk && shownOk);

  assert.deepEqual(got.tokens, want.tokens, `${where}: ids`);
  assert.deepEqual(got.exits, want.exits, `${where}: exits`);
  assert.equal(got.text, want.text, `${where}: text`);
  assert.deepEqual(got.shown.words, wordsShown, `${where}: the words shown`);
  assert.deepEqual(got.shown.exits, want.exits, `${where}: the exits shown`);
  assert.equal(got.shown.ends, want.tokens.at(-1) === eos, `${where}: the end shown`);
  const tol = doc.tolerance;
  want.confidences.forEach((c, i) => {
    assert.ok(Math.abs(got.confidences[i] - c) <= tol.confidence_abs, `${where}: confidence ${i}: ${got.confidences[i]} vs ${c}`);
    assert.ok(Math.abs(got.shown.confidences[i] - c) <= tol.confidence_abs, `${where}: confidence ${i} shown`);
  });
  assert.ok(Math.abs(got.logprob - want.logprob) <= tol.logprob_abs, `${where}: score ${got.logprob} vs ${want.logprob}`);
  assert.equal(got.settings.policy.kind, options.policy.kind, `${where}: policy`);
  assert.equal(got.settings.keepRatio, options.keepRatio, `${where}: keep ratio`);
  assert.equal(got.settings.beam, want.beam, `${where}: beam box`);
  // written as decoded: one onWord per position, the page showing the leading hypothesis' ids each time
  assert.equal(got.steps.length, got.positionMs.length, `${where}: one drawing per position`);
  got.steps.forEach((s) => assert.equal(s.shown, s.tokens, `${where}: position ${s.position} shows its hypothesis`));
  if (want.beam === 1) got.steps.forEach((s, i) => assert.equal(s.shown, i + 1, `${where}: word ${i + 1} written`));
}

before(async () => {
  await ensureBuilt();
  support = await import(path.join(RUNTIME, "test-support", "helpers.mjs"));
  doc = JSON.parse(fs.readFileSync(path.join(VECTORS, "vectors.json"), "utf8"));
  demo = await openDemo();
  await demo.page.goto(`${demo.url}web_demo/?threads=1`);
  await demo.page.evaluate(() => window.mmedgeDemo.ready);
  info = await demo.page.evaluate(() => window.mmedgeDemo.captionReady());
  eos = JSON.parse(fs.readFileSync(path.join(DEMO, "vendor", "caption-default.mmedge", "manifest.json"), "utf8")).tokenizer.eos_id;
});

after(async () => {
  await demo?.close();
  if (agreement.captions) console.log(`# caption agreement in the page: ${JSON.stringify(agreement)}`);
});

describe("captioning mode", () => {
  it("loads the caption vectors' bundle (weights rebuilt by build.mjs) and the calibrated policy", () => {
    const served = path.join(DEMO, "vendor", "caption-default.mmedge");
    assert.equal(sha256(fs.readFileSync(path.join(served, "manifest.json"))), doc.manifest_sha256,
      "web_demo/vendor/caption-default.mmedge is not the bundle the caption vectors were made from");
    const recipe = JSON.parse(fs.readFileSync(path.join(VECTORS, "weights.json"), "utf8"));
    assert.equal(sha256(fs.readFileSync(path.join(served, recipe.file))), recipe.sha256);
    assert.equal(info.kind, "caption");
    assert.equal(info.stages, 4);
    assert.equal(info.calibrationError, null);
    // the bundle's thresholds when calibrated, else the captioning benchmark's calibrated choice
    const th = info.thresholds;
    const want = th.calibrated
      ? { kind: th.policy, keepRatio: th.keep_ratio, kv: th.kv }
      : (({ chosen }) => ({ kind: chosen.policy.kind, threshold: chosen.policy.threshold, keepRatio: chosen.keep_ratio, kv: chosen.kv }))(
        JSON.parse(fs.readFileSync(CALIBRATION_RECORD, "utf8")).calibration);
    assert.equal(info.calibration.policy.kind, want.kind);
    if (want.threshold !== undefined) assert.equal(info.calibration.policy.threshold, want.threshold);
    assert.equal(info.calibration.keepRatio, want.keepRatio);
    assert.equal(info.calibration.kv, want.kv);
    if (!th.calibrated) assert.match(info.calibration.source, /benchmarks\/results\/caption\/summary\.json$/);
  });

  it("every golden caption through the page: ids, exits, confidences and the words shown", async (t) => {
    assert.ok(doc.images.length >= 4, `at least 4 golden images, got ${doc.images.length}`);
    for (const entry of doc.images) {
      await t.test(entry.name, async () => {
        const runs = runsOf(entry);
        assert.ok(runs.some((r) => r.want.beam === 1) && runs.some((r) => r.want.beam > 1), "greedy and beam runs");
        const got = await demo.page.evaluate(([image, options]) => window.mmedgeDemo.captionRuns(image, options),
          [imageOf(entry), runs.map((r) => r.options)]);
        agreement.images++;
        runs.forEach((run, i) => checkRun(entry, run, got[i]));
      });
    }
    assert.equal(agreement.captions, doc.images.reduce((n, e) => n + runsOf(e).length, 0));
  });

  it("draws each word as it is decoded, waiting for the browser to paint it (the UI's way)", async () => {
    const entry = doc.images.find((e) => e.file);
    const want = entry.by_keep_ratio["1"].runs.find((r) => r.policy.kind === "full" && r.beam === 1 && r.kv === "copy" && r.max_len === 24);
    const [got] = await demo.page.evaluate((image) => window.mmedgeDemo.captionRuns(image, [{ mode: "full", beam: 1, paint: true }]),
      imageOf(entry));
    assert.deepEqual(got.tokens, want.tokens);
    assert.deepEqual(got.shown.exits, want.exits);
    assert.deepEqual(got.steps.map((s) => s.shown), want.tokens.map((_, i) => i + 1), "one more word on the page per position");
    assert.ok(got.timingsMs.onWord > 0, "the time spent drawing is reported apart");
    assert.match(got.shown.decode, /ms \(preprocessing .*; drawing the words as they came took \d+ ms more$/);
  });

  it("a sample image clicked is captioned like the golden vectors, then both times are shown", async () => {
    const { page } = demo;
    const samples = JSON.parse(fs.readFileSync(path.join(DEMO, "samples", "samples.json"), "utf8"));
    assert.ok(samples.captions.length >= 1);
    for (const s of samples.captions) {
      const entry = doc.images.find((e) => e.file && sha256(fs.readFileSync(path.join(VECTORS, e.file))) ===
        sha256(fs.readFileSync(path.join(DEMO, "samples", s.file))));
      assert.ok(entry, `samples/${s.file} is not one of the caption vectors' images`);
      s.entry = entry;
    }
    const sample = samples.captions[1] ?? samples.captions[0];
    const want = sample.entry.by_keep_ratio["1"].runs.find((r) => r.policy.kind === "full" && r.beam === 1 && r.kv === "copy" && r.max_len === 24);
    await page.evaluate(() => window.mmedgeDemo.setTask("caption"));
    await page.fill("#caption-beam", "1");
    await page.locator("input[name=caption-mode][value=full]").check();
    const seq = await page.evaluate(() => window.mmedgeDemo.captionLastRun?.seq ?? 0);
    await page.locator(`#caption-samples button[data-name="${sample.name}"]`).click();
    await page.waitForFunction(([b, name]) => {
      const r = window.mmedgeDemo.captionLastRun;
      const s = window.mmedgeDemo.captionShown;
      return r && r.seq > b && r.image === name && s.timesShown && /^\d/.test(s.timeFull) && /^\d/.test(s.timeAdaptive);
    }, [seq, sample.name], { timeout: 120_000 });
    const shown = await page.evaluate(() => window.mmedgeDemo.captionShown);
    assert.deepEqual(shown.words, want.text.split(" "));
    assert.deepEqual(shown.exits, want.exits);
    assert.match(shown.policy, /^full depth/);
    assert.match(shown.timeFull, /^\d+\.\d$/);
    assert.match(shown.timeAdaptive, /^\d+\.\d$/);
    assert.match(shown.speedup, /^\d+\.\d\dx$/);
    assert.match(shown.timesNote, new RegExp(`^${sample.name}, beam 1: median of \\d+ runs per mode`));
    assert.equal(shown.error, "");
  });

  it("measures full depth against adaptive and shows both medians (caption-latency.json)", async () => {
    const { page } = demo;
    const name = process.env.MMEDGE_WEB_CAPTION_LATENCY_IMAGE || doc.images[0].name;
    const entry = doc.images.find((e) => e.name === name);
    assert.ok(entry, `no caption vector image named ${name}`);
    const wantFull = entry.by_keep_ratio["1"].runs.find((r) => r.policy.kind === "full" && r.beam === 1 && r.kv === "copy" && r.max_len === 24);
    await page.evaluate((image) => window.mmedgeDemo.captionRuns(image, [{ mode: "full", beam: 1 }]), imageOf(entry));
    const loadBefore = os.loadavg();
    const m = await page.evaluate(([runs, warmup]) => window.mmedgeDemo.measureCaption({ runs, warmup }), [LATENCY_RUNS, WARMUP_RUNS]);
    const loadAfter = os.loadavg();
    const modes = {};
    for (const mode of ["full", "adaptive"]) {
      const list = m.captions[mode];
      assert.equal(list.length, LATENCY_RUNS);
      assert.ok(list.every((c) => JSON.stringify([c.tokens, c.exits]) === JSON.stringify([list[0].tokens, list[0].exits])), `${mode}: runs agree`);
      const ms = list.map((c) => c.timingsMs.total);
      const s = m.settings[mode];
      const graphs = {};
      for (const k of Object.keys(list[0].timingsMs)) if (k !== "total") graphs[k] = round(median(list.map((c) => c.timingsMs[k] ?? 0)));
      const exitSum = list[0].exits.reduce((a, e) => a + e + 1, 0);
      modes[mode] = {
        policy: s.policy, keep_ratio: s.keepRatio, kv: s.kv, beam: s.beam, text: list[0].text, exits: list[0].exits,
        mean_exit: round(exitSum / list[0].exits.length), decoder_stages_run: exitSum, decoder_stages_full_depth: list[0].exits.length * info.stages,
        caption_ms: { median: round(median(ms)), min: round(Math.min(...ms)), max: round(Math.max(...ms)),
          p10: round(quantile(ms, 0.1)), p90: round(quantile(ms, 0.9)) },
        graph_median_ms: graphs,
      };
      // the page shows the medians of these very runs
      assert.equal(m.shown[mode === "full" ? "timeFull" : "timeAdaptive"], median(ms).toFixed(1), `${mode}: the time shown`);
    }
    assert.deepEqual(m.captions.full[0].tokens, wantFull.tokens, "full depth gives the golden caption");
    assert.deepEqual(m.captions.full[0].exits, wantFull.exits);
    assert.equal(m.shown.speedup, `${(median(m.captions.full.map((c) => c.timingsMs.total)) /
      median(m.captions.adaptive.map((c) => c.timingsMs.total))).toFixed(2)}x`);
    const cpus = os.cpus();
    const cal = info.calibration;
    const out = {
      what: "time per caption in the web demo's captioning mode: full depth against the calibrated exit policy, " +
        "headless Chromium, onnxruntime-web WebAssembly, 1 thread",
      measured_utc: new Date().toISOString(),
      image: { name: entry.name, file: entry.file ? path.posix.join("tests/vectors/caption", entry.file) : null,
        width: entry.width, height: entry.height },
      bundle: `${doc.bundle}, its weights file rebuilt from models/caption-default/model.safetensors ` +
        "(web_demo/vendor/caption-default.mmedge, made by web_demo/build.mjs)",
      calibration: {
        source: cal.source.startsWith(demo.url) ? cal.source.slice(demo.url.length) : cal.source,
        policy: cal.policy, keep_ratio: cal.keepRatio, kv: cal.kv, record: cal.record,
      },
      stages: info.stages, beam: 1, runs_per_mode: LATENCY_RUNS, warmup_runs_per_mode: WARMUP_RUNS, order: "alternating full / adaptive",
      definitions: {
        caption_ms: "CaptionResult.timingsMs.total: preprocessing, the encoder graph and every decoder graph run (engine.caption, no onWord)",
        graph_median_ms: "median of each entry of CaptionResult.timingsMs (each graph's session.run time summed over the caption)",
        decoder_stages_run: "decoder stage graphs run for the caption's ids (an id that exits at exit k runs k stages; kv copy then fills the skipped layers' cache)",
      },
      machine: {
        cpu: cpus[0]?.model ?? "unknown", logical_cores: cpus.length, os: `${os.type()} ${os.release()} ${os.arch()}`,
        node: process.version, load_average_1m: { before: round(loadBefore[0]), after: round(loadAfter[0]) },
        note: "a 2-core machine shared with other work",
      },
      chromium: demo.browser.version(), headless: true,
      onnxruntime_web: await demo.page.evaluate(() => window.mmedgeDemo.ready.then((i) => i.ortVersion)),
      wasm_threads: await demo.page.evaluate(() => window.mmedgeDemo.ready.then((i) => i.threads)),
      modes,
      same_caption: modes.full.text === modes.adaptive.text,
      speedup_median: round(modes.full.caption_ms.median / modes.adaptive.caption_ms.median),
    };
    fs.writeFileSync(path.join(DEMO, "caption-latency.json"), JSON.stringify(out, null, 2) + "\n");
    console.log(`# caption latency, ${entry.name} (${LATENCY_RUNS} runs per mode, alternating; Chromium ${out.chromium}, ` +
      `onnxruntime-web ${out.onnxruntime_web}, ${out.wasm_threads} thread, ${out.machine.cpu} x${out.machine.logical_cores}, ` +
      `load ${out.machine.load_average_1m.before} -> ${out.machine.load_average_1m.after})`);
    for (const [mode, r] of Object.entries(modes)) {
      console.log(`#   ${mode.padEnd(8)} mean exit ${r.mean_exit} of ${info.stages}: median ${r.caption_ms.median} ms ` +
        `(p10 ${r.caption_ms.p10}, p90 ${r.caption_ms.p90}); "${r.text}"`);
    }
    console.log(`#   full / adaptive (median): ${out.speedup_median}x`);
  });

  it("takes a screenshot of the captioning mode (web_demo/screenshot-caption.png)", async () => {
    const { page } = demo;
    const samples = JSON.parse(fs.readFileSync(path.join(DEMO, "samples", "samples.json"), "utf8"));
    const pick = samples.caption_screenshot ?? samples.captions[0].name;
    await page.fill("#caption-beam", "1");
    await page.locator("input[name=caption-mode][value=adaptive]").check();
    const seq = await page.evaluate(() => window.mmedgeDemo.captionLastRun?.seq ?? 0);
    await page.locator(`#caption-samples button[data-name="${pick}"]`).click();
    await page.waitForFunction(([b, name]) => {
      const r = window.mmedgeDemo.captionLastRun;
      const s = window.mmedgeDemo.captionShown;
      return r && r.seq > b && r.image === name && r.mode === "adaptive" && s.timesShown && /^\d/.test(s.timeAdaptive);
    }, [seq, pick], { timeout: 120_000 });
    await page.evaluate(() => document.activeElement?.blur());
    await page.mouse.move(0, 0);
    const file = path.join(DEMO, "screenshot-caption.png");
    await page.screenshot({ path: file });
    const size = fs.statSync(file).size;
    assert.ok(size > 10_000 && size < 1_000_000, `screenshot size ${size}`);
  });

  it("reports a file that is not an image, and a bad beam width, in the caption panel", async () => {
    await assert.rejects(demo.page.evaluate(() => window.mmedgeDemo.captionRuns({ name: "notes.png", bytes: [1, 2, 3, 4] }, [{}])),
      /not an image/);
    assert.match((await demo.page.evaluate(() => window.mmedgeDemo.captionShown)).error, /not an image the browser can decode/);
    const entry = doc.images.find((e) => e.file);
    await assert.rejects(demo.page.evaluate((image) => window.mmedgeDemo.captionRuns(image, [{ mode: "full", beam: 0 }]), imageOf(entry)),
      /beam width must be a whole number from 1 to 16/);
    const shown = await demo.page.evaluate(() => window.mmedgeDemo.captionShown);
    assert.match(shown.error, /beam width/);
    const [ok] = await demo.page.evaluate((image) => window.mmedgeDemo.captionRuns(image, [{ mode: "full", beam: 1 }]), imageOf(entry));
    assert.ok(ok.tokens.length > 0, "captions again once the beam is fixed");
    assert.equal(ok.shown.error, "");
  });

  it("task=caption opens the Caption tab and captions the first sample image, with both times", async () => {
    const page = await demo.browser.newPage({ viewport: { width: 1000, height: 700 } });
    const problems = [];
    page.on("console", (msg) => { if (msg.type() === "error") problems.push(msg.text()); });
    page.on("pageerror", (e) => problems.push(e.message));
    try {
      await page.goto(`${demo.url}web_demo/?threads=1&task=caption`);
      await page.evaluate(() => window.mmedgeDemo.ready);
      await page.waitForFunction(() => window.mmedgeDemo.captionShown.timesShown && /^\d/.test(window.mmedgeDemo.captionShown.timeFull),
        null, { timeout: 120_000 });
      const state = await page.evaluate(() => ({ task: window.mmedgeDemo.getTask(), run: window.mmedgeDemo.captionLastRun,
        shown: window.mmedgeDemo.captionShown, askHidden: document.getElementById("ask-panel").hidden,
        captionHidden: document.getElementById("caption-panel").hidden }));
      assert.equal(state.task, "caption");
      assert.equal(state.askHidden, true);
      assert.equal(state.captionHidden, false);
      assert.equal(state.run.mode, "adaptive");
      assert.ok(state.shown.words.length > 0);
      assert.deepEqual(problems, []);
    } finally {
      await page.close();
    }
  });

  it("shows why when the captioning bundle or its calibration cannot be loaded", async () => {
    const page = await demo.browser.newPage();
    try {
      // a folder without a bundle: the caption panel says so; the VQA tab still works
      await page.goto(`${demo.url}web_demo/?threads=1&caption_bundle=${encodeURIComponent("/web_demo/samples/")}`);
      await page.evaluate(() => window.mmedgeDemo.ready);
      await assert.rejects(page.evaluate(() => window.mmedgeDemo.captionReady()), /manifest\.json/);
      let shown = await page.evaluate(() => window.mmedgeDemo.captionShown);
      assert.match(shown.status, /could not be loaded/);
      assert.match(shown.error, /manifest\.json.*\n\(bundle: .*\/web_demo\/samples\/\)/s);

      // no calibration record: adaptive is refused with the reason, full depth still captions
      await page.goto(`${demo.url}web_demo/?threads=1&caption_calibration=${encodeURIComponent("/web_demo/no-such-record.json")}`);
      await page.evaluate(() => window.mmedgeDemo.ready);
      const loaded = await page.evaluate(() => window.mmedgeDemo.captionReady());
      assert.equal(loaded.calibration, null);
      assert.match(loaded.calibrationError, /not calibrated.*no-such-record\.json.*HTTP 404/s);
      const entry = doc.images.find((e) => e.file);
      await assert.rejects(page.evaluate((image) => window.mmedgeDemo.captionRuns(image, [{ mode: "adaptive" }]), imageOf(entry)),
        /Adaptive decoding needs the calibrated policy/);
      const [full] = await page.evaluate((image) => window.mmedgeDemo.captionRuns(image, [{ mode: "full" }]), imageOf(entry));
      const want = entry.by_keep_ratio["1"].runs.find((r) => r.policy.kind === "full" && r.beam === 1 && r.kv === "copy" && r.max_len === 24);
      assert.deepEqual(full.tokens, want.tokens);
      shown = await page.evaluate(() => window.mmedgeDemo.captionShown);
      assert.match(shown.status, /^Ready/);
    } finally {
      await page.close();
    }
  });

  it("shows no console errors, failed requests or uncaught exceptions", () => {
    assert.deepEqual(demo.problems, []);
  });
});
