// The mmedge web demo: one page, plain ES modules, the runtime and onnxruntime-web by import map.
//
// URL parameters (all optional):
//   bundle=URL    the bundle directory (default: the shipped vqa-default ONNX bundle)
//   threads=N     WebAssembly threads (default: up to 4 when the page is cross-origin isolated, else 1)
//   mode=full|adaptive
//   task=vqa|caption  the tab shown first (default vqa)
//   caption_bundle, caption_calibration, caption_runs: the captioning mode's (caption.js)
//
// window.mmedgeDemo is a small hook for tests and the console; it drives the same code as the UI
// (decode the image like a chosen file, put the text in the question box, set the mode radio,
// ask; or caption it): see the end of this file.

import * as ort from "onnxruntime-web";
import * as mmedge from "@mmedge/runtime";
import { CaptionMode } from "./caption.js";
import { decodeImageBlob, decodeImageUrl, toBitmap } from "./image.js";

const DEFAULT_BUNDLE = "../models/vqa-default/bundles/vqa-default-onnx.mmedge/";
const params = new URLSearchParams(location.search);
const bundleUrl = new URL(params.get("bundle") || DEFAULT_BUNDLE, location.href).href;

const $ = (id) => document.getElementById(id);
const el = {
  status: $("status"), view: $("view"), drop: $("drop"), file: $("file"), showGrid: $("show-grid"),
  samples: $("samples"), form: $("ask-form"), question: $("question"), ask: $("ask"),
  questionSamples: $("question-samples"), chips: $("question-chips"), tokens: $("tokens"),
  modeFullDesc: $("mode-full-desc"), modeAdaptiveDesc: $("mode-adaptive-desc"),
  result: $("result"), answer: $("answer"), confidence: $("confidence"), confidenceBar: $("confidence-bar"),
  exit: $("exit"), exits: $("exits"), kept: $("kept"), policy: $("policy"), timings: $("timings"),
  error: $("error"), engineInfo: $("engine-info"), taskVqa: $("task-vqa"), taskCaption: $("task-caption"),
  captionSamples: $("caption-samples"), captionForm: $("caption-form"), captionBeam: $("caption-beam"),
  captionMeasure: $("caption-measure"),
};

const state = {
  engine: null,
  manifest: null,
  image: null,        // {width, height, channels, data, decoder, name, bitmap}
  prediction: null,   // the last prediction shown
  lastRun: null,
  running: Promise.resolve(),
  task: "vqa",
};

const TASKS = ["vqa", "caption"];
let vqaLoadSettled;
/** Settles once the VQA bundle has loaded or failed: the captioning bundle loads after it, not beside it. */
const vqaLoaded = new Promise((resolve) => { vqaLoadSettled = resolve; });
const caption = new CaptionMode({ mmedge, ort, params, getImage: () => state.image, before: vqaLoaded });

// ------------------------------------------------------------------------------ settings
/** onnxruntime-web's settings, before either engine opens a session. */
function configureOrt() {
  const threads = threadCount();
  ort.env.wasm.numThreads = threads;
  ort.env.wasm.proxy = false;
  ort.env.logLevel = "error";
  return threads;
}

function threadCount() {
  const asked = Number(params.get("threads") ?? NaN);
  if (Number.isInteger(asked) && asked >= 1) return crossOriginIsolated ? Math.min(asked, 16) : 1;
  return crossOriginIsolated ? Math.max(1, Math.min(4, navigator.hardwareConcurrency || 1)) : 1;
}

function fullKeepRatio(manifest) {
  const ratios = manifest.keep_ratios.map((k) => k.keep_ratio);
  return ratios.includes(1) ? 1 : Math.max(...ratios);
}

function calibratedPolicy(manifest) {
  if (typeof mmedge.policyFromThresholds === "function") return mmedge.policyFromThresholds(manifest.thresholds);
  const th = manifest.thresholds; // the rule of docs/bundle-format.md, if the runtime does not export it
  const kind = th.policy === "latency_budget" ? "confidence" : th.policy;
  return { kind, threshold: kind === "max_probability" ? th.max_probability : th.confidence, patience: th.patience };
}

/** The policy and keep ratio a mode runs with. */
function modeSettings(mode, manifest = state.manifest) {
  if (mode === "full") return { policy: { kind: "full" }, keepRatio: fullKeepRatio(manifest) };
  if (mode === "adaptive") return { policy: calibratedPolicy(manifest), keepRatio: manifest.thresholds.keep_ratio };
  throw new Error(`unknown mode ${JSON.stringify(mode)}; use "full" or "adaptive"`);
}

function describePolicy(policy) {
  switch (policy.kind) {
    case "full": return "full (every exit)";
    case "confidence": return `confidence ≥ ${policy.threshold}`;
    case "max_probability": return `max probability ≥ ${policy.threshold}`;
    case "patience": return `patience ${policy.patience}`;
    case "latency_budget": return `latency budget ${policy.budgetMs} ms`;
    default: return policy.kind;
  }
}

const ratioText = (r) => `${Math.round(r * 100)}\u00a0%`;

function currentMode() {
  return document.querySelector('input[name="mode"]:checked')?.value ?? "adaptive";
}

function setMode(mode) {
  const radio = document.querySelector(`input[name="mode"][value="${mode}"]`);
  if (!radio) throw new Error(`unknown mode ${JSON.stringify(mode)}; use "full" or "adaptive"`);
  radio.checked = true;
}

// ------------------------------------------------------------------------------ messages
function setStatus(text, kind = "") {
  el.status.textContent = text;
  el.status.classList.remove("ready", "failed");
  if (kind) el.status.classList.add(kind);
}

function showError(message) {
  el.error.textContent = message;
  el.error.hidden = !message;
  if (state.task === "caption") caption.showError(message); // the question panel is hidden there
}

// ------------------------------------------------------------------------------ drawing
function drawView() {
  const canvas = el.view;
  const ctx = canvas.getContext("2d");
  const size = canvas.width;
  ctx.clearRect(0, 0, size, size);
  const img = state.image;
  if (!img) return;
  const manifest = state.manifest;
  const pad = manifest?.preprocessing.pad_color ?? [118, 118, 124];
  // The square the model sees: the image centred on pad_color (the odd pixel right / bottom).
  const side = Math.max(img.width, img.height);
  const scale = size / side;
  ctx.fillStyle = `rgb(${pad[0]}, ${pad[1]}, ${pad[2]})`;
  ctx.fillRect(0, 0, size, size);
  ctx.imageSmoothingEnabled = scale < 1;
  ctx.imageSmoothingQuality = "high";
  const x0 = Math.floor((side - img.width) / 2);
  const y0 = Math.floor((side - img.height) / 2);
  ctx.drawImage(img.bitmap, x0 * scale, y0 * scale, img.width * scale, img.height * scale);

  const prediction = state.prediction;
  if (state.task !== "vqa" || !manifest || !prediction || !el.showGrid.checked) return;
  const grid = Math.round(manifest.preprocessing.image_size / manifest.model.config.patch_size);
  const cell = size / grid;
  const kept = new Set(prediction.keptVisualTokens);
  ctx.fillStyle = "rgba(20, 24, 32, 0.6)";
  for (let index = 0; index < grid * grid; index++) {
    if (kept.has(index)) continue;
    const r = Math.floor(index / grid), c = index % grid;
    ctx.fillRect(c * cell, r * cell, cell, cell);
  }
  ctx.lineWidth = 1;
  ctx.strokeStyle = "rgba(255, 255, 255, 0.25)";
  for (let i = 1; i < grid; i++) {
    ctx.beginPath();
    ctx.moveTo(i * cell, 0); ctx.lineTo(i * cell, size);
    ctx.moveTo(0, i * cell); ctx.lineTo(size, i * cell);
    ctx.stroke();
  }
  ctx.lineWidth = Math.max(2, cell / 24);
  ctx.strokeStyle = "#ff9f1c";
  const inset = ctx.lineWidth / 2 + 1;
  for (const index of kept) {
    const r = Math.floor(index / grid), c = index % grid;
    ctx.strokeRect(c * cell + inset, r * cell + inset, cell - 2 * inset, cell - 2 * inset);
  }
}

function renderResult(prediction, settings) {
  const manifest = state.manifest;
  const exits = manifest.exit_layers.length;
  const grid = Math.round(manifest.preprocessing.image_size / manifest.model.config.patch_size);
  el.result.hidden = false;
  el.answer.textContent = prediction.answer;
  el.confidence.textContent = `${prediction.confidence.toFixed(3)}` +
    (typeof prediction.maxProbability === "number" ? ` (softmax max ${prediction.maxProbability.toFixed(3)})` : "");
  el.confidenceBar.style.width = `${Math.max(0, Math.min(1, prediction.confidence)) * 100}%`;
  const depth = manifest.model.config.depth;
  el.exit.textContent = `${prediction.exitIndex + 1} of ${exits} (after layer ${prediction.exitLayer + 1}` +
    `${Number.isInteger(depth) ? ` of ${depth}` : ""})`;
  el.exits.replaceChildren(...manifest.exit_layers.map((layer, i) => {
    const box = document.createElement("span");
    box.textContent = `exit ${i + 1}`;
    box.title = `exit ${i + 1}: after layer ${layer + 1} (exit_layers[${i}] = ${layer})`;
    box.className = i < prediction.exitIndex ? "ran" : i === prediction.exitIndex ? "taken" : "skipped";
    return box;
  }));
  const keptCount = prediction.keptVisualTokens.length;
  el.kept.textContent = `${keptCount} of ${grid * grid} (${ratioText(prediction.keepRatio)})`;
  el.policy.textContent = `${describePolicy(settings.policy)}, keep ratio ${ratioText(settings.keepRatio)}`;
  const rows = Object.entries(prediction.timingsMs);
  const total = prediction.timingsMs.total ?? Math.max(...rows.map(([, v]) => v));
  el.timings.tBodies[0].replaceChildren(...rows.map(([name, ms]) => {
    const tr = document.createElement("tr");
    if (name === "total") tr.className = "total";
    const bar = document.createElement("div");
    bar.style.width = `${total > 0 ? Math.min(100, (ms / total) * 100) : 0}%`;
    const cells = [["name", name], ["ms", ms.toFixed(2)], ["bar", bar]];
    tr.append(...cells.map(([cls, content]) => {
      const td = document.createElement("td");
      td.className = cls;
      td.append(content);
      return td;
    }));
    return tr;
  }));
  drawView();
}

function renderTokens() {
  const tokenizer = state.engine?.tokenizer;
  const text = el.question.value;
  el.tokens.replaceChildren();
  if (!tokenizer || typeof tokenizer.tokenize !== "function" || !text.trim()) return;
  let tokens;
  try {
    tokens = tokenizer.tokenize(text);
  } catch {
    return;
  }
  const vocab = tokenizer.vocab;
  el.tokens.append("tokens: ");
  tokens.forEach((token, i) => {
    const span = document.createElement("span");
    span.textContent = token;
    if (vocab && typeof vocab.has === "function" && !vocab.has(token)) {
      span.className = "unk";
      span.title = "not in the model's vocabulary: read as [UNK]";
    }
    el.tokens.append(i ? " · " : "", span);
  });
}

// ------------------------------------------------------------------------------ actions
async function setImage(image, name) {
  const bitmap = await toBitmap(image);
  state.image?.bitmap?.close?.();
  state.image = { ...image, name, bitmap };
  state.prediction = null;
  el.result.hidden = true;
  caption.clear();
  for (const b of [...el.samples.querySelectorAll("button"), ...el.captionSamples.querySelectorAll("button")]) {
    b.setAttribute("aria-pressed", String(b.dataset.name === name));
  }
  drawView();
}

async function loadFile(blob, name) {
  showError("");
  try {
    await setImage(await decodeImageBlob(blob), name);
  } catch (err) {
    showError(err.message);
    return false;
  }
  return true;
}

/** Runs the current image and question in the current mode, one query at a time. */
function ask() {
  const run = state.running.then(async () => {
    showError("");
    if (!state.engine) {
      showError("The bundle is still loading (or failed to load: see the status line).");
      return null;
    }
    const image = state.image;
    if (!image) {
      showError("Choose an image first (or click a sample scene).");
      return null;
    }
    const mode = currentMode();
    const settings = modeSettings(mode);
    const text = el.question.value;
    const started = performance.now();
    let prediction;
    try {
      prediction = await state.engine.predict(image, text, settings);
    } catch (err) {
      // Bad input (an image too small, an empty question) is the user's to fix, not a page error.
      const known = err instanceof mmedge.MMEdgeError || err?.name === "ImageError" || err?.name === "TextError";
      if (!known) console.error(err);
      showError(err.message);
      return null;
    }
    if (state.image !== image) return null; // another image was chosen meanwhile; its own run follows
    state.prediction = prediction;
    renderResult(prediction, settings);
    const pageMs = performance.now() - started; // predict + drawing the result (not the wait for the next frame)
    state.lastRun = { seq: (state.lastRun?.seq ?? 0) + 1, mode, policy: settings.policy, keepRatio: settings.keepRatio, text, image: state.image.name, pageMs };
    return { prediction, pageMs };
  });
  state.running = run.catch(() => {});
  return run;
}

/** ask() from a UI event: an unexpected failure is reported on the page and in the console. */
function askFromUi() {
  ask().catch((err) => {
    console.error(err);
    showError(String(err?.message ?? err));
  });
}

/** A caption of the image shown, then its full-depth / adaptive timing, from a UI event. */
function captionFromUi() {
  caption.fromUi().catch((err) => caption.report(err));
}

/** A new image from the file input or a drop: answered (VQA, once there is a question) or captioned. */
function afterNewImage() {
  if (state.task === "caption") captionFromUi();
  else if (el.question.value.trim()) askFromUi();
}

/** Shows one task's panels and samples; the captioning bundle is loaded the first time. */
function setTask(task) {
  if (!TASKS.includes(task)) throw new Error(`unknown task ${JSON.stringify(task)}; use "vqa" or "caption"`);
  state.task = task;
  for (const node of document.querySelectorAll(".vqa-only")) node.hidden = task !== "vqa";
  for (const node of document.querySelectorAll(".caption-only")) node.hidden = task !== "caption";
  el.taskVqa.setAttribute("aria-selected", String(task === "vqa"));
  el.taskCaption.setAttribute("aria-selected", String(task === "caption"));
  drawView();
  if (task === "caption") caption.load().catch(() => {}); // a failure is shown in the caption panel
}

/** The Caption tab: the image shown is captioned (the first sample image when there is none). */
async function openCaptionTab() {
  setTask("caption");
  if (!state.image) {
    const first = el.captionSamples.querySelector("button");
    if (first) first.click();
    return;
  }
  if (caption.el.result.hidden) captionFromUi(); // not captioned yet
}

// ------------------------------------------------------------------------------ wiring
function wireUi() {
  el.form.addEventListener("submit", (event) => {
    event.preventDefault();
    askFromUi();
  });
  el.question.addEventListener("input", renderTokens);
  for (const radio of document.querySelectorAll('input[name="mode"]')) {
    radio.addEventListener("change", () => {
      if (state.image && el.question.value.trim()) askFromUi();
    });
  }
  el.showGrid.addEventListener("change", drawView);
  el.file.addEventListener("change", async () => {
    const file = el.file.files?.[0];
    if (file && (await loadFile(file, file.name))) afterNewImage();
    el.file.value = "";
  });
  el.drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
    el.drop.classList.add("over");
  });
  el.drop.addEventListener("dragleave", () => el.drop.classList.remove("over"));
  el.drop.addEventListener("drop", async (event) => {
    event.preventDefault();
    el.drop.classList.remove("over");
    const file = [...(event.dataTransfer?.files ?? [])].find((f) => f.type.startsWith("image/")) ??
      event.dataTransfer?.files?.[0];
    if (file && (await loadFile(file, file.name))) afterNewImage();
  });
  el.drop.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") el.file.click();
  });
  wireCaptionUi();
}

function wireCaptionUi() {
  el.taskVqa.addEventListener("click", () => setTask("vqa"));
  el.taskCaption.addEventListener("click", () => openCaptionTab().catch((err) => caption.report(err)));
  el.captionForm.addEventListener("submit", (event) => {
    event.preventDefault();
    captionFromUi();
  });
  for (const radio of document.querySelectorAll('input[name="caption-mode"]')) {
    radio.addEventListener("change", () => {
      if (state.image && caption.engine) caption.caption().catch((err) => caption.report(err));
    });
  }
  el.captionBeam.addEventListener("change", () => {
    if (state.image && caption.engine) captionFromUi();
  });
  el.captionMeasure.addEventListener("click", () => caption.compare().catch((err) => caption.report(err)));
}

async function loadSamples() {
  let samples;
  try {
    const response = await fetch("samples/samples.json");
    if (!response.ok) return;
    samples = await response.json();
  } catch {
    return;
  }
  const addQuestion = (q) => {
    const option = document.createElement("option");
    option.value = q;
    el.questionSamples.append(option);
    const chip = document.createElement("button");
    chip.type = "button";
    chip.textContent = q;
    chip.addEventListener("click", () => {
      el.question.value = q;
      renderTokens();
      if (state.image) askFromUi();
    });
    el.chips.append(chip);
  };
  for (const q of samples.questions ?? []) addQuestion(q);
  for (const scene of samples.scenes ?? []) {
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.name = scene.name;
    button.title = `${scene.name}: "${scene.question}"`;
    button.setAttribute("aria-pressed", "false");
    const img = document.createElement("img");
    img.src = `samples/${scene.file}`;
    img.alt = scene.name;
    button.append(img);
    button.addEventListener("click", () => selectSample(scene).catch((err) => {
      console.error(err);
      showError(String(err?.message ?? err));
    }));
    el.samples.append(button);
  }
  for (const image of samples.captions ?? []) el.captionSamples.append(captionSampleButton(image));
  return samples;
}

function captionSampleButton(sample) {
  const button = document.createElement("button");
  button.type = "button";
  button.dataset.name = sample.name;
  button.title = `${sample.name}: caption it`;
  button.setAttribute("aria-pressed", "false");
  const img = document.createElement("img");
  img.src = `samples/${sample.file}`;
  img.alt = sample.name;
  button.append(img);
  button.addEventListener("click", async () => {
    if (await useImageUrl(`samples/${sample.file}`, sample.name)) captionFromUi();
  });
  return button;
}

/** A sample scene: its image and its question, then ask (once the bundle is loaded). */
async function selectSample(scene) {
  const ok = await useImageUrl(`samples/${scene.file}`, scene.name);
  if (!ok) return null;
  el.question.value = scene.question;
  renderTokens();
  return state.engine ? ask() : null;
}

async function useImageUrl(url, name = url) {
  showError("");
  try {
    await setImage(await decodeImageUrl(url), name);
  } catch (err) {
    showError(err.message);
    return false;
  }
  return true;
}

async function loadEngine() {
  const threads = ort.env.wasm.numThreads;
  const started = performance.now();
  const engine = await mmedge.Engine.load(new mmedge.FetchSource(bundleUrl), { ort, mode: "staged" });
  const loadMs = performance.now() - started;
  const manifest = engine.manifest;
  state.engine = engine;
  state.manifest = manifest;
  const full = modeSettings("full", manifest);
  const adaptive = modeSettings("adaptive", manifest);
  el.modeFullDesc.textContent = `all ${manifest.exit_layers.length} exits, keep ratio ${ratioText(full.keepRatio)} of visual tokens`;
  el.modeAdaptiveDesc.textContent = `${describePolicy(adaptive.policy)}, keep ratio ${ratioText(adaptive.keepRatio)} (calibrated)`;
  const info = {
    bundle: bundleUrl, name: manifest.name, task: manifest.task, exits: manifest.exit_layers.length,
    exitLayers: manifest.exit_layers, keepRatios: manifest.keep_ratios.map((k) => k.keep_ratio),
    thresholds: manifest.thresholds, imageSize: manifest.preprocessing.image_size,
    patchSize: manifest.model.config.patch_size, labels: manifest.labels, threads,
    crossOriginIsolated, ortVersion: ort.env.versions?.web ?? ort.env.versions?.common ?? null,
    loadMs,
  };
  el.engineInfo.textContent = `Bundle ${manifest.name} (${manifest.task}, ${info.exits} exits, ` +
    `${info.imageSize} px images, ${info.labels.length} answers) loaded in ${(loadMs / 1000).toFixed(2)} s · ` +
    `onnxruntime-web ${info.ortVersion ?? "?"}, WebAssembly, ${threads} thread${threads > 1 ? "s" : ""}` +
    `${crossOriginIsolated ? "" : " (page not cross-origin isolated: single-threaded)"}`;
  setStatus(`Ready: ${manifest.name}`, "ready");
  el.ask.disabled = false;
  return info;
}

async function main() {
  wireUi();
  configureOrt();
  const mode = params.get("mode");
  if (mode === "full" || mode === "adaptive") setMode(mode);
  const firstTask = params.get("task") === "caption" ? "caption" : "vqa";
  setTask(firstTask);
  const samplesLoaded = loadSamples();
  let info;
  try {
    info = await loadEngine();
  } catch (err) {
    setStatus("The bundle could not be loaded.", "failed");
    showError(`${err.message}\n(bundle: ${bundleUrl})`);
    console.error(err);
    throw err;
  } finally {
    vqaLoadSettled();
  }
  const samples = await samplesLoaded;
  renderTokens();
  // Start with the first sample scene answered (this also warms the stages up), or captioned.
  if (firstTask === "caption") await openCaptionTab();
  else if (!state.image && samples?.scenes?.length) await selectSample(samples.scenes[0]);
  return info;
}

// ------------------------------------------------------------------------------ test hook
const ready = main();
ready.catch(() => {});

/** A prediction as plain data (typed arrays to arrays), for tests and the console. */
function plain(prediction) {
  return JSON.parse(JSON.stringify(prediction, (_, v) => (ArrayBuffer.isView(v) ? Array.from(v) : v)));
}

window.mmedgeDemo = {
  ready,
  /** Loads an image URL like a chosen file, types the text, sets the mode radio and asks. */
  async run(imageUrl, text, mode = currentMode()) {
    await ready;
    await state.running;
    if (!(await useImageUrl(imageUrl, imageUrl))) throw new Error(el.error.textContent);
    el.question.value = text;
    renderTokens();
    setMode(mode);
    const out = await ask();
    if (!out) throw new Error(el.error.textContent || "no prediction");
    return { ...plain(out.prediction), pageMs: out.pageMs, mode, ...plainSettings(mode) };
  },
  /** Runs the current image and question again (the Ask button), in the current mode. */
  async ask() {
    await ready;
    const out = await ask();
    if (!out) throw new Error(el.error.textContent || "no prediction");
    return { ...plain(out.prediction), pageMs: out.pageMs, mode: state.lastRun.mode, ...plainSettings(state.lastRun.mode) };
  },
  setMode,
  getMode: currentMode,
  modeSettings: (mode) => plainSettings(mode),
  get lastRun() {
    return state.lastRun && plain(state.lastRun);
  },
  get shown() {
    return {
      answer: el.answer.textContent, exit: el.exit.textContent, kept: el.kept.textContent,
      policy: el.policy.textContent, error: el.error.hidden ? "" : el.error.textContent,
    };
  },
};

/** An image for the caption hook: a URL, or {name, bytes} (a file's bytes, decoded like a chosen file). */
async function useImage(image) {
  if (typeof image === "string") return useImageUrl(image, image);
  if (!image || !Array.isArray(image.bytes) || typeof image.name !== "string") {
    throw new Error("image: a URL, or {name, bytes: [...]} with the file's bytes");
  }
  return loadFile(new Blob([new Uint8Array(image.bytes)]), image.name);
}

/** One caption through the page (mode radio, beam box, the panel), as plain data. */
async function captionVia(options) {
  const { mode = caption.currentMode(), beam, paint = false, ...overrides } = options;
  caption.setMode(mode);
  if (beam !== undefined) caption.setBeam(beam);
  const out = await caption.caption({ overrides, paint });
  if (!out) throw new Error(caption.shown.error || "no caption");
  return { ...plain(out.caption), settings: plain(out.settings), steps: out.steps, shown: caption.shown };
}

// (property descriptors, not Object.assign: that would read the getters once, now)
Object.defineProperties(window.mmedgeDemo, Object.getOwnPropertyDescriptors({
  setTask,
  getTask: () => state.task,
  /** Loads the captioning bundle (once); resolves to what was loaded and the calibrated policy. */
  captionReady: () => caption.load(),
  /**
   * Loads an image (URL or {name, bytes}) like a chosen file and captions it once per entry of
   * `runs` ({mode, beam, policy, keepRatio, kv, maxLen, paint}), each through the page's caption
   * panel; returns each caption with what the panel showed.
   */
  async captionRuns(image, runs) {
    await ready;
    await caption.load();
    await caption.running;
    setTask("caption");
    if (!(await useImage(image))) throw new Error(el.error.textContent);
    const out = [];
    for (const r of runs) out.push(await captionVia(r));
    return out;
  },
  /** Full depth against adaptive on the image shown (the page's "Measure again"), with every run's times. */
  async measureCaption(options = {}) {
    const result = await caption.compare(options);
    if (!result) throw new Error(caption.shown.error || "no measurement");
    return { ...plain(result), shown: caption.shown };
  },
  get captionShown() {
    return caption.shown;
  },
  get captionLastRun() {
    return caption.lastRun && plain(caption.lastRun);
  },
}));

function plainSettings(mode) {
  const s = modeSettings(mode);
  return { policy: plain(s.policy), keepRatio: s.keepRatio };
}
