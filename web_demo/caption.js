// The demo's captioning mode: a captioning bundle through the runtime's CaptionEngine on
// onnxruntime-web; the caption is written word by word as it is decoded (the engine's onWord), each
// word with the exit it took, and the time per caption at full depth and with the calibrated exit
// policy is measured on the image shown (the median of a few runs of each, alternating).
//
// URL parameters (all optional):
//   caption_bundle=URL       the captioning bundle (default: vendor/caption-default.mmedge/, which
//                            build.mjs makes from the caption golden vectors' bundle)
//   caption_calibration=URL  the calibration record used when the bundle's manifest is not
//                            calibrated (default: the captioning benchmark's summary, whose
//                            `calibration.chosen` is the policy chosen on 500 validation images)
//   caption_runs=N           runs per mode when comparing full depth with adaptive (default 7, after
//                            2 warm-up runs of each)

export const DEFAULT_CAPTION_BUNDLE = "vendor/caption-default.mmedge/";
export const DEFAULT_CALIBRATION = "../benchmarks/results/caption/summary.json";
export const DEFAULT_COMPARE_RUNS = 7;
export const DEFAULT_COMPARE_WARMUP = 2;
export const MAX_COMPARE_RUNS = 50;

const POLICY_KINDS = ["confidence", "max_probability", "patience", "full"];

/** A problem the user can fix on the page (no image, a bad beam width, no calibrated policy): shown, not logged. */
export class CaptionUserError extends Error {
  constructor(message) {
    super(message);
    this.name = "CaptionUserError";
  }
}
const KV_MODES = ["copy", "recompute"];

// ------------------------------------------------------------------------------ settings
/** A calibration record's choice ({policy, keep_ratio, kv}) as decoding settings; Error naming every problem. */
export function chosenSettings(chosen, manifest, where) {
  const problems = [];
  const policy = chosen?.policy ?? {};
  if (!POLICY_KINDS.includes(policy.kind)) problems.push(`policy kind ${JSON.stringify(policy.kind)} is not one of ${POLICY_KINDS.join(", ")}`);
  if (typeof policy.threshold !== "number" || !(policy.threshold >= 0 && policy.threshold <= 1)) {
    problems.push(`threshold ${JSON.stringify(policy.threshold)} is not a number in [0, 1]`);
  }
  if (!Number.isInteger(policy.patience) || policy.patience < 1) problems.push(`patience ${JSON.stringify(policy.patience)} is not a whole number >= 1`);
  if (!manifest.keep_ratios.includes(chosen?.keep_ratio)) {
    problems.push(`keep ratio ${JSON.stringify(chosen?.keep_ratio)} is not one of the bundle's ${JSON.stringify(manifest.keep_ratios)}`);
  }
  if (!KV_MODES.includes(chosen?.kv)) problems.push(`kv ${JSON.stringify(chosen?.kv)} is not one of ${KV_MODES.join(", ")}`);
  if (problems.length > 0) throw new Error(`${where}: its calibrated choice cannot be used: ${problems.join("; ")}`);
  return { policy: { kind: policy.kind, threshold: policy.threshold, patience: policy.patience }, keepRatio: chosen.keep_ratio, kv: chosen.kv };
}

/**
 * The calibrated settings {policy, keepRatio, kv, source, record}: the manifest's thresholds when
 * it is calibrated, else the choice in the calibration record at `recordUrl` (calibration.chosen).
 */
export async function loadCalibration(mmedge, manifest, recordUrl) {
  const th = manifest.thresholds;
  if (th.calibrated) {
    const p = mmedge.captionThresholdsPolicy(th);
    return { policy: { kind: p.kind, threshold: p.threshold, patience: p.patience }, keepRatio: th.keep_ratio, kv: th.kv,
      source: "the bundle's manifest", record: manifest.calibration ?? null };
  }
  const uncalibrated = `The captioning bundle is not calibrated (its thresholds are the defaults: policy ${th.policy})`;
  let response;
  try {
    response = await fetch(recordUrl);
  } catch (err) {
    throw new Error(`${uncalibrated}, and its calibration record ${recordUrl} cannot be fetched (${err.message}).`);
  }
  if (!response.ok) {
    throw new Error(`${uncalibrated}, and its calibration record ${recordUrl} cannot be read (HTTP ${response.status}): ` +
      "calibrate the bundle (mmedge calibrate) or name a record with caption_calibration=URL.");
  }
  let doc;
  try {
    doc = await response.json();
  } catch {
    throw new Error(`${recordUrl} is not JSON`);
  }
  const cal = doc?.calibration;
  const settings = chosenSettings(cal?.chosen, manifest, recordUrl);
  const record = cal ? { images: cal.images, max_drop: cal.max_drop, cider: cal.chosen.cider,
    baseline_cider: cal.baseline?.cider, flops_ratio: cal.chosen.flops_ratio, model: doc.model } : null;
  return { ...settings, source: recordUrl, record };
}

/** The settings a mode decodes with: full depth (every layer, every visual token) or the calibrated ones. */
export function captionSettings(mode, manifest, calibration) {
  if (mode === "full") return { policy: { kind: "full" }, keepRatio: Math.max(...manifest.keep_ratios), kv: manifest.thresholds.kv };
  if (mode === "adaptive") {
    if (!calibration) throw new CaptionUserError("Adaptive decoding needs the calibrated policy, which could not be loaded (see above); use full depth.");
    return { policy: calibration.policy, keepRatio: calibration.keepRatio, kv: calibration.kv };
  }
  throw new Error(`unknown caption mode ${JSON.stringify(mode)}; use "full" or "adaptive"`);
}

const percent = (r) => `${Math.round(r * 100)}\u00a0%`;

export function describePolicy(policy) {
  switch (policy.kind) {
    case "full": return "full depth (every layer for every word)";
    case "confidence": return `confidence ≥ ${policy.threshold}`;
    case "max_probability": return `max probability ≥ ${policy.threshold}`;
    case "patience": return `patience ${policy.patience}`;
    case "latency_budget": return `latency budget (confidence ≥ ${policy.threshold})`;
    default: return String(policy.kind);
  }
}

export function describeSettings(s) {
  const kv = s.policy.kind === "full" ? "" : `, skipped layers' keys/values by ${s.kv}`;
  return `${describePolicy(s.policy)}, keep ${percent(s.keepRatio)} of visual tokens${kv}, beam ${s.beam}` +
    (s.maxLen ? `, at most ${s.maxLen} ids` : "");
}

// ------------------------------------------------------------------------------ numbers
export function median(values) {
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

export function quantile(values, q) {
  const s = [...values].sort((a, b) => a - b);
  const pos = (s.length - 1) * q;
  const lo = Math.floor(pos), hi = Math.ceil(pos);
  return s[lo] + (s[hi] - s[lo]) * (pos - lo);
}

/**
 * How deep a caption's ids went: the mean exit (1-based); the decoder stages run for them against
 * full depth (with kv "recompute" a word's skipped stages still run, for their keys and values); with
 * kv "copy", the fill graphs run (one per id that exited early).
 */
export function depthSummary(caption, stages, kv) {
  const n = caption.exits.length;
  const exitSum = caption.exits.reduce((sum, e) => sum + e + 1, 0);
  const early = caption.exits.filter((e) => e < stages - 1).length;
  return { ids: n, meanExit: n ? exitSum / n : 0, stagesRun: kv === "recompute" ? n * stages : exitSum,
    stagesFull: n * stages, fills: kv === "copy" ? early : 0 };
}

/** Decoding time of a caption without the time spent drawing its words (timingsMs.onWord). */
export const decodeMs = (caption) => caption.timingsMs.total - (caption.timingsMs.onWord ?? 0);

/** Resolves after the browser has had a chance to paint (or after 100 ms: a hidden tab has no frames). */
export function nextPaint() {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, 100);
    requestAnimationFrame(() => setTimeout(() => {
      clearTimeout(timer);
      resolve();
    }, 0));
  });
}

// ------------------------------------------------------------------------------ the mode
export class CaptionMode {
  /**
   * mmedge, ort: the runtime and onnxruntime-web; params: the page's URLSearchParams;
   * getImage(): the image shown ({width, height, channels, data, name}) or null; before: a promise
   * to wait for before loading (onnxruntime-web cannot open sessions for two engines at once).
   */
  constructor({ mmedge, ort, params, getImage, before = Promise.resolve() }) {
    this.mmedge = mmedge;
    this.ort = ort;
    this.getImage = getImage;
    this.before = before;
    this.bundleUrl = new URL(params.get("caption_bundle") || DEFAULT_CAPTION_BUNDLE, location.href).href;
    this.calibrationUrl = new URL(params.get("caption_calibration") || DEFAULT_CALIBRATION, location.href).href;
    const runs = Number(params.get("caption_runs") ?? DEFAULT_COMPARE_RUNS);
    this.compareRuns = Number.isInteger(runs) && runs >= 1 ? Math.min(runs, MAX_COMPARE_RUNS) : DEFAULT_COMPARE_RUNS;
    this.engine = null;
    this.calibration = null;
    this.loading = null;
    this.running = Promise.resolve();
    this.lastRun = null;
    this.lastCompare = null;
    const $ = (id) => document.getElementById(id);
    this.el = {
      status: $("caption-status"), form: $("caption-form"), button: $("caption-run"), beam: $("caption-beam"),
      fullDesc: $("caption-full-desc"), adaptiveDesc: $("caption-adaptive-desc"), result: $("caption-result"),
      words: $("caption"), summary: $("caption-summary"), policy: $("caption-policy"), decode: $("caption-decode"),
      times: $("caption-times"), timeFull: $("caption-time-full"), timeAdaptive: $("caption-time-adaptive"),
      speedup: $("caption-speedup"), timesNote: $("caption-times-note"), measure: $("caption-measure"),
      error: $("caption-error"), info: $("caption-info"), details: $("caption-details"),
    };
  }

  // ---------------------------------------------------------------- messages
  setStatus(text, kind = "") {
    this.el.status.textContent = text;
    this.el.status.classList.remove("ready", "failed");
    if (kind) this.el.status.classList.add(kind);
  }

  showError(message) {
    this.el.error.textContent = message;
    this.el.error.hidden = !message;
  }

  /** A failure on the page: the runtime's and the image's own errors as they are, others also in the console. */
  report(err) {
    const known = err instanceof this.mmedge.MMEdgeError || ["ImageError", "DemoImageError", "CaptionUserError"].includes(err?.name);
    if (!known) console.error(err);
    this.showError(String(err?.message ?? err));
  }

  // ---------------------------------------------------------------- loading
  /** Loads the bundle (once) and its calibrated policy; resolves to a description of both. */
  load() {
    this.loading ??= this.before.then(() => this.loadEngine(), () => this.loadEngine());
    return this.loading;
  }

  async loadEngine() {
    this.setStatus("Loading the captioning bundle…");
    const started = performance.now();
    let engine;
    try {
      engine = await this.mmedge.CaptionEngine.load(new this.mmedge.FetchSource(this.bundleUrl), { ort: this.ort });
    } catch (err) {
      this.setStatus("The captioning bundle could not be loaded.", "failed");
      this.showError(`${err.message}\n(bundle: ${this.bundleUrl})`);
      throw err;
    }
    const loadMs = performance.now() - started;
    this.engine = engine;
    const manifest = engine.manifest;
    let calibrationError = null;
    try {
      this.calibration = await loadCalibration(this.mmedge, manifest, this.calibrationUrl);
    } catch (err) {
      calibrationError = err.message;
      this.showError(err.message);
    }
    this.describeModes(manifest);
    this.el.info.textContent = `Captioning bundle ${manifest.name} (${engine.numStages} exits, ${manifest.model.config.image_size} px ` +
      `images, ${manifest.model.config.vocab_size} words, keep ratios ${manifest.keep_ratios.join(", ")}) loaded in ${(loadMs / 1000).toFixed(2)} s` +
      (this.calibration ? ` · calibrated policy from ${this.sourceName()}` : "");
    this.setStatus(`Ready: ${manifest.name}`, calibrationError ? "failed" : "ready");
    this.el.button.disabled = false;
    this.el.measure.disabled = !this.calibration;
    return this.info(loadMs, calibrationError);
  }

  describeModes(manifest) {
    const full = captionSettings("full", manifest, null);
    this.el.fullDesc.textContent = `all ${this.engine.numStages} decoder layers for every word, keep ${percent(full.keepRatio)}`;
    if (!this.calibration) {
      this.el.adaptiveDesc.textContent = "unavailable: no calibrated policy (see the message below)";
      return;
    }
    const c = this.calibration;
    const r = c.record;
    const measured = r && r.images ? ` on ${r.images} validation images` +
      (typeof r.flops_ratio === "number" ? `, ${r.flops_ratio.toFixed(2)}x fewer decoder FLOPs` : "") : "";
    this.el.adaptiveDesc.textContent = `${describePolicy(c.policy)}, keep ${percent(c.keepRatio)}, kv ${c.kv} ` +
      `(calibrated${measured})`;
    this.el.adaptiveDesc.title = `the calibrated choice from ${this.sourceName()}`;
  }

  sourceName() {
    const src = this.calibration?.source ?? "";
    if (!src.startsWith("http")) return src;
    const url = new URL(src);
    return url.origin === location.origin ? url.pathname.replace(/^\//, "") : src;
  }

  info(loadMs, calibrationError) {
    const m = this.engine.manifest;
    return {
      bundle: this.bundleUrl, name: m.name, kind: m.kind, stages: this.engine.numStages, keepRatios: m.keep_ratios,
      thresholds: m.thresholds, imageSize: m.model.config.image_size, loadMs,
      calibration: this.calibration && JSON.parse(JSON.stringify(this.calibration)), calibrationError,
    };
  }

  // ---------------------------------------------------------------- settings
  currentMode() {
    return document.querySelector('input[name="caption-mode"]:checked')?.value ?? "adaptive";
  }

  setMode(mode) {
    const radio = document.querySelector(`input[name="caption-mode"][value="${mode}"]`);
    if (!radio) throw new Error(`unknown caption mode ${JSON.stringify(mode)}; use "full" or "adaptive"`);
    radio.checked = true;
  }

  beam() {
    const beam = Number(this.el.beam.value);
    if (!Number.isInteger(beam) || beam < 1 || beam > this.mmedge.MAX_BEAM) {
      throw new CaptionUserError(`The beam width must be a whole number from 1 to ${this.mmedge.MAX_BEAM}, not ${JSON.stringify(this.el.beam.value)}.`);
    }
    return beam;
  }

  setBeam(beam) {
    this.el.beam.value = String(beam);
  }

  /** The mode's settings and the beam width, with `overrides` (policy, keepRatio, kv, maxLen) on top. */
  settings(mode = this.currentMode(), overrides = {}) {
    const base = captionSettings(mode, this.engine.manifest, this.calibration);
    const picked = Object.fromEntries(["policy", "keepRatio", "kv", "maxLen"]
      .filter((k) => overrides[k] !== undefined).map((k) => [k, overrides[k]]));
    return { ...base, beam: this.beam(), ...picked, mode };
  }

  static options(s) {
    const o = { policy: s.policy, keepRatio: s.keepRatio, kv: s.kv, beam: s.beam };
    if (s.maxLen !== undefined) o.maxLen = s.maxLen;
    return o;
  }

  // ---------------------------------------------------------------- drawing
  clear() {
    this.el.result.hidden = true;
    this.el.details.hidden = true;
    this.el.words.replaceChildren();
    this.lastCompare = null;
    this.el.times.hidden = true;
  }

  /** The words of a (partial) caption, each with its exit; the end of the caption ([EOS]) as ⏎. */
  renderWords(caption) {
    const eos = this.engine.manifest.tokenizer.eos_id;
    const stages = this.engine.numStages;
    this.el.words.replaceChildren(...caption.tokens.map((id, i) => {
      const end = id === eos;
      const chip = document.createElement("span");
      chip.className = `word exit-${caption.exits[i] + 1}${end ? " end" : ""}`;
      chip.dataset.exit = String(caption.exits[i]);
      chip.dataset.confidence = String(caption.confidences[i]);
      chip.dataset.word = end ? "" : caption.words[i];
      const text = document.createElement("span");
      text.className = "text";
      text.textContent = end ? "⏎" : caption.words[i];
      const exit = document.createElement("span");
      exit.className = "exit";
      exit.textContent = String(caption.exits[i] + 1);
      chip.title = `${end ? "end of caption ([EOS])" : JSON.stringify(caption.words[i])}: exit ${caption.exits[i] + 1} of ${stages} ` +
        `(after decoder layer ${caption.exits[i] + 1}), confidence ${caption.confidences[i].toFixed(4)}`;
      chip.append(text, exit);
      return chip;
    }));
  }

  renderResult(caption, settings) {
    this.renderWords(caption);
    const d = depthSummary(caption, this.engine.numStages, settings.kv);
    const words = caption.words.length;
    this.el.summary.textContent = `${words} word${words === 1 ? "" : "s"}` +
      `${caption.tokens.length > words ? " and the end" : ""}; mean exit ${d.meanExit.toFixed(2)} of ${this.engine.numStages}; ` +
      `decoder stages run ${d.stagesRun} of ${d.stagesFull} (${percent(d.stagesRun / Math.max(1, d.stagesFull))})` +
      (d.fills ? ` and ${d.fills} cache fill${d.fills === 1 ? "" : "s"} for skipped layers` : "") +
      (settings.beam > 1 ? ", for the chosen hypothesis" : "");
    this.el.policy.textContent = describeSettings(settings);
    const t = caption.timingsMs;
    this.el.decode.textContent = `${decodeMs(caption).toFixed(1)} ms (preprocessing ${t.preprocess.toFixed(1)}, ` +
      `encoder ${t.encoder.toFixed(1)}, decoder ${(decodeMs(caption) - t.preprocess - t.encoder).toFixed(1)})` +
      (t.onWord !== undefined ? `; drawing the words as they came took ${t.onWord.toFixed(0)} ms more` : "");
  }

  renderCompare(c) {
    const row = (el, m) => {
      el.querySelector(".ms").textContent = m.median.toFixed(1);
      el.querySelector(".range").textContent = `${m.p10.toFixed(1)}–${m.p90.toFixed(1)}`;
      el.querySelector(".exit").textContent = m.meanExit.toFixed(2);
      el.querySelector(".bar div").style.width = `${Math.min(100, (m.median / Math.max(c.full.median, c.adaptive.median)) * 100)}%`;
    };
    row(this.el.timeFull, c.full);
    row(this.el.timeAdaptive, c.adaptive);
    this.el.speedup.textContent = `${(c.full.median / c.adaptive.median).toFixed(2)}x`;
    this.el.timesNote.textContent = `${c.image}, beam ${c.beam}: median of ${c.runs} runs per mode (10th to 90th ` +
      `percentile), alternating, after ${c.warmup} warm-up run${c.warmup === 1 ? "" : "s"} each; per caption: ` +
      "preprocessing, encoder and decoder graphs.";
    this.el.times.hidden = false;
  }

  // ---------------------------------------------------------------- actions
  /** One at a time: captions and measurements share the engine and the panel. */
  serial(task) {
    const run = this.running.then(task);
    this.running = run.catch(() => {});
    return run;
  }

  async ready() {
    await this.load();
    const image = this.getImage();
    if (!image) throw new CaptionUserError("Choose an image first (or click a sample image).");
    return image;
  }

  /**
   * Captions the image shown in the current mode and beam (with `overrides`), drawing each word as it
   * is decoded; with `paint`, waits for the browser to paint each word. Resolves to
   * {caption, settings, steps} or null when it failed (the error is shown on the page).
   */
  caption({ overrides = {}, paint = true } = {}) {
    return this.serial(async () => {
      this.showError("");
      let image, settings;
      try {
        image = await this.ready();
        settings = this.settings(this.currentMode(), overrides);
      } catch (err) {
        this.report(err);
        return null;
      }
      this.el.result.hidden = false;
      this.el.details.hidden = false;
      this.el.words.replaceChildren();
      this.el.summary.textContent = "writing…";
      const steps = [];
      const onWord = (step) => {
        this.renderWords(step);
        steps.push({ position: step.position, shown: this.el.words.children.length, tokens: step.tokens.length });
        return paint ? nextPaint() : undefined;
      };
      let caption;
      try {
        caption = await this.engine.caption(image, { ...CaptionMode.options(settings), onWord });
      } catch (err) {
        this.el.summary.textContent = "";
        this.report(err);
        return null;
      }
      if (this.getImage() !== image) return null; // another image was chosen meanwhile
      this.renderResult(caption, settings);
      this.lastRun = { seq: (this.lastRun?.seq ?? 0) + 1, image: image.name, mode: settings.mode, settings };
      return { caption, settings, steps };
    });
  }

  /** Times the image shown at full depth and adaptive (alternating, `warmup` runs of each first) and shows the medians. */
  compare({ runs = this.compareRuns, warmup = DEFAULT_COMPARE_WARMUP } = {}) {
    return this.serial(async () => {
      let image, modes;
      try {
        image = await this.ready();
        modes = { full: this.settings("full"), adaptive: this.settings("adaptive") };
      } catch (err) {
        this.report(err);
        return null;
      }
      this.el.times.hidden = false;
      this.el.timesNote.textContent = `measuring (${warmup} + ${runs} runs per mode)…`;
      const lists = { full: [], adaptive: [] };
      try {
        for (let i = 0; i < warmup + runs; i++) {
          for (const mode of ["full", "adaptive"]) {
            const c = await this.engine.caption(image, CaptionMode.options(modes[mode]));
            if (i >= warmup) lists[mode].push(c);
          }
        }
      } catch (err) {
        this.el.timesNote.textContent = "";
        this.report(err);
        return null;
      }
      if (this.getImage() !== image) return null;
      const stats = (list) => {
        const ms = list.map((c) => c.timingsMs.total);
        return { median: median(ms), p10: quantile(ms, 0.1), p90: quantile(ms, 0.9), min: Math.min(...ms), max: Math.max(...ms),
          meanExit: depthSummary(list[0], this.engine.numStages).meanExit };
      };
      const result = { image: image.name, beam: modes.full.beam, runs, warmup, settings: modes,
        full: stats(lists.full), adaptive: stats(lists.adaptive), captions: lists };
      this.lastCompare = result;
      this.renderCompare(result);
      return result;
    });
  }

  /** A caption from the page's controls, then (unless switched off) the full-depth / adaptive timing. */
  async fromUi({ compare = true } = {}) {
    const out = await this.caption();
    if (out && compare && this.calibration) await this.compare();
    return out;
  }

  get shown() {
    const chips = [...this.el.words.querySelectorAll(".word")];
    const cell = (row, cls) => row.querySelector(`.${cls}`).textContent;
    return {
      words: chips.filter((c) => !c.classList.contains("end")).map((c) => c.dataset.word),
      exits: chips.map((c) => Number(c.dataset.exit)),
      confidences: chips.map((c) => Number(c.dataset.confidence)),
      ends: chips.length > 0 && chips[chips.length - 1].classList.contains("end"),
      summary: this.el.summary.textContent, policy: this.el.policy.textContent, decode: this.el.decode.textContent,
      timesShown: !this.el.times.hidden,
      timeFull: cell(this.el.timeFull, "ms"), timeAdaptive: cell(this.el.timeAdaptive, "ms"),
      speedup: this.el.speedup.textContent, timesNote: this.el.timesNote.textContent,
      status: this.el.status.textContent, error: this.el.error.hidden ? "" : this.el.error.textContent,
    };
  }
}
