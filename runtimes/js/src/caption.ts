/**
 * CaptionEngine: load a captioning bundle (`"kind": "caption"`, docs/bundle-format.md "Captioning
 * bundles") with every loading check of the spec, and caption images with a per-word early exit,
 * greedy or beam search, on onnxruntime-common (onnxruntime-node, -web or -react-native).
 *
 *   import * as ort from "onnxruntime-node";
 *   const engine = await CaptionEngine.load(new NodeDirectorySource("caption-default.mmedge"), { ort });
 *   const c = await engine.caption({ width, height, data });
 *   c.text, c.words, c.exits, c.confidences, c.timingsMs
 *   await engine.caption(image, { onWord: (step) => show(step.word, step.exit) });  // word by word
 *
 * The image is encoded once (`encoder_k{r}`: every decoder layer's cross-attention keys and values);
 * each word then runs the decoder stages (`step{s}_k{r}`, a static key/value cache of max_len
 * positions) until the controller stops it, and a word that stopped early leaves the later layers'
 * keys and values through `fill{s}` (kv "copy") or by running the skipped stages (kv "recompute").
 * The same arithmetic as the Python runtime (mmedge/caption/runtime.py), checked word for word by
 * the golden vectors in tests/vectors/caption/.
 */

import type { InferenceSession, Tensor } from "onnxruntime-common";

import { CAPTION_MANIFEST_SCHEMA } from "./caption-schema.js";
import { argmax, makePolicy, shouldStop, softmaxMax, type ExitState, type Policy } from "./controller.js";
import type { PolicyArg } from "./engine.js";
import { toSource } from "./engine.js";
import { BundleError, ConfigError, MMEdgeError, short } from "./errors.js";
import {
  checkPaths, checkRelease, checkTokenizer, kindSchemaViolations, lazyValidator, MANIFEST_FILE, parseManifest,
  readManifestFile, readTokenizer, rollbackOptionProblems, verifyFiles, type Manifest,
} from "./manifest.js";
import { externalDataLocations, OnnxFormatError } from "./onnx.js";
import { BACKGROUND, preprocessImage, type ImageInput, type Preprocessed } from "./preprocess.js";
import type { VerifyKey } from "./signing.js";
import type { BundleSource } from "./source.js";
import type { WordTokenizer } from "./tokenizer.js";

export const CAPTION_KIND = "caption";
export const KV_MODES = ["copy", "recompute"] as const;
export type KvMode = (typeof KV_MODES)[number];
/** The largest beam the runtimes accept (as the Python runtime). */
export const MAX_BEAM = 16;
/** The key/value cache bound of the consistency check: layers x positions x width. */
export const MAX_CACHE_VALUES = 2 ** 27;
/** Captioning bundles normalise with mean 0.5, std 0.5 and pad with the scenes' background. */
export const CAPTION_MEAN = [0.5, 0.5, 0.5] as const;
export const CAPTION_STD = [0.5, 0.5, 0.5] as const;

// ------------------------------------------------------------------------------------- manifest
export interface CaptionTensorSpec {
  name: string;
  shape: number[];
  dtype: string;
}

export interface CaptionGraph {
  kind: "encoder" | "step" | "fill";
  stage: number | null;
  keep_ratio: number | null;
  layers: number[];
  inputs: CaptionTensorSpec[];
  outputs: CaptionTensorSpec[];
}

export interface CaptionArtifact {
  target: string;
  format: string;
  precision: string;
  runtime: string;
  file?: string;
  external_data?: string;
  stages: Record<string, { file?: string; method?: string; function?: string; outputs?: string[] }>;
  parity?: unknown;
}

export interface CaptionThresholds {
  policy: "confidence" | "max_probability" | "patience" | "latency_budget" | "full";
  confidence: number;
  max_probability: number;
  patience: number;
  keep_ratio: number;
  kv: KvMode;
  calibrated: boolean;
}

export interface CaptionManifest {
  schema_version: 1;
  kind: "caption";
  name: string;
  release?: { name: string; sequence: number };
  weights_sha256?: string;
  model: { config: Record<string, unknown> & { vocab_size: number; image_size: number; patch_size: number } };
  tokenizer: {
    file: string; kind: "word" | "wordpiece"; pad_id: number; unk_id: number; bos_id: number; eos_id: number;
    max_length: number; continuing_subword_prefix?: string; max_input_chars_per_word?: number;
  };
  decoder: { stage_layers: number[][]; num_heads: number; head_dim: number; max_len: number; dim: number };
  keep_ratios: number[];
  graphs: Record<string, CaptionGraph>;
  artifacts: CaptionArtifact[];
  flops: Record<string, { encoder: number; stage: number[]; head: number[]; fill: number[] }>;
  thresholds: CaptionThresholds;
  files: Record<string, { bytes: number; sha256: string }>;
  [key: string]: unknown;
}

/** A keep ratio's tag in graph names, as Python's `f"k{r:g}"` writes it for the ratios bundles use. */
export function ratioTag(ratio: number): string {
  return `k${formatG(ratio)}`;
}

/** Python's `f"{x:g}"` for the plain numbers keep ratios are (6 significant digits, no exponent). */
function formatG(x: number): string {
  if (x === 0) return "0";
  const exp = Math.floor(Math.log10(Math.abs(x)));
  if (exp < -4 || exp >= 6) return x.toExponential(5).replace(/\.?0+e/, "e").replace(/e([+-])(\d)$/, "e$10$2");
  return String(Number(x.toPrecision(6)));
}

const captionValidator = lazyValidator(CAPTION_MANIFEST_SCHEMA);

/** Step 5 for a captioning manifest: violations of the caption schema and their code (`path` or `schema`). */
export function captionSchemaViolations(manifest: unknown): { problems: string[]; code: "schema" | "path" } {
  return kindSchemaViolations(captionValidator(), manifest);
}

const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

/**
 * Step 6 for a captioning manifest (mmedge/caption/manifest.py layout_problems): the decoder layout,
 * model config, graphs (names, inputs and outputs with shapes and dtypes), artifacts, tokenizer ids
 * and FLOPs table agree with one another. Assumes the manifest passed the schema.
 */
export function captionConsistencyProblems(m: CaptionManifest): string[] {
  const p: string[] = [];
  const d = m.decoder, cfg = m.model.config, t = m.tokenizer;
  const layers = d.stage_layers.flat();
  if (!layers.every((l, i) => l === i)) p.push(`decoder.stage_layers ${JSON.stringify(d.stage_layers)} must cover layers 0..n-1 in order`);
  const depth = layers.length, stages = d.stage_layers.length;
  const { num_heads: H, head_dim: hd, dim: D, max_len: P } = d;
  if (H * hd !== D) p.push(`decoder.num_heads ${H} x head_dim ${hd} = ${H * hd}, not decoder.dim ${D}`);
  for (const [key, want] of [["decoder_depth", depth], ["num_heads", H], ["dim", D], ["max_len", P]] as const) {
    if (cfg[key] !== want) p.push(`model.config.${key} ${String(cfg[key])} differs from the decoder's ${want}`);
  }
  if (depth * P * D > MAX_CACHE_VALUES) p.push(`the key/value cache of ${depth} layers x ${P} positions x ${D} is over ${MAX_CACHE_VALUES} values`);
  const ratios = m.keep_ratios;
  if (new Set(ratios).size !== ratios.length) p.push(`keep_ratios repeat a ratio: ${JSON.stringify(ratios)}`);
  if (!ratios.includes(m.thresholds.keep_ratio)) p.push(`thresholds.keep_ratio ${m.thresholds.keep_ratio} is not an exported keep ratio`);
  if (t.max_length !== P) p.push("tokenizer.max_length must equal decoder.max_len");
  const V = cfg.vocab_size;
  const ids = [t.pad_id, t.unk_id, t.bos_id, t.eos_id];
  if (new Set(ids).size !== 4) p.push(`tokenizer pad/unk/bos/eos ids ${JSON.stringify(ids)} must be four different ids`);
  if (ids.some((i) => i >= V)) p.push(`tokenizer ids ${JSON.stringify(ids)} must be below model.config.vocab_size ${V}`);
  if (p.length > 0) return p;
  p.push(...graphProblems(m));
  const names = Object.keys(m.graphs).sort();
  for (const a of m.artifacts) {
    const kind = `artifact ${a.runtime}/${a.format}/${a.precision}`;
    if (!same(Object.keys(a.stages).sort(), names)) p.push(`${kind} does not hold every graph`);
    if (a.runtime === "executorch") {
      for (const [n, e] of Object.entries(a.stages)) {
        if (m.graphs[n] && !same(e.outputs, m.graphs[n].outputs.map((o) => o.name))) {
          p.push(`${kind} stage ${n} outputs ${JSON.stringify(e.outputs)} differ from the graph's`);
        }
      }
    }
  }
  const want = ratios.map(formatG).sort();
  if (!same(Object.keys(m.flops).sort(), want)) p.push(`flops must give keep ratios ${JSON.stringify(want)}`);
  for (const [r, f] of Object.entries(m.flops)) {
    if ([f.stage, f.head, f.fill].some((x) => x.length !== stages)) p.push(`flops[${r}] must give ${stages} stage, head and fill entries`);
  }
  return p.slice(0, 50);
}

type Spec = [string, number[], string];

function graphProblems(m: CaptionManifest): string[] {
  const d = m.decoder, cfg = m.model.config;
  const { num_heads: H, head_dim: hd, dim: D, max_len: P } = d;
  const V = cfg.vocab_size, S = cfg.image_size;
  const L = d.stage_layers.flat().length, stages = d.stage_layers.length;
  const patches = Math.floor(S / cfg.patch_size) ** 2;
  const wantNames = new Set<string>();
  for (let s = 0; s < stages - 1; s++) wantNames.add(`fill${s}`);
  for (const r of m.keep_ratios) {
    wantNames.add(`encoder_${ratioTag(r)}`);
    for (let s = 0; s < stages; s++) wantNames.add(`step${s}_${ratioTag(r)}`);
  }
  if (!same(Object.keys(m.graphs).sort(), [...wantNames].sort())) {
    return [`graphs ${JSON.stringify(Object.keys(m.graphs).sort().slice(0, 20))} != the layout's ${JSON.stringify([...wantNames].sort().slice(0, 20))}`];
  }
  const cache = (n: number, len: number) => [n, 1, H, len, hd];
  const expected = new Map<string, { kind: string; stage: number | null; ratio: number | null; layers: number[]; inputs: Spec[]; outputs: Spec[] }>();
  const problems: string[] = [];
  for (const r of m.keep_ratios) {
    const enc = m.graphs[`encoder_${ratioTag(r)}`];
    const shape = enc.outputs[0]?.shape ?? [];
    const k = shape.length === 5 ? shape[3] : 0;
    if (!(k >= 1 && k <= patches)) {
      problems.push(`encoder_${ratioTag(r)} keeps ${k} visual tokens; the image has ${patches}`);
      continue;
    }
    expected.set(`encoder_${ratioTag(r)}`, {
      kind: "encoder", stage: null, ratio: r, layers: [], inputs: [["pixel_values", [1, 3, S, S], "float32"]],
      outputs: [["cross_k", cache(L, k), "float32"], ["cross_v", cache(L, k), "float32"]],
    });
    d.stage_layers.forEach((layers, s) => {
      const n = layers.length;
      const first: Spec = s === 0 ? ["token", [1], "int64"] : ["hidden_in", [1, 1, D], "float32"];
      expected.set(`step${s}_${ratioTag(r)}`, {
        kind: "step", stage: s, ratio: r, layers,
        inputs: [first, ["position", [1], "int64"], ["past_k", cache(n, P), "float32"], ["past_v", cache(n, P), "float32"],
          ["cross_k", cache(n, k), "float32"], ["cross_v", cache(n, k), "float32"]],
        outputs: [["hidden", [1, 1, D], "float32"], ["logits", [1, V], "float32"], ["confidence", [1], "float32"],
          ["present_k", cache(n, P), "float32"], ["present_v", cache(n, P), "float32"]],
      });
    });
  }
  for (let s = 0; s < stages - 1; s++) {
    const later = d.stage_layers.slice(s + 1).flat();
    const n = later.length;
    expected.set(`fill${s}`, {
      kind: "fill", stage: s, ratio: null, layers: later,
      inputs: [["hidden_in", [1, 1, D], "float32"], ["position", [1], "int64"], ["past_k", cache(n, P), "float32"],
        ["past_v", cache(n, P), "float32"]],
      outputs: [["present_k", cache(n, P), "float32"], ["present_v", cache(n, P), "float32"]],
    });
  }
  for (const [name, e] of expected) {
    const g = m.graphs[name] as CaptionGraph & Record<string, unknown>;
    const stage = "stage" in g ? g.stage : e.stage;
    const ratio = "keep_ratio" in g ? g.keep_ratio : e.ratio;
    const layers = "layers" in g ? g.layers : e.layers;
    if (g.kind !== e.kind || stage !== e.stage || ratio !== e.ratio || !same(layers, e.layers)) {
      problems.push(`graph ${name} is described as ${g.kind} stage ${String(stage)} keep ratio ${String(ratio)} layers ` +
        `${JSON.stringify(layers)}; the layout says ${e.kind} ${String(e.stage)} ${String(e.ratio)} ${JSON.stringify(e.layers)}`);
    }
    for (const side of ["inputs", "outputs"] as const) {
      const got = g[side].map((x) => [x.name, x.shape, x.dtype]);
      if (!same(got, e[side])) {
        problems.push(`graph ${name} ${side} ${short(JSON.stringify(got), 160)} differ from what decoding uses ${short(JSON.stringify(e[side]), 160)}`);
      }
    }
  }
  return problems;
}

export interface LoadCaptionOptions {
  verifyKey?: VerifyKey;
  minSequence?: number;
  expectName?: string;
  /** Called after steps 1-7: the files whose verified bytes to keep (the tokenizer's are always kept). */
  select?: (manifest: CaptionManifest) => Iterable<string>;
}

export interface LoadedCaptionManifest {
  manifest: CaptionManifest;
  manifestBytes: Uint8Array;
  tokenizer: WordTokenizer;
  files: Map<string, Uint8Array>;
}

/**
 * Every loading check of the spec for a captioning bundle, in order (docs/bundle-format.md,
 * "Captioning bundles", "What a runtime checks"): the manifest file, its signature, strict JSON,
 * version and kind, the caption schema, consistency, the app's rollback rules, paths, every file's
 * size and SHA-256, the tokenizer (with its [BOS] and [EOS] ids). BundleError with its reason code.
 */
export async function loadCaptionManifest(source: BundleSource, options: LoadCaptionOptions = {}): Promise<LoadedCaptionManifest> {
  const { manifestBytes, where } = await readManifestFile(source, options);
  const parsed = parseManifest(manifestBytes, where) as unknown as Record<string, unknown>;
  if (parsed.kind !== CAPTION_KIND) {
    throw new BundleError(`${where} is not a captioning bundle (its kind is ${short(JSON.stringify(parsed.kind) ?? "absent", 40)}); ` +
      "load classifier bundles with Engine.load", { path: MANIFEST_FILE, code: "unsupported" });
  }
  const schema = captionSchemaViolations(parsed);
  if (schema.problems.length > 0) {
    throw new BundleError(`${where} does not match the caption manifest schema (export the bundle again with a matching ` +
      `mmedge):\n  ${schema.problems.slice(0, 10).join("\n  ")}`, { path: MANIFEST_FILE, code: schema.code });
  }
  const m = parsed as unknown as CaptionManifest;
  const problems = captionConsistencyProblems(m);
  if (problems.length > 0) {
    throw new BundleError(`${where} is inconsistent:\n  ${problems.slice(0, 10).join("\n  ")}\nThe manifest was edited or is ` +
      "corrupt: export the bundle again", { path: MANIFEST_FILE, code: "inconsistent" });
  }
  // the classifier loader's steps that read only the fields both kinds share
  const shared = m as unknown as Manifest;
  checkRelease(shared, options, where);
  await checkPaths(source, shared);
  const keep = new Set(options.select ? options.select(m) : []);
  keep.add(m.tokenizer.file);
  const files = await verifyFiles(source, shared, keep);
  const tokenizer = readTokenizer(files.get(m.tokenizer.file)!, shared);
  checkTokenizer(tokenizer, shared);
  const special = { "[BOS]": m.tokenizer.bos_id, "[EOS]": m.tokenizer.eos_id };
  for (const [token, id] of Object.entries(special)) {
    if (tokenizer.vocab.get(token) !== id) {
      throw new BundleError(`the bundle's tokenizer gives ${token} id ${String(tokenizer.vocab.get(token))}, the manifest ` +
        `${id}; export the bundle again`, { path: m.tokenizer.file, code: "tokenizer" });
    }
  }
  return { manifest: m, manifestBytes, tokenizer, files };
}

// ------------------------------------------------------------------------------------- engine
/** What the caption engine needs of an onnxruntime module (onnxruntime-node, -web or -react-native). */
export interface CaptionOrtModule {
  InferenceSession: { create(model: Uint8Array, options?: InferenceSession.SessionOptions): Promise<InferenceSession> };
  Tensor: new (type: "float32" | "int64", data: Float32Array | BigInt64Array, dims: readonly number[]) => Tensor;
}

export interface CaptionEngineOptions {
  ort: CaptionOrtModule;
  /** Artifact precision (default fp32). */
  precision?: "fp32" | "int8";
  /** Default keep ratio (default: the manifest's thresholds.keep_ratio). */
  keepRatio?: number;
  /** Default exit policy (default: the manifest's thresholds). */
  policy?: PolicyArg;
  /** Default cache filling of a word that exits early (default: the manifest's thresholds.kv). */
  kv?: KvMode;
  verifyKey?: VerifyKey;
  minSequence?: number;
  expectName?: string;
  /** Passed to every InferenceSession.create. */
  sessionOptions?: InferenceSession.SessionOptions;
  /** Run a grey image through every graph on load (default true); code `self-check` on a bad output. */
  selfCheck?: boolean;
}

export interface CaptionOptions {
  /** Most generated ids, [EOS] included (1 .. decoder.max_len; default max_len). */
  maxLen?: number;
  /** 1 = greedy (default), up to 16. */
  beam?: number;
  policy?: PolicyArg;
  keepRatio?: number;
  kv?: KvMode;
  /**
   * Called after each generated position with the leading hypothesis (greedy: the caption as it is
   * written, one id more per call, its [EOS] last). A returned promise is awaited before the next
   * position (so that a page can draw the word); a throw or a rejection ends the call with that
   * error. Its time is `timingsMs.onWord` (and part of `total`).
   */
  onWord?: (step: CaptionStep) => void | Promise<void>;
}

/** What `onWord` receives: the leading hypothesis after one generated position. */
export interface CaptionStep {
  /** The position just generated (0-based). */
  position: number;
  /** The hypothesis' newest id, its word (null for [EOS]), the exit it took and its confidence there. */
  token: number;
  word: string | null;
  exit: number;
  confidence: number;
  /** The hypothesis so far: its words before [EOS], and per id its id, exit and confidence. */
  words: string[];
  tokens: number[];
  exits: number[];
  confidences: number[];
  /** True once the hypothesis has ended with [EOS]. */
  done: boolean;
  /** ms since decoding began (the encoder included, earlier onWord calls excluded). */
  elapsedMs: number;
}

export interface CaptionResult {
  /** The words before the first [EOS], joined by single spaces. */
  text: string;
  words: string[];
  /** Generated ids, [EOS] included when reached. */
  tokens: number[];
  /** Exit (0-based stage) per generated id. */
  exits: number[];
  /** Learned confidence at each generated id's exit. */
  confidences: number[];
  /** The hypothesis' score: the sum of its ids' log-softmax (double precision). */
  logprob: number;
  keepRatio: number;
  /** ms: `preprocess`, `encoder`, each graph run (total over the caption, by graph name), `total`. */
  timingsMs: Record<string, number>;
  /** ms per generated position (every hypothesis' decoder graphs at that position). */
  positionMs: number[];
}

interface Hypothesis {
  tokens: number[];
  exits: number[];
  confidences: number[];
  logprob: number;
  cacheK: Float32Array[];
  cacheV: Float32Array[];
  done: boolean;
}

type Outputs = Record<string, Tensor>;
const now = (): number => globalThis.performance.now();

/** An ONNX graph reads external data only from its listed weights file (code `unlisted`; `self-check` when malformed). */
export function checkedExternal(path: string, bytes: Uint8Array, external: string | undefined): void {
  let locations: string[];
  try {
    locations = externalDataLocations(bytes);
  } catch (exc) {
    if (!(exc instanceof OnnxFormatError)) throw exc;
    throw new BundleError(`${path} is not a well-formed ONNX file (${exc.message}); export the bundle again`, { cause: exc, path, code: "self-check" });
  }
  const allowed = external === undefined ? undefined : external.slice(external.lastIndexOf("/") + 1);
  const stray = locations.filter((l) => l !== allowed);
  if (stray.length > 0) {
    throw new BundleError(`${path} reads external data from ${short(JSON.stringify(stray.slice(0, 5)), 200)}, not the listed ` +
      "external_data; a graph may read only its listed weights file: export the bundle again", { path, code: "unlisted" });
  }
}

function checkRatio(value: unknown): number {
  if (typeof value !== "number" || !Number.isFinite(value)) {
    throw new ConfigError(`keepRatio must be a number such as 0.5, got ${typeof value}`, "arguments");
  }
  return value;
}

/** A kv argument: one of KV_MODES (ConfigError otherwise). */
export function checkKv(value: unknown): KvMode {
  if (!(KV_MODES as readonly unknown[]).includes(value)) {
    throw new ConfigError(`kv ${short(JSON.stringify(value) ?? String(value), 40)} unknown; choose one of ${JSON.stringify(KV_MODES)}`, "arguments");
  }
  return value as KvMode;
}

/** The manifest's default policy (a latency_budget there is its confidence threshold: a budget is the app's). */
export function captionThresholdsPolicy(th: CaptionThresholds): Policy {
  const kind = th.policy === "latency_budget" ? "confidence" : th.policy;
  const threshold = kind === "max_probability" ? th.max_probability : th.confidence;
  return makePolicy({ kind, threshold: Math.min(1, threshold), patience: th.patience });
}

export class CaptionEngine {
  readonly kind = "caption";
  readonly manifest: CaptionManifest;
  readonly tokenizer: WordTokenizer;
  readonly source: BundleSource;
  readonly artifact: CaptionArtifact;
  readonly imageSize: number;
  policy: Policy;
  keepRatio: number;
  kv: KvMode;
  private readonly ort: CaptionOrtModule;
  private readonly sessions: Map<string, InferenceSession>;
  private readonly words: Map<number, string>;
  private busy: Promise<unknown> = Promise.resolve();

  private constructor(init: {
    source: BundleSource; manifest: CaptionManifest; tokenizer: WordTokenizer; ort: CaptionOrtModule; artifact: CaptionArtifact;
    sessions: Map<string, InferenceSession>; policy: Policy; keepRatio: number; kv: KvMode;
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
    this.imageSize = init.manifest.model.config.image_size;
    this.words = new Map([...init.tokenizer.vocab].map(([w, i]) => [i, w]));
  }

  /**
   * Open a captioning bundle: every loading check (with `verifyKey`, its signature) before a graph
   * is used, one InferenceSession per graph from the verified bytes, then the self-check.
   */
  static async load(bundle: BundleSource | string | URL, options: CaptionEngineOptions): Promise<CaptionEngine> {
    const problems: string[] = [];
    const ort = options?.ort as Partial<CaptionOrtModule> | undefined;
    if (!ort || typeof ort.InferenceSession?.create !== "function" || typeof ort.Tensor !== "function") {
      problems.push("ort must be the onnxruntime module: import * as ort from \"onnxruntime-node\" (or -web, -react-native)");
    }
    if (options?.precision !== undefined && !["fp32", "int8"].includes(options.precision)) {
      problems.push(`precision ${JSON.stringify(options.precision)} unknown; choose fp32 or int8`);
    }
    let policy: Policy | undefined;
    try {
      if (options?.policy !== undefined) policy = makePolicy(options.policy as never);
      if (options?.kv !== undefined) checkKv(options.kv);
      if (options?.keepRatio !== undefined) checkRatio(options.keepRatio);
    } catch (exc) {
      if (exc instanceof ConfigError) problems.push(...exc.problems);
      else throw exc;
    }
    problems.push(...rollbackOptionProblems(options ?? {}));
    if (problems.length > 0) throw new ConfigError(problems, "arguments");
    const precision = options.precision ?? "fp32";
    const source = toSource(bundle);
    let artifact: CaptionArtifact | undefined;
    const loaded = await loadCaptionManifest(source, {
      verifyKey: options.verifyKey, minSequence: options.minSequence, expectName: options.expectName,
      select: (m) => {
        const ratio = options.keepRatio ?? m.thresholds.keep_ratio;
        if (!m.keep_ratios.includes(ratio)) {
          throw new ConfigError(`keep ratio ${ratio} was not exported; this bundle has ${JSON.stringify(m.keep_ratios)}`, "arguments");
        }
        const candidates = m.artifacts.filter((a) => a.runtime === "onnxruntime" && a.precision === precision);
        artifact = candidates.find((a) => a.format === "onnx") ?? candidates[0];
        if (!artifact) {
          const have = [...new Set(m.artifacts.map((a) => `${a.runtime}/${a.format}/${a.precision}`))].sort();
          throw new BundleError(`the bundle has no onnxruntime ${precision} artifact; it has ${have.join(", ")}`, { code: "unsupported" });
        }
        const paths = Object.values(artifact.stages).map((e) => e.file!);
        return artifact.external_data ? [...paths, artifact.external_data] : paths;
      },
    });
    const { manifest, tokenizer, files } = loaded;
    const chosen = artifact!;
    const extra = { ...(options.sessionOptions?.extra ?? {}) } as Record<string, unknown>;
    extra.session = { disable_quant_qdq: "1", ...((extra.session as Record<string, unknown>) ?? {}) };
    let sessionOptions: InferenceSession.SessionOptions = { ...(options.sessionOptions ?? {}), extra };
    if (chosen.external_data !== undefined) {
      const name = chosen.external_data.slice(chosen.external_data.lastIndexOf("/") + 1);
      sessionOptions = { ...sessionOptions, externalData: [{ path: name, data: files.get(chosen.external_data)! }] };
    }
    const sessions = new Map<string, InferenceSession>();
    try {
      for (const name of Object.keys(manifest.graphs)) {
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
      const engine = new CaptionEngine({
        source, manifest, tokenizer, ort: options.ort, artifact: chosen, sessions,
        policy: policy ?? captionThresholdsPolicy(manifest.thresholds),
        keepRatio: options.keepRatio ?? manifest.thresholds.keep_ratio, kv: options.kv ?? manifest.thresholds.kv,
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
    return this.manifest.decoder.stage_layers.length;
  }

  /** The image as `pixel_values` (spec "Image": pad to a square with the background, bilinear, mean/std 0.5). */
  preprocess(image: ImageInput): Preprocessed {
    return preprocessImage(image, { imageSize: this.imageSize, padColor: BACKGROUND, mean: CAPTION_MEAN, std: CAPTION_STD });
  }

  private async run(name: string, feeds: Record<string, Tensor>, timings: Record<string, number>): Promise<Outputs> {
    const session = this.sessions.get(name);
    if (!session) throw new ConfigError(`graph ${name} is not open (disposed?)`, "arguments");
    const t0 = now();
    const out = (await session.run(feeds)) as Outputs;
    timings[name] = (timings[name] ?? 0) + (now() - t0);
    return out;
  }

  private f32(data: Float32Array, dims: readonly number[]): Tensor {
    return new this.ort.Tensor("float32", data, dims);
  }

  private i64(value: number): Tensor {
    return new this.ort.Tensor("int64", BigInt64Array.of(BigInt(value)), [1]);
  }

  private get cacheSize(): number {
    const d = this.manifest.decoder;
    return d.num_heads * d.max_len * d.head_dim;
  }

  private stack(arrays: Float32Array[]): Tensor {
    const d = this.manifest.decoder;
    const out = new Float32Array(arrays.length * this.cacheSize);
    arrays.forEach((a, j) => out.set(a, j * this.cacheSize));
    return this.f32(out, [arrays.length, 1, d.num_heads, d.max_len, d.head_dim]);
  }

  /** The per-layer caches of a present_k / present_v output (views, not copies). */
  private unstack(tensor: Tensor, n: number): Float32Array[] {
    const data = tensor.data as Float32Array;
    return Array.from({ length: n }, (_, j) => data.subarray(j * this.cacheSize, (j + 1) * this.cacheSize));
  }

  /** Encoder outputs: cross_k, cross_v (L, 1, H, k, hd) as float32 arrays with their dims. */
  async encode(pixelValues: Float32Array, keepRatio?: number, timings: Record<string, number> = {}):
    Promise<{ crossK: Float32Array; crossV: Float32Array; dims: number[] }> {
    const tag = ratioTag(keepRatio === undefined ? this.keepRatio : checkRatio(keepRatio));
    const S = this.imageSize;
    const out = await this.run(`encoder_${tag}`, { pixel_values: this.f32(pixelValues, [1, 3, S, S]) }, timings);
    return { crossK: out.cross_k.data as Float32Array, crossV: out.cross_v.data as Float32Array, dims: [...out.cross_k.dims] };
  }

  /** Captions one image (see captionPixels). */
  async caption(image: ImageInput, options: CaptionOptions = {}): Promise<CaptionResult> {
    const t0 = now();
    const { pixelValues } = this.preprocess(image);
    const preprocessMs = now() - t0;
    const result = await this.captionPixels(pixelValues, options);
    result.timingsMs = { preprocess: preprocessMs, ...result.timingsMs, total: now() - t0 };
    return result;
  }

  /**
   * Captions prepared `pixel_values` (float32 [1, 3, S, S]): the encoder once, then per position the
   * decoder stages of every live hypothesis until the controller stops each word (spec "Captioning
   * bundles", "Decoding"). Calls are serialised (a session may not be re-entrant).
   */
  async captionPixels(pixelValues: Float32Array, options: CaptionOptions = {}): Promise<CaptionResult> {
    const run = this.busy.then(() => this.decode(pixelValues, options));
    this.busy = run.catch(() => undefined);
    return run;
  }

  private checkOptions(options: CaptionOptions): { policy: Policy; ratio: number; kv: KvMode; beam: number; limit: number } {
    const problems: string[] = [];
    const P = this.manifest.decoder.max_len;
    let policy = this.policy, ratio = this.keepRatio, kv = this.kv;
    const beam = options.beam ?? 1;
    const limit = options.maxLen ?? P;
    try {
      if (options.policy !== undefined) policy = makePolicy(options.policy as never);
    } catch (exc) {
      if (exc instanceof ConfigError) problems.push(...exc.problems);
      else throw exc;
    }
    try {
      if (options.keepRatio !== undefined) ratio = checkRatio(options.keepRatio);
      if (options.kv !== undefined) kv = checkKv(options.kv);
    } catch (exc) {
      if (exc instanceof ConfigError) problems.push(...exc.problems);
      else throw exc;
    }
    if (!this.manifest.keep_ratios.includes(ratio)) {
      problems.push(`keep ratio ${ratio} was not exported; this bundle has ${JSON.stringify(this.manifest.keep_ratios)}`);
    }
    if (!Number.isInteger(beam) || beam < 1 || beam > MAX_BEAM) problems.push(`beam ${String(beam)} must be an integer from 1 to ${MAX_BEAM}`);
    if (!Number.isInteger(limit) || limit < 1 || limit > P) problems.push(`maxLen ${String(limit)} must be an integer from 1 to the model's ${P}`);
    if (options.onWord !== undefined && typeof options.onWord !== "function") problems.push(`onWord must be a function, got ${typeof options.onWord}`);
    if (problems.length > 0) throw new ConfigError(problems, "arguments");
    return { policy, ratio, kv, beam, limit };
  }

  private async decode(pixelValues: Float32Array, options: CaptionOptions): Promise<CaptionResult> {
    const { policy, ratio, kv, beam, limit } = this.checkOptions(options);
    const d = this.manifest.decoder;
    const { bos_id: bos, eos_id: eos } = this.manifest.tokenizer;
    const tag = ratioTag(ratio);
    const timings: Record<string, number> = {};
    const t0 = now();
    const enc = await this.encode(pixelValues, ratio, timings);
    const encoderMs = timings[`encoder_${tag}`];
    // each stage's slice of the cross keys / values, as tensors reused at every position
    const k = enc.dims[3];
    const crossSize = d.num_heads * k * d.head_dim;
    const cross = d.stage_layers.map((layers) => {
      const from = layers[0] * crossSize, to = (layers[layers.length - 1] + 1) * crossSize;
      const dims = [layers.length, 1, d.num_heads, k, d.head_dim];
      return { k: this.f32(enc.crossK.slice(from, to), dims), v: this.f32(enc.crossV.slice(from, to), dims) };
    });
    const depth = d.stage_layers.flat().length;
    const fresh = () => Array.from({ length: depth }, () => new Float32Array(this.cacheSize));
    let beams: Hypothesis[] = [{ tokens: [], exits: [], confidences: [], logprob: 0, cacheK: fresh(), cacheV: fresh(), done: false }];
    const positionMs: number[] = [];
    let callbackMs = 0;
    const S = this.numStages;
    for (let pos = 0; pos < limit; pos++) {
      const tPos = now();
      const candidates: { score: number; hyp: Hypothesis; word?: number; exit?: number; confidence?: number }[] = [];
      for (const hyp of beams) {
        if (hyp.done) {
          candidates.push({ score: hyp.logprob, hyp });
          continue;
        }
        // ---- one word: the stages in order, the controller after each (spec: "Decoding one word")
        const position = this.i64(pos);
        const state: ExitState = { answers: [], confidences: [], maxProbabilities: [], elapsedMs: 0 };
        let hidden: Tensor | undefined;
        let logits: Float32Array | undefined;
        let chosen = S - 1;
        for (let s = 0; s < S; s++) {
          const layers = d.stage_layers[s];
          const feeds: Record<string, Tensor> = {
            position, past_k: this.stack(layers.map((i) => hyp.cacheK[i])), past_v: this.stack(layers.map((i) => hyp.cacheV[i])),
            cross_k: cross[s].k, cross_v: cross[s].v,
          };
          if (s === 0) feeds.token = this.i64(hyp.tokens.length > 0 ? hyp.tokens[hyp.tokens.length - 1] : bos);
          else feeds.hidden_in = hidden!;
          const out = await this.run(`step${s}_${tag}`, feeds, timings);
          const pk = this.unstack(out.present_k, layers.length), pv = this.unstack(out.present_v, layers.length);
          layers.forEach((i, j) => {
            hyp.cacheK[i] = pk[j];
            hyp.cacheV[i] = pv[j];
          });
          hidden = out.hidden;
          if (logits === undefined) {
            const stageLogits = out.logits.data as Float32Array;
            state.answers.push(argmax(stageLogits));
            state.confidences.push(Number(out.confidence.data[0]));
            state.maxProbabilities.push(softmaxMax(stageLogits));
            // no stage time is passed: a latency_budget policy stops on its confidence threshold only
            if (shouldStop(policy, state, S)) {
              logits = stageLogits;
              chosen = s;
              if (kv === "copy") break;
            }
          }
        }
        if (kv === "copy" && chosen < S - 1) {
          const later = d.stage_layers.slice(chosen + 1).flat();
          const out = await this.run(`fill${chosen}`, {
            hidden_in: hidden!, position, past_k: this.stack(later.map((i) => hyp.cacheK[i])),
            past_v: this.stack(later.map((i) => hyp.cacheV[i])),
          }, timings);
          const pk = this.unstack(out.present_k, later.length), pv = this.unstack(out.present_v, later.length);
          later.forEach((i, j) => {
            hyp.cacheK[i] = pk[j];
            hyp.cacheV[i] = pv[j];
          });
        }
        // ---- its candidates: the `beam` best next ids by log-softmax (double), ties to the lower id
        const logp = logSoftmax(logits!);
        const order = Array.from(logp.keys()).sort((a, b) => (logp[b] - logp[a]) || (a - b)).slice(0, beam);
        const confidence = state.confidences[chosen];
        for (const w of order) candidates.push({ score: hyp.logprob + logp[w], hyp, word: w, exit: chosen, confidence });
      }
      // stable sort by score, best first: ties keep the order hypotheses and their ids were listed in
      candidates.sort((a, b) => b.score - a.score);
      beams = candidates.slice(0, beam).map((c) => c.word === undefined ? c.hyp : {
        tokens: [...c.hyp.tokens, c.word], exits: [...c.hyp.exits, c.exit!], confidences: [...c.hyp.confidences, c.confidence!],
        logprob: c.score, cacheK: [...c.hyp.cacheK], cacheV: [...c.hyp.cacheV], done: c.word === eos,
      });
      positionMs.push(now() - tPos);
      if (options.onWord) callbackMs += await this.report(options.onWord, beams[0], pos, now() - t0 - callbackMs);
      if (beams.every((h) => h.done)) break;
    }
    let best = beams[0];
    if (beam > 1) {  // the best length-normalised score; the first on ties
      const norm = (h: Hypothesis) => h.logprob / Math.max(1, h.tokens.length);
      for (const h of beams) if (norm(h) > norm(best)) best = h;
    }
    const text = this.wordsOf(best.tokens).join(" ");
    const callback: Record<string, number> = options.onWord ? { onWord: callbackMs } : {};
    return {
      text, words: text.split(/\s+/).filter((w) => w.length > 0), tokens: best.tokens, exits: best.exits,
      confidences: best.confidences, logprob: best.logprob, keepRatio: ratio,
      timingsMs: { encoder: encoderMs, ...timings, ...callback, total: now() - t0 }, positionMs,
    };
  }

  /** The words of generated ids, up to the first [EOS]. */
  private wordsOf(tokens: number[]): string[] {
    const eos = this.manifest.tokenizer.eos_id;
    const end = tokens.indexOf(eos);
    return (end < 0 ? tokens : tokens.slice(0, end)).map((id) => this.words.get(id) ?? "[UNK]");
  }

  /** Calls onWord with a hypothesis after position `pos` (awaiting a returned promise); returns the ms it took. */
  private async report(onWord: NonNullable<CaptionOptions["onWord"]>, hyp: Hypothesis, pos: number, elapsedMs: number): Promise<number> {
    const t0 = now();
    const last = hyp.tokens.length - 1;
    const token = hyp.tokens[last];
    const step: CaptionStep = {
      position: pos, token, word: token === this.manifest.tokenizer.eos_id ? null : this.words.get(token) ?? "[UNK]",
      exit: hyp.exits[last], confidence: hyp.confidences[last], words: this.wordsOf(hyp.tokens),
      tokens: [...hyp.tokens], exits: [...hyp.exits], confidences: [...hyp.confidences], done: hyp.done, elapsedMs,
    };
    const pending = onWord(step);
    if (pending && typeof (pending as Promise<void>).then === "function") await pending;
    return now() - t0;
  }

  /**
   * A grey image through every encoder, every step graph (position 0, [BOS], empty caches) and every
   * fill graph: BundleError code `self-check` unless each output has its declared shape and is finite.
   */
  async selfCheck(): Promise<void> {
    const d = this.manifest.decoder;
    const S = this.imageSize;
    const { pixelValues } = this.preprocess({ width: S, height: S, channels: 3, data: new Uint8Array(S * S * 3).fill(128) });
    const fail = (what: string, exc?: unknown) =>
      new BundleError(`${this.source.name}: ${what}; export the bundle again`, { cause: exc, code: "self-check" });
    const timings: Record<string, number> = {};
    const run = async (name: string, feeds: Record<string, Tensor>): Promise<Outputs> => {
      let out: Outputs;
      try {
        out = await this.run(name, feeds, timings);
      } catch (exc) {
        if (exc instanceof MMEdgeError) throw exc;
        throw fail(`graph ${name} fails on a test query (${short(String(exc), 300)})`, exc);
      }
      for (const spec of this.manifest.graphs[name].outputs) {
        const t = out[spec.name];
        if (!t || t.dims.length !== spec.shape.length || !t.dims.every((x, i) => x === spec.shape[i])) {
          throw fail(`graph ${name} output ${spec.name} has shape ${JSON.stringify(t ? t.dims : null)}, the manifest says ${JSON.stringify(spec.shape)}`);
        }
        if (t.type === "float32" && !(t.data as Float32Array).every((v) => Number.isFinite(v))) {
          throw fail(`graph ${name} output ${spec.name} is not finite on a test query (the weights are corrupt)`);
        }
      }
      return out;
    };
    const zeros = (n: number) => this.stack(Array.from({ length: n }, () => new Float32Array(this.cacheSize)));
    const position = this.i64(0);
    const hidden: Tensor[] = [];
    for (const ratio of this.manifest.keep_ratios) {
      const tag = ratioTag(ratio);
      const enc = await run(`encoder_${tag}`, { pixel_values: this.f32(pixelValues, [1, 3, S, S]) });
      const k = enc.cross_k.dims[3];
      const size = d.num_heads * k * d.head_dim;
      let out: Outputs | undefined;
      for (let s = 0; s < d.stage_layers.length; s++) {
        const layers = d.stage_layers[s];
        const dims = [layers.length, 1, d.num_heads, k, d.head_dim];
        const from = layers[0] * size, to = (layers[layers.length - 1] + 1) * size;
        const feeds: Record<string, Tensor> = {
          position, past_k: zeros(layers.length), past_v: zeros(layers.length),
          cross_k: this.f32((enc.cross_k.data as Float32Array).slice(from, to), dims),
          cross_v: this.f32((enc.cross_v.data as Float32Array).slice(from, to), dims),
        };
        if (s === 0) feeds.token = this.i64(this.manifest.tokenizer.bos_id);
        else feeds.hidden_in = out!.hidden;
        out = await run(`step${s}_${tag}`, feeds);
        if (ratio === this.manifest.keep_ratios[0]) hidden.push(out.hidden);
      }
    }
    for (let s = 0; s < d.stage_layers.length - 1; s++) {
      const n = d.stage_layers.slice(s + 1).flat().length;
      await run(`fill${s}`, { hidden_in: hidden[s], position, past_k: zeros(n), past_v: zeros(n) });
    }
  }
}

/** log-softmax in double precision: (z_i - max z) - log(sum_j exp(z_j - max z)). */
export function logSoftmax(logits: ArrayLike<number>): Float64Array {
  let top = -Infinity;
  for (let i = 0; i < logits.length; i++) top = Math.max(top, logits[i]);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i] - top);
  const lse = Math.log(sum);
  const out = new Float64Array(logits.length);
  for (let i = 0; i < logits.length; i++) out[i] = logits[i] - top - lse;
  return out;
}

