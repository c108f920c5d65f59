// serve.mjs: 127.0.0.1 only, MIME types, cross-origin isolation headers, and no path outside the
// repository root.

import assert from "node:assert/strict";
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";

import { startServer } from "../serve.mjs";

let root;
let server;
let port;

/** A raw GET (the path is sent as it is, without URL normalisation). */
function get(rawPath, method = "GET") {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port, path: rawPath, method }, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString() }));
    });
    req.on("error", reject);
    req.end();
  });
}

before(async () => {
  const base = fs.mkdtempSync(path.join(os.tmpdir(), "mmedge-serve-"));
  root = path.join(base, "repo");
  fs.mkdirSync(path.join(root, "web_demo", "sub"), { recursive: true });
  fs.mkdirSync(path.join(root, ".git"));
  fs.writeFileSync(path.join(root, ".git", "config"), "secret");
  fs.writeFileSync(path.join(base, "outside.txt"), "outside");
  fs.writeFileSync(path.join(root, "web_demo", "index.html"), "<!doctype html>");
  fs.writeFileSync(path.join(root, "web_demo", "a.wasm"), Buffer.from([0, 97, 115, 109]));
  fs.writeFileSync(path.join(root, "web_demo", "a.mjs"), "export {}");
  fs.writeFileSync(path.join(root, "web_demo", "m.json"), "{}");
  fs.writeFileSync(path.join(root, "web_demo", "s.onnx"), "onnx");
  fs.symlinkSync(path.join(base, "outside.txt"), path.join(root, "web_demo", "link-out.txt"));
  fs.symlinkSync(base, path.join(root, "web_demo", "dir-out"));
  ({ server, port } = await startServer({ port: 0, root }));
});

after(() => new Promise((resolve) => server.close(resolve)));

describe("serve.mjs", () => {
  it("listens on 127.0.0.1 only", () => {
    assert.equal(server.address().address, "127.0.0.1");
  });

  it("serves files with their MIME types and the COOP / COEP headers", async () => {
    const cases = {
      "/web_demo/a.wasm": "application/wasm",
      "/web_demo/a.mjs": "text/javascript; charset=utf-8",
      "/web_demo/m.json": "application/json; charset=utf-8",
      "/web_demo/s.onnx": "application/octet-stream",
      "/web_demo/": "text/html; charset=utf-8",
    };
    for (const [p, type] of Object.entries(cases)) {
      const res = await get(p);
      assert.equal(res.status, 200, p);
      assert.equal(res.headers["content-type"], type, p);
      assert.equal(res.headers["cross-origin-opener-policy"], "same-origin", p);
      assert.equal(res.headers["cross-origin-embedder-policy"], "require-corp", p);
    }
    const head = await get("/web_demo/a.wasm", "HEAD");
    assert.equal(head.headers["content-length"], "4");
  });

  it("redirects a directory to its slash form", async () => {
    const res = await get("/web_demo");
    assert.equal(res.status, 301);
    assert.equal(res.headers.location, "/web_demo/");
  });

  it("refuses paths outside the root, hidden files and links leading out", async () => {
    const refused = [
      "/../outside.txt", "/web_demo/../../outside.txt", "/%2e%2e/outside.txt", "/web_demo/%2e%2e/%2e%2e/outside.txt",
      "/web_demo/..%2f..%2foutside.txt", "/web_demo/..%5c..%5coutside.txt", "/.git/config", "/web_demo/%00",
      "/web_demo/link-out.txt", "/web_demo/dir-out/outside.txt", "/%E0%A4%A",
    ];
    for (const p of refused) {
      const res = await get(p);
      assert.ok([400, 403, 404].includes(res.status), `${p}: HTTP ${res.status}`);
      assert.ok(!res.body.includes("outside") && !res.body.includes("secret"), `${p} leaked a file`);
    }
  });

  it("answers 405 to other methods", async () => {
    const res = await get("/web_demo/", "POST");
    assert.equal(res.status, 405);
  });
});
