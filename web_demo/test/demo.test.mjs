// The demo page in headless Chromium against the golden vectors (tests/vectors/golden/queries.json):
// every query through the page's own code path (window.mmedgeDemo.run: decode the image like a
// chosen file, type the text, set the mode radio, ask), at full depth and with the bundle's
// calibrated policy; the mode toggle; no console errors; a screenshot; and the page's latency.

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";

import {
  byRatio, DEMO, ensureBuilt, GOLDEN_DIR, loadGolden, median, openDemo, quantile, ROOT, urlPath,
} from "./helpers.mjs";

const LATENCY_RUNS = 20;
const WARMUP_RUNS = 3;

let golden;
let bundleDir;
let manifest;
let demo;
let info;
let buildNotes = [];

const fullPolicy = (q) => byRatio(q, 1.0).policies.find((p) => p.policy.kind === "full");
const imageUrl = (q) => urlPath(path.join(GOLDEN_DIR, q.image));

before(async () => {
  buildNotes = await ensureBuilt();
  ({ golden, bundleDir } = loadGolden());
  manifest = JSON.parse(fs.readFileSync(path.join(bundleDir, "manifest.json"), "utf8"));
  demo = await openDemo();
  const bundleUrl = urlPath(bundleDir + "/");
  await demo.page.goto(`${demo.url}web_demo/?threads=1&bundle=${encodeURIComponent(bundleUrl)}`);
  info = await demo.page.evaluate(() => window.mmedgeDemo.ready);
});

after(async () => {
  await demo?.close();
});

describe("web demo", () => {
  it("loads the golden vectors' bundle, cross-origin isolated, single-threaded", () => {
    for (const note of buildNotes) console.log(`# build note: ${note}`);
    const manifestSha = createHash("sha256").update(fs.readFileSync(path.join(bundleDir, "manifest.json"))).digest("hex");
    assert.equal(manifestSha, golden.manifest_sha256, `${golden.bundle} is not the bundle the golden vectors were made from`);
    assert.equal(info.name, manifest.name);
    assert.equal(info.exits, manifest.exit_layers.length);
    assert.equal(info.crossOriginIsolated, true, "COOP/COEP headers from serve.mjs should isolate the page");
    assert.equal(info.threads, 1);
    assert.ok(golden.queries.length >= 6, `at least 6 golden queries, got ${golden.queries.length}`);
  });

  it("full depth (policy full, keep ratio 1.0) matches the golden answer, exit and kept tokens", async () => {
    const tolerance = golden.tolerance?.confidence_abs ?? 1e-4;
    for (const q of golden.queries) {
      const want = fullPolicy(q);
      const entry = byRatio(q, 1.0);
      const got = await demo.page.evaluate(([u, t]) => window.mmedgeDemo.run(u, t, "full"), [imageUrl(q), q.text]);
      assert.equal(got.policy.kind, "full", q.name);
      assert.equal(got.keepRatio, 1, q.name);
      assert.equal(got.answer, want.answer, `${q.name}: answer`);
      assert.equal(got.exitIndex, want.exit_index, `${q.name}: exit`);
      assert.deepEqual(got.keptVisualTokens, [...entry.kept_index].sort((a, b) => a - b), `${q.name}: kept tokens`);
      const dc = Math.abs(got.confidence - entry.confidence[got.exitIndex]);
      assert.ok(dc <= tolerance, `${q.name}: confidence ${got.confidence} vs ${entry.confidence[got.exitIndex]}`);
    }
  });

  it("adaptive (the manifest's calibrated thresholds) matches the golden default", async () => {
    const th = manifest.thresholds;
    for (const q of golden.queries) {
      const want = q.default;
      const got = await demo.page.evaluate(([u, t]) => window.mmedgeDemo.run(u, t, "adaptive"), [imageUrl(q), q.text]);
      assert.equal(got.keepRatio, th.keep_ratio, q.name);
      assert.equal(got.keepRatio, want.keep_ratio, q.name);
      assert.equal(got.policy.kind, want.policy.kind, `${q.name}: policy kind`);
      if (["confidence", "max_probability"].includes(want.policy.kind)) {
        assert.equal(got.policy.threshold, want.policy.threshold, `${q.name}: threshold`);
      }
      if (want.policy.kind === "patience") assert.equal(got.policy.patience, want.policy.patience);
      assert.equal(got.answer, want.answer, `${q.name}: answer`);
      assert.equal(got.exitIndex, want.exit_index, `${q.name}: exit`);
      const entry = byRatio(q, want.keep_ratio);
      assert.deepEqual(got.keptVisualTokens, [...entry.kept_index].sort((a, b) => a - b), `${q.name}: kept tokens`);
    }
  });

  it("the mode toggle switches between full depth and the calibrated policy", async () => {
    const { page } = demo;
    // A built-in sample scene, clicked like a user; find its golden query by the image's bytes.
    const samples = JSON.parse(fs.readFileSync(path.join(DEMO, "samples", "samples.json"), "utf8"));
    const sample = samples.scenes[0];
    const sha = (file) => createHash("sha256").update(fs.readFileSync(file)).digest("hex");
    const sampleSha = sha(path.join(DEMO, "samples", sample.file));
    const q = golden.queries.find((g) => sha(path.join(GOLDEN_DIR, g.image)) === sampleSha && g.text === sample.question);

    const lastRunAfter = async (action, mode) => {
      const before = await page.evaluate(() => window.mmedgeDemo.lastRun);
      await action();
      await page.waitForFunction(([b, m]) => {
        const r = window.mmedgeDemo.lastRun;
        return r && r.mode === m && JSON.stringify(r) !== b;
      }, [JSON.stringify(before), mode]);
      return page.evaluate(() => ({ run: window.mmedgeDemo.lastRun, shown: window.mmedgeDemo.shown }));
    };

    await page.locator("input[name=mode][value=adaptive]").check();
    const first = await lastRunAfter(() => page.locator(`#samples button[data-name="${sample.name}"]`).click(), "adaptive");
    assert.equal(first.run.image, sample.name);

    const full = await lastRunAfter(() => page.locator("input[name=mode][value=full]").check(), "full");
    assert.equal(full.run.policy.kind, "full");
    assert.equal(full.run.keepRatio, 1);
    assert.match(full.shown.policy, /^full/);

    const adaptive = await lastRunAfter(() => page.locator("input[name=mode][value=adaptive]").check(), "adaptive");
    assert.equal(adaptive.run.policy.kind, manifest.thresholds.policy === "latency_budget" ? "confidence" : manifest.thresholds.policy);
    assert.equal(adaptive.run.keepRatio, manifest.thresholds.keep_ratio);
    assert.notEqual(adaptive.shown.policy, full.shown.policy);

    if (q) {
      assert.equal(full.shown.answer, fullPolicy(q).answer);
      assert.match(full.shown.exit, new RegExp(`^${fullPolicy(q).exit_index + 1} of ${manifest.exit_layers.length}\\b`));
      assert.equal(adaptive.shown.answer, q.default.answer);
      assert.match(adaptive.shown.exit, new RegExp(`^${q.default.exit_index + 1} of ${manifest.exit_layers.length}\\b`));
      const keptFull = byRatio(q, 1.0).kept_index.length;
      const keptAdaptive = byRatio(q, q.default.keep_ratio).kept_index.length;
      assert.match(full.shown.kept, new RegExp(`^${keptFull} of `));
      assert.match(adaptive.shown.kept, new RegExp(`^${keptAdaptive} of `));
    } else {
      console.log("# note: the first sample scene is not one of the golden queries; toggle checked without answers");
    }
  });

  it("an image chosen with the file input, or dropped, is answered like the golden query", async () => {
    const { page } = demo;
    const q = golden.queries.find((g) => g.name === "rgba-alpha-ramp") ?? golden.queries[0];
    const file = path.join(GOLDEN_DIR, q.image);
    await page.locator("input[name=mode][value=adaptive]").check();
    await page.fill("#question", q.text);
    const waitFor = async (action, image) => {
      const before = await page.evaluate(() => window.mmedgeDemo.lastRun?.seq ?? 0);
      await action();
      await page.waitForFunction(([b, img]) => {
        const r = window.mmedgeDemo.lastRun;
        return r && r.seq > b && r.image === img;
      }, [before, image]);
      return page.evaluate(() => window.mmedgeDemo.shown);
    };
    const chosen = await waitFor(() => page.setInputFiles("#file", file), path.basename(file));
    assert.equal(chosen.answer, q.default.answer);
    assert.match(chosen.exit, new RegExp(`^${q.default.exit_index + 1} of `));

    const dropped = await waitFor(() => page.evaluate(async (url) => {
      const blob = await (await fetch(url)).blob();
      const transfer = new DataTransfer();
      transfer.items.add(new File([blob], "dropped.png", { type: "image/png" }));
      const target = document.getElementById("drop");
      for (const type of ["dragenter", "dragover", "drop"]) {
        target.dispatchEvent(new DragEvent(type, { bubbles: true, cancelable: true, dataTransfer: transfer }));
      }
    }, imageUrl(q)), "dropped.png");
    assert.equal(dropped.answer, q.default.answer);
    assert.match(dropped.exit, new RegExp(`^${q.default.exit_index + 1} of `));
  });

  it("an empty question is reported on the page, not thrown", async () => {
    const q = golden.queries[0];
    await assert.rejects(
      demo.page.evaluate(([u]) => window.mmedgeDemo.run(u, "   ", "adaptive"), [imageUrl(q)]),
      /empty/);
    const shown = await demo.page.evaluate(() => window.mmedgeDemo.shown);
    assert.match(shown.error, /empty/);
  });

  it("takes a screenshot after a sample run (web_demo/screenshot.png)", async () => {
    const { page } = demo;
    const samples = JSON.parse(fs.readFileSync(path.join(DEMO, "samples", "samples.json"), "utf8"));
    // A scene whose adaptive run stops early and keeps fewer tokens, when there is one: it shows more.
    const pick = samples.screenshot ?? samples.scenes[0].name;
    await page.locator("input[name=mode][value=adaptive]").check();
    const before = await page.evaluate(() => JSON.stringify(window.mmedgeDemo.lastRun));
    await page.locator(`#samples button[data-name="${pick}"]`).click();
    await page.waitForFunction((b) => JSON.stringify(window.mmedgeDemo.lastRun) !== b &&
      window.mmedgeDemo.lastRun.image === document.querySelector("#samples button[aria-pressed=true]")?.dataset.name, before);
    await page.evaluate(() => document.activeElement?.blur());
    await page.mouse.move(0, 0);
    await page.screenshot({ path: path.join(DEMO, "screenshot.png") });
    const size = fs.statSync(path.join(DEMO, "screenshot.png")).size;
    assert.ok(size > 10_000 && size < 1_000_000, `screenshot size ${size}`);
  });

  it("measures the page's latency (median of 20 runs, full vs adaptive, single-threaded wasm)", async () => {
    const { page } = demo;
    const name = process.env.MMEDGE_WEB_LATENCY_QUERY || golden.queries[0].name;
    const q = golden.queries.find((g) => g.name === name);
    assert.ok(q, `no golden query named ${name}`);
    const modeNames = ["full", "adaptive"];
    const firsts = {};
    const runs = { full: [], adaptive: [] };
    const loadBefore = os.loadavg();
    // Load the query once through the UI path, then warm up and measure the two modes alternately
    // (one full, one adaptive, ...) so that drift in the shared machine's load hits both alike.
    await page.evaluate(([u, t]) => window.mmedgeDemo.run(u, t, "full"), [imageUrl(q), q.text]);
    const askIn = (mode) => page.evaluate((m) => {
      window.mmedgeDemo.setMode(m);
      return window.mmedgeDemo.ask();
    }, mode);
    for (let i = 0; i < WARMUP_RUNS; i++) for (const mode of modeNames) firsts[mode] = await askIn(mode);
    for (let i = 0; i < LATENCY_RUNS; i++) for (const mode of modeNames) runs[mode].push(await askIn(mode));
    const loadAfter = os.loadavg();
    const stats = (v) => ({
      median: round(median(v)), min: round(Math.min(...v)), max: round(Math.max(...v)),
      p10: round(quantile(v, 0.1)), p90: round(quantile(v, 0.9)),
    });
    const modes = {};
    for (const mode of modeNames) {
      const first = firsts[mode];
      const list = runs[mode];
      assert.equal(first.mode, mode);
      assert.ok(list.every((r) => r.exitIndex === first.exitIndex && r.answer === first.answer), "runs agree");
      const stages = {};
      for (const key of Object.keys(first.timingsMs)) {
        if (key !== "total") stages[key] = round(median(list.map((r) => r.timingsMs[key])));
      }
      modes[mode] = {
        policy: first.policy, keep_ratio: first.keepRatio, exit_index: first.exitIndex,
        exits: manifest.exit_layers.length, kept_tokens: first.keptVisualTokens.length, answer: first.answer,
        engine_predict_ms: stats(list.map((r) => r.timingsMs.total)), page_ms: stats(list.map((r) => r.pageMs)),
        stage_median_ms: stages,
      };
    }
    const chromiumVersion = demo.browser.version();
    const cpus = os.cpus();
    const doc = {
      what: "latency of one query in the web demo page, headless Chromium, onnxruntime-web WebAssembly, 1 thread",
      measured_utc: new Date().toISOString(),
      query: { name: q.name, image: path.posix.join(path.relative(ROOT, GOLDEN_DIR), q.image), text: q.text },
      bundle: golden.bundle,
      runs_per_mode: LATENCY_RUNS, warmup_runs_per_mode: WARMUP_RUNS, order: "alternating full / adaptive",
      definitions: {
        engine_predict_ms: "Prediction.timingsMs.total: preprocessing plus the stages run (engine.predict)",
        page_ms: "the page's ask(): engine.predict plus updating the result panel and drawing the image and overlay " +
          "(excludes image decoding and the wait for the next frame)",
        stage_median_ms: "median of each entry of Prediction.timingsMs (one ONNX Runtime session.run per stage)",
      },
      machine: {
        cpu: cpus[0]?.model ?? "unknown", logical_cores: cpus.length, os: `${os.type()} ${os.release()} ${os.arch()}`,
        node: process.version, load_average_1m: { before: round(loadBefore[0]), after: round(loadAfter[0]) },
        note: "a 2-core machine shared with other work",
      },
      chromium: chromiumVersion, headless: true,
      onnxruntime_web: info.ortVersion,
      wasm_threads: info.threads,
      modes,
      speedup_median_engine: round(modes.full.engine_predict_ms.median / modes.adaptive.engine_predict_ms.median),
    };
    fs.writeFileSync(path.join(DEMO, "latency.json"), JSON.stringify(doc, null, 2) + "\n");
    console.log(`# latency, ${q.name} "${q.text}" (${LATENCY_RUNS} runs per mode, alternating; Chromium ${chromiumVersion}, ` +
      `onnxruntime-web ${info.ortVersion}, 1 thread, ${doc.machine.cpu} x${doc.machine.logical_cores}, ` +
      `load ${doc.machine.load_average_1m.before} -> ${doc.machine.load_average_1m.after})`);
    for (const [mode, m] of Object.entries(modes)) {
      console.log(`#   ${mode.padEnd(8)} exit ${m.exit_index + 1}/${m.exits}, ${m.kept_tokens} tokens: ` +
        `predict median ${m.engine_predict_ms.median} ms (p10 ${m.engine_predict_ms.p10}, p90 ${m.engine_predict_ms.p90}), ` +
        `page median ${m.page_ms.median} ms; stages ${JSON.stringify(m.stage_median_ms)}`);
    }
    console.log(`#   full / adaptive (median predict): ${doc.speedup_median_engine}x`);
  });

  it("multi-threaded WebAssembly (the page's default threads, cross-origin isolated) gives the same answers", async () => {
    const page = await demo.browser.newPage();
    const problems = [];
    page.on("console", (m) => { if (m.type() === "error") problems.push(m.text()); });
    page.on("pageerror", (e) => problems.push(e.message));
    try {
      await page.goto(`${demo.url}web_demo/?bundle=${encodeURIComponent(urlPath(bundleDir + "/"))}`);
      const mt = await page.evaluate(() => window.mmedgeDemo.ready);
      assert.equal(mt.crossOriginIsolated, true);
      assert.equal(await page.evaluate(() => typeof SharedArrayBuffer), "function");
      const cores = await page.evaluate(() => navigator.hardwareConcurrency);
      assert.equal(mt.threads, Math.max(1, Math.min(4, cores)));
      for (const q of golden.queries.slice(0, 3)) {
        const got = await page.evaluate(([u, t]) => window.mmedgeDemo.run(u, t, "adaptive"), [imageUrl(q), q.text]);
        assert.equal(got.answer, q.default.answer, q.name);
        assert.equal(got.exitIndex, q.default.exit_index, q.name);
      }
      assert.deepEqual(problems, []);
    } finally {
      await page.close();
    }
  });

  it("shows no console errors, failed requests or uncaught exceptions", () => {
    assert.deepEqual(demo.problems, []);
  });
});

function round(x) {
  return Math.round(x * 1000) / 1000;
}
