/**
 * manifest.json: the loading checks of docs/bundle-format.md, in its order. A bundle is untrusted
 * input; no file is read before the checks that concern it have passed:
 *
 *  1. manifest.json: a regular file (no link, FIFO, device), at most 8 MiB;
 *  2. its signature, when the app gives a verification key (over exactly those bytes);
 *  3. UTF-8 JSON, one object, nested at most 32 levels;
 *  4. schema_version the JSON integer 1;
 *  5. the JSON Schema (draft 2020-12, ajv);
 *  6. consistency (keep ratios, exits, stage inputs/outputs, shapes, artifacts);
 *  7. paths (relative, normalised, listed; named directories hold listed files only);
 *  8. files: each a regular file without links, of the listed size and SHA-256;
 *  9. the tokenizer agrees with the manifest.
 */

import * as AjvModule from "ajv/dist/2020.js";
import type { ErrorObject, ValidateFunction } from "ajv";

import { BundleError, listing, short } from "./errors.js";
import { sha256Hex } from "./hash.js";
import { MANIFEST_SCHEMA } from "./schema.js";
import { SIGNATURE_FILE, verifyManifestSignature, type VerifyKey } from "./signing.js";
import type { BundleSource } from "./source.js";
import { jsonDepthExceeds, PAD, UNK, WordPieceTokenizer, WordTokenizer } from "./tokenizer.js";

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
  resize: string;
  pad_color: [number, number, number];
}

export interface TokenizerSpec {
  file: string;
  max_length: number;
  lowercase: boolean;
  split_regex: string;
  pad_id: number;
  unk_id: number;
  /** The tokenizer.json model: "word" (WordLevel, the default when absent) or "wordpiece" (WordPiece). */
  kind?: "word" | "wordpiece";
  /** With kind "wordpiece": the WordPiece model's continuing_subword_prefix (e.g. "##"). */
  continuing_subword_prefix?: string;
  /** With kind "wordpiece": the WordPiece model's max_input_chars_per_word (e.g. 100). */
  max_input_chars_per_word?: number;
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
  files: Record<string, { sha256: string; bytes: number }>;
  tools: Record<string, string>;
  [key: string]: unknown;
}

const own = (obj: object, key: string): boolean => Object.prototype.hasOwnProperty.call(obj, key);

// ------------------------------------------------------------------------------------- steps 3-4
/**
 * Steps 3 and 4: UTF-8, JSON nested at most 32 levels, one object, `schema_version` the JSON
 * integer 1 (a `1.0` is refused: the literal is read from the text, since JSON.parse cannot tell).
 */
export function parseManifest(data: Uint8Array, where = MANIFEST_FILE): Manifest {
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(data);
  } catch (exc) {
    throw new BundleError(`${where} is not valid UTF-8; the bundle is corrupt: export it again`, { cause: exc });
  }
  const scan = scanManifestText(text);
  if (scan.tooDeep) throw new BundleError(`${where} nests deeper than ${MAX_DEPTH} levels; not an mmedge manifest`);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (exc) {
    throw new BundleError(`${where} is not valid JSON (${short(String((exc as Error).message), 120)}); the bundle ` +
      "is corrupt: export it again", { cause: exc });
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new BundleError(`${where} must hold a JSON object`);
  }
  const version = (value as Record<string, unknown>).schema_version;
  const integerLiteral = scan.schemaVersion !== undefined && /^-?(0|[1-9][0-9]*)$/.test(scan.schemaVersion);
  if (version !== SCHEMA_VERSION || !integerLiteral) {
    const shown = scan.schemaVersion ?? (version === undefined ? "none" : JSON.stringify(version));
    throw new BundleError(`${where} has schema_version ${short(shown, 40)}; this runtime reads version ` +
      `${SCHEMA_VERSION} (an integer). Re-export the model with a matching mmedge, or upgrade @mmedge/runtime`);
  }
  return value as Manifest;
}

/** The nesting depth check and the raw text of the top-level `schema_version` value. */
function scanManifestText(text: string): { tooDeep: boolean; schemaVersion?: string } {
  if (jsonDepthExceeds(text, MAX_DEPTH)) return { tooDeep: true };
  let depth = 0;
  let expectKey = false;
  let key: string | undefined;
  let schemaVersion: string | undefined;
  const n = text.length;
  for (let i = 0; i < n; i++) {
    const c = text[i];
    if (c === '"') {
      const start = i;
      for (i++; i < n; i++) {
        if (text[i] === "\\") i++;
        else if (text[i] === '"') break;
      }
      if (depth === 1 && expectKey) {
        try {
          key = JSON.parse(text.slice(start, i + 1)) as string;
        } catch {
          key = undefined;
        }
        expectKey = false;
      }
    } else if (c === "{" || c === "[") {
      depth++;
      if (depth === 1) expectKey = c === "{";
    } else if (c === "}" || c === "]") {
      depth--;
    } else if (depth === 1 && c === ",") {
      expectKey = true;
    } else if (depth === 1 && c === ":" && key !== undefined) {
      if (key === "schema_version") {
        let j = i + 1;
        while (j < n && " \t\r\n".includes(text[j])) j++;
        let k = j;
        while (k < n && !",}] \t\r\n".includes(text[k])) k++;
        schemaVersion = text.slice(j, k);
      }
      key = undefined;
    }
  }
  return { tooDeep: false, schemaVersion };
}

// ------------------------------------------------------------------------------------- step 5
let validator: ValidateFunction | undefined;

function schemaValidator(): ValidateFunction {
  if (!validator) {
    const mod = AjvModule as unknown as { default: new (opts: object) => { compile(s: object): ValidateFunction } };
    const Ajv2020 = (typeof mod.default === "function" ? mod.default : (mod as unknown)) as
      new (opts: object) => { compile(s: object): ValidateFunction };
    const ajv = new Ajv2020({ allErrors: true, strict: false, unicodeRegExp: true });
    validator = ajv.compile(MANIFEST_SCHEMA);
  }
  return validator;
}

/** Schema violations of a manifest (empty when valid), each in one short line. */
export function validateSchema(manifest: unknown): string[] {
  const validate = schemaValidator();
  if (validate(manifest)) return [];
  const errors = [...(validate.errors ?? [])].sort((a, b) => (a.instancePath < b.instancePath ? -1 : 1));
  return errors.slice(0, 50).map((e) => short(`${e.instancePath.slice(1) || "(root)"}: ${schemaMessage(e)}`));
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
  const pixels = inputs.get("pixel_values");
  if (index === 0 && pixels && !sameList(pixels.shape, [1, 3, size, size])) {
    out.push(`stage ${q} takes pixel_values ${JSON.stringify(pixels.shape)}, preprocessing gives [1, 3, ${size}, ${size}]`);
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
  }
  return named;
}

/**
 * Step 7: every listed and named path is a safe relative path; a named path is listed, or is a
 * directory whose every file is listed (checked where the source can list directories).
 */
export async function checkPaths(source: BundleSource, m: Manifest): Promise<void> {
  const files = m.files;
  const keys = Object.keys(files);
  const bad = keys.flatMap((rel) => {
    const p = memberProblem(rel);
    return p ? [`${short(rel, 80)}: ${p}`] : [];
  });
  if (bad.length > 0) throw new BundleError(`files lists unsafe paths: ${listing(bad)}; export the bundle again`);
  if (own(files, MANIFEST_FILE) || own(files, SIGNATURE_FILE)) {
    throw new BundleError(`files may not list ${MANIFEST_FILE} or ${SIGNATURE_FILE}`);
  }
  for (const [rel, where] of namedPaths(m)) {
    const problem = memberProblem(rel);
    if (problem) throw new BundleError(`${where}: ${problem}`, { path: String(rel) });
    if (own(files, rel)) continue;
    const prefix = rel + "/";
    if (!keys.some((f) => f.startsWith(prefix))) {
      throw new BundleError(`${where} names ${JSON.stringify(rel)}, which \`files\` does not list with a hash; ` +
        "export it again", { path: rel });
    }
    if (source.listTree) {
      const tree = await source.listTree(rel);
      if (tree.links.length > 0) {
        throw new BundleError(`${tree.links[0]} is a symbolic link; a bundle may not contain links`,
          { path: tree.links[0], reason: "link" });
      }
      const unlisted = [...tree.files, ...tree.others].filter((f) => !own(files, f)).sort();
      if (unlisted.length > 0) {
        throw new BundleError(`${rel} holds files the manifest does not list: ${listing(unlisted)}; export it again`,
          { path: rel });
      }
    } else if (source.checkMember) {
      await source.checkMember(rel, "directory");
    }
  }
  const tokenizerEntry = own(files, m.tokenizer.file) ? files[m.tokenizer.file] : undefined;
  if (tokenizerEntry && tokenizerEntry.bytes > MAX_TOKENIZER_BYTES) {
    throw new BundleError(`the tokenizer file is over ${MAX_TOKENIZER_BYTES >> 20} MB`);
  }
}

// ------------------------------------------------------------------------------------- step 8
/**
 * Step 8: every listed file is a regular file (no links), of its listed size and SHA-256. Returns
 * the verified bytes of the files in `keep` (read once: what is verified is what is used).
 */
export async function verifyFiles(source: BundleSource, m: Manifest, keep: Iterable<string> = []): Promise<Map<string, Uint8Array>> {
  const wanted = new Set(keep);
  const kept = new Map<string, Uint8Array>();
  const missing: string[] = [];
  const changed: string[] = [];
  const odd: string[] = [];
  for (const [rel, entry] of Object.entries(m.files)) {
    let data: Uint8Array;
    try {
      data = await source.read(rel, entry.bytes);
    } catch (exc) {
      if (!(exc instanceof BundleError)) throw exc;
      if (exc.reason === "missing") missing.push(rel);
      else if (exc.reason === "too-large") changed.push(rel);
      else odd.push(rel);
      continue;
    }
    if (data.length !== entry.bytes || (await sha256Hex(data)) !== entry.sha256) {
      changed.push(rel);
      continue;
    }
    if (wanted.has(rel)) kept.set(rel, data);
  }
  if (missing.length || changed.length || odd.length) {
    const parts = [
      ...(missing.length ? [`missing: ${listing(missing)}`] : []),
      ...(odd.length ? [`not regular files inside the bundle (links, devices): ${listing(odd)}`] : []),
      ...(changed.length ? [`hash mismatch (tampered or corrupt): ${listing(changed)}`] : []),
    ];
    throw new BundleError(`bundle ${source.name} failed verification; ${parts.join("; ")}. Export it again`,
      { path: missing[0] ?? odd[0] ?? changed[0], reason: missing.length ? "missing" : odd.length ? "not-regular" : undefined });
  }
  return kept;
}

// ------------------------------------------------------------------------------------- step 9
/** Step 9: the tokenizer file agrees with the manifest and gives ids the model's embedding has. */
export function checkTokenizer(tokenizer: WordTokenizer, m: Manifest): void {
  const spec = m.tokenizer;
  const rows = m.model.config.vocab_size;
  const ids = [...tokenizer.vocab.values()];
  const problems: string[] = [];
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
    throw new BundleError(`the bundle's tokenizer does not fit its manifest: ${problems.join("; ")}; export the bundle again`);
  }
}

// ------------------------------------------------------------------------------------- all steps
export interface LoadManifestOptions {
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

/** Every loading check of the spec (steps 1 to 9), in order; BundleError / SignatureError say what is wrong. */
export async function loadManifest(source: BundleSource, options: LoadManifestOptions = {}): Promise<LoadedManifest> {
  if (!source || typeof source.read !== "function") {
    throw new BundleError("a bundle source is needed: new NodeDirectorySource(dir), new FetchSource(url) or " +
      "new MemorySource(files)");
  }
  let manifestBytes: Uint8Array;
  try {
    manifestBytes = await source.read(MANIFEST_FILE, MAX_MANIFEST_BYTES);
  } catch (exc) {
    if (exc instanceof BundleError && exc.reason === "missing") {
      throw new BundleError(`${source.name} has no ${MANIFEST_FILE}: not an mmedge bundle, or an interrupted copy; ` +
        "export it again", { cause: exc, path: MANIFEST_FILE, reason: "missing" });
    }
    if (exc instanceof BundleError && exc.reason === "too-large") {
      throw new BundleError(`${MANIFEST_FILE} is over ${MAX_MANIFEST_BYTES} bytes; not an mmedge bundle file`,
        { cause: exc, path: MANIFEST_FILE, reason: "too-large" });
    }
    throw exc;
  }
  if (options.verifyKey !== undefined && options.verifyKey !== null) {
    await verifyManifestSignature(source, manifestBytes, options.verifyKey);
  }
  const where = `${source.name.replace(/\/+$/, "")}/${MANIFEST_FILE}`;
  const manifest = parseManifest(manifestBytes, where);
  let problems = validateSchema(manifest);
  if (problems.length > 0) {
    throw new BundleError(`${where} does not match the manifest schema (export the bundle again with a matching mmedge):\n  ${problems.slice(0, 10).join("\n  ")}`);
  }
  problems = consistencyProblems(manifest);
  if (problems.length > 0) {
    throw new BundleError(`${where} is inconsistent:\n  ${problems.slice(0, 10).join("\n  ")}\n` +
      "The manifest was edited or is corrupt: export the bundle again");
  }
  await checkPaths(source, manifest);
  const keep = new Set(options.select ? options.select(manifest) : []);
  keep.add(manifest.tokenizer.file);
  const files = await verifyFiles(source, manifest, keep);
  const tokenizerBytes = files.get(manifest.tokenizer.file);
  if (!tokenizerBytes) {
    throw new BundleError(`tokenizer.file ${JSON.stringify(manifest.tokenizer.file)} is not a listed file; export the bundle again`);
  }
  const tokenizer = WordTokenizer.fromJSON(tokenizerBytes, manifest.tokenizer.lowercase);
  checkTokenizer(tokenizer, manifest);
  return { manifest, manifestBytes, tokenizer, files };
}
