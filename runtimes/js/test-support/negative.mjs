// The negative golden vectors (tests/vectors/negative/cases.json, format mmedge-negative-vectors-1,
// made by scripts/make_negative_vectors.py): each case is a list of operations applied to a fresh
// copy of the base bundle; a runtime must refuse the result with the case's reason code (or load
// it, for a control case whose code is null).
import { execFileSync } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve, sep } from "node:path";

import { REPO, readJson } from "./helpers.mjs";

export const NEGATIVE = join(REPO, "tests/vectors/negative");
export const CASES_FILE = join(NEGATIVE, "cases.json");
export const FORMAT = "mmedge-negative-vectors-1";

/** The cases document, checked for its format. */
export function readCases(path = CASES_FILE) {
  const doc = readJson(path);
  if (doc.format !== FORMAT) throw new Error(`${path}: format ${JSON.stringify(doc.format)}, expected ${FORMAT}`);
  if (!Array.isArray(doc.cases) || typeof doc.base !== "string") throw new Error(`${path}: no cases or base`);
  return doc;
}

/** A bundle-relative "/"-separated path inside `root` (the generator's paths never leave the copy). */
function inside(root, rel) {
  if (typeof rel !== "string" || rel.length === 0) throw new Error(`bad op path ${JSON.stringify(rel)}`);
  const full = resolve(root, ...rel.split("/"));
  if (full !== root && !full.startsWith(root + sep)) throw new Error(`op path ${rel} leaves the bundle copy`);
  return full;
}

/** Applies one op to the bundle copy at `bundle` (whose parent directory is the case's own). */
export function applyOp(bundle, op, filesDir = join(NEGATIVE, "files")) {
  switch (op.op) {
    case "write": {
      const path = inside(bundle, op.path);
      mkdirSync(dirname(path), { recursive: true });
      writeFileSync(path, Buffer.from(op.base64, "base64"));
      return;
    }
    case "write_repeat": {
      const path = inside(bundle, op.path);
      const count = Number(op.count);
      if (!Number.isSafeInteger(count) || count < 0) throw new Error(`write_repeat count ${op.count}`);
      mkdirSync(dirname(path), { recursive: true });
      const unit = Buffer.from(op.base64, "base64");
      writeFileSync(path, Buffer.concat(Array.from({ length: count }, () => unit)));
      return;
    }
    case "copy_vector": {
      const path = inside(bundle, op.path);
      if (typeof op.from !== "string" || op.from.includes("/") || op.from.startsWith(".")) {
        throw new Error(`copy_vector from ${JSON.stringify(op.from)}`);
      }
      mkdirSync(dirname(path), { recursive: true });
      writeFileSync(path, readFileSync(join(filesDir, op.from)));
      return;
    }
    case "remove":
      rmSync(inside(bundle, op.path), { recursive: true, force: true });
      return;
    case "mkdir":
      mkdirSync(inside(bundle, op.path), { recursive: true });
      return;
    case "mkfifo": {
      const path = inside(bundle, op.path);
      mkdirSync(dirname(path), { recursive: true });
      execFileSync("mkfifo", [path]);
      return;
    }
    case "symlink": {
      const path = inside(bundle, op.path);
      mkdirSync(dirname(path), { recursive: true });
      symlinkSync(op.target, path); // the target as written (absolute, or relative to the link)
      return;
    }
    case "write_outside": {
      if (typeof op.name !== "string" || op.name.includes("/") || op.name.startsWith(".")) {
        throw new Error(`write_outside name ${JSON.stringify(op.name)}`);
      }
      writeFileSync(join(dirname(bundle), op.name), Buffer.from(op.base64, "base64"));
      return;
    }
    default:
      throw new Error(`unknown op ${JSON.stringify(op.op)}`);
  }
}

/**
 * A fresh copy of the base bundle in a new temporary directory with the case's ops applied;
 * returns [bundle path, cleanup].
 */
export function buildCase(doc, c) {
  const dir = mkdtempSync(join(tmpdir(), "mmedge-neg-"));
  const bundle = join(dir, "bundle.mmedge");
  try {
    cpSync(join(REPO, doc.base), bundle, { recursive: true, verbatimSymlinks: true });
    for (const op of c.ops) applyOp(bundle, op);
  } catch (exc) {
    rmSync(dir, { recursive: true, force: true });
    throw exc;
  }
  return [bundle, () => rmSync(dir, { recursive: true, force: true })];
}

/** The case's load options as Engine.load takes them. */
export function loadOptions(doc, c) {
  const load = c.load ?? {};
  const options = {};
  if (load.verify_key) options.verifyKey = doc.public_key_pem;
  if (load.min_sequence !== null && load.min_sequence !== undefined) options.minSequence = load.min_sequence;
  if (load.expect_name !== null && load.expect_name !== undefined) options.expectName = load.expect_name;
  return options;
}
