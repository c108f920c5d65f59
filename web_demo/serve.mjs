#!/usr/bin/env node
// Static file server for the mmedge web demo.
//
// Serves the repository root (the folder above this one) so that both `/web_demo/` and
// `/models/.../NAME.mmedge/` are reachable from the page. It binds 127.0.0.1 only, refuses any
// path that resolves outside the root (`..`, encoded separators, NUL, symbolic links leading out),
// sends correct MIME types (`application/wasm` included, which `WebAssembly.instantiateStreaming`
// requires) and the two cross-origin isolation headers that make `SharedArrayBuffer`, and so
// multi-threaded WebAssembly, available to the page:
//
//   Cross-Origin-Opener-Policy: same-origin
//   Cross-Origin-Embedder-Policy: require-corp
//
// Usage: node web_demo/serve.mjs [--port N] [--root DIR]   (port 0 = any free port; default 8000)
// Also importable: `const {server, url} = await startServer({port: 0})`.

import http from "node:http";
import fs from "node:fs";
import fsp from "node:fs/promises";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const DEFAULT_ROOT = path.resolve(HERE, "..");
export const HOST = "127.0.0.1";

const MIME = {
  ".html": "text/html; charset=utf-8",
  ".htm": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".cjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json; charset=utf-8",
  ".map": "application/json; charset=utf-8",
  ".wasm": "application/wasm",
  ".onnx": "application/octet-stream",
  ".ort": "application/octet-stream",
  ".pte": "application/octet-stream",
  ".bin": "application/octet-stream",
  ".sig": "application/json; charset=utf-8",
  ".png": "image/png",
  ".jpg": "image/jpeg",
  ".jpeg": "image/jpeg",
  ".gif": "image/gif",
  ".webp": "image/webp",
  ".svg": "image/svg+xml",
  ".ico": "image/x-icon",
  ".txt": "text/plain; charset=utf-8",
  ".md": "text/plain; charset=utf-8",
};

export function mimeType(file) {
  return MIME[path.extname(file).toLowerCase()] ?? "application/octet-stream";
}

const COMMON_HEADERS = {
  "Cross-Origin-Opener-Policy": "same-origin",
  "Cross-Origin-Embedder-Policy": "require-corp",
  "Cross-Origin-Resource-Policy": "same-origin",
  "X-Content-Type-Options": "nosniff",
  "Cache-Control": "no-cache",
};

function send(res, status, text, extra = {}) {
  res.writeHead(status, { ...COMMON_HEADERS, "Content-Type": "text/plain; charset=utf-8", ...extra });
  res.end(text + "\n");
}

function isInside(root, p) {
  const rel = path.relative(root, p);
  return rel === "" || (!rel.startsWith("..") && !path.isAbsolute(rel));
}

/** Resolves a request path to a file under root, or returns null (refused). */
export async function resolvePath(root, urlPath) {
  let decoded;
  try {
    decoded = decodeURIComponent(urlPath);
  } catch {
    return null;
  }
  if (decoded.includes("\0") || decoded.includes("\\")) return null;
  const parts = decoded.split("/");
  if (parts.some((part) => part === ".." || part === ".")) return null;
  // Hidden files and folders (.git, .env, partial bundles) are not served.
  if (parts.some((part) => part.startsWith("."))) return null;
  const candidate = path.resolve(root, "." + path.posix.normalize("/" + decoded));
  if (!isInside(root, candidate)) return null;
  let real;
  try {
    real = await fsp.realpath(candidate);
  } catch {
    return { missing: true };
  }
  const realRoot = await fsp.realpath(root);
  if (!isInside(realRoot, real)) return null; // a symbolic link leading out of the root
  return { file: real, trailingSlash: decoded.endsWith("/") };
}

export function createServer({ root = DEFAULT_ROOT, log = false } = {}) {
  root = path.resolve(root);
  return http.createServer(async (req, res) => {
    const started = Date.now();
    try {
      if (req.method !== "GET" && req.method !== "HEAD") {
        return send(res, 405, "method not allowed", { Allow: "GET, HEAD" });
      }
      const url = new URL(req.url ?? "/", "http://localhost");
      const resolved = await resolvePath(root, url.pathname);
      if (resolved === null) return send(res, 403, "forbidden");
      if (resolved.missing) return send(res, 404, "not found");
      let file = resolved.file;
      let stat = await fsp.stat(file);
      if (stat.isDirectory()) {
        if (!url.pathname.endsWith("/")) {
          res.writeHead(301, { ...COMMON_HEADERS, Location: url.pathname + "/" + url.search });
          return res.end();
        }
        file = path.join(file, "index.html");
        try {
          stat = await fsp.stat(file);
        } catch {
          return send(res, 404, "not found (no index.html)");
        }
      }
      if (!stat.isFile()) return send(res, 403, "forbidden (not a regular file)");
      const headers = {
        ...COMMON_HEADERS,
        "Content-Type": mimeType(file),
        "Content-Length": String(stat.size),
        "Last-Modified": stat.mtime.toUTCString(),
      };
      res.writeHead(200, headers);
      if (req.method === "HEAD") return res.end();
      const stream = fs.createReadStream(file);
      stream.on("error", () => res.destroy());
      stream.pipe(res);
    } catch (err) {
      if (!res.headersSent) send(res, 500, "internal error");
      else res.destroy();
      if (log) console.error(err);
    } finally {
      if (log) {
        res.on("finish", () =>
          console.log(`${req.method} ${req.url} ${res.statusCode} ${Date.now() - started}ms`));
      }
    }
  });
}

/** Starts the server on 127.0.0.1; resolves to {server, port, url}. */
export function startServer({ port = 8000, root = DEFAULT_ROOT, log = false } = {}) {
  const server = createServer({ root, log });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, HOST, () => {
      const actual = server.address().port;
      resolve({ server, port: actual, url: `http://${HOST}:${actual}/` });
    });
  });
}

function parseArgs(argv) {
  const out = { port: 8000, root: DEFAULT_ROOT };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--port" || a === "-p") out.port = Number(argv[++i]);
    else if (a.startsWith("--port=")) out.port = Number(a.slice(7));
    else if (a === "--root") out.root = path.resolve(argv[++i]);
    else if (a.startsWith("--root=")) out.root = path.resolve(a.slice(7));
    else if (a === "--help" || a === "-h") {
      console.log("usage: node web_demo/serve.mjs [--port N] [--root DIR]");
      process.exit(0);
    } else {
      console.error(`unknown argument: ${a}`);
      process.exit(2);
    }
  }
  if (!Number.isInteger(out.port) || out.port < 0 || out.port > 65535) {
    console.error("--port must be an integer 0..65535");
    process.exit(2);
  }
  return out;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const args = parseArgs(process.argv.slice(2));
  const { url } = await startServer({ ...args, log: process.env.MMEDGE_SERVE_LOG === "1" });
  console.log(`serving ${args.root} at ${url} (127.0.0.1 only)`);
  const missing = [
    ["web_demo/node_modules/onnxruntime-web", "cd web_demo && npm ci"],
    ["web_demo/vendor/ajv2020.js", "cd web_demo && npm run build"],
    ["web_demo/vendor/caption-default.mmedge/manifest.json", "cd web_demo && npm run build"],
    ["runtimes/js/dist/index.js", "cd runtimes/js && npm ci && npm run build"],
  ].filter(([p]) => !fs.existsSync(path.join(args.root, p)));
  for (const [p, fix] of missing) console.warn(`warning: ${p} is missing, the demo page needs it: ${fix}`);
  console.log(`open ${url}web_demo/`);
}
