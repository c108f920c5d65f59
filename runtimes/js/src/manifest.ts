/**
 * manifest.json: the loading checks of docs/bundle-format.md, in its order. A bundle is untrusted
 * input; no file is read before the checks that concern it have passed:
 *
 *  1. manifest.json: a regular file (no link, FIFO, device), at most 8 MiB;
 *  2. its signature, when the app gives a verification key (over exactly those bytes);
 *  3. strict UTF-8 JSON (json.ts: no BOM, duplicate keys, overflowing numbers, lone surrogates),
 *     one object, nested at most 32 levels;
 *  4. schema_version the JSON integer 1 (and a classifier bundle: "caption" loads with caption.ts, "vlm"
 *     with vlm.ts); an
 *     adapted encoder's preparation (resize "pillow-bicubic", tokenizer kind "bert-wordpiece") is
 *     implemented (preprocess.ts preprocessStretched, bert.ts) and checked like any other, and so are
 *     two images per query (preprocessing.num_images 2, NLVR2) and head "match-score" (retrieval), so
 *     nothing of an adapted encoder is refused here;
 *  5. the JSON Schema (draft 2020-12, ajv);
 *  6. consistency (keep ratios, exits, stage inputs/outputs, shapes, artifacts, fixed rules,
 *     modality pruning, two images and the match-score head), then the app's rollback rules
 *     (`minSequence`, `expectName`);
 *  7. paths (relative, normalised, listed; nothing unlisted in the bundle where the source can
 *     list its members);
 *  8. files: each a regular file without links, of the listed size and SHA-256;
 *  9. the tokenizer (strict JSON too) agrees with the manifest (for "bert-wordpiece": every
 *     setting the file gives equals the manifest's).
 *
 * Every refusal is a BundleError with a reason `code` (errors.ts, REASON_CODES).
 */

import * as AjvModule from "ajv/dist/2020.js";
import type { ErrorObject, ValidateFunction } from "ajv";

import { BundleError, ConfigError, listing, short } from "./errors.js";
import { sha256Hex } from "./hash.js";
import { integerToken, MAX_SAFE_JSON_INTEGER, parseStrictJson, StrictJsonError } from "./json.js";
import { MANIFEST_SCHEMA } from "./schema.js";
import { SIGNATURE_FILE, verifyManifestSignature, type VerifyKey } from "./signing.js";
import type { BundleSource } from "./source.js";
import { BERT_WORDPIECE, BertWordPieceTokenizer } from "./bert.js";
import { ADAPTED_RESIZE } from "./preprocess.js";
import { PAD, UNK, WordPieceTokenizer, WordTokenizer } from "./tokenizer.js";

export const SCHEMA_VERSION = 1;
export const MANIFEST_FILE = "manifest.json";
export const MAX_MANIFEST_BYTES = 8 << 20;
export const MAX_DEPTH = 32;
export const MAX_TOKENIZER_BYTES = 64 << 20;
export const MAX_PATH_CHARS = 512;
export const STAGE0_INPUTS = ["pixel_values", "input_ids", "text_mask"] as const;
export const LATER_INPUTS = ["hidden_in", "attention_mask"] as const;
export const STAGE0_OUTPUTS = ["hidden", "logits", "confidence", "attention_mask", "kept_index"] as const;
export const LATER_OUTPUTS = ["hidden", "logits", "confidence"] as const;
/** The rules format version 1 fixes (the manifest repeats them; other values are refused). */
export const FIXED_RULES = {
  scale: 1 / 255,
  mean: [0.5, 0.5, 0.5],
  std: [0.5, 0.5, 0.5],
  pad_color: [118, 118, 124],
  lowercase: true,
  split_regex: "\\w+|[^\\w\\s]+",
} as const;
/** The bundle kinds Engine (classifier bundles) refuses: CaptionEngine and VLMEngine load them (loadEngine picks). */
export const UNSUPPORTED_KINDS = ["caption", "vlm"] as const;
/** `head` "match-score": logits [0, s], softmax(logits)[1] = sigmoid(s) (spec "Two images, and a match score"). */
export const MATCH_SCORE = "match-score";
/** The only labels (and task "match") a match-score bundle may have. */
export const MATCH_LABELS = ["no", "yes"] as const;

// ------------------------------------------------------------------------------------- types
export interface TensorSpec {
  name: string;
  shape: number[];
  dtype: "float32" | "int32";
}

export interface StageEntry {
  stage: number;
  keep_ratio: number;
  layers: number[];
  inputs: TensorSpec[];
  outputs: TensorSpec[];
  flops: number;
}

export interface KeepRatioEntry {
  keep_ratio: number;
  kept_tokens: number;
  seq_len: number;
  stages: string[];
  exit_flops: number[];
}

export interface Artifact {
  target: "onnx" | "executorch" | "coreml" | "torch";
  format: "onnx" | "ort" | "pte" | "mlpackage" | "safetensors";
  precision: "fp32" | "int8";
  runtime: "onnxruntime" | "executorch" | "coreml" | "torch";
  file?: string;
  /** format onnx: the weights file every stage graph reads (ONNX external data), beside the stage files. */
  external_data?: string;
  stages: Record<string, { file?: string; method?: string; function?: string; outputs?: string[] }>;
  [key: string]: unknown;
}

export interface Thresholds {
  source: "default" | "calibrated";
  policy: "confidence" | "max_probability" | "patience" | "latency_budget" | "full";
  confidence: number;
  max_probability: number;
  patience: number;
  keep_ratio: number;
  calibration?: Record<string, unknown>;
}

export interface InGraphEntry {
  file: string;
  ort_file?: string;
  /** The weights file `file` reads (the ORT-format `ort_file` holds its own). */
  external_data?: string;
  /** The same graph quantized as the int8 stages are, its ORT-format file and weights file. */
  int8_file?: string;
  int8_ort_file?: string;
  int8_external_data?: string;
  keep_ratio?: number;
  kept_tokens?: number;
  [key: string]: unknown;
}

export interface Preprocessing {
  image_size: number;
  channel_order: "RGB";
  layout: "NCHW";
  scale: number;
  mean: [number, number, number];
  std: [number, number, number];
  /** "pillow-bilinear" (format 1, or a sentence in older bundles) or "pillow-bicubic" (an adapted encoder's). */
  resize: string;
  /** Format 1 (absent with resize "pillow-bicubic", where transparency goes over the grey [118, 118, 124]). */
  pad_color?: [number, number, number];
  /** With resize "pillow-bicubic": "stretch" (no padding). */
  fit?: "stretch";
  /**
   * With resize "pillow-bicubic": images per query, 1 or 2 (NLVR2: predict([left, right], text), stage 0
   * takes pixel_values [1, 2, 3, S, S]). Absent: 1.
   */
  num_images?: number;
}

export interface TokenizerSpec {
  file: string;
  max_length: number;
  lowercase: boolean;
  /** Kinds word and wordpiece (absent with bert-wordpiece). */
  split_regex?: string;
  pad_id: number;
  unk_id: number;
  /**
   * The tokenizer.json model: "word" (WordLevel, the default when absent), "wordpiece" (WordPiece),
   * or "bert-wordpiece" (BERT's normaliser, pre-tokenizer, WordPiece and template: bert.ts).
   */
  kind?: "word" | "wordpiece" | "bert-wordpiece";
  /** With kind bert-wordpiece: BertNormalizer's switches (strip_accents resolved), the template, ids. */
  strip_accents?: boolean;
  clean_text?: boolean;
  handle_chinese_chars?: boolean;
  template?: string[];
  special_tokens?: string[];
  cls_id?: number;
  sep_id?: number;
  /** With kind "wordpiece": the WordPiece model's continuing_subword_prefix (e.g. "##"). */
  continuing_subword_prefix?: string;
  /** With kind "wordpiece": the WordPiece model's max_input_chars_per_word (e.g. 100). */
  max_input_chars_per_word?: number;
}

/** The optional rollback section: which release this manifest is (covered by the signature). */
export interface Release {
  /** The bundle's release name (1..128 characters of [A-Za-z0-9._-]). */
  name: string;
  /** A number that grows with every release (0..2^53-1; mmedge writes Unix time in milliseconds). */
  sequence: number;
}

export interface ModalityPruning {
  after_stage: number;
  seq_len: number;
  stages: Array<{ name: string; stage: number; layers: number[]; inputs: TensorSpec[]; outputs: TensorSpec[]; flops: number }>;
  exit_flops: Array<{ keep_ratio: number; exit_flops: number[] }>;
  rule: Record<string, unknown>;
}

export interface Manifest {
  schema_version: 1;
  name: string;
  created_utc: string;
  task: "vqa" | "verify" | "match";
  labels: string[];
  model: { config: Record<string, unknown>; parameters: number; source?: string };
  exit_layers: number[];
  preprocessing: Preprocessing;
  tokenizer: TokenizerSpec;
  keep_ratios: KeepRatioEntry[];
  stages: Record<string, StageEntry>;
  thresholds: Thresholds;
  artifacts: Artifact[];
  in_graph?: { inputs: string[]; outputs: string[]; by_keep_ratio: Record<string, InGraphEntry>; check?: unknown };
  modality_pruning?: ModalityPruning;
  release?: Release;
  /**
   * How the logits are read: "softmax" (absent too) or "match-score" (an adapted image-text retrieval
   * model: logits [0, s], Prediction.matchScore = sigmoid(s), the answer "yes" above 0.5).
   */
  head?: "softmax" | "match-score";
  files: Record<string, { sha256: string; bytes: number }>;
  tools: Record<string, string>;
  [key: string]: unknown;
}

const own = (obj: object, key: string): boolean => Object.prototype.hasOwnProperty.call(obj, key);

// ------------------------------------------------------------------------------------- steps 3-4
/**
 * Steps 3 and 4: strict UTF-8 JSON (json.ts) nested at most 32 levels, one object,
 * `schema_version` the JSON integer 1 (a `1.0` is refused: the number is read as written).
 * BundleError code `json` or `schema-version`.
 */
export function parseManifest(data: Uint8Array, where = MANIFEST_FILE): Manifest {
  let parsed: ReturnType<typeof parseStrictJson>;
  try {
    parsed = parseStrictJson(data, { maxDepth: MAX_DEPTH });
  } catch (exc) {
    if (!(exc instanceof StrictJsonError)) throw exc;
    const deep = /nested deeper/.test(exc.message);
    throw new BundleError(deep ? `${where} nests deeper than ${MAX_DEPTH} levels; not an mmedge manifest`
      : `${where} is not valid JSON (${short(exc.message, 160)}); the bundle is corrupt: export it again`,
    { cause: exc, path: MANIFEST_FILE, code: "json" });
  }
  const value = parsed.value;
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new BundleError(`${where} must hold a JSON object`, { path: MANIFEST_FILE, code: "json" });
  }
  const version = (value as Record<string, unknown>).schema_version;
  const raw = parsed.topLevelNumbers.get("schema_version");
  if (version !== SCHEMA_VERSION || raw === undefined || !integerToken(raw)) {
    const shown = raw ?? (version === undefined ? "none" : JSON.stringify(version));
    throw new BundleError(`${where} has schema_version ${short(shown, 40)}; this runtime reads version ` +
      `${SCHEMA_VERSION} (an integer). Re-export the model with a matching mmedge, or upgrade @mmedge/runtime`,
    { path: MANIFEST_FILE, code: "schema-version" });
  }
  return value as Manifest;
}

/**
 * Step 4, continued: a bundle kind Engine implements (BundleError code `unsupported`). A manifest
 * without `kind` is a classifier bundle, the one kind Engine runs; `"kind": "caption"` and `"vlm"`
 * are refused with the engine that loads them (CaptionEngine, VLMEngine; loadEngine picks by kind),
 * any other kind as unknown.
 */
export function checkKind(m: Manifest, where = MANIFEST_FILE): void {
  if (!own(m, "kind")) return;
  const kind = (m as Record<string, unknown>).kind;
  if ((UNSUPPORTED_KINDS as readonly unknown[]).includes(kind)) {
    const engine = kind === "vlm" ? "generative VLM bundles with VLMEngine.load (generate(image, prompt))"
      : "captioning bundles with CaptionEngine.load";
    throw new BundleError(`${where} is a ${String(kind)} bundle ("kind": ${JSON.stringify(kind)}); Engine runs the ` +
      `classifier bundle only (predict(image, text)). Load ${engine} or any kind with loadEngine (as the Python runtime, ` +
      "mmedge.Engine, does), or load a classifier bundle here", { path: MANIFEST_FILE, code: "unsupported" });
  }
  throw new BundleError(`${where} is a bundle of kind ${short(JSON.stringify(kind) ?? String(kind), 40)}, which this ` +
    "runtime does not implement (it reads classifier bundles, which have no \"kind\"); upgrade @mmedge/runtime",
  { path: MANIFEST_FILE, code: "unsupported" });
}

/** Images per query: `preprocessing.num_images` (an adapted encoder's), else 1. */
export function numImages(m: Manifest): number {
  return m.preprocessing.num_images ?? 1;
}

// ------------------------------------------------------------------------------------- step 5
/** A validator of `schema` (JSON Schema draft 2020-12, ajv), compiled on its first use. */
export function lazyValidator(schema: object): () => ValidateFunction {
  let validator: ValidateFunction | undefined;
  return () => {
    if (!validator) {
      const mod = AjvModule as unknown as { default: new (opts: object) => { compile(s: object): ValidateFunction } };
      const Ajv2020 = (typeof mod.default === "function" ? mod.default : (mod as unknown)) as
        new (opts: object) => { compile(s: object): ValidateFunction };
      validator = new Ajv2020({ allErrors: true, strict: false, unicodeRegExp: true }).compile(schema);
    }
    return validator;
  };
}

const schemaValidator = lazyValidator(MANIFEST_SCHEMA);

/**
 * Step 5 for a captioning or generative VLM manifest: the violations of its kind's schema and their
 * code, `path` when every one is of the path rule (`$defs/path`), else `schema`.
 */
export function kindSchemaViolations(validate: ValidateFunction, manifest: unknown): { problems: string[]; code: "schema" | "path" } {
  if (validate(manifest)) return { problems: [], code: "schema" };
  const errors = [...(validate.errors ?? [])].sort((a, b) => (a.instancePath < b.instancePath ? -1 : 1));
  const isPath = (e: ErrorObject) => String(e.schemaPath).startsWith("#/$defs/path/") ||
    (e.keyword === "propertyNames" && String(e.schemaPath).includes("/propertyNames"));
  const problems = errors.slice(0, 50).map((e) => short(`${e.instancePath.slice(1) || "(root)"}: ${e.message ?? e.keyword}` +
    (e.keyword === "additionalProperties" || e.keyword === "required" ? ` (${JSON.stringify(e.params)})` : "")));
  return { problems, code: errors.length > 0 && errors.every(isPath) ? "path" : "schema" };
}

/** Schema violations of a manifest (empty when valid), each in one short line. */
export function validateSchema(manifest: unknown): string[] {
  return schemaViolations(manifest).problems;
}

/**
 * Schema violations and their reason code: `path` when every violation is of the path rule (the
 * schema's `$defs/path`: a named path or a `files` key that is absolute, has a '..' or empty part,
 * a backslash...), else `schema` (as the Python runtime classifies them).
 */
export function schemaViolations(manifest: unknown): { problems: string[]; code: "schema" | "path" } {
  const validate = schemaValidator();
  if (validate(manifest)) return { problems: [], code: "schema" };
  const errors = [...(validate.errors ?? [])].sort((a, b) => (a.instancePath < b.instancePath ? -1 : 1));
  const problems = errors.slice(0, 50).map((e) => short(`${e.instancePath.slice(1) || "(root)"}: ${schemaMessage(e)}`));
  return { problems, code: errors.length > 0 && errors.every(isPathRule) ? "path" : "schema" };
}

/** The schema node at a JSON pointer such as "#/properties/files/propertyNames". */
function schemaNode(pointer: string): unknown {
  let node: unknown = MANIFEST_SCHEMA;
  for (const raw of pointer.replace(/^#\/?/, "").split("/").filter((p) => p.length > 0)) {
    const part = decodeURIComponent(raw).replace(/~1/g, "/").replace(/~0/g, "~");
    if (typeof node !== "object" || node === null || !own(node, part)) return undefined;
    node = (node as Record<string, unknown>)[part];
  }
  return node;
}

/** Whether a violation is of the path rule (inside `$defs/path`, or a propertyNames that is it). */
function isPathRule(error: ErrorObject): boolean {
  const at = String(error.schemaPath);
  if (at.startsWith("#/$defs/path/")) return true;
  if (error.keyword === "propertyNames") {
    const names = schemaNode(at) as { $ref?: unknown } | undefined;
    return names?.$ref === "#/$defs/path";
  }
  return false;
}

function schemaMessage(error: ErrorObject): string {
  if (error.keyword === "pattern" && String(error.schemaPath).includes("/$defs/path")) {
    return "is not a relative path inside the bundle ('/'-separated, no leading '/', no '.' or '..' part)";
  }
  if (error.keyword === "additionalProperties" || error.keyword === "required") {
    return `${error.message} (${JSON.stringify(error.params)})`;
  }
  return error.message ?? error.keyword;
}

// ------------------------------------------------------------------------------------- step 6
/** What a schema cannot say: the manifest's parts agree, so that a bundle that loads can predict. */
export function consistencyProblems(m: Manifest): string[] {
  const problems: string[] = [];
  const { stages, labels } = m;
  const ratios = m.keep_ratios.map((k) => k.keep_ratio);
  if (new Set(ratios).size !== ratios.length) problems.push(`keep_ratios repeat a ratio: ${JSON.stringify(ratios)}`);
  const nExits = m.exit_layers.length;
  if (m.exit_layers.some((layer, i) => i > 0 && layer <= m.exit_layers[i - 1])) {
    problems.push(`exit_layers ${JSON.stringify(m.exit_layers)} must increase strictly`);
  }
  for (const group of m.keep_ratios) {
    const where = `keep_ratios[${group.keep_ratio}]`;
    const names = group.stages;
    if (names.length !== nExits) problems.push(`${where} has ${names.length} stages for ${nExits} exit layers`);
    if (group.exit_flops.length !== names.length) {
      problems.push(`${where}: ${group.exit_flops.length} exit_flops for ${names.length} stages`);
    }
    names.forEach((name, i) => {
      if (!own(stages, name)) {
        problems.push(`${where} names stage ${JSON.stringify(short(name, 60))}, which \`stages\` does not describe`);
        return;
      }
      const entry = stages[name];
      if (entry.stage !== i || entry.keep_ratio !== group.keep_ratio) {
        problems.push(`stage ${JSON.stringify(name)} is stage ${entry.stage} of keep ratio ${entry.keep_ratio}, ` +
          `listed as stage ${i} of ${group.keep_ratio}`);
      }
      problems.push(...ioProblems(name, entry, i, labels, group, m));
    });
  }
  const listed = new Set(m.keep_ratios.flatMap((g) => g.stages));
  if (!ratios.includes(m.thresholds.keep_ratio)) {
    problems.push(`thresholds.keep_ratio ${m.thresholds.keep_ratio} is not an exported keep ratio ` +
      JSON.stringify(ratios));
  }
  if (m.tokenizer.pad_id === m.tokenizer.unk_id) problems.push("tokenizer pad_id and unk_id are the same id");
  problems.push(...fixedRulesProblems(m));
  problems.push(...adaptedProblems(m));
  if (m.modality_pruning !== undefined) problems.push(...pruningProblems(m.modality_pruning, m));
  if (m.in_graph !== undefined) problems.push(...inGraphProblems(m));
  for (const a of m.artifacts) {
    const missing = [...listed].filter((name) => !own(a.stages, name)).sort();
    if (missing.length > 0) {
      problems.push(`artifact ${a.target}/${a.format}/${a.precision} lacks stages ${listing(missing)}`);
    }
    if (["onnx", "ort", "pte", "mlpackage"].includes(a.format) && a.runtime === "torch") {
      problems.push(`artifact ${a.target}/${a.format} cannot run on the torch runtime`);
    }
  }
  return problems.slice(0, 50);
}

function sameList(a: readonly unknown[], b: readonly unknown[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** Each in-graph graph belongs to one exported keep ratio (at most one per ratio) and keeps its tokens. */
function inGraphProblems(m: Manifest): string[] {
  const kept = new Map(m.keep_ratios.map((k) => [k.keep_ratio, k.kept_tokens]));
  const out: string[] = [];
  const seen = new Set<unknown>();
  for (const [key, entry] of Object.entries(m.in_graph?.by_keep_ratio ?? {})) {
    const ratio = entry.keep_ratio as number;
    const where = `in_graph.by_keep_ratio[${short(key, 40)}]`;
    if (!kept.has(ratio)) {
      out.push(`${where} is for keep ratio ${ratio}, which is not exported (${JSON.stringify([...kept.keys()].sort())})`);
    } else if (entry.kept_tokens !== kept.get(ratio)) {
      out.push(`${where} keeps ${entry.kept_tokens} tokens, keep ratio ${ratio} keeps ${kept.get(ratio)}`);
    }
    if (seen.has(ratio)) out.push(`${where} repeats keep ratio ${ratio}`);
    seen.add(ratio);
  }
  return out;
}

/**
 * Two images per query are an adapted encoder's preparation only, without modality pruning or
 * in-graph graphs; head match-score is a yes/no match (task "match", labels ["no", "yes"]).
 */
function adaptedProblems(m: Manifest): string[] {
  const out: string[] = [];
  const images = numImages(m);
  if (images !== 1 && m.preprocessing.resize !== ADAPTED_RESIZE) {
    out.push(`preprocessing.num_images ${images} needs resize ${JSON.stringify(ADAPTED_RESIZE)} (an adapted encoder's ` +
      "preparation)");
  }
  if (images !== 1 && (own(m, "modality_pruning") || own(m, "in_graph"))) {
    out.push("a bundle of two images per query has no modality_pruning or in_graph section");
  }
  if ((m.head ?? "softmax") === MATCH_SCORE && (m.task !== "match" || !sameList(m.labels, MATCH_LABELS))) {
    out.push(`head ${JSON.stringify(MATCH_SCORE)} needs task "match" and labels ${JSON.stringify(MATCH_LABELS)} ` +
      `(logits [0, s]), not task ${short(JSON.stringify(m.task), 40)} and labels ${short(JSON.stringify(m.labels), 60)}`);
  }
  return out;
}

/**
 * Format version 1 fixes the preprocessing and tokenizer rules; the manifest must repeat them. An
 * adapted encoder's preparation states its own: resize "pillow-bicubic" its scale, mean and std
 * (and no pad_color), tokenizer kind "bert-wordpiece" its normaliser's flags (and no split_regex).
 */
function fixedRulesProblems(m: Manifest): string[] {
  const pre = m.preprocessing;
  const tok = m.tokenizer;
  const fixed: Array<[string, unknown, unknown]> = [];
  if (pre.resize !== ADAPTED_RESIZE) {
    fixed.push(["preprocessing.scale", pre.scale, FIXED_RULES.scale], ["preprocessing.mean", pre.mean, FIXED_RULES.mean],
      ["preprocessing.std", pre.std, FIXED_RULES.std], ["preprocessing.pad_color", pre.pad_color, FIXED_RULES.pad_color]);
  }
  if (tok.kind !== BERT_WORDPIECE) {
    fixed.push(["tokenizer.lowercase", tok.lowercase, FIXED_RULES.lowercase],
      ["tokenizer.split_regex", tok.split_regex, FIXED_RULES.split_regex]);
  }
  const same = (a: unknown, b: unknown) => Array.isArray(b) ? Array.isArray(a) && sameList(a, b) : a === b;
  return fixed.filter(([, got, want]) => !same(got, want)).map(([name, got, want]) =>
    `${name} is ${short(JSON.stringify(got) ?? String(got), 60)}; format version 1 fixes it at ${JSON.stringify(want)}`);
}

/**
 * The optional modality_pruning section: text-only stages for exactly the stages after
 * after_stage, on [CLS] + text (seq_len = 1 + max_length), named in every artifact, with exit FLOPs
 * for every exported keep ratio. (This runtime does not run them; it checks them as the spec says.)
 */
function pruningProblems(p: ModalityPruning, m: Manifest): string[] {
  const out: string[] = [];
  const nExits = m.exit_layers.length;
  const after = p.after_stage;
  if (!(after >= 0 && after < nExits - 1)) {
    return [`modality_pruning.after_stage ${after} must be a stage before the last one ` +
      `(0..${nExits - 2} for ${nExits} exit layers)`];
  }
  const want = Array.from({ length: nExits - after - 1 }, (_, i) => after + 1 + i);
  const got = p.stages.map((s) => s.stage);
  if (!sameList(got, want)) {
    out.push(`modality_pruning.stages are stages ${JSON.stringify(got)}; after stage ${after} they must be ` +
      `${JSON.stringify(want)} in order`);
  }
  const seq = 1 + m.tokenizer.max_length;
  if (p.seq_len !== seq) out.push(`modality_pruning.seq_len ${p.seq_len} must be 1 + the tokenizer's max_length = ${seq}`);
  const names = p.stages.map((s) => s.name);
  if (new Set(names).size !== names.length || names.some((n) => own(m.stages, n))) {
    out.push("modality_pruning.stages names must be unique and differ from the names in `stages`");
  }
  let dim: number | undefined;
  for (const entry of Object.values(m.stages)) {
    const shape = entry.outputs[0]?.shape;
    dim = shape && shape.length > 0 ? shape[shape.length - 1] : undefined;
    break;
  }
  for (const s of p.stages) {
    const where = `modality_pruning stage ${JSON.stringify(short(s.name, 60))}`;
    if (!sameList(s.inputs.map((t) => t.name), LATER_INPUTS)) {
      out.push(`${where} inputs must be ${JSON.stringify(LATER_INPUTS)} in that order`);
      continue;
    }
    const [hidden, mask] = s.inputs;
    if (!sameList(hidden.shape.slice(0, 2), [1, seq]) || !sameList(mask.shape, [1, seq])) {
      out.push(`${where} takes ${JSON.stringify(s.inputs.map((t) => t.shape))}, not [1, ${seq}, D] and [1, ${seq}]`);
    }
    const outputs = new Map(s.outputs.map((t) => [t.name, t]));
    if (!LATER_OUTPUTS.every((n) => outputs.has(n))) {
      out.push(`${where} outputs must include ${JSON.stringify(LATER_OUTPUTS)}`);
      continue;
    }
    const logits = outputs.get("logits")!.shape;
    if (logits.length === 0 || logits[logits.length - 1] !== m.labels.length) {
      out.push(`${where} gives ${JSON.stringify(logits)} logits for ${m.labels.length} labels`);
    }
    if (dim !== undefined && (hidden.shape.length === 0 || hidden.shape[hidden.shape.length - 1] !== dim)) {
      out.push(`${where} takes width ${JSON.stringify(hidden.shape.slice(-1))}, the stages give ${dim}`);
    }
  }
  const ratios = m.keep_ratios.map((k) => k.keep_ratio).sort((a, b) => a - b);
  const given = p.exit_flops.map((e) => e.keep_ratio).sort((a, b) => a - b);
  if (!sameList(given, ratios)) {
    out.push(`modality_pruning.exit_flops must give each exported keep ratio ${JSON.stringify(ratios)} once`);
  }
  for (const e of p.exit_flops) {
    if (e.exit_flops.length !== nExits) {
      out.push(`modality_pruning.exit_flops[${e.keep_ratio}] has ${e.exit_flops.length} entries for ${nExits} exits`);
    }
  }
  for (const a of m.artifacts) {
    const missing = names.filter((n) => !own(a.stages, n));
    if (missing.length > 0) {
      out.push(`artifact ${a.target}/${a.format}/${a.precision} lacks the modality_pruning stages ${listing(missing)}`);
    }
  }
  return out;
}

/** A stage's declared inputs and outputs are what the runtime feeds and reads. */
function ioProblems(name: string, entry: StageEntry, index: number, labels: string[], group: KeepRatioEntry,
  m: Manifest): string[] {
  const out: string[] = [];
  const inputs = new Map(entry.inputs.map((t) => [t.name, t]));
  const outputs = new Map(entry.outputs.map((t) => [t.name, t]));
  const wantIn = index === 0 ? STAGE0_INPUTS : LATER_INPUTS;
  const wantOut = index === 0 ? STAGE0_OUTPUTS : LATER_OUTPUTS;
  const q = JSON.stringify(name);
  if (!sameList(entry.inputs.map((t) => t.name), wantIn)) {
    out.push(`stage ${q} inputs must be ${JSON.stringify(wantIn)} in that order`);
  }
  if (!wantOut.every((n) => outputs.has(n))) {
    out.push(`stage ${q} outputs must include ${JSON.stringify(wantOut)}`);
    return out;
  }
  const logits = outputs.get("logits")!.shape;
  if (logits.length === 0 || logits[logits.length - 1] !== labels.length) {
    out.push(`stage ${q} gives ${logits.length ? logits[logits.length - 1] : 0} logits for ${labels.length} labels`);
  }
  const size = m.preprocessing.image_size;
  const images = numImages(m);
  const want = images === 1 ? [1, 3, size, size] : [1, images, 3, size, size];
  const pixels = inputs.get("pixel_values");
  if (index === 0 && pixels && !sameList(pixels.shape, want)) {
    out.push(`stage ${q} takes pixel_values ${JSON.stringify(pixels.shape)}, preprocessing gives ${JSON.stringify(want)}`);
  }
  const ids = inputs.get("input_ids");
  if (index === 0 && ids && !sameList(ids.shape, [1, m.tokenizer.max_length])) {
    out.push(`stage ${q} takes input_ids ${JSON.stringify(ids.shape)}, the tokenizer gives [1, ${m.tokenizer.max_length}]`);
  }
  if (index === 0) {
    const kept = outputs.get("kept_index")!.shape;
    if (kept.length === 0 || kept[kept.length - 1] !== group.kept_tokens) {
      out.push(`stage ${q} keeps ${JSON.stringify(kept)} tokens, keep_ratios says ${group.kept_tokens}`);
    }
  }
  return out;
}

// ------------------------------------------------------------------------------------- step 7
/** Why `rel` is not an acceptable bundle member name (null when it is). */
export function memberProblem(rel: unknown): string | null {
  if (typeof rel !== "string") return `path ${short(String(rel), 80)} is a ${typeof rel}, not a string`;
  if (rel.length === 0 || rel.length > MAX_PATH_CHARS) {
    return `path of ${rel.length} characters (1 to ${MAX_PATH_CHARS} allowed)`;
  }
  const shown = JSON.stringify(short(rel, 80));
  if (rel.includes("\\") || rel.includes("\0")) {
    return `path ${shown} has a backslash or NUL byte; use '/'-separated relative paths`;
  }
  if (rel.startsWith("/")) return `path ${shown} is absolute; bundle paths are relative to the bundle`;
  if (rel.split("/").some((p) => p === "" || p === "." || p === "..")) {
    return `path ${shown} is not normalised (empty, '.' or '..' part); it must stay inside the bundle`;
  }
  return null;
}

/** Every path the manifest names, with where it is named. */
export function namedPaths(m: Manifest): Map<string, string> {
  const named = new Map<string, string>([[m.tokenizer.file, "tokenizer.file"]]);
  for (const a of m.artifacts) {
    const kind = `${a.target}/${a.format}/${a.precision}`;
    if (a.file !== undefined) named.set(a.file, `artifact ${kind}`);
    if (a.external_data !== undefined) named.set(a.external_data, `artifact ${kind} external_data`);
    for (const [stage, entry] of Object.entries(a.stages)) {
      if (entry.file !== undefined) named.set(entry.file, `artifact ${kind} stage ${stage}`);
    }
  }
  for (const [ratio, entry] of Object.entries(m.in_graph?.by_keep_ratio ?? {})) {
    named.set(entry.file, `in_graph ${ratio}`);
    if (entry.ort_file !== undefined) named.set(entry.ort_file, `in_graph ${ratio} (ORT format)`);
    if (entry.external_data !== undefined) named.set(entry.external_data, `in_graph ${ratio} external_data`);
    if (entry.int8_file !== undefined) named.set(entry.int8_file, `in_graph ${ratio} int8`);
    if (entry.int8_ort_file !== undefined) named.set(entry.int8_ort_file, `in_graph ${ratio} int8 (ORT format)`);
    if (entry.int8_external_data !== undefined) {
      named.set(entry.int8_external_data, `in_graph ${ratio} int8 external_data`);
    }
  }
  return named;
}

/**
 * Step 7: every listed and named path is a safe relative path; a named path is listed, or is a
 * directory whose every file is listed; and, where the source can enumerate its members
 * (`entries`: a directory, memory), the bundle holds nothing `files` does not list besides
 * manifest.json and manifest.sig: no extra file, link, FIFO or folder (code `unlisted`).
 */
export async function checkPaths(source: BundleSource, m: Manifest): Promise<void> {
  const files = m.files;
  const keys = Object.keys(files);
  const bad = keys.flatMap((rel) => {
    const p = memberProblem(rel);
    return p ? [`${short(rel, 80)}: ${p}`] : [];
  });
  if (bad.length > 0) {
    throw new BundleError(`files lists unsafe paths: ${listing(bad)}; export the bundle again`, { code: "path" });
  }
  if (own(files, MANIFEST_FILE) || own(files, SIGNATURE_FILE)) {
    throw new BundleError(`files may not list ${MANIFEST_FILE} or ${SIGNATURE_FILE}`, { code: "path" });
  }
  const named = namedPaths(m);
  for (const [rel, where] of named) {
    const problem = memberProblem(rel);
    if (problem) throw new BundleError(`${where}: ${problem}`, { path: String(rel), code: "path" });
  }
  for (const [rel, where] of named) {
    if (own(files, rel)) continue;
    const prefix = rel + "/";
    if (!keys.some((f) => f.startsWith(prefix))) {
      throw new BundleError(`${where} names ${JSON.stringify(rel)}, which \`files\` does not list with a hash; ` +
        "export it again", { path: rel, code: "unlisted" });
    }
    if (source.entries) continue; // the whole tree is checked below
    if (source.listTree) {
      const tree = await source.listTree(rel);
      const stray = [...tree.links, ...tree.files, ...tree.others].filter((f) => !own(files, f)).sort();
      if (stray.length > 0) {
        throw new BundleError(`${rel} holds files the manifest does not list: ${listing(stray)}; export it again`,
          { path: stray[0], code: "unlisted" });
      }
      // a listed member that is a link is refused in step 8 (file-not-regular)
    } else if (source.checkMember) {
      await source.checkMember(rel, "directory");
    }
  }
  if (source.entries) await checkUnlisted(source, m);
  const tokenizerEntry = own(files, m.tokenizer.file) ? files[m.tokenizer.file] : undefined;
  if (tokenizerEntry && tokenizerEntry.bytes > MAX_TOKENIZER_BYTES) {
    throw new BundleError(`the tokenizer file is over ${MAX_TOKENIZER_BYTES >> 20} MB`,
      { path: m.tokenizer.file, code: "tokenizer" });
  }
}

/**
 * Every member of the bundle is manifest.json, manifest.sig, a listed file, or a directory on the
 * way to a listed file. A listed path that is a link, FIFO or directory is left to step 8 (code
 * `file-not-regular`); anything else is refused here (code `unlisted`). The walk never goes into a
 * folder that holds no listed file, nor follows a link.
 */
async function checkUnlisted(source: BundleSource, m: Manifest): Promise<void> {
  const files = m.files;
  const folders = new Set<string>();
  for (const rel of Object.keys(files)) {
    for (let cut = rel.indexOf("/"); cut > 0; cut = rel.indexOf("/", cut + 1)) folders.add(rel.slice(0, cut));
  }
  const kinds = { file: "file", directory: "folder", link: "symbolic link", other: "special file (FIFO, socket, device)" };
  for await (const entry of source.entries!((dir) => folders.has(dir))) {
    const rel = entry.path;
    // manifest.json was read as a regular file in step 1; manifest.sig must be one too (it is read
    // only with a key, and then refused as signature-malformed before this step)
    if ((rel === MANIFEST_FILE || rel === SIGNATURE_FILE) && entry.kind === "file") continue;
    if (own(files, rel) || folders.has(rel)) continue;
    throw new BundleError(`${source.name.replace(/\/+$/, "")} holds a ${kinds[entry.kind]} that the manifest does not ` +
      `list: ${JSON.stringify(short(rel, 120))}; a bundle holds only its listed files (remove it, or export the ` +
      "bundle again)", { path: rel, code: "unlisted" });
  }
}

// ------------------------------------------------------------------------------------- step 8
/**
 * Step 8: every listed file is a regular file (no links), of its listed size and SHA-256. Returns
 * the verified bytes of the files in `keep` (read once: what is verified is what is used).
 * Codes: `file-missing`, `file-not-regular`, `size-mismatch`, `hash-mismatch` (in that priority
 * when several files fail).
 */
export async function verifyFiles(source: BundleSource, m: Manifest, keep: Iterable<string> = []): Promise<Map<string, Uint8Array>> {
  const wanted = new Set(keep);
  const kept = new Map<string, Uint8Array>();
  const missing: string[] = [];
  const resized: string[] = [];
  const changed: string[] = [];
  const odd: string[] = [];
  const sort = (exc: unknown, rel: string) => {
    if (!(exc instanceof BundleError) || exc.reason === undefined) throw exc;
    if (exc.reason === "missing") missing.push(rel);
    else if (exc.reason === "too-large") resized.push(rel);
    else odd.push(rel);
  };
  const entries = Object.entries(m.files);
  // sizes first, where the source can tell them without reading: nothing is hashed when any file fails
  if (source.sizeOf) {
    for (const [rel, entry] of entries) {
      try {
        if ((await source.sizeOf(rel)) !== entry.bytes) resized.push(rel);
      } catch (exc) {
        sort(exc, rel);
      }
    }
  }
  if (!(missing.length || resized.length || odd.length)) {
    for (const [rel, entry] of entries) {
      let data: Uint8Array;
      try {
        data = await source.read(rel, entry.bytes);
      } catch (exc) {
        sort(exc, rel);
        continue;
      }
      if (data.length !== entry.bytes) {
        resized.push(rel);
        continue;
      }
      if ((await sha256Hex(data)) !== entry.sha256) {
        changed.push(rel);
        continue;
      }
      if (wanted.has(rel)) kept.set(rel, data);
    }
  }
  if (missing.length || resized.length || changed.length || odd.length) {
    const parts = [
      ...(missing.length ? [`missing: ${listing(missing)}`] : []),
      ...(odd.length ? [`not regular files inside the bundle (links, devices): ${listing(odd)}`] : []),
      ...(resized.length ? [`size mismatch (tampered or corrupt): ${listing(resized)}`] : []),
      ...(changed.length ? [`hash mismatch (tampered or corrupt): ${listing(changed)}`] : []),
    ];
    const code = missing.length ? "file-missing" : odd.length ? "file-not-regular"
      : resized.length ? "size-mismatch" : "hash-mismatch";
    throw new BundleError(`bundle ${source.name} failed verification; ${parts.join("; ")}. Export it again`, {
      path: missing[0] ?? odd[0] ?? resized[0] ?? changed[0],
      reason: missing.length ? "missing" : odd.length ? "not-regular" : undefined, code,
    });
  }
  return kept;
}

// ------------------------------------------------------------------------------------- step 9
/**
 * The tokenizer from its verified bytes: strict JSON first (as manifest.json), then the tokenizer
 * file's own checks on that parse (the file is parsed once). BundleError code `tokenizer`.
 */
export function readTokenizer(data: Uint8Array, m: Manifest): WordTokenizer {
  let parsed: unknown;
  try {
    parsed = parseStrictJson(data, { maxDepth: MAX_DEPTH }).value;
  } catch (exc) {
    if (!(exc instanceof StrictJsonError)) throw exc;
    throw new BundleError(`the bundle's tokenizer file ${JSON.stringify(short(m.tokenizer.file, 80))} is not strict ` +
      `UTF-8 JSON (${short(exc.message, 160)}); export the bundle again`,
    { cause: exc, path: m.tokenizer.file, code: "tokenizer" });
  }
  try {
    return m.tokenizer.kind === BERT_WORDPIECE ? BertWordPieceTokenizer.fromBertParsed(parsed, m.tokenizer.max_length)
      : WordTokenizer.fromParsed(parsed, m.tokenizer.lowercase);
  } catch (exc) {
    if (exc instanceof BundleError && exc.code === "bundle") {
      throw new BundleError(exc.message, { cause: exc, path: m.tokenizer.file, code: "tokenizer" });
    }
    throw exc;
  }
}

/**
 * A BERT tokenizer's settings (what its tokenizer.json gives) against the manifest's `tokenizer`:
 * each must be equal (the first five that differ are named), as the Python runtime requires.
 */
function bertProblems(tokenizer: BertWordPieceTokenizer, spec: TokenizerSpec): string[] {
  const fields = tokenizer.manifestFields() as unknown as Record<string, unknown>;
  const stated = spec as unknown as Record<string, unknown>;
  const shown = (v: unknown) => short(JSON.stringify(v) ?? "none", 60);
  return Object.keys(fields).sort()
    .filter((k) => JSON.stringify(fields[k]) !== JSON.stringify(own(stated, k) ? stated[k] : undefined)).slice(0, 5)
    .map((k) => `tokenizer.json gives ${k} ${shown(fields[k])}, the manifest ${shown(own(stated, k) ? stated[k] : undefined)}`);
}

/** Step 9: the tokenizer file agrees with the manifest and gives ids the model's embedding has. */
export function checkTokenizer(tokenizer: WordTokenizer, m: Manifest): void {
  const spec = m.tokenizer;
  const rows = m.model.config.vocab_size;
  const ids = [...tokenizer.vocab.values()];
  const problems: string[] = [];
  if (tokenizer instanceof BertWordPieceTokenizer || spec.kind === BERT_WORDPIECE) {
    if (!(tokenizer instanceof BertWordPieceTokenizer) || spec.kind !== BERT_WORDPIECE) {
      problems.push(`the file is a ${tokenizer.kind} tokenizer, the manifest says kind ${JSON.stringify(spec.kind ?? "word")}`);
    } else {
      problems.push(...bertProblems(tokenizer, spec));
    }
    const top = ids.reduce((a, b) => Math.max(a, b), 0);
    if (typeof rows === "number" && Number.isInteger(rows) && ids.length > 0 && top >= rows) {
      problems.push(`token ids reach ${top}, the model embeds ${rows}`);
    }
    if (problems.length > 0) {
      throw new BundleError(`the bundle's tokenizer does not fit its manifest: ${problems.join("; ")}; export the bundle again`,
        { path: spec.file, code: "tokenizer" });
    }
    return;
  }
  const kind = spec.kind ?? "word";
  if (tokenizer.kind !== kind) {
    problems.push(`the file is a ${tokenizer.kind} tokenizer, the manifest says kind ${JSON.stringify(kind)}`);
  } else if (tokenizer instanceof WordPieceTokenizer) {
    if (tokenizer.continuingSubwordPrefix !== spec.continuing_subword_prefix) {
      problems.push(`continuing_subword_prefix ${JSON.stringify(tokenizer.continuingSubwordPrefix)} vs the manifest's ` +
        `${JSON.stringify(spec.continuing_subword_prefix ?? null)}`);
    }
    if (tokenizer.maxInputCharsPerWord !== spec.max_input_chars_per_word) {
      problems.push(`max_input_chars_per_word ${tokenizer.maxInputCharsPerWord} vs the manifest's ` +
        `${JSON.stringify(spec.max_input_chars_per_word ?? null)}`);
    }
  }
  if (tokenizer.maxLength !== spec.max_length) {
    problems.push(`max_length ${tokenizer.maxLength} vs the manifest's ${spec.max_length}`);
  }
  if (tokenizer.vocab.get(PAD) !== spec.pad_id || tokenizer.vocab.get(UNK) !== spec.unk_id) {
    problems.push("[PAD]/[UNK] ids differ from the manifest's pad_id/unk_id");
  }
  if (!ids.every((i) => typeof i === "number" && Number.isInteger(i) && i >= 0)) {
    problems.push("token ids must be non-negative integers");
  } else if (typeof rows === "number" && Number.isInteger(rows) && ids.length > 0) {
    const top = ids.reduce((a, b) => Math.max(a, b), 0);
    if (top >= rows) problems.push(`token id ${top} is outside the model's ${rows}-word embedding`);
  }
  if (problems.length > 0) {
    throw new BundleError(`the bundle's tokenizer does not fit its manifest: ${problems.join("; ")}; export the bundle again`,
      { path: spec.file, code: "tokenizer" });
  }
}

// ------------------------------------------------------------------------------------- rollback
/** What an app asks of a bundle's `release` (docs/bundle-format.md, Rollback). */
export interface RollbackOptions {
  /**
   * The lowest `release.sequence` the app accepts: store the highest sequence you have accepted
   * (`manifest.release.sequence` of the engine you loaded) and pass it next time, so that an older
   * bundle signed with the same key is refused (code `rollback`).
   */
  minSequence?: number;
  /** The `release.name` the bundle must carry (code `rollback` otherwise). */
  expectName?: string;
}

/** Option problems of minSequence / expectName (a ConfigError lists them). */
export function rollbackOptionProblems(options: RollbackOptions): string[] {
  const problems: string[] = [];
  const { minSequence, expectName } = options;
  if (minSequence !== undefined && minSequence !== null &&
    (typeof minSequence !== "number" || !Number.isSafeInteger(minSequence) || minSequence < 0)) {
    problems.push(`minSequence must be an integer from 0 to ${MAX_SAFE_JSON_INTEGER}, got ` +
      `${short(typeof minSequence === "number" ? String(minSequence) : typeof minSequence, 40)}`);
  }
  if (expectName !== undefined && expectName !== null && (typeof expectName !== "string" || expectName.length === 0)) {
    problems.push(`expectName must be a non-empty string, got ${typeof expectName}`);
  }
  return problems;
}

/**
 * The app's rollback rules against the manifest's `release` (after the schema has checked its
 * form): BundleError code `rollback` when the app gave a minimum or a name and the release is
 * absent, older, or another bundle's.
 */
export function checkRelease(m: Manifest, options: RollbackOptions, where = MANIFEST_FILE): void {
  const minSequence = options.minSequence ?? undefined;
  const expectName = options.expectName ?? undefined;
  if (minSequence === undefined && expectName === undefined) return;
  const release = m.release;
  const fail = (what: string) => new BundleError(`${where}: ${what}; refusing a possible rollback to an older or ` +
    "another bundle. Install the current release", { path: MANIFEST_FILE, code: "rollback" });
  if (typeof release !== "object" || release === null) {
    throw fail("the manifest has no release section (name and sequence), but the app requires " +
      (minSequence !== undefined ? `sequence >= ${minSequence}` : `release ${JSON.stringify(short(expectName!, 60))}`));
  }
  if (expectName !== undefined && release.name !== expectName) {
    throw fail(`the release is ${JSON.stringify(short(String(release.name), 60))}, the app expects ` +
      JSON.stringify(short(expectName, 60)));
  }
  if (minSequence !== undefined && !(typeof release.sequence === "number" && release.sequence >= minSequence)) {
    throw fail(`release.sequence ${short(String(release.sequence), 40)} is below the app's minimum ${minSequence}`);
  }
}

// ------------------------------------------------------------------------------------- all steps
export interface LoadManifestOptions extends RollbackOptions {
  /** The app's Ed25519 public key (PEM): the bundle must carry a valid manifest.sig by it. */
  verifyKey?: VerifyKey;
  /**
   * Called after steps 1-7 with the checked manifest: the files whose verified bytes to keep (the
   * tokenizer's are always kept). It may throw to refuse the bundle before any file is read.
   */
  select?: (manifest: Manifest) => Iterable<string>;
}

export interface LoadedManifest {
  manifest: Manifest;
  /** The exact bytes of manifest.json that were verified and parsed. */
  manifestBytes: Uint8Array;
  /** The tokenizer, checked against the manifest. */
  tokenizer: WordTokenizer;
  /** Verified bytes of the selected files, by bundle-relative path. */
  files: Map<string, Uint8Array>;
}

/**
 * Steps 1 and 2, shared by every bundle kind: the source and the app's rollback options checked, the
 * manifest's bytes read (BundleError with a `manifest-*` code when they cannot be used) and, given a
 * key, its signature verified. Returns those bytes and the manifest's display path.
 */
export async function readManifestFile(source: BundleSource, options: RollbackOptions & { verifyKey?: VerifyKey }):
  Promise<{ manifestBytes: Uint8Array; where: string }> {
  if (!source || typeof source.read !== "function") {
    throw new BundleError("a bundle source is needed: new NodeDirectorySource(dir), new FetchSource(url) or " +
      "new MemorySource(files)");
  }
  const optionProblems = rollbackOptionProblems(options);
  if (optionProblems.length > 0) throw new ConfigError(optionProblems, "arguments");
  let manifestBytes: Uint8Array;
  try {
    manifestBytes = await source.read(MANIFEST_FILE, MAX_MANIFEST_BYTES);
  } catch (exc) {
    if (exc instanceof BundleError && exc.reason === "missing") {
      throw new BundleError(`${source.name} has no ${MANIFEST_FILE}: not an mmedge bundle, or an interrupted copy; ` +
        "export it again", { cause: exc, path: MANIFEST_FILE, reason: "missing", code: "manifest-missing" });
    }
    if (exc instanceof BundleError && exc.reason === "too-large") {
      throw new BundleError(`${MANIFEST_FILE} is over ${MAX_MANIFEST_BYTES} bytes; not an mmedge bundle file`,
        { cause: exc, path: MANIFEST_FILE, reason: "too-large", code: "manifest-too-large" });
    }
    if (exc instanceof BundleError && (exc.reason === "link" || exc.reason === "not-regular")) {
      throw new BundleError(`${MANIFEST_FILE} cannot be used: ${exc.message}`,
        { cause: exc, path: MANIFEST_FILE, reason: exc.reason, code: "manifest-not-regular" });
    }
    if (exc instanceof BundleError) {
      throw new BundleError(exc.message, { cause: exc, path: MANIFEST_FILE, reason: exc.reason, code: "bundle" });
    }
    throw exc;
  }
  if (options.verifyKey !== undefined && options.verifyKey !== null) {
    await verifyManifestSignature(source, manifestBytes, options.verifyKey);
  }
  return { manifestBytes, where: `${source.name.replace(/\/+$/, "")}/${MANIFEST_FILE}` };
}

/** Every loading check of the spec (steps 1 to 9), in order; BundleError / SignatureError say what is wrong. */
export async function loadManifest(source: BundleSource, options: LoadManifestOptions = {}): Promise<LoadedManifest> {
  const { manifestBytes, where } = await readManifestFile(source, options);
  const manifest = parseManifest(manifestBytes, where);
  checkKind(manifest, where);
  const schema = schemaViolations(manifest);
  if (schema.problems.length > 0) {
    throw new BundleError(`${where} does not match the manifest schema (export the bundle again with a matching mmedge):\n  ${schema.problems.slice(0, 10).join("\n  ")}`,
      { path: MANIFEST_FILE, code: schema.code });
  }
  const problems = consistencyProblems(manifest);
  if (problems.length > 0) {
    throw new BundleError(`${where} is inconsistent:\n  ${problems.slice(0, 10).join("\n  ")}\n` +
      "The manifest was edited or is corrupt: export the bundle again", { path: MANIFEST_FILE, code: "inconsistent" });
  }
  checkRelease(manifest, options, where);
  await checkPaths(source, manifest);
  const keep = new Set(options.select ? options.select(manifest) : []);
  keep.add(manifest.tokenizer.file);
  const files = await verifyFiles(source, manifest, keep);
  const tokenizerBytes = files.get(manifest.tokenizer.file);
  if (!tokenizerBytes) {
    throw new BundleError(`tokenizer.file ${JSON.stringify(manifest.tokenizer.file)} is not a listed file; export the bundle again`,
      { path: manifest.tokenizer.file, code: "unlisted" });
  }
  const tokenizer = readTokenizer(tokenizerBytes, manifest);
  checkTokenizer(tokenizer, manifest);
  return { manifest, manifestBytes, tokenizer, files };
}
