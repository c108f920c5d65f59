/**
 * Engine: load a bundle (every check of the spec), preprocess, run the stages with ONNX Runtime
 * and let the controller stop early.
 *
 *   import * as ort from "onnxruntime-node";   // or onnxruntime-web / onnxruntime-react-native
 *   const engine = await Engine.load(new NodeDirectorySource("vqa-default-onnx.mmedge"), { ort });
 *   const p = await engine.predict({ width, height, data }, "what color is the circle ?");
 *   p.answer, p.confidence, p.exitIndex, p.keptVisualTokens, p.timingsMs
 *
 *   // an adapted NLVR2 bundle (preprocessing.num_images 2): a text and two images, left and right
 *   await nlvr2.predict([left, right], "the left image has two dogs");
 *   // an adapted retrieval bundle (head "match-score"): the match probability sigmoid(s)
 *   (await retrieval.predict(image, "a dog on a sofa")).matchScore;
 *
 * The app passes its own `ort` module; this package only uses its API types.
 */

import type { InferenceSession, Tensor } from "onnxruntime-common";

import {
  argmax, decideOffline, makePolicy, policyFromThresholds, shouldStop, softmaxMax,
  type ExitState, type Policy, type PolicyInit, type PolicyKind,
} from "./controller.js";
import { BundleError, ConfigError, ImageCountError, MMEdgeError, short } from "./errors.js";
import {
  loadManifest, MATCH_SCORE, numImages, rollbackOptionProblems, type Artifact, type InGraphEntry, type Manifest,
} from "./manifest.js";
import { externalDataLocations, OnnxFormatError } from "./onnx.js";
import { ADAPTED_RESIZE, BACKGROUND, preprocessImage, preprocessStretched, type ImageInput } from "./preprocess.js";
import type { VerifyKey } from "./signing.js";
import { FetchSource, NodeDirectorySource, type BundleSource } from "./source.js";
import type { WordTokenizer } from "./tokenizer.js";

/** What the engine needs of an onnxruntime module (onnxruntime-node, -web or -react-native). */
export interface OrtModule {
  InferenceSession: {
    create(model: Uint8Array, options?: InferenceSession.SessionOptions): Promise<InferenceSession>;
  };
  Tensor: new (type: "float32" | "int32", data: Float32Array | Int32Array, dims: readonly number[]) => Tensor;
}

export type Mode = "staged" | "in-graph";
export type PolicyArg = Policy | PolicyInit | PolicyKind;

export interface EngineOptions {
  /** The app's onnxruntime module. */
  ort: OrtModule;
  /** Artifact precision (default fp32). */
  precision?: "fp32" | "int8";
  /** ONNX Runtime file format: "onnx" (preferred by default) or "ort" (ORT format). */
  format?: "onnx" | "ort";
  /** Default keep ratio (default: the manifest's thresholds.keep_ratio). */
  keepRatio?: number;
  /** Default exit policy (default: the manifest's thresholds). */
  policy?: PolicyArg;
  /** The app's Ed25519 public key (PEM): the bundle must be signed by it. */
  verifyKey?: VerifyKey;
  /** Passed to every InferenceSession.create. */
  sessionOptions?: InferenceSession.SessionOptions;
  /** "staged" (default): one session per stage, the controller in JavaScript; "in-graph": one graph per keep ratio (confidence policy only). */
  mode?: Mode;
  /**
   * Run one query (a grey image) through every stage on load and refuse the bundle (code
   * `self-check`) unless every output has its declared shape and only finite values (default true).
   */
  selfCheck?: boolean;
  /**
   * Rollback protection: the lowest `release.sequence` to accept. Store the highest sequence you
   * have accepted (`engine.manifest.release.sequence`) and pass it next time; an older bundle, or one
   * without a `release`, is refused (BundleError code `rollback`).
   */
  minSequence?: number;
  /** The `release.name` the bundle must carry (code `rollback` otherwise, or when it has none). */
  expectName?: string;
  /** Receives warnings (a text truncated to max_length); default console.warn. */
  onWarning?: (message: string) => void;
}

export interface PredictOptions {
  policy?: PolicyArg;
  keepRatio?: number;
}

/**
 * A query's image: one image, or for a two-image bundle (NLVR2, `preprocessing.num_images` 2) an array
 * of the two, `[left, right]`. A one-image bundle also takes an array of one; any other count is an
 * ImageCountError.
 */
export type QueryImages = ImageInput | readonly ImageInput[];

export interface Prediction {
  answer: string;
  answerIndex: number;
  /** Learned confidence at the exit taken. */
  confidence: number;
  /** Top softmax probability at the exit taken. */
  maxProbability: number;
  /** 0-based exit taken. */
  exitIndex: number;
  /** The layer after which it exits. */
  exitLayer: number;
  /**
   * Row-major patch indices the prefilter kept, sorted ascending; two images: both images' in one list,
   * image i's patch j numbered i * N + j (N patches per image).
   */
  keptVisualTokens: number[];
  keepRatio: number;
  /** preprocess, each stage run (or "in_graph"), total. */
  timingsMs: Record<string, number>;
  /**
   * A match-score bundle's (`head` "match-score", image-text retrieval) match probability at the exit
   * taken: sigmoid(s) of its logits [0, s], the softmax probability of "yes" (the answer is "yes" when it
   * exceeds 0.5). Absent for other bundles.
   */
  matchScore?: number;
}

/** Every exit's outputs for one query (full depth). */
export interface AllExits {
  answers: number[];
  confidences: number[];
  maxProbabilities: number[];
  logits: Float32Array[];
  /**
   * kept_index as the model gives it (score order); two images: image 0's then image 1's, image i's
   * patch j numbered i * N + j.
   */
  keptIndex: number[];
  /** The same, sorted ascending. */
  keptVisualTokens: number[];
  stageMs: number[];
  /** A match-score bundle's match probability sigmoid(s) at each exit (absent for other bundles). */
  matchScores?: number[];
}

/** Stage-0 inputs and what they were made from. */
export interface Inputs {
  /** float32 [1, 3, S, S]; two images: [1, 2, 3, S, S] (left, then right). */
  pixelValues: Float32Array;
  inputIds: Int32Array;
  textMask: Int32Array;
  /** The resized 8-bit RGB image (S x S, row-major RGB); two images: both, one after the other. */
  resized: Uint8Array;
  /** Each image's resized 8-bit RGB bytes, in order (views into `resized`). */
  resizedImages: Uint8Array[];
  tokens: string[];
  truncated: boolean;
}

type Outputs = Record<string, Tensor>;

const now = (): number => globalThis.performance.now();
const STAGE_TIMES = 64;

function checkRatio(value: unknown): number {
  if (typeof value !== "number" || !Number.isFinite(value)) {
    throw new ConfigError(`keepRatio must be a number such as 0.5, got ${typeof value}`, "arguments");
  }
  return value;
}

function policyArg(value: PolicyArg): Policy {
  return makePolicy(value as PolicyInit);
}

/**
 * The smallest float32 >= t. The in-graph file compares float32 confidence >= float32 threshold;
 * the staged controller compares in double. Rounding the threshold up (not to nearest) makes the
 * two agree on every float32 confidence (with 0.9 rounded to nearest, a confidence of exactly
 * float32(0.9) = 0.89999998 would stop in-graph but not staged).
 */
export function float32AtLeast(t: number): number {
  const f = Math.fround(t);
  if (f >= t || !Number.isFinite(f)) return f;
  const box = new Float32Array([f]);
  const bits = new Int32Array(box.buffer);
  bits[0] += f > 0 ? 1 : f < 0 ? -1 : 0;
  if (f === 0) box[0] = 1.401298464324817e-45;
  return box[0];
}

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/** "NaN", "Infinity" or "-Infinity" for the first such value of a floating-point tensor. */
function firstNonFinite(tensor: Tensor): string | undefined {
  if (tensor.type !== "float32" && tensor.type !== "float64") return undefined;
  const data = tensor.data as Float32Array | Float64Array;
  for (let i = 0; i < data.length; i++) {
    const v = data[i];
    if (!Number.isFinite(v)) return String(v);
  }
  return undefined;
}

function toNumbers(data: Tensor["data"]): number[] {
  return Array.from(data as ArrayLike<number | bigint>, (v) => Number(v));
}

/**
 * A match-score head's match probability: softmax(logits)[1] = sigmoid(s) for logits [0, s], in double
 * precision as the Python Engine computes it (1 / (1 + exp(logits[0] - logits[1]))).
 */
export function matchProbability(logits: ArrayLike<number>): number {
  return 1 / (1 + Math.exp(logits[0] - logits[1]));
}

/** A source for a path or URL string; a BundleSource as it is. */
export function toSource(source: BundleSource | string | URL): BundleSource {
  if (typeof source === "string" || source instanceof URL) {
    const text = String(source);
    return /^[a-z][a-z0-9+.-]*:\/\//i.test(text) && !text.startsWith("file:")
      ? new FetchSource(text)
      : new NodeDirectorySource(text.startsWith("file:") ? decodeURIComponent(new URL(text).pathname) : text);
  }
  return source;
}

function checkOptions(options: EngineOptions): string[] {
  const problems: string[] = [];
  if (!options || typeof options !== "object") return ["options with { ort } are needed"];
  const ort = options.ort as Partial<OrtModule> | undefined;
  if (!ort || typeof ort.InferenceSession?.create !== "function" || typeof ort.Tensor !== "function") {
    problems.push("ort must be the onnxruntime module: import * as ort from \"onnxruntime-node\" (or -web, -react-native)");
  }
  if (options.precision !== undefined && !["fp32", "int8"].includes(options.precision)) {
    problems.push(`precision ${JSON.stringify(options.precision)} unknown; choose fp32 or int8`);
  }
  if (options.format !== undefined && !["onnx", "ort"].includes(options.format)) {
    problems.push(`format ${JSON.stringify(options.format)} unknown; choose onnx or ort`);
  }
  if (options.mode !== undefined && !["staged", "in-graph"].includes(options.mode)) {
    problems.push(`mode ${JSON.stringify(options.mode)} unknown; choose staged or in-graph`);
  }
  if (options.mode === "in-graph" && options.precision === "int8") {
    problems.push("the in-graph files are fp32; use mode staged for int8");
  }
  problems.push(...rollbackOptionProblems(options));
  return problems;
}

interface Plan {
  artifact?: Artifact;
  /** Stage (or in-graph keep ratio key) -> file. */
  files: Map<string, string>;
  inGraph: Map<number, InGraphEntry & { path: string }>;
  /** Graph file -> the shared weights file it reads (ONNX external data). */
  weights: Map<string, string>;
}

function dirOf(path: string): string {
  const cut = path.lastIndexOf("/");
  return cut < 0 ? "" : path.slice(0, cut);
}

/** Records that `graph` reads its weights from `external` (which must lie beside it). */
function addWeights(weights: Map<string, string>, graph: string, external: string | undefined): void {
  if (external === undefined) return;
  if (dirOf(external) !== dirOf(graph)) {
    throw new BundleError(`${graph} reads its weights from ${external}, which is not in the same folder; ` +
      "export the bundle again", { path: external, code: "inconsistent" });
  }
  weights.set(graph, external);
}

function planFiles(m: Manifest, options: EngineOptions, mode: Mode): Plan {
  const precision = options.precision ?? "fp32";
  const fmt = options.format;
  const files = new Map<string, string>();
  const inGraph = new Map<number, InGraphEntry & { path: string }>();
  const weights = new Map<string, string>();
  if (mode === "in-graph") {
    const entries = Object.entries(m.in_graph?.by_keep_ratio ?? {});
    if (entries.length === 0) {
      throw new BundleError("this bundle has no in-graph files; load it with mode \"staged\", or export it with " +
        "in_graph in the recipe (`mmedge bundle --in-graph`)", { code: "unsupported" });
    }
    // fp32: file / ort_file / external_data; int8: int8_file / int8_ort_file / int8_external_data
    const prefix = precision === "fp32" ? "" : `${precision}_`;
    for (const [key, entry] of entries) {
      const ratio = typeof entry.keep_ratio === "number" ? entry.keep_ratio : Number(key);
      const path = entry[`${prefix}${fmt === "ort" ? "ort_file" : "file"}`] as string | undefined;
      if (path === undefined) {
        throw new BundleError(`in_graph ${key} has no ${precision}${fmt === "ort" ? " ORT-format" : ""} file; load ` +
          `with mode "staged"${fmt === "ort" ? ' or format "onnx"' : ""}`, { code: "unsupported" });
      }
      if (m.keep_ratios.some((k) => k.keep_ratio === ratio)) {
        inGraph.set(ratio, { ...entry, path });
        if (fmt !== "ort") addWeights(weights, path, entry[`${prefix}external_data`] as string | undefined);
      }
    }
    return { files, inGraph, weights };
  }
  const candidates = m.artifacts.filter((a) => a.runtime === "onnxruntime" && a.precision === precision &&
    (fmt === undefined || a.format === fmt));
  if (candidates.length === 0) {
    const have = [...new Set(m.artifacts.map((a) => `${a.runtime}/${a.format}/${a.precision}`))].sort();
    throw new BundleError(`the bundle has no onnxruntime ${precision} artifact${fmt ? ` in format ${fmt}` : ""}; ` +
      `it has ${have.join(", ")}. Make one with \`mmedge bundle --runtime onnxruntime\``, { code: "unsupported" });
  }
  const artifact = candidates.find((a) => a.format === "onnx") ?? candidates[0];
  for (const group of m.keep_ratios) {
    for (const name of group.stages) {
      files.set(name, artifact.stages[name].file!);
      if (artifact.format === "onnx") addWeights(weights, artifact.stages[name].file!, artifact.external_data);
    }
  }
  return { artifact, files, inGraph, weights };
}

/**
 * An ONNX graph may read only the weights file the manifest lists for it (`external_data`, beside
 * it): onnxruntime looks a location it was not handed in memory up on the filesystem, which would
 * read a file the manifest does not list (or one outside the bundle). BundleError code `unlisted`.
 * ORT-format files hold their own weights and are not walked.
 */
function checkExternalData(path: string, bytes: Uint8Array, external: string | undefined): void {
  let locations: string[];
  try {
    locations = externalDataLocations(bytes);
  } catch (exc) {
    if (!(exc instanceof OnnxFormatError)) throw exc;
    throw new BundleError(`${path} is not a well-formed ONNX file (${exc.message}); export the bundle again`,
      { cause: exc, path, code: "self-check" });
  }
  const allowed = external === undefined ? undefined : external.slice(external.lastIndexOf("/") + 1);
  const stray = locations.filter((location) => location !== allowed);
  if (stray.length > 0) {
    const shown = stray.slice(0, 5).map((l) => JSON.stringify(short(l, 80))).join(", ");
    throw new BundleError(`${path} reads external data from ${shown}, ` + (allowed === undefined
      ? "but the manifest lists no external_data for it"
      : `not the listed external_data ${JSON.stringify(external)}`) + "; a graph may read only its listed weights " +
      "file: export the bundle again", { path, code: "unlisted" });
  }
}

export class Engine {
  readonly manifest: Manifest;
  readonly labels: string[];
  readonly tokenizer: WordTokenizer;
  readonly imageSize: number;
  /** Images per query: 2 for a two-image bundle (NLVR2: predict([left, right], text)), else 1. */
  readonly numImages: number;
  /** How the logits are read: "softmax", or "match-score" (Prediction.matchScore = sigmoid(s)). */
  readonly head: "softmax" | "match-score";
  readonly mode: Mode;
  readonly source: BundleSource;
  /** The artifact in use (staged mode). */
  readonly artifact?: Artifact;
  policy: Policy;
  keepRatio: number;
  private readonly ort: OrtModule;
  private readonly sessions: Map<string, InferenceSession>;
  private readonly inGraph: Map<number, InferenceSession>;
  private readonly groups: Map<number, string[]>;
  private readonly stageTimes = new Map<string, number[]>();
  private readonly onWarning: (message: string) => void;
  /** Patches per image (N), when model.config.patch_size says. */
  private readonly patches?: number;

  private constructor(init: {
    source: BundleSource; manifest: Manifest; tokenizer: WordTokenizer; ort: OrtModule; mode: Mode;
    artifact?: Artifact; sessions: Map<string, InferenceSession>; inGraph: Map<number, InferenceSession>;
    policy: Policy; keepRatio: number; onWarning?: (message: string) => void;
  }) {
    this.source = init.source;
    this.manifest = init.manifest;
    this.labels = init.manifest.labels;
    this.tokenizer = init.tokenizer;
    this.imageSize = init.manifest.preprocessing.image_size;
    this.numImages = numImages(init.manifest);
    this.head = init.manifest.head === MATCH_SCORE ? MATCH_SCORE : "softmax";
    const patch = init.manifest.model.config.patch_size;
    this.patches = typeof patch === "number" && Number.isInteger(patch) && patch > 0
      ? Math.floor(this.imageSize / patch) ** 2 : undefined;
    this.ort = init.ort;
    this.mode = init.mode;
    this.artifact = init.artifact;
    this.sessions = init.sessions;
    this.inGraph = init.inGraph;
    this.policy = init.policy;
    this.keepRatio = init.keepRatio;
    this.groups = new Map(init.manifest.keep_ratios.map((k) => [k.keep_ratio, k.stages]));
    this.onWarning = init.onWarning ?? ((message) => console.warn(message));
  }

  /**
   * Open a bundle: every loading check of the spec (with `verifyKey`, its Ed25519 signature) before
   * any stage file is used, then one InferenceSession per stage from the verified bytes, then a
   * self-check query through every stage.
   */
  static async load(bundle: BundleSource | string | URL, options: EngineOptions): Promise<Engine> {
    const problems = checkOptions(options);
    const mode: Mode = options?.mode ?? "staged";
    let policy: Policy | undefined;
    try {
      if (options?.policy !== undefined) policy = policyArg(options.policy);
    } catch (exc) {
      if (exc instanceof ConfigError) problems.push(...exc.problems);
      else throw exc;
    }
    if (options?.keepRatio !== undefined && (typeof options.keepRatio !== "number" || !Number.isFinite(options.keepRatio))) {
      problems.push(`keepRatio must be a number such as 0.5, got ${typeof options.keepRatio}`);
    }
    if (problems.length > 0) throw new ConfigError(problems, "arguments");
    const source = toSource(bundle);
    let plan: Plan | undefined;
    const loaded = await loadManifest(source, {
      verifyKey: options.verifyKey,
      minSequence: options.minSequence,
      expectName: options.expectName,
      select: (m) => {
        const ratios = m.keep_ratios.map((k) => k.keep_ratio);
        const ratio = options.keepRatio ?? m.thresholds.keep_ratio;
        if (!ratios.includes(ratio)) {
          throw new ConfigError(`keep ratio ${ratio} was not exported; this bundle has ${JSON.stringify(ratios)}`, "arguments");
        }
        plan = planFiles(m, options, mode);
        if (mode === "in-graph" && !plan.inGraph.has(ratio)) {
          throw new BundleError(`this bundle has no in-graph file for keep ratio ${ratio}; it has ` +
            `${JSON.stringify([...plan.inGraph.keys()])}`, { code: "unsupported" });
        }
        return [...plan.files.values(), ...[...plan.inGraph.values()].map((e) => e.path),
          ...new Set(plan.weights.values())];
      },
    });
    const { manifest, tokenizer, files } = loaded;
    const ratio = options.keepRatio ?? manifest.thresholds.keep_ratio;
    policy ??= policyFromThresholds(manifest.thresholds);
    if (mode === "in-graph" && policy.kind !== "confidence") {
      throw new ConfigError(`mode "in-graph" runs the confidence policy only, not ${policy.kind}; ` +
        "use mode \"staged\" for other policies", "arguments");
    }
    const create = async (label: string, path: string): Promise<InferenceSession> => {
      const bytes = files.get(path);
      if (!bytes) {
        throw new BundleError(`${label} names ${path}, which is not a listed file; export the bundle again`,
          { path, code: "unlisted" });
      }
      const external = plan!.weights.get(path);
      if (!path.endsWith(".ort")) checkExternalData(path, bytes, external);
      // int8 bundles store convolution weights int8 behind DequantizeLinear: fold them into fp32 weights
      // once, at load, rather than on every call (onnxruntime keeps DequantizeLinear for QDQ fusion by
      // default; these graphs have none). The caller's own `extra` settings come on top.
      const extra = { ...(options.sessionOptions?.extra ?? {}) } as Record<string, unknown>;
      extra.session = { disable_quant_qdq: "1", ...((extra.session as Record<string, unknown>) ?? {}) };
      let sessionOptions: InferenceSession.SessionOptions = { ...(options.sessionOptions ?? {}), extra };
      if (external !== undefined) {
        const data = files.get(external);
        if (!data) {
          throw new BundleError(`${label} reads ${external}, which is not a listed file; export the bundle again`,
            { path: external, code: "unlisted" });
        }
        // the graphs name the weights file by its file name (it lies beside them)
        const externalData = [{ path: external.slice(external.lastIndexOf("/") + 1), data }];
        sessionOptions = { ...(sessionOptions ?? {}), externalData };
      }
      try {
        return await options.ort.InferenceSession.create(bytes, sessionOptions);
      } catch (exc) {
        throw new BundleError(`${source.name}: onnxruntime cannot open ${path} (${short(String(exc), 300)}); ` +
          "export the bundle again", { cause: exc, path, code: "self-check" });
      }
    };
    const sessions = new Map<string, InferenceSession>();
    const inGraph = new Map<number, InferenceSession>();
    const opened: InferenceSession[] = [];
    try {
      for (const [name, path] of plan!.files) {
        const session = await create(`stage ${name}`, path);
        sessions.set(name, session);
        opened.push(session);
      }
      for (const [r, entry] of plan!.inGraph) {
        const session = await create(`in_graph ${r}`, entry.path);
        inGraph.set(r, session);
        opened.push(session);
      }
      const engine = new Engine({
        source, manifest, tokenizer, ort: options.ort, mode, artifact: plan!.artifact, sessions, inGraph, policy,
        keepRatio: ratio, onWarning: options.onWarning,
      });
      if (options.selfCheck ?? true) await engine.selfCheck();
      return engine;
    } catch (exc) {
      await Promise.allSettled(opened.map((s) => s.release()));
      throw exc;
    }
  }

  /** Releases every ONNX Runtime session. */
  async dispose(): Promise<void> {
    await Promise.allSettled([...this.sessions.values(), ...this.inGraph.values()].map((s) => s.release()));
    this.sessions.clear();
    this.inGraph.clear();
  }

  // ------------------------------------------------------------------ inputs
  /**
   * Stage-0 inputs for an image and a text (spec "Inputs"; an adapted encoder's bundle, resize
   * "pillow-bicubic" / tokenizer kind "bert-wordpiece": spec "Adapted encoders"). A two-image bundle
   * takes `[left, right]`: each image prepared alone, stacked to pixel_values [1, 2, 3, S, S].
   */
  preprocess(image: QueryImages, text: string): Inputs {
    const images = this.images(image);
    const encoding = this.tokenizer.encode(text);
    const p = this.manifest.preprocessing;
    const prepared = images.map((im) => p.resize === ADAPTED_RESIZE
      ? preprocessStretched(im, { imageSize: p.image_size, scale: p.scale, mean: p.mean, std: p.std })
      : preprocessImage(im, {
        imageSize: p.image_size, padColor: p.pad_color ?? BACKGROUND, mean: p.mean, std: p.std, scale: p.scale,
      }));
    let { resized, pixelValues } = prepared[0];
    let resizedImages = [resized];
    if (prepared.length > 1) {
      pixelValues = new Float32Array(prepared.reduce((n, x) => n + x.pixelValues.length, 0));
      resized = new Uint8Array(prepared.reduce((n, x) => n + x.resized.length, 0));
      resizedImages = [];
      let at = 0;
      let atBytes = 0;
      for (const x of prepared) {
        pixelValues.set(x.pixelValues, at);
        resized.set(x.resized, atBytes);
        resizedImages.push(resized.subarray(atBytes, atBytes + x.resized.length));
        at += x.pixelValues.length;
        atBytes += x.resized.length;
      }
    }
    if (encoding.truncated) {
      const room = this.tokenizer.kind === "bert-wordpiece" ? this.tokenizer.maxLength - 2 : this.tokenizer.maxLength;
      this.onWarning(`text has more than the model's ${room} tokens: truncated to the first ${room}`);
    }
    return {
      pixelValues, inputIds: encoding.inputIds, textMask: encoding.textMask, resized, resizedImages,
      tokens: encoding.tokens, truncated: encoding.truncated,
    };
  }

  /**
   * The query's images as an array of `numImages` (one image alone counts as an array of one);
   * ImageCountError for another count, as the Python Engine.
   */
  private images(image: QueryImages): readonly ImageInput[] {
    const images = Array.isArray(image) ? image as readonly ImageInput[] : [image as ImageInput];
    if (images.length !== this.numImages) throw new ImageCountError(this.numImages, images.length, this.source.name);
    return images;
  }

  private feeds(inputs: Inputs): Record<string, Tensor> {
    const S = this.imageSize;
    const L = this.tokenizer.maxLength;
    const pixels = this.numImages === 1 ? [1, 3, S, S] : [1, this.numImages, 3, S, S];
    return {
      pixel_values: new this.ort.Tensor("float32", inputs.pixelValues, pixels),
      input_ids: new this.ort.Tensor("int32", inputs.inputIds, [1, L]),
      text_mask: new this.ort.Tensor("int32", inputs.textMask, [1, L]),
    };
  }

  // ------------------------------------------------------------------ running
  /** The stage names of a keep ratio (default: the engine's). */
  stagesFor(keepRatio?: number): string[] {
    const ratio = keepRatio === undefined ? this.keepRatio : checkRatio(keepRatio);
    const names = this.groups.get(ratio);
    if (!names) {
      throw new ConfigError(`keep ratio ${ratio} was not exported; this bundle has ${JSON.stringify([...this.groups.keys()])}`,
        "arguments");
    }
    return names;
  }

  private async run(stage: string, feeds: Record<string, Tensor>): Promise<{ out: Outputs; ms: number }> {
    const session = this.sessions.get(stage);
    if (!session) throw new ConfigError(`stage ${stage} is not open (the engine runs mode ${this.mode})`, "arguments");
    const t0 = now();
    const out = (await session.run(feeds)) as Outputs;
    const ms = now() - t0;
    let times = this.stageTimes.get(stage);
    if (!times) this.stageTimes.set(stage, (times = []));
    times.push(ms);
    if (times.length > STAGE_TIMES) times.shift();
    return { out, ms };
  }

  /** Median of a stage's recent measured times, undefined before it has run. */
  stageMs(stage: string): number | undefined {
    const times = this.stageTimes.get(stage);
    return times && times.length > 0 ? median(times) : undefined;
  }

  /** The self-check and warm-up query's image(s): uniform grey, value 128. */
  private grey(): QueryImages {
    const S = this.imageSize;
    const grey: ImageInput = { width: S, height: S, channels: 3, data: new Uint8Array(S * S * 3).fill(128) };
    return this.numImages === 1 ? grey : Array.from({ length: this.numImages }, () => grey);
  }

  /**
   * Stage 0's kept_index ([1, k], or [2, k] for two images) as one list in model order; image i's patch
   * j is i * N + j (as the Python Engine numbers them).
   */
  private kept(keptIndex: Tensor): number[] {
    const kept = toNumbers(keptIndex.data);
    const rows = keptIndex.dims.length === 2 ? keptIndex.dims[0] : 1;
    if (rows <= 1 || !this.patches) return kept;
    const k = kept.length / rows;
    return kept.map((v, i) => v + Math.floor(i / k) * this.patches!);
  }

  private matchScore(logits: ArrayLike<number>): number | undefined {
    return this.head === MATCH_SCORE ? matchProbability(logits) : undefined;
  }

  /** Runs every stage a few times so that latency budgets have measured stage times. */
  async warmUp(runs = 5, keepRatio?: number): Promise<void> {
    const names = this.stagesFor(keepRatio);
    const feeds = this.feeds(this.preprocess(this.grey(), "warm up"));
    for (let r = 0; r < runs; r++) await this.allStages(feeds, names);
  }

  private async allStages(feeds: Record<string, Tensor>, names: string[]): Promise<{ outs: Outputs[]; times: number[] }> {
    const outs: Outputs[] = [];
    const times: number[] = [];
    for (let i = 0; i < names.length; i++) {
      const input = i === 0 ? feeds : { hidden_in: outs[i - 1].hidden, attention_mask: outs[0].attention_mask };
      const { out, ms } = await this.run(names[i], input);
      outs.push(out);
      times.push(ms);
    }
    return { outs, times };
  }

  /**
   * One self-check query (a uniform grey image) through every stage of every keep ratio;
   * BundleError (code `self-check`) unless every output has the shape the manifest declares and
   * every floating-point output is finite (weights full of NaN load and hash fine, but answer
   * nonsense), and the prefilter keeps valid token indices.
   */
  async selfCheck(): Promise<void> {
    const feeds = this.feeds(this.preprocess(this.grey(), "check"));
    const patches = this.patches;
    const fail = (what: string, exc?: unknown) =>
      new BundleError(`${this.source.name}: ${what}; export the bundle again`, { cause: exc, code: "self-check" });
    const checkFinite = (where: string, outputs: Outputs) => {
      for (const [name, tensor] of Object.entries(outputs)) {
        const bad = firstNonFinite(tensor);
        if (bad !== undefined) {
          throw fail(`${where} output ${name} holds ${bad} on a test query (the weights are corrupt)`);
        }
      }
    };
    const checkKept = (kept: number[]) => {
      if (patches && kept.some((k) => k < 0 || k >= patches)) {
        throw fail(`the prefilter keeps token indices outside 0..${patches - 1}`);
      }
    };
    const sameShape = (t: Tensor | undefined, shape: number[]) =>
      t !== undefined && t.dims.length === shape.length && t.dims.every((d, i) => d === shape[i]);
    for (const group of this.manifest.keep_ratios) {
      if (this.mode === "in-graph") {
        const session = this.inGraph.get(group.keep_ratio);
        if (!session) continue;
        let out: Outputs;
        try {
          out = (await session.run({ ...feeds, threshold: new this.ort.Tensor("float32", new Float32Array([2]), [1]) })) as Outputs;
        } catch (exc) {
          throw fail(`the in-graph file for keep ratio ${group.keep_ratio} fails on a test query (${short(String(exc), 300)})`, exc);
        }
        const want: Record<string, number[]> = {
          logits: [1, this.labels.length], confidence: [1], exit_index: [1], kept_index: [1, group.kept_tokens],
        };
        for (const [name, shape] of Object.entries(want)) {
          if (!sameShape(out[name], shape)) {
            throw fail(`the in-graph output ${name} has shape ${JSON.stringify(out[name]?.dims ?? null)}, expected ${JSON.stringify(shape)}`);
          }
        }
        checkFinite(`the in-graph file for keep ratio ${group.keep_ratio}:`, out);
        checkKept(toNumbers(out.kept_index.data));
        continue;
      }
      let outs: Outputs[];
      try {
        ({ outs } = await this.allStages(feeds, group.stages));
      } catch (exc) {
        if (exc instanceof MMEdgeError) throw exc;
        throw fail(`the onnxruntime stages fail on a test query (${short(String(exc), 300)})`, exc);
      }
      group.stages.forEach((name, i) => checkFinite(`stage ${name}`, outs[i]));
      group.stages.forEach((name, i) => {
        for (const spec of this.manifest.stages[name].outputs) {
          const got = outs[i][spec.name];
          if (!sameShape(got, spec.shape)) {
            throw fail(`stage ${name} output ${spec.name} has shape ${JSON.stringify(got ? got.dims : null)}, the ` +
              `manifest says ${JSON.stringify(spec.shape)}`);
          }
        }
      });
      checkKept(toNumbers(outs[0].kept_index.data));
    }
  }

  /**
   * Answers one question, stopping at the first exit the policy accepts. `image`: one image, or for a
   * two-image bundle (NLVR2) an array of the two, `[left, right]` (ImageCountError otherwise). A
   * match-score bundle's prediction has `matchScore`.
   */
  async predict(image: QueryImages, text: string, options: PredictOptions = {}): Promise<Prediction> {
    const policy = options.policy === undefined ? this.policy : policyArg(options.policy);
    const ratio = options.keepRatio === undefined ? this.keepRatio : checkRatio(options.keepRatio);
    if (this.mode === "in-graph") return this.predictInGraph(image, text, policy, ratio);
    const names = this.stagesFor(ratio);
    if (policy.kind === "latency_budget" && names.some((n) => this.stageMs(n) === undefined)) {
      await this.warmUp(3, ratio);
    }
    const tStart = now();
    const feeds = this.feeds(this.preprocess(image, text));
    const timings: Record<string, number> = { preprocess: now() - tStart };
    const state: ExitState = { answers: [], confidences: [], maxProbabilities: [], elapsedMs: 0 };
    let first: Outputs | undefined;
    let out: Outputs | undefined;
    let logits: Float32Array | undefined;
    for (let i = 0; i < names.length; i++) {
      const input = i === 0 ? feeds : { hidden_in: out!.hidden, attention_mask: first!.attention_mask };
      const result = await this.run(names[i], input);
      out = result.out;
      first ??= out;
      timings[names[i]] = result.ms;
      state.elapsedMs += result.ms;
      logits = out.logits.data as Float32Array;
      state.answers.push(argmax(logits));
      state.confidences.push(Number(out.confidence.data[0]));
      state.maxProbabilities.push(softmaxMax(logits));
      const next = i + 1 < names.length ? this.stageMs(names[i + 1]) : undefined;
      if (shouldStop(policy, state, names.length, next)) break;
    }
    timings.total = now() - tStart;
    const exitIndex = state.answers.length - 1;
    const answerIndex = state.answers[exitIndex];
    const prediction: Prediction = {
      answer: this.labels[answerIndex], answerIndex, confidence: state.confidences[exitIndex],
      maxProbability: state.maxProbabilities[exitIndex], exitIndex, exitLayer: this.manifest.exit_layers[exitIndex],
      keptVisualTokens: this.kept(first!.kept_index).sort((a, b) => a - b), keepRatio: ratio, timingsMs: timings,
    };
    const match = this.matchScore(logits!);
    if (match !== undefined) prediction.matchScore = match;
    return prediction;
  }

  private async predictInGraph(image: QueryImages, text: string, policy: Policy, ratio: number): Promise<Prediction> {
    if (policy.kind !== "confidence") {
      throw new ConfigError(`mode "in-graph" runs the confidence policy only, not ${policy.kind}; load the engine ` +
        "with mode \"staged\" for other policies", "arguments");
    }
    const session = this.inGraph.get(ratio);
    if (!session) {
      throw new ConfigError(`keep ratio ${ratio} has no in-graph file; this bundle has ${JSON.stringify([...this.inGraph.keys()])}`,
        "arguments");
    }
    const tStart = now();
    const feeds = this.feeds(this.preprocess(image, text));
    const timings: Record<string, number> = { preprocess: now() - tStart };
    const t0 = now();
    const threshold = new this.ort.Tensor("float32", new Float32Array([float32AtLeast(policy.threshold)]), [1]);
    const out = (await session.run({ ...feeds, threshold })) as Outputs;
    timings.in_graph = now() - t0;
    timings.total = now() - tStart;
    const logits = out.logits.data as Float32Array;
    const answerIndex = argmax(logits);
    const exitIndex = Number(out.exit_index.data[0]);
    const prediction: Prediction = {
      answer: this.labels[answerIndex], answerIndex, confidence: Number(out.confidence.data[0]),
      maxProbability: softmaxMax(logits), exitIndex, exitLayer: this.manifest.exit_layers[exitIndex],
      keptVisualTokens: this.kept(out.kept_index).sort((a, b) => a - b), keepRatio: ratio, timingsMs: timings,
    };
    const match = this.matchScore(logits);
    if (match !== undefined) prediction.matchScore = match;
    return prediction;
  }

  /** Full depth, every exit's outputs (calibration, analysis, conformance tests); staged mode only. */
  async allExits(image: QueryImages, text: string, options: { keepRatio?: number } = {}): Promise<AllExits> {
    if (this.mode !== "staged") {
      throw new ConfigError("allExits needs the staged stages; load the engine with mode \"staged\"", "arguments");
    }
    const names = this.stagesFor(options.keepRatio);
    const { outs, times } = await this.allStages(this.feeds(this.preprocess(image, text)), names);
    const logits = outs.map((o) => Float32Array.from(o.logits.data as Float32Array));
    const keptIndex = this.kept(outs[0].kept_index);
    const exits: AllExits = {
      answers: logits.map((l) => argmax(l)),
      confidences: outs.map((o) => Number(o.confidence.data[0])),
      maxProbabilities: logits.map((l) => softmaxMax(l)),
      logits, keptIndex, keptVisualTokens: [...keptIndex].sort((a, b) => a - b), stageMs: times,
    };
    if (this.head === MATCH_SCORE) exits.matchScores = logits.map((l) => matchProbability(l));
    return exits;
  }

  /** The exit a policy takes on full-depth outputs (what `predict` would do, without timing). */
  static decide(policy: PolicyArg, exits: AllExits): number {
    return decideOffline(policyArg(policy), exits.answers, exits.confidences, exits.maxProbabilities, exits.stageMs);
  }

  exitFlops(keepRatio?: number): number[] {
    const ratio = keepRatio === undefined ? this.keepRatio : checkRatio(keepRatio);
    const group = this.manifest.keep_ratios.find((k) => k.keep_ratio === ratio);
    if (!group) throw new ConfigError(`keep ratio ${ratio} was not exported`, "arguments");
    return group.exit_flops;
  }
}
