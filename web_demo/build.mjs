#!/usr/bin/env node
// Builds what the page cannot load straight from node_modules.
//
// The runtime (`runtimes/js/dist/`) is plain ESM except for one import: it validates manifests
// with ajv (`import * as AjvModule from "ajv/dist/2020.js"`), and ajv ships CommonJS only, which
// a browser cannot import. This script converts that one entry point into an ES module,
// `web_demo/vendor/ajv2020.js` (ignored by git, rebuilt by `npm run build`), that the page's import
// map names for "ajv/dist/2020.js". onnxruntime-web already ships ESM and is imported from
// node_modules as it is.
//
// It also checks that web_demo pins the same ajv and onnxruntime versions as the runtime, and
// that the built runtime imports no other bare module the import map lacks.
//
// The captioning mode needs a whole captioning bundle. The shipped captioner's bundle is committed as
// the caption golden vectors' bundle, tests/vectors/caption/caption-default.mmedge, without its 7 MB
// weights file (tests/vectors/caption/weights.json rebuilds it byte for byte from
// models/caption-default/model.safetensors). This script copies that bundle to
// `web_demo/vendor/caption-default.mmedge/` (ignored by git) with the weights file rebuilt; the page
// then loads it like any served bundle, every file's SHA-256 checked against the manifest.

import fs from "node:fs/promises";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { createRequire } from "node:module";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, "..");
const RUNTIME = path.join(ROOT, "runtimes", "js");
const VENDOR = path.join(HERE, "vendor");
const CAPTION_VECTORS = path.join(ROOT, "tests", "vectors", "caption");
/** Where the page finds the captioning bundle (index: app.js DEFAULT_CAPTION_BUNDLE). */
export const CAPTION_BUNDLE = path.join(VENDOR, "caption-default.mmedge");

// Bare specifiers the page's import map resolves (index.html).
export const MAPPED = new Set(["@mmedge/runtime", "onnxruntime-web", "ajv/dist/2020.js"]);

async function readJson(file) {
  return JSON.parse(await fs.readFile(file, "utf8"));
}

async function checkVersions() {
  const ours = await readJson(path.join(HERE, "package.json"));
  const notes = [];
  let theirs;
  try {
    theirs = await readJson(path.join(RUNTIME, "package.json"));
  } catch {
    return ["runtimes/js/package.json not found: versions not compared"];
  }
  const deps = { ...theirs.dependencies, ...theirs.devDependencies };
  if (deps.ajv && deps.ajv !== ours.dependencies.ajv) {
    notes.push(`ajv: runtime pins ${deps.ajv}, web_demo ${ours.dependencies.ajv}: align web_demo/package.json`);
  }
  const ortLine = (v) => String(v ?? "").replace(/^[~^]/, "").split(".").slice(0, 2).join(".");
  const runtimeOrt = deps["onnxruntime-common"] ?? deps["onnxruntime-web"] ?? deps["onnxruntime-node"];
  if (runtimeOrt && ortLine(runtimeOrt) !== ortLine(ours.dependencies["onnxruntime-web"])) {
    notes.push(`onnxruntime: runtime uses ${runtimeOrt}, web_demo onnxruntime-web ` +
      `${ours.dependencies["onnxruntime-web"]}: align web_demo/package.json`);
  }
  return notes;
}

/** Bare module specifiers imported by the built runtime's files (static and literal dynamic imports). */
export async function runtimeBareImports(dist = path.join(RUNTIME, "dist")) {
  const found = new Map();
  let names;
  try {
    names = (await fs.readdir(dist, { recursive: true })).filter((n) => n.endsWith(".js"));
  } catch {
    return null;
  }
  const pattern = /(?:^|[;\s}])(?:import|export)\s[^'"]*?from\s*["']([^"']+)["']|(?:^|[;\s])import\s*["']([^"']+)["']|import\(\s*["']([^"']+)["']\s*\)/gm;
  for (const name of names) {
    // Block comments out first (the runtime's doc comments show `import ... from "onnxruntime-node"`).
    const text = (await fs.readFile(path.join(dist, name), "utf8")).replace(/\/\*[\s\S]*?\*\//g, "");
    for (const m of text.matchAll(pattern)) {
      const spec = m[1] ?? m[2] ?? m[3];
      if (spec.startsWith(".") || spec.startsWith("/") || spec.startsWith("node:")) continue;
      if (!found.has(spec)) found.set(spec, name);
    }
  }
  return found;
}

async function buildAjv() {
  const esbuild = await import("esbuild");
  const require = createRequire(path.join(HERE, "package.json"));
  const ajvPkg = await readJson(require.resolve("ajv/package.json"));
  await fs.mkdir(VENDOR, { recursive: true });
  const outfile = path.join(VENDOR, "ajv2020.js");
  await esbuild.build({
    stdin: {
      contents: 'import Ajv2020 from "ajv/dist/2020.js";\nexport default Ajv2020;\n',
      resolveDir: HERE,
      sourcefile: "ajv2020-entry.js",
    },
    bundle: true,
    format: "esm",
    platform: "browser",
    target: "es2020",
    minify: true,
    legalComments: "eof",
    banner: { js: `// ajv ${ajvPkg.version} (MIT, https://ajv.js.org), Ajv2020 as an ES module; built by web_demo/build.mjs, do not edit.` },
    outfile,
    logLevel: "warning",
  });
  const size = (await fs.stat(outfile)).size;
  return { outfile, size, version: ajvPkg.version };
}

/**
 * vendor/caption-default.mmedge: the caption vectors' bundle with its weights file rebuilt (built
 * in a hidden temporary folder, then put in place, so that a half-written bundle is never served).
 */
async function buildCaptionBundle() {
  const { rebuildCaptionWeights } = await import("../runtimes/js/test-support/caption-weights.mjs");
  const recipe = await readJson(path.join(CAPTION_VECTORS, "weights.json"));
  const vectors = await readJson(path.join(CAPTION_VECTORS, "vectors.json"));
  const source = path.join(ROOT, vectors.bundle);
  const weights = rebuildCaptionWeights(ROOT, recipe);
  const temp = path.join(VENDOR, `.caption-bundle-${process.pid}`);
  await fs.rm(temp, { recursive: true, force: true });
  await fs.cp(source, temp, { recursive: true });
  await fs.writeFile(path.join(temp, recipe.file), weights);
  await fs.rm(CAPTION_BUNDLE, { recursive: true, force: true });
  await fs.rename(temp, CAPTION_BUNDLE);
  return { dir: CAPTION_BUNDLE, source: vectors.bundle, bytes: weights.length };
}

export async function build({ quiet = false } = {}) {
  const log = quiet ? () => {} : (...a) => console.log(...a);
  const ajv = await buildAjv();
  log(`built ${path.relative(ROOT, ajv.outfile)} (ajv ${ajv.version}, ${(ajv.size / 1024).toFixed(0)} KiB)`);
  const caption = await buildCaptionBundle();
  log(`built ${path.relative(ROOT, caption.dir)} (${caption.source}, weights rebuilt: ${(caption.bytes / 1048576).toFixed(1)} MB)`);
  const notes = await checkVersions();
  const imports = await runtimeBareImports();
  if (imports === null) {
    notes.push("runtimes/js/dist is not built yet: run `npm --prefix runtimes/js run build` (or scripts/test_web.sh)");
  } else {
    for (const [spec, file] of imports) {
      if (!MAPPED.has(spec)) notes.push(`the runtime imports "${spec}" (dist/${file}), which index.html's import map does not resolve`);
    }
  }
  for (const n of notes) console.warn(`warning: ${n}`);
  return { ajv, caption, notes };
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  try {
    await build();
  } catch (err) {
    console.error(`build failed: ${err?.message ?? err}`);
    process.exit(1);
  }
}
