/**
 * VLMEngine: load a generative VLM bundle (`"kind": "vlm"`, docs/bundle-format.md "Generative VLM
 * bundles": an adapted SmolVLM) with every loading check of the spec, and generate text about an
 * image with a per-token early exit and the prompt-conditioned visual-token prefilter, greedy or
 * with beams, on onnxruntime-common (onnxruntime-node, -web or -react-native).
 *
 *   import * as ort from "onnxruntime-node";
 *   const engine = await VLMEngine.load(new NodeDirectorySource("smolvlm.mmedge"), { ort });
 *   const g = await engine.generate({ width, height, data }, "what color is the car?", { maxNewTokens: 16 });
 *   g.text, g.tokens, g.exits, g.confidences, g.firstTokenMs, g.timingsMs
 *   await engine.caption(image);   // generate() under the bundle's caption prompt and caption settings
 *   await engine.generate(image, "what is on the table?", { task: "answer" });  // thresholds.tasks.answer
 *
 * The image is stretched to the square with Pillow's filter (resample.ts, bit for bit) and
 * normalised; the prompt is `prompt_before + text + prompt_after` through the bundle's Hugging Face
 * tokenizer (hf-tokenizer.ts); the vision graph scores the visual tokens against the prompt and the
 * top k are kept (any keep ratio in (0, 1]) at their unpruned positions; the prompt is prefilled at
 * full depth, then each token runs the decoder's stages over a static key/value cache until the
 * controller stops it, the LM head (`head`) running only where logits are read, and a token that
 * stopped early leaves the later layers' keys and values through `fill{s}` (kv "copy") or by running
 * the skipped stages (kv "recompute"). The same arithmetic and search as the Python runtime
 * (mmedge/runtime/vlm_engine.py, vlm.py, generate.py), checked by the golden vectors in
 * tests/vectors/vlm/.
 */

import type { InferenceSession, Tensor } from "onnxruntime-common";

import { checkedExternal, checkKv, MAX_BEAM, type CaptionOrtModule, type KvMode } from "./caption.js";
import { argmax, makePolicy, shouldStop, softmaxMax, type ExitState, type Policy, type PolicyKind } from "./controller.js";
import type { PolicyArg } from "./engine.js";
import { toSource } from "./engine.js";
import { BundleError, ConfigError, MMEdgeError, short } from "./errors.js";
import { HFTokenizer, pyStrip } from "./hf-tokenizer.js";
import { parseStrictJson, StrictJsonError } from "./json.js";
import {
  checkPaths, checkRelease, kindSchemaViolations, lazyValidator, MANIFEST_FILE, MAX_DEPTH, parseManifest, readManifestFile,
  rollbackOptionProblems, verifyFiles, type Manifest,
} from "./manifest.js";
import { preprocessStretched, type ImageInput, type Preprocessed } from "./preprocess.js";
import type { ResampleFilter } from "./resample.js";
import type { VerifyKey } from "./signing.js";
import type { BundleSource } from "./source.js";
import { VLM_MANIFEST_SCHEMA } from "./vlm-schema.js";

export const VLM_KIND = "vlm";
/** The key/value cache bound of the consistency check: layers x kv heads x slots x head_dim. */
export const VLM_MAX_CACHE_VALUES = 2 ** 28;
/** What generation reads of each graph, in order (by the graph name's prefix). */
export const VLM_OUTPUTS: Record<"vision" | "embed" | "step" | "head" | "fill", readonly string[]> = {
  vision: ["visual", "scores"],
  embed: ["embeds"],
  step: ["hidden", "exit_hidden", "confidence", "present_k", "present_v"],
  head: ["logits"],
  fill: ["present_k", "present_v"],
};
/** Policies that read every exit's logits (the head runs at each stage), not only the exit taken's. */
const LOGIT_POLICIES: readonly PolicyKind[] = ["max_probability", "patience"];

// ------------------------------------------------------------------------------------- manifest
export interface VLMLayout {
  /** Decoder layers of each exit segment (stage), covering 0..n-1 in order. */
  stage_layers: number[][];
  num_kv_heads: number;
  head_dim: number;
  /** The static cache's slots: prompt plus generated tokens. */
  max_slots: number;
  image_token_id: number;
  /** Visual tokens of one tile, before the prefilter. */
  num_image_tokens: number;
  /** The ratios the prefilter was distilled at (any ratio in (0, 1] runs). */
  keep_ratios: number[];
  /** Graph name -> its output names in order. */
  graphs: Record<string, string[]>;
}

export interface VLMArtifact {
  target: string;
  format: string;
  precision: string;
  runtime: string;
  file?: string;
  external_data?: string;
  stages: Record<string, { file?: string; method?: string; function?: string; outputs?: string[] }>;
  parity?: unknown;
}

/** The tasks a bundle may hold its own settings for (`thresholds.tasks`); `caption()` names "caption". */
export const VLM_TASKS = ["caption", "answer"] as const;
export type VLMTask = (typeof VLM_TASKS)[number];

/** One task's calibrated setting (`thresholds.tasks[task]`): the top-level fields' rules. */
export interface VLMTaskSetting {
  policy: "confidence" | "max_probability" | "patience" | "full";
  threshold: number;
  patience: number;
  keep_ratio: number;
}

export interface VLMThresholds extends VLMTaskSetting {
  kv: KvMode;
  calibrated: boolean;
  /** Per task, the setting generate() uses when told the task (spec "Settings"). */
  tasks?: Partial<Record<VLMTask, VLMTaskSetting>>;
  calibration?: Record<string, unknown>;
}

/** The exit policy and keep ratio a generation uses by default (VLMEngine.settings). */
export interface VLMSettings {
  policy: Policy;
  keepRatio: number;
}

export interface VLMManifest {
  schema_version: 1;
  kind: "vlm";
  name: string;
  release?: { name: string; sequence: number };
  weights_sha256: string;
  model: { family?: string; source_class: string; vocab_size: number; parameters?: number; [key: string]: unknown };
  tokenizer: {
    file: string; kind: "hf-tokenizers"; prompt_before: string; prompt_after: string; caption_prompt: string;
    stop_ids: number[]; max_new_tokens: number;
  };
  preprocessing: {
    image_size: number; resize: "stretch"; resample: ResampleFilter; rescale_factor: number;
    mean: [number, number, number]; std: [number, number, number]; channel_order: "RGB"; layout: "NCHW";
  };
  layout: VLMLayout;
  artifacts: VLMArtifact[];
  thresholds: VLMThresholds;
  files: Record<string, { bytes: number; sha256: string }>;
  [key: string]: unknown;
}

/** The graphs a layout needs: vision, embed, a step per stage, the head, a fill per stage but the last. */
export function vlmGraphNames(stageLayers: number[][]): string[] {
  const n = stageLayers.length;
  return ["vision", "embed", ...Array.from({ length: n }, (_, s) => `step${s}`), "head",
    ...Array.from({ length: n - 1 }, (_, s) => `fill${s}`)];
}

const vlmValidator = lazyValidator(VLM_MANIFEST_SCHEMA);

/** Step 5 for a generative VLM manifest: violations of the VLM schema and their code (`path` or `schema`). */
export function vlmSchemaViolations(manifest: unknown): { problems: string[]; code: "schema" | "path" } {
  return kindSchemaViolations(vlmValidator(), manifest);
}

const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

/**
 * Step 6 for a generative VLM manifest (mmedge/adapt/vlm_manifest.py layout_problems): the layout,
 * tokenizer ids, thresholds and artifacts agree, so that a bundle that loads can generate. Assumes
 * the manifest passed the schema.
 */
export function vlmConsistencyProblems(m: VLMManifest): string[] {
  const p: string[] = [];
  const L = m.layout, t = m.tokenizer, V = m.model.vocab_size;
  const layers = L.stage_layers.flat();
  if (!layers.every((l, i) => l === i)) p.push(`layout.stage_layers ${JSON.stringify(L.stage_layers)} must cover layers 0..n-1 in order`);
  const ratios = L.keep_ratios;
  if (new Set(ratios).size !== ratios.length) p.push(`layout.keep_ratios repeat a ratio: ${JSON.stringify(ratios)}`);
  if (!ratios.includes(m.thresholds.keep_ratio)) {
    p.push(`thresholds.keep_ratio ${m.thresholds.keep_ratio} is not one of the keep ratios ${JSON.stringify(ratios)}`);
  }
  for (const [task, s] of Object.entries(m.thresholds.tasks ?? {})) {
    if (!ratios.includes(s.keep_ratio)) {
      p.push(`thresholds.tasks.${task}.keep_ratio ${s.keep_ratio} is not one of the keep ratios ${JSON.stringify(ratios)}`);
    }
  }
  if (layers.length * L.num_kv_heads * L.max_slots * L.head_dim > VLM_MAX_CACHE_VALUES) {
    p.push(`the key/value cache (${layers.length} layers x ${L.num_kv_heads} heads x ${L.max_slots} slots x ${L.head_dim}) ` +
      `is over ${VLM_MAX_CACHE_VALUES} values`);
  }
  if (L.num_image_tokens >= L.max_slots) p.push(`layout.max_slots ${L.max_slots} leaves no room after ${L.num_image_tokens} image tokens`);
  if (t.max_new_tokens >= L.max_slots) p.push(`tokenizer.max_new_tokens ${t.max_new_tokens} must be below layout.max_slots ${L.max_slots}`);
  if ([...t.stop_ids, L.image_token_id].some((i) => i >= V)) {
    p.push(`stop ids ${JSON.stringify(t.stop_ids)} and the image token ${L.image_token_id} must be below the vocabulary size ${V}`);
  }
  if (p.length > 0) return p;
  const want = vlmGraphNames(L.stage_layers);
  if (!same(Object.keys(L.graphs).sort(), [...want].sort())) {
    return [`layout.graphs ${JSON.stringify(Object.keys(L.graphs).sort().slice(0, 20))} != the layout's ` +
      `${JSON.stringify([...want].sort().slice(0, 20))} (a bundle exported by an earlier mmedge, with a vision graph per keep ` +
      "ratio? export it again)"];
  }
  for (const [name, outs] of Object.entries(L.graphs)) {
    const kind = (Object.keys(VLM_OUTPUTS) as (keyof typeof VLM_OUTPUTS)[]).find((k) => name.startsWith(k))!;
    if (!same(outs, VLM_OUTPUTS[kind])) {
      p.push(`layout.graphs[${JSON.stringify(name)}] outputs ${JSON.stringify(outs)} differ from what generation reads ` +
        JSON.stringify(VLM_OUTPUTS[kind]));
    }
  }
  for (const a of m.artifacts) {
    const kind = `artifact ${a.runtime}/${a.format}/${a.precision}`;
    if (!same(Object.keys(a.stages).sort(), [...want].sort())) p.push(`${kind} does not hold every graph`);
    else if (a.runtime === "executorch") {
      for (const [n, e] of Object.entries(a.stages)) {
        if (!same(e.outputs, L.graphs[n])) p.push(`${kind} method ${JSON.stringify(n)} outputs ${JSON.stringify(e.outputs)} differ from the layout's ${JSON.stringify(L.graphs[n])}`);
      }
    }
  }
  return p.slice(0, 50);
}

/** The prompt's ids: the chat template's text around the user's, no special tokens added. */
export function encodePrompt(tokenizer: HFTokenizer, before: string, after: string, text: string): number[] {
  return tokenizer.encode(before + text + after);
}

/**
 * Step 10 for a generative VLM bundle: the tokenizer file's verified bytes as strict JSON, a
 * tokenizer this runtime implements, and one that fits the manifest: the prompt template encodes
 * to one block of the layout's image tokens and every id it gives is inside the vocabulary.
 * BundleError code `tokenizer` (`unsupported` for a tokenizer.json this runtime does not implement).
 */
export function readVLMTokenizer(data: Uint8Array, m: VLMManifest): HFTokenizer {
  const rel = m.tokenizer.file;
  let parsed: unknown;
  try {
    parsed = parseStrictJson(data, { maxDepth: MAX_DEPTH }).value;
  } catch (exc) {
    if (!(exc instanceof StrictJsonError)) throw exc;
    throw new BundleError(`the bundle's tokenizer file ${JSON.stringify(short(rel, 80))} is not strict UTF-8 JSON ` +
      `(${short(exc.message, 160)}); export the bundle again`, { cause: exc, path: rel, code: "tokenizer" });
  }
  const tokenizer = HFTokenizer.fromParsed(parsed, rel);
  const L = m.layout, spec = m.tokenizer;
  const ids = encodePrompt(tokenizer, spec.prompt_before, spec.prompt_after, "a");
  const at = ids.flatMap((id, i) => (id === L.image_token_id ? [i] : []));
  const problems: string[] = [];
  if (at.length !== L.num_image_tokens || (at.length > 0 && at[at.length - 1] - at[0] !== at.length - 1)) {
    problems.push(`the prompt template holds ${at.length} image tokens, not one block of ${L.num_image_tokens}`);
  }
  if (ids.length > 0 && Math.max(...ids) >= m.model.vocab_size) {
    problems.push(`its ids go past the model's vocabulary of ${m.model.vocab_size}`);
  }
  if (problems.length > 0) {
    throw new BundleError(`the bundle's tokenizer does not fit its manifest: ${problems.join("; ")}`, { path: rel, code: "tokenizer" });
  }
  return tokenizer;
}

export interface LoadVLMOptions {
  verifyKey?: VerifyKey;
  minSequence?: number;
  expectName?: string;
  /** Called after steps 1-7: the files whose verified bytes to keep (the tokenizer's are always kept). */
  select?: (manifest: VLMManifest) => Iterable<string>;
}

export interface LoadedVLMManifest {
  manifest: VLMManifest;
  manifestBytes: Uint8Array;
  tokenizer: HFTokenizer;
  files: Map<string, Uint8Array>;
}

/**
 * Every loading check of the spec for a generative VLM bundle, in order (docs/bundle-format.md,
 * "Generative VLM bundles", "What a runtime checks"): the manifest file, its signature, strict JSON,
 * version and kind, the VLM schema, consistency, the app's rollback rules, paths, every file's size
 * and SHA-256, the tokenizer. BundleError with its reason code.
 */
export async function loadVLMManifest(source: BundleSource, options: LoadVLMOptions = {}): Promise<LoadedVLMManifest> {
  const { manifestBytes, where } = await readManifestFile(source, options);
  const parsed = parseManifest(manifestBytes, where) as unknown as Record<string, unknown>;
  if (parsed.kind !== VLM_KIND) {
    const kind = short(JSON.stringify(parsed.kind) ?? "absent", 40);
    throw new BundleError(`${where} is not a generative VLM bundle (its kind is ${kind}); load classifier bundles with ` +
      "Engine.load and captioning bundles with CaptionEngine.load", { path: MANIFEST_FILE, code: "unsupported" });
  }
  const schema = vlmSchemaViolations(parsed);
  if (schema.problems.length > 0) {
    throw new BundleError(`${where} does not match the vlm manifest schema (export the bundle again with a matching ` +
      `mmedge):\n  ${schema.problems.slice(0, 10).join("\n  ")}`, { path: MANIFEST_FILE, code: schema.code });
  }
  const m = parsed as unknown as VLMManifest;
  const problems = vlmConsistencyProblems(m);
  if (problems.length > 0) {
    throw new BundleError(`${where} is inconsistent:\n  ${problems.slice(0, 10).join("\n  ")}\nThe manifest was edited or is ` +
      "corrupt: export the bundle again", { path: MANIFEST_FILE, code: "inconsistent" });
  }
  // the classifier loader's steps that read only the fields every kind shares
  const shared = m as unknown as Manifest;
  checkRelease(shared, options, where);
  await checkPaths(source, shared);
  const keep = new Set(options.select ? options.select(m) : []);
  keep.add(m.tokenizer.file);
  const files = await verifyFiles(source, shared, keep);
  const tokenizer = readVLMTokenizer(files.get(m.tokenizer.file)!, m);
  return { manifest: m, manifestBytes, tokenizer, files };
}

// ------------------------------------------------------------------------------------- arithmetic
/** Python's round(x) for x >= 0: to the nearest integer, halves to the even one. */
function roundHalfEven(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/** Visual tokens kept at a keep ratio: max(1, round(ratio x M)), Python's round (halves to even). */
export function keptTokens(keepRatio: number, numImageTokens: number): number {
  return Math.max(1, roundHalfEven(keepRatio * numImageTokens));
}

/** A keep ratio argument: a number in (0, 1] (ConfigError otherwise). */
export function checkKeepRatio(value: unknown): number {
  if (typeof value !== "number" || Number.isNaN(value)) {
    throw new ConfigError(`keepRatio must be a number such as 0.5, got ${value === null ? "null" : typeof value}`, "arguments");
  }
  if (!(value > 0 && value <= 1)) throw new ConfigError(`keep ratio ${value} must be a number in (0, 1]`, "arguments");
  return value;
}

/** The indices of the k largest values, largest first, ties to the lower index (NaN last). */
export function topK(values: ArrayLike<number>, k: number): number[] {
  const key = (i: number) => (Number.isNaN(values[i]) ? -Infinity : values[i]);
  const order = Array.from({ length: values.length }, (_, i) => i);
  order.sort((a, b) => key(b) - key(a) || (Number.isNaN(values[a]) ? 1 : 0) - (Number.isNaN(values[b]) ? 1 : 0) || a - b);
  return order.slice(0, k);
}

/** numpy's pairwise summation (its add.reduce of a contiguous array), each addition rounded by `round`. */
function pairwiseSum(a: ArrayLike<number>, from: number, n: number, round: (x: number) => number): number {
  if (n < 8) {
    let res = round(0);
    for (let i = 0; i < n; i++) res = round(res + a[from + i]);
    return res;
  }
  if (n <= 128) {
    const r = Array.from({ length: 8 }, (_, j) => a[from + j]);
    let i = 8;
    for (; i < n - (n % 8); i += 8) for (let j = 0; j < 8; j++) r[j] = round(r[j] + a[from + i + j]);
    let res = round(round(round(r[0] + r[1]) + round(r[2] + r[3])) + round(round(r[4] + r[5]) + round(r[6] + r[7])));
    for (; i < n; i++) res = round(res + a[from + i]);
    return res;
  }
  let n2 = Math.floor(n / 2);
  n2 -= n2 % 8;
  return round(pairwiseSum(a, from, n2, round) + pairwiseSum(a, from + n2, n - n2, round));
}

const identity = (x: number) => x;

/** log-softmax in double precision as numpy computes it: z - max z - log(sum exp(z - max z)). */
export function logSoftmax64(logits: ArrayLike<number>): Float64Array {
  let top = -Infinity;
  for (let i = 0; i < logits.length; i++) top = Math.max(top, logits[i]);
  const e = new Float64Array(logits.length);
  for (let i = 0; i < logits.length; i++) e[i] = Math.exp(logits[i] - top);
  const lse = Math.log(pairwiseSum(e, 0, e.length, identity));
  const out = new Float64Array(logits.length);
  for (let i = 0; i < logits.length; i++) out[i] = logits[i] - top - lse;
  return out;
}

/**
 * log-softmax in float32 as numpy computes it on float32 logits (transformers' beam scores): each
 * operation rounded to float32, the sum pairwise. (numpy's float32 exp and log are vectorised
 * approximations that may differ from the correctly rounded values used here by an ulp; scores
 * then differ by about 1e-7, which changes a beam only on a near tie.)
 */
export function logSoftmax32(logits: ArrayLike<number>): Float32Array {
  const f = Math.fround;
  let top = -Infinity;
  for (let i = 0; i < logits.length; i++) top = Math.max(top, logits[i]);
  const d = new Float32Array(logits.length);
  const e = new Float32Array(logits.length);
  for (let i = 0; i < logits.length; i++) {
    d[i] = f(logits[i] - top);
    e[i] = f(Math.exp(d[i]));
  }
  const lse = f(Math.log(pairwiseSum(e, 0, e.length, f)));
  const out = new Float32Array(logits.length);
  for (let i = 0; i < logits.length; i++) out[i] = f(d[i] - lse);
  return out;
}

// ------------------------------------------------------------------------------------- engine
/** What the VLM engine needs of an onnxruntime module (onnxruntime-node, -web or -react-native). */
export type VLMOrtModule = CaptionOrtModule;

export interface VLMEngineOptions {
  ort: VLMOrtModule;
  /** Artifact precision (default fp32). */
  precision?: "fp32" | "int8" | "int4";
  /** ONNX Runtime file format: "onnx" (preferred by default) or "ort" (ORT format, one self-contained file per graph). */
  format?: "onnx" | "ort";
  /**
   * Default keep ratio, any number in (0, 1], for every task (default: the manifest's
   * thresholds.keep_ratio, or thresholds.tasks[task].keep_ratio for a task the bundle holds).
   */
  keepRatio?: number;
  /**
   * Default exit policy for every task (default: the manifest's thresholds, or thresholds.tasks[task]);
   * a policy name takes the threshold and patience of the setting it replaces.
   */
  policy?: PolicyArg;
  /** Default cache filling of a token that exits early (default: the manifest's thresholds.kv). */
  kv?: KvMode;
  verifyKey?: VerifyKey;
  minSequence?: number;
  expectName?: string;
  /** Passed to every InferenceSession.create. */
  sessionOptions?: InferenceSession.SessionOptions;
  /** Generate two tokens twice from a grey image on load (default true); code `self-check` on a failure. */
  selfCheck?: boolean;
}

export interface GenerateOptions {
  /** Most generated ids, a stop id included (1 .. the cache's room after the prompt; default tokenizer.max_new_tokens). */
  maxNewTokens?: number;
  /** 1 = greedy (default); up to 16 beams, as transformers' generate(num_beams=...). */
  beam?: number;
  /**
   * A policy, or a policy name with the bundle's threshold and patience (thresholds.tasks[task]'s when
   * the call names a task the bundle holds).
   */
  policy?: PolicyArg;
  /** Any number in (0, 1]: the share of visual tokens the prefilter keeps. */
  keepRatio?: number;
  kv?: KvMode;
  /**
   * "caption" or "answer": use the bundle's settings for that task (thresholds.tasks) where it holds
   * them, unless policy / keepRatio are given here or at load (spec "Settings"). undefined or null: any
   * prompt, the top-level settings. caption() names "caption".
   */
  task?: VLMTask | null;
}

export interface Generation {
  /** The generated ids decoded, special tokens skipped, stripped. */
  text: string;
  /** Generated ids, a stop id included when reached. */
  tokens: number[];
  /** Exit (0-based stage) per generated id; the first comes from the prefill (the last stage). */
  exits: number[];
  /** Learned confidence at each generated id's exit. */
  confidences: number[];
  /** The hypothesis' summed log-probability (greedy: double precision; beams: float32, as transformers). */
  logprob: number;
  keepRatio: number;
  keptVisualTokens: number;
  /** The prompt's ids (the chat template around the text, the image block included). */
  promptIds: number[];
  /** ms from the first graph to the first token (vision, embed, prefill, head). */
  firstTokenMs: number;
  /**
   * ms: `preprocess`, each graph (total over the generation, by name), `decode` (from the first graph
   * to the last token), `total` (preprocessing included).
   */
  timingsMs: Record<string, number>;
  /** Mean exit over the generated ids. */
  meanExit: number;
}

interface Hypothesis {
  tokens: number[];
  exits: number[];
  confidences: number[];
  logits: Float32Array[];
  logprob: number;
  cacheK: Float32Array[];
  cacheV: Float32Array[];
  done: boolean;
}

interface Decoding {
  policy: Policy;
  kv: KvMode;
  nextPosition: number;
  nextSlot: number;
  first: { logits: Float32Array; confidence: number };
  timings: Record<string, number>;
}

type Outputs = Record<string, Tensor>;
const now = (): number => globalThis.performance.now();

/** A task argument: "caption", "answer", or undefined / null for none (ConfigError otherwise). */
export function checkTask(task: unknown): VLMTask | undefined {
  if (task === undefined || task === null) return undefined;
  if (typeof task !== "string" || !(VLM_TASKS as readonly string[]).includes(task)) {
    const shown = typeof task === "string" ? JSON.stringify(short(task, 40)) : typeof task;
    throw new ConfigError(`task ${shown} unknown; choose one of ${VLM_TASKS.map((t) => JSON.stringify(t)).join(", ")} ` +
      "or leave it out (any prompt)", "arguments");
  }
  return task as VLMTask;
}

/** A policy argument: a policy name takes the bundle's threshold and patience ("full" needs none), as in Python. */
export function vlmPolicy(policy: PolicyArg, th: VLMTaskSetting): Policy {
  if (typeof policy === "string") {
    return policy === "full" ? makePolicy({ kind: "full" })
      : makePolicy({ kind: policy, threshold: Math.min(1, th.threshold), patience: th.patience });
  }
  return makePolicy(policy as never);
}

export class VLMEngine {
  readonly kind = "vlm";
  readonly manifest: VLMManifest;
  readonly tokenizer: HFTokenizer;
  readonly source: BundleSource;
  readonly artifact: VLMArtifact;
  readonly imageSize: number;
  /** The default policy and keep ratio (the top-level thresholds', or those given to load()). */
  policy: Policy;
  keepRatio: number;
  kv: KvMode;
  /**
   * Per task the bundle holds settings for (thresholds.tasks), the default policy and keep ratio of
   * generate({ task }), each overridden by a policy or keep ratio given to load().
   */
  readonly taskSettings: Partial<Record<VLMTask, VLMSettings>>;
  private readonly ort: VLMOrtModule;
  private readonly sessions: Map<string, InferenceSession>;
  private busy: Promise<unknown> = Promise.resolve();

  private constructor(init: {
    source: BundleSource; manifest: VLMManifest; tokenizer: HFTokenizer; ort: VLMOrtModule; artifact: VLMArtifact;
    sessions: Map<string, InferenceSession>; policy: Policy; keepRatio: number; kv: KvMode;
    taskSettings?: Partial<Record<VLMTask, VLMSettings>>;
  }) {
    this.source = init.source;
    this.manifest = init.manifest;
    this.tokenizer = init.tokenizer;
    this.ort = init.ort;
    this.artifact = init.artifact;
    this.sessions = init.sessions;
    this.policy = init.policy;
    this.keepRatio = init.keepRatio;
    this.kv = init.kv;
    this.taskSettings = Object.freeze({ ...(init.taskSettings ?? {}) });
    this.imageSize = init.manifest.preprocessing.image_size;
  }

  /**
   * Open a generative VLM bundle: every loading check (with `verifyKey`, its signature) before a graph
   * is used, one InferenceSession per graph from the verified bytes, then the self-check.
   */
  static async load(bundle: BundleSource | string | URL, options: VLMEngineOptions): Promise<VLMEngine> {
    const problems: string[] = [];
    const ort = options?.ort as Partial<VLMOrtModule> | undefined;
    if (!ort || typeof ort.InferenceSession?.create !== "function" || typeof ort.Tensor !== "function") {
      problems.push("ort must be the onnxruntime module: import * as ort from \"onnxruntime-node\" (or -web, -react-native)");
    }
    if (options?.precision !== undefined && !["fp32", "int8", "int4"].includes(options.precision)) {
      problems.push(`precision ${short(JSON.stringify(options.precision) ?? "", 40)} unknown; choose fp32, int8 or int4`);
    }
    if (options?.format !== undefined && !["onnx", "ort"].includes(options.format)) {
      problems.push(`format ${short(JSON.stringify(options.format) ?? "", 40)} unknown; choose onnx or ort`);
    }
    for (const check of [
      () => options?.policy !== undefined && typeof options.policy !== "string" && makePolicy(options.policy as never),
      () => options?.policy !== undefined && typeof options.policy === "string" && makePolicy(options.policy),
      () => options?.kv !== undefined && checkKv(options.kv),
      () => options?.keepRatio !== undefined && checkKeepRatio(options.keepRatio),
    ]) {
      try {
        check();
      } catch (exc) {
        if (exc instanceof ConfigError) problems.push(...exc.problems);
        else throw exc;
      }
    }
    problems.push(...rollbackOptionProblems(options ?? {}));
    if (problems.length > 0) throw new ConfigError(problems, "arguments");
    const precision = options.precision ?? "fp32";
    const source = toSource(bundle);
    let artifact: VLMArtifact | undefined;
    const loaded = await loadVLMManifest(source, {
      verifyKey: options.verifyKey, minSequence: options.minSequence, expectName: options.expectName,
      select: (m) => {
        const candidates = m.artifacts.filter((a) => a.runtime === "onnxruntime" && a.precision === precision &&
          (options.format === undefined || a.format === options.format));
        artifact = candidates.find((a) => a.format === "onnx") ?? candidates[0];
        if (!artifact) {
          const have = [...new Set(m.artifacts.map((a) => `${a.runtime}/${a.format}/${a.precision}`))].sort();
          throw new BundleError(`the bundle has no onnxruntime ${precision} artifact${options.format ? ` in format ${options.format}` : ""}; ` +
            `it has ${have.join(", ")}`, { code: "unsupported" });
        }
        const paths = Object.values(artifact.stages).map((e) => e.file!);
        return artifact.format === "onnx" && artifact.external_data ? [...paths, artifact.external_data] : paths;
      },
    });
    const { manifest, tokenizer, files } = loaded;
    const chosen = artifact!;
    const extra = { ...(options.sessionOptions?.extra ?? {}) } as Record<string, unknown>;
    extra.session = { disable_quant_qdq: "1", ...((extra.session as Record<string, unknown>) ?? {}) };
    let sessionOptions: InferenceSession.SessionOptions = { ...(options.sessionOptions ?? {}), extra };
    if (chosen.format === "onnx" && chosen.external_data !== undefined) {
      const name = chosen.external_data.slice(chosen.external_data.lastIndexOf("/") + 1);
      sessionOptions = { ...sessionOptions, externalData: [{ path: name, data: files.get(chosen.external_data)! }] };
    }
    const sessions = new Map<string, InferenceSession>();
    try {
      for (const name of Object.keys(manifest.layout.graphs)) {
        const path = chosen.stages[name].file!;
        const bytes = files.get(path)!;
        if (chosen.format === "onnx") checkedExternal(path, bytes, chosen.external_data);
        try {
          sessions.set(name, await options.ort.InferenceSession.create(bytes, sessionOptions));
        } catch (exc) {
          throw new BundleError(`${source.name}: onnxruntime cannot open ${path} (${short(String(exc), 300)}); export the bundle again`,
            { cause: exc, path, code: "self-check" });
        }
      }
      const th = manifest.thresholds;
      // the bundle's settings per task, each overridden by a policy or keep ratio given to load()
      const taskSettings: Partial<Record<VLMTask, VLMSettings>> = {};
      for (const [task, s] of Object.entries(th.tasks ?? {}) as [VLMTask, VLMTaskSetting][]) {
        taskSettings[task] = { policy: vlmPolicy(options.policy ?? s.policy, s), keepRatio: options.keepRatio ?? s.keep_ratio };
      }
      const engine = new VLMEngine({
        source, manifest, tokenizer, ort: options.ort, artifact: chosen, sessions,
        policy: vlmPolicy(options.policy ?? th.policy, th),
        keepRatio: options.keepRatio ?? th.keep_ratio, kv: options.kv ?? th.kv, taskSettings,
      });
      if (options.selfCheck ?? true) await engine.selfCheck();
      return engine;
    } catch (exc) {
      await Promise.allSettled([...sessions.values()].map((s) => s.release()));
      throw exc;
    }
  }

  /** Releases every ONNX Runtime session. */
  async dispose(): Promise<void> {
    await Promise.allSettled([...this.sessions.values()].map((s) => s.release()));
    this.sessions.clear();
  }

  get numStages(): number {
    return this.manifest.layout.stage_layers.length;
  }

  /** The image as `pixel_values` (spec "Generative VLM bundles", Input: stretched with the bundle's filter, normalised). */
  preprocess(image: ImageInput): Preprocessed {
    const p = this.manifest.preprocessing;
    return preprocessStretched(image, { imageSize: p.image_size, scale: p.rescale_factor, mean: p.mean, std: p.std, filter: p.resample });
  }

  /** The prompt's ids: the chat template around the text, with the image block (ConfigError for an empty prompt). */
  promptIds(prompt: string): number[] {
    if (typeof prompt !== "string" || pyStrip(prompt).length === 0) {
      throw new ConfigError("prompt must be a non-empty string", "arguments");
    }
    const t = this.manifest.tokenizer;
    return encodePrompt(this.tokenizer, t.prompt_before, t.prompt_after, prompt);
  }

  /** The model's answer to `prompt` about `image`, with the exit each token took. Calls are serialised. */
  async generate(image: ImageInput, prompt: string, options: GenerateOptions = {}): Promise<Generation> {
    const run = this.busy.then(() => this.generateNow(image, prompt, options));
    this.busy = run.catch(() => undefined);
    return run;
  }

  /**
   * generate() under the bundle's caption prompt (`tokenizer.caption_prompt`) with its caption
   * settings (task "caption"; ConfigError for another `options.task`).
   */
  async caption(image: ImageInput, options: GenerateOptions = {}): Promise<Generation> {
    if (typeof options === "object" && options !== null && options.task !== undefined && options.task !== "caption") {
      const task = options.task;
      throw new ConfigError(`caption() generates a caption (task "caption"), not task ${typeof task === "string"
        ? JSON.stringify(short(task, 40)) : String(task)}: call generate(image, prompt, { task }) for another task`, "arguments");
    }
    return this.generate(image, this.manifest.tokenizer.caption_prompt,
      typeof options === "object" && options !== null ? { ...options, task: "caption" } : options);
  }

  /**
   * The policy and keep ratio generate() uses by default for `task` (undefined / null: any prompt):
   * the bundle's settings for that task where it holds them (thresholds.tasks), else its top-level
   * ones; those given to load() replace both. ConfigError for a task other than "caption" or "answer".
   */
  settings(task?: VLMTask | null): VLMSettings {
    const known = checkTask(task);
    const own = known === undefined ? undefined : this.taskSettings[known];
    return own ? { ...own } : { policy: this.policy, keepRatio: this.keepRatio };
  }

  private checkOptions(options: GenerateOptions): { policy: Policy; ratio: number; kv: KvMode; beam: number; limit: number } {
    const problems: string[] = [];
    if (typeof options !== "object" || options === null) throw new ConfigError(`options must be an object, got ${typeof options}`, "arguments");
    let task: VLMTask | undefined;
    try {
      task = checkTask(options.task);
    } catch (exc) {
      if (exc instanceof ConfigError) problems.push(...exc.problems);
      else throw exc;
    }
    let { policy, keepRatio: ratio } = this.settings(task);
    let kv = this.kv;
    const th = this.manifest.thresholds;
    const setting = (task !== undefined ? th.tasks?.[task] : undefined) ?? th;  // what a policy name takes its threshold from
    const beam = options.beam ?? 1;
    const limit = options.maxNewTokens ?? this.manifest.tokenizer.max_new_tokens;
    for (const check of [
      () => { if (options.policy !== undefined) policy = vlmPolicy(options.policy, setting); },
      () => { if (options.keepRatio !== undefined) ratio = checkKeepRatio(options.keepRatio); },
      () => { if (options.kv !== undefined) kv = checkKv(options.kv); },
    ]) {
      try {
        check();
      } catch (exc) {
        if (exc instanceof ConfigError) problems.push(...exc.problems);
        else throw exc;
      }
    }
    if (!Number.isInteger(beam) || beam < 1 || beam > MAX_BEAM) problems.push(`beam ${String(beam)} must be an integer from 1 to ${MAX_BEAM}`);
    if (!Number.isInteger(limit) || limit < 1) problems.push(`maxNewTokens ${String(limit)} must be a whole number >= 1`);
    if (problems.length > 0) throw new ConfigError(problems, "arguments");
    return { policy, ratio, kv, beam, limit };
  }

  private async generateNow(image: ImageInput, prompt: string, options: GenerateOptions): Promise<Generation> {
    const settings = this.checkOptions(options ?? {});
    const t0 = now();
    const { pixelValues } = this.preprocess(image);
    const preprocessMs = now() - t0;
    const ids = this.promptIds(prompt);
    const { generation } = await this.decode(ids, pixelValues, settings);
    generation.timingsMs = { preprocess: preprocessMs, ...generation.timingsMs, total: now() - t0 };
    return generation;
  }

  private f32(data: Float32Array, dims: readonly number[]): Tensor {
    return new this.ort.Tensor("float32", data, dims);
  }

  private i64(values: ArrayLike<number>, dims: readonly number[]): Tensor {
    return new this.ort.Tensor("int64", BigInt64Array.from(Array.from(values, (v) => BigInt(v))), dims);
  }

  private async run(name: string, feeds: Record<string, Tensor>, timings: Record<string, number>): Promise<Outputs> {
    const session = this.sessions.get(name);
    if (!session) throw new ConfigError(`graph ${name} is not open (disposed?)`, "arguments");
    const t0 = now();
    const out = (await session.run(feeds)) as Outputs;
    timings[name] = (timings[name] ?? 0) + (now() - t0);
    return out;
  }

  private get cacheSize(): number {
    const L = this.manifest.layout;
    return L.num_kv_heads * L.max_slots * L.head_dim;
  }

  /** The caches of `layers` as one (n, 1, G, P, hd) tensor. */
  private stack(arrays: Float32Array[]): Tensor {
    const L = this.manifest.layout;
    const out = new Float32Array(arrays.length * this.cacheSize);
    arrays.forEach((a, j) => out.set(a, j * this.cacheSize));
    return this.f32(out, [arrays.length, 1, L.num_kv_heads, L.max_slots, L.head_dim]);
  }

  /**
   * Run graph `name` on `feeds` plus the caches of `layers` (past_k, past_v), then write its
   * present_k / present_v back into those layers' entries of `cacheK` / `cacheV` (views, not copies).
   */
  private async runCached(name: string, feeds: Record<string, Tensor>, layers: number[], cacheK: Float32Array[],
    cacheV: Float32Array[], timings: Record<string, number>): Promise<Outputs> {
    const out = await this.run(name, {
      ...feeds, past_k: this.stack(layers.map((i) => cacheK[i])), past_v: this.stack(layers.map((i) => cacheV[i])),
    }, timings);
    const size = this.cacheSize;
    const pk = out.present_k.data as Float32Array, pv = out.present_v.data as Float32Array;
    layers.forEach((i, j) => {
      cacheK[i] = pk.subarray(j * size, (j + 1) * size);
      cacheV[i] = pv.subarray(j * size, (j + 1) * size);
    });
    return out;
  }

  private async head(out: Outputs, timings: Record<string, number>): Promise<Float32Array> {
    return (await this.run("head", { exit_hidden: out.exit_hidden }, timings)).logits.data as Float32Array;
  }

  /** Where the prompt's one block of image tokens starts (ConfigError "prompt" unless it holds one block of M). */
  private imageBlock(ids: number[]): number {
    const L = this.manifest.layout;
    const M = L.num_image_tokens;
    const at = ids.flatMap((id, i) => (id === L.image_token_id ? [i] : []));
    if (at.length !== M || (M > 0 && at[at.length - 1] - at[0] !== M - 1)) {
      throw new ConfigError(`the prompt must hold one block of ${M} image tokens (one tile); it holds ${at.length}`, "prompt");
    }
    return at[0];
  }

  /**
   * The prompt's embeddings with the kept visual tokens in place of the image block, their rotary
   * positions (the unpruned prompt's) and the kept indices (spec "Generation", 1).
   */
  private async prompt(ids: number[], start: number, pixelValues: Float32Array, keepRatio: number,
    timings: Record<string, number>): Promise<{ embeds: Float32Array; positions: number[]; kept: number[] }> {
    const L = this.manifest.layout;
    const M = L.num_image_tokens;
    const S = this.imageSize;
    const text = ids.filter((id) => id !== L.image_token_id);
    const vision = await this.run("vision", {
      pixel_values: this.f32(pixelValues, [1, 3, S, S]), text_ids: this.i64(text, [1, text.length]),
    }, timings);
    const embedded = (await this.run("embed", { ids: this.i64(ids, [1, ids.length]) }, timings)).embeds.data as Float32Array;
    const kept = topK(vision.scores.data as Float32Array, keptTokens(keepRatio, M)).sort((a, b) => a - b);
    const visual = vision.visual.data as Float32Array;
    const D = embedded.length / ids.length;
    const T = ids.length - M + kept.length;
    const embeds = new Float32Array(T * D);
    embeds.set(embedded.subarray(0, start * D), 0);
    kept.forEach((v, j) => embeds.set(visual.subarray(v * D, (v + 1) * D), (start + j) * D));
    embeds.set(embedded.subarray((start + M) * D), (start + kept.length) * D);
    const positions = [...Array.from({ length: start }, (_, i) => i), ...kept.map((v) => start + v),
      ...Array.from({ length: ids.length - start - M }, (_, i) => start + M + i)];
    return { embeds, positions, kept };
  }

  /**
   * Generation from prompt ids and prepared `pixel_values` (float32 [1, 3, S, S]): the prompt, the
   * prefill at full depth, then greedy or beam search (spec "Generation").
   */
  private async decode(ids: number[], pixelValues: Float32Array,
    settings: { policy: Policy; ratio: number; kv: KvMode; beam: number; limit: number }): Promise<{ generation: Generation; logits: Float32Array[] }> {
    const { policy, ratio, kv, beam, limit } = settings;
    const L = this.manifest.layout;
    const timings: Record<string, number> = {};
    const t0 = now();
    const start = this.imageBlock(ids);
    const k = keptTokens(ratio, L.num_image_tokens);
    const room = L.max_slots - (ids.length - L.num_image_tokens + k);
    if (!(limit >= 1 && limit <= room)) {
      throw new ConfigError(`maxNewTokens ${limit} must be from 1 to ${room} (the cache holds ${L.max_slots} slots, the ` +
        `prompt ${ids.length - L.num_image_tokens + k})`, "arguments");
    }
    const { embeds, positions } = await this.prompt(ids, start, pixelValues, ratio, timings);
    const T = positions.length;
    const D = embeds.length / T;
    const depth = L.stage_layers.flat().length;
    const cacheK = Array.from({ length: depth }, () => new Float32Array(this.cacheSize));
    const cacheV = Array.from({ length: depth }, () => new Float32Array(this.cacheSize));
    let hidden = this.f32(embeds, [1, T, D]);
    const positionTensor = this.i64(positions, [1, T]);
    const slot0 = this.i64([0], [1]);
    let out: Outputs | undefined;
    for (let s = 0; s < this.numStages; s++) {  // the prefill: every stage on the whole prompt
      out = await this.runCached(`step${s}`, { hidden_in: hidden, positions: positionTensor, slot: slot0 }, L.stage_layers[s],
        cacheK, cacheV, timings);
      hidden = out.hidden;
    }
    const first = { logits: await this.head(out!, timings), confidence: Number(out!.confidence.data[0]) };
    const firstTokenMs = now() - t0;
    const decoding: Decoding = { policy, kv, nextPosition: positions[T - 1] + 1, nextSlot: T, first, timings };
    const hyp: Hypothesis = { tokens: [], exits: [], confidences: [], logits: [], logprob: 0, cacheK, cacheV, done: false };
    const stopIds = this.manifest.tokenizer.stop_ids;
    const best = beam > 1 ? await this.searchTransformers(hyp, limit, beam, stopIds, decoding)
      : await this.search(hyp, limit, stopIds, decoding);
    const exits = best.exits;
    const generation: Generation = {
      text: this.tokenizer.decode(best.tokens), tokens: best.tokens, exits, confidences: best.confidences,
      logprob: best.logprob, keepRatio: ratio, keptVisualTokens: k, promptIds: ids, firstTokenMs,
      timingsMs: { ...timings, decode: now() - t0 },
      meanExit: exits.length > 0 ? exits.reduce((a, b) => a + b, 0) / exits.length : 0,
    };
    return { generation, logits: best.logits };
  }

  /**
   * The stages for the n-th generated token of `hyp` (updating its caches): its logits, the exit
   * taken and the learned confidence there (spec "Generation", 3). The first token is the prefill's.
   */
  private async word(hyp: Hypothesis, n: number, d: Decoding): Promise<{ logits: Float32Array; exit: number; confidence: number }> {
    const S = this.numStages;
    if (n === 0) return { logits: d.first.logits, exit: S - 1, confidence: d.first.confidence };
    const L = this.manifest.layout;
    const tokenFeeds = { positions: this.i64([d.nextPosition + n - 1], [1, 1]), slot: this.i64([d.nextSlot + n - 1], [1]) };
    const everyExit = LOGIT_POLICIES.includes(d.policy.kind);
    const state: ExitState = { answers: [], confidences: [], maxProbabilities: [], elapsedMs: 0 };
    let hidden = (await this.run("embed", { ids: this.i64([hyp.tokens[hyp.tokens.length - 1]], [1, 1]) }, d.timings)).embeds;
    let logits: Float32Array | undefined;
    let chosen = S - 1;
    for (let s = 0; s < S; s++) {
      const out = await this.runCached(`step${s}`, { hidden_in: hidden, ...tokenFeeds }, L.stage_layers[s], hyp.cacheK, hyp.cacheV,
        d.timings);
      hidden = out.hidden;
      if (logits === undefined) {  // still choosing
        const stageLogits = everyExit ? await this.head(out, d.timings) : undefined;
        state.answers.push(stageLogits ? argmax(stageLogits) : -1);
        state.confidences.push(Number(out.confidence.data[0]));
        state.maxProbabilities.push(stageLogits ? softmaxMax(stageLogits) : NaN);
        if (shouldStop(d.policy, state, S)) {
          logits = stageLogits ?? await this.head(out, d.timings);
          chosen = s;
          if (d.kv === "copy") break;
        }
      }
    }
    if (d.kv === "copy" && chosen < S - 1) {
      const later = L.stage_layers.slice(chosen + 1).flat();
      await this.runCached(`fill${chosen}`, { hidden_in: hidden, ...tokenFeeds }, later, hyp.cacheK, hyp.cacheV, d.timings);
    }
    return { logits: logits!, exit: chosen, confidence: state.confidences[chosen] };
  }

  /** Greedy search (generate.py search, beam 1): the best next id by double-precision log-softmax, ties to the lower id. */
  private async search(start: Hypothesis, limit: number, stopIds: number[], d: Decoding): Promise<Hypothesis> {
    let hyp = start;
    for (let n = 0; n < limit && !hyp.done; n++) {
      const { logits, exit, confidence } = await this.word(hyp, n, d);
      const logp = logSoftmax64(logits);
      const w = topK(logp, 1)[0];
      hyp = {
        tokens: [...hyp.tokens, w], exits: [...hyp.exits, exit], confidences: [...hyp.confidences, confidence],
        logits: [...hyp.logits, logits], logprob: hyp.logprob + logp[w], cacheK: [...hyp.cacheK], cacheV: [...hyp.cacheV],
        done: stopIds.includes(w),
      };
    }
    return hyp;
  }

  /**
   * Beam search as transformers' generate() (generate.py search_transformers; spec "Generation", 5):
   * per step the top max(2, 1 + distinct stop ids) x beam continuations by summed float32
   * log-probability; a stopping one among the top `beam` is set aside as finished (score over its
   * length), the best `beam` others run on, until no beam can beat the worst finished one.
   */
  private async searchTransformers(start: Hypothesis, limit: number, beam: number, stopIds: number[], d: Decoding): Promise<Hypothesis> {
    const f = Math.fround;
    const keep = Math.max(2, 1 + new Set(stopIds).size) * beam;
    let running: Hypothesis[] = [start];
    let finished: { score: number; hyp: Hypothesis }[] = [];
    for (let n = 0; n < limit; n++) {
      const candidates: { score: number; hyp: Hypothesis; word: number; exit: number; logits: Float32Array; confidence: number }[] = [];
      for (const hyp of running) {
        const { logits, exit, confidence } = await this.word(hyp, n, d);
        const logp = logSoftmax32(logits);
        for (const w of topK(logp, keep)) candidates.push({ score: f(f(hyp.logprob) + logp[w]), hyp, word: w, exit, logits, confidence });
      }
      candidates.sort((a, b) => b.score - a.score);  // stable: ties keep their order
      const next: Hypothesis[] = [];
      candidates.slice(0, keep).forEach((c, rank) => {
        const stops = stopIds.includes(c.word) || n === limit - 1;
        const made: Hypothesis = {
          tokens: [...c.hyp.tokens, c.word], exits: [...c.hyp.exits, c.exit], confidences: [...c.hyp.confidences, c.confidence],
          logits: [...c.hyp.logits, c.logits], logprob: c.score, cacheK: [...c.hyp.cacheK], cacheV: [...c.hyp.cacheV], done: stops,
        };
        if (stops) {
          if (rank < beam) finished.push({ score: c.score / (n + 1), hyp: made });
        } else if (next.length < beam) {
          next.push(made);
        }
      });
      finished = finished.sort((a, b) => b.score - a.score).slice(0, beam);
      running = next;
      if (running.length === 0 || (finished.length === beam && running[0].logprob / (n + 1) <= finished[beam - 1].score)) break;
    }
    if (finished.length === 0) return running[0];
    let best = finished[0];
    for (const e of finished) if (e.score > best.score) best = e;
    return best.hyp;
  }

  /**
   * A grey image under the caption prompt through every graph: two tokens at full depth at the
   * smallest keep ratio, then two at keep 1 that exit at the first exit (the fill graphs);
   * BundleError code `self-check` unless every run returns finite logits.
   */
  async selfCheck(): Promise<void> {
    const S = this.imageSize;
    const grey: ImageInput = { width: S, height: S, channels: 3, data: new Uint8Array(S * S * 3).fill(128) };
    const runs: [number, Policy][] = [
      [Math.min(...this.manifest.layout.keep_ratios), makePolicy({ kind: "full" })],
      [1, makePolicy({ kind: "max_probability", threshold: 0 })],
    ];
    const ids = this.promptIds(this.manifest.tokenizer.caption_prompt);
    const { pixelValues } = this.preprocess(grey);
    for (const [ratio, policy] of runs) {
      let logits: Float32Array[];
      try {
        ({ logits } = await this.decode(ids, pixelValues, { policy, ratio, kv: "copy", beam: 1, limit: 2 }));
      } catch (exc) {
        if (exc instanceof MMEdgeError) throw exc;
        throw new BundleError(`${this.source.name}: the graphs fail on a test prompt (${short(String(exc), 300)}); export the bundle again`,
          { cause: exc, code: "self-check" });
      }
      if (!logits.every((l) => l.every((v) => Number.isFinite(v)))) {
        throw new BundleError(`${this.source.name}: the graphs give non-finite logits on a test prompt; export the bundle again`,
          { code: "self-check" });
      }
    }
  }
}
