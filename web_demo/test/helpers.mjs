// Shared set-up for the web demo's tests: the built runtime, the vendored ajv, the golden vectors,
// the static server and headless Chromium (Debian's /usr/bin/chromium through playwright-core;
// playwright's own browser download is never used).

import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { build } from "../build.mjs";
import { startServer } from "../serve.mjs";

export const HERE = path.dirname(fileURLToPath(import.meta.url));
export const DEMO = path.resolve(HERE, "..");
export const ROOT = path.resolve(DEMO, "..");
export const RUNTIME = path.join(ROOT, "runtimes", "js");
export const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
/** The golden vectors: tests/vectors/golden, or MMEDGE_WEB_GOLDEN (a folder, relative to the repo root). */
export const GOLDEN_DIR = path.resolve(ROOT, process.env.MMEDGE_WEB_GOLDEN || "tests/vectors/golden");

function run(cmd, args, options = {}) {
  const result = spawnSync(cmd, args, { stdio: "inherit", ...options });
  if (result.status !== 0) throw new Error(`${cmd} ${args.join(" ")} failed (exit ${result.status})`);
}

/**
 * The runtime's dist/ is built when missing (`npm ci` first, with ONNXRUNTIME_NODE_INSTALL=skip,
 * when runtimes/js has no node_modules); an existing dist/ is used as it is (scripts/test_web.sh
 * always rebuilds it). Then web_demo/vendor/ajv2020.js is rebuilt.
 */
export async function ensureBuilt() {
  if (!fs.existsSync(path.join(RUNTIME, "dist", "index.js"))) {
    if (!fs.existsSync(path.join(RUNTIME, "node_modules"))) {
      run("npm", ["ci", "--no-audit", "--no-fund"], {
        cwd: RUNTIME, env: { ...process.env, ONNXRUNTIME_NODE_INSTALL: "skip" },
      });
    }
    run("npm", ["run", "build"], { cwd: RUNTIME });
  }
  const { notes } = await build({ quiet: true });
  return notes;
}

/** queries.json, with the bundle it was made from (a folder relative to the repo root). */
export function loadGolden() {
  const file = path.join(GOLDEN_DIR, "queries.json");
  if (!fs.existsSync(file)) {
    throw new Error(`${path.relative(ROOT, file)} is missing: generate it with ` +
      "`python scripts/make_golden_vectors.py` (or set MMEDGE_WEB_GOLDEN to a folder that has one)");
  }
  const golden = JSON.parse(fs.readFileSync(file, "utf8"));
  const bundleDir = path.join(ROOT, golden.bundle);
  if (!fs.existsSync(path.join(bundleDir, "manifest.json"))) {
    throw new Error(`the golden vectors were made from ${golden.bundle}, which is missing`);
  }
  return { golden, bundleDir };
}

/** URL path (from the server root) of a file under the repo root. */
export function urlPath(file) {
  const rel = path.relative(ROOT, file);
  if (rel.startsWith("..") || path.isAbsolute(rel)) throw new Error(`${file} is outside the repository`);
  return "/" + rel.split(path.sep).map(encodeURIComponent).join("/") + (file.endsWith("/") ? "/" : "");
}

/** by_keep_ratio's entry for a keep ratio (keys are Python's str(float): "1.0", "0.5"). */
export function byRatio(query, ratio) {
  const key = Object.keys(query.by_keep_ratio).find((k) => Number(k) === Number(ratio));
  if (key === undefined) throw new Error(`${query.name}: no golden values for keep ratio ${ratio}`);
  return query.by_keep_ratio[key];
}

// the page's own statistics (web_demo/caption.js), so that the tests compute what the page shows
export { median, quantile } from "../caption.js";

/** The server on a free 127.0.0.1 port, Chromium, and a page with console errors collected. */
export async function openDemo({ query = "threads=1", viewport = { width: 1000, height: 700 } } = {}) {
  if (!fs.existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} not found: apt-get install -y chromium (or set CHROMIUM_PATH); ` +
      "playwright's own browser download is not used");
  }
  const { chromium } = await import("playwright-core");
  const { server, url } = await startServer({ port: 0 });
  let browser;
  try {
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
  } catch (err) {
    server.close();
    throw err;
  }
  const page = await browser.newPage({ viewport });
  const problems = [];
  const warnings = [];
  page.on("console", (message) => {
    if (message.type() === "error") problems.push(`console.error: ${message.text()}`);
    else if (message.type() === "warning") warnings.push(message.text());
  });
  page.on("pageerror", (err) => problems.push(`uncaught: ${err.message}`));
  page.on("requestfailed", (request) => problems.push(`request failed: ${request.url()} (${request.failure()?.errorText})`));
  page.on("response", (response) => {
    if (response.status() >= 400) problems.push(`HTTP ${response.status()}: ${response.url()}`);
  });
  return {
    server, url, browser, page, problems, warnings,
    async close() {
      await browser.close().catch(() => {});
      await new Promise((resolve) => server.close(resolve));
    },
  };
}
