// The captioning vectors' bundle (tests/vectors/caption/caption-default.mmedge) is committed without
// its 7 MB weights file: tests/vectors/caption/weights.json says how to rebuild it byte for byte from
// models/caption-default/model.safetensors. Used by test/caption.test.mjs and by web_demo/build.mjs
// (which puts a complete copy of the bundle where the demo page can fetch it). Node built-ins only.
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";

const sha256 = (bytes) => createHash("sha256").update(bytes).digest("hex");

/**
 * weights.json's rule: a zero-filled buffer of `bytes`; each segment at `offset`, the safetensors
 * tensor's float32 bytes (a 2-D tensor transposed first when `transpose`) or the `base64` bytes.
 * `recipe` is weights.json parsed, `repo` the repository root its paths are relative to. Throws
 * unless the safetensors file and the result have the recipe's SHA-256.
 */
export function rebuildCaptionWeights(repo, recipe) {
  const st = readFileSync(join(repo, recipe.safetensors));
  if (sha256(st) !== recipe.safetensors_sha256) {
    throw new Error(`${recipe.safetensors} changed since the caption vectors were made (SHA-256 differs): ` +
      "run python scripts/make_caption_vectors.py");
  }
  const headerBytes = Number(st.readBigUInt64LE(0));
  const header = JSON.parse(st.subarray(8, 8 + headerBytes).toString("utf8"));
  const base = 8 + headerBytes;
  const out = new Uint8Array(recipe.bytes);
  for (const s of recipe.segments) {
    const chunk = s.base64 !== undefined ? Buffer.from(s.base64, "base64") : tensorBytes(st, base, header, s);
    if (chunk.length !== s.length) throw new Error(`weights segment at ${s.offset}: ${chunk.length} bytes, the recipe says ${s.length}`);
    out.set(chunk, s.offset);
  }
  if (sha256(out) !== recipe.sha256) throw new Error(`the rebuilt ${recipe.file} does not have the recipe's SHA-256`);
  return out;
}

/** A float32 tensor's bytes (row-major), transposed when the segment says so. */
function tensorBytes(st, base, header, segment) {
  const t = header[segment.tensor];
  if (!t) throw new Error(`the safetensors file has no tensor ${segment.tensor}`);
  if (t.dtype !== "F32") throw new Error(`tensor ${segment.tensor} is ${t.dtype}, not F32`);
  const raw = st.subarray(base + t.data_offsets[0], base + t.data_offsets[1]);
  if (!segment.transpose) return raw;
  const [r, c] = t.shape;
  const src = new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.length));
  const dst = new Float32Array(r * c);
  for (let i = 0; i < r; i++) for (let j = 0; j < c; j++) dst[j * r + i] = src[i * c + j];
  return new Uint8Array(dst.buffer);
}
