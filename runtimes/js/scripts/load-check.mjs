// Loads a bundle with this runtime on onnxruntime-node or onnxruntime-web (WebAssembly, in Node) and
// answers one query; prints one JSON line. Used by benchmarks/onnx_weights.py (issue #18: .onnx files
// with shared external weights and self-contained .ort files must both load on both).
//   node scripts/load-check.mjs --ort node|web --bundle DIR --format onnx|ort --precision fp32|int8 \
//        --image query.png --text "what color is the circle ?" [--web-module PATH/onnxruntime-web]
import { performance } from "node:perf_hooks";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";

import { Engine, NodeDirectorySource } from "../dist/index.js";
import { readPng } from "../test-support/helpers.mjs";

const { values } = parseArgs({
  options: {
    ort: { type: "string", default: "node" },
    bundle: { type: "string" },
    format: { type: "string", default: "onnx" },
    precision: { type: "string", default: "fp32" },
    image: { type: "string" },
    text: { type: "string" },
    "web-module": { type: "string" },
  },
});
for (const name of ["bundle", "image", "text"]) {
  if (!values[name]) {
    console.error(`--${name} is required`);
    process.exit(2);
  }
}

let ort;
if (values.ort === "web") {
  if (!values["web-module"]) {
    console.error("--web-module (the onnxruntime-web package folder) is required with --ort web");
    process.exit(2);
  }
  ort = await import(pathToFileURL(`${values["web-module"]}/dist/ort.node.min.mjs`).href);
  ort.env.wasm.numThreads = 1;
} else {
  ort = await import("onnxruntime-node");
}

const out = { ort: values.ort, format: values.format, precision: values.precision };
try {
  const t0 = performance.now();
  const engine = await Engine.load(new NodeDirectorySource(values.bundle),
    { ort, format: values.format, precision: values.precision });
  out.load_ms = performance.now() - t0;
  const prediction = await engine.predict(readPng(values.image), values.text, { policy: "full" });
  out.loaded = true;
  out.answer = prediction.answer;
  out.exit_index = prediction.exitIndex;
  await engine.dispose();
} catch (exc) {
  out.loaded = false;
  out.error = String(exc).slice(0, 500);
  if (exc?.code !== undefined) out.code = exc.code;
}
console.log(JSON.stringify(out));
