// png.js on PNG files written here (every colour type, bit depths 1-16, all five filters, Adam7),
// against the pixels they were made from. The browser tests check the golden images end to end.

import assert from "node:assert/strict";
import { describe, it } from "node:test";
import zlib from "node:zlib";

import { decodePng, isPng } from "../png.js";

function crc32(bytes) {
  let c;
  let crc = 0xffffffff;
  for (const b of bytes) {
    c = (crc ^ b) & 0xff;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    crc = (crc >>> 8) ^ c;
  }
  return (crc ^ 0xffffffff) >>> 0;
}

function chunk(type, body) {
  const out = Buffer.alloc(12 + body.length);
  out.writeUInt32BE(body.length, 0);
  out.write(type, 4, "latin1");
  Buffer.from(body).copy(out, 8);
  out.writeUInt32BE(crc32(out.subarray(4, 8 + body.length)), 8 + body.length);
  return out;
}

const paeth = (a, b, c) => {
  const p = a + b - c, pa = Math.abs(p - a), pb = Math.abs(p - b), pc = Math.abs(p - c);
  return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
};

/** Rows of samples (one array of sample values per row) to filtered scanlines, filter = row % 5. */
function scanlines(rows, samplesPerPixel, depth) {
  const bpp = Math.max(1, (samplesPerPixel * depth) >> 3);
  const parts = [];
  let prev = null;
  rows.forEach((samples, y) => {
    const bits = samples.length * depth;
    const raw = new Uint8Array(Math.ceil(bits / 8));
    samples.forEach((v, i) => {
      if (depth === 16) { raw[2 * i] = v >> 8; raw[2 * i + 1] = v & 255; }
      else if (depth === 8) raw[i] = v;
      else raw[(i * depth) >> 3] |= v << (8 - depth - ((i * depth) & 7));
    });
    const type = y % 5;
    const out = new Uint8Array(raw.length + 1);
    out[0] = type;
    for (let x = 0; x < raw.length; x++) {
      const a = x >= bpp ? raw[x - bpp] : 0, b = prev ? prev[x] : 0, c = prev && x >= bpp ? prev[x - bpp] : 0;
      const pred = [0, a, b, (a + b) >> 1, paeth(a, b, c)][type];
      out[x + 1] = (raw[x] - pred) & 255;
    }
    parts.push(out);
    prev = raw;
  });
  return parts;
}

/** A PNG from pixels[y][x] = array of samples. */
function encode({ pixels, colorType, depth, interlace = 0, plte, trns, exif }) {
  const height = pixels.length, width = pixels[0].length;
  const spp = { 0: 1, 2: 3, 3: 1, 4: 2, 6: 4 }[colorType];
  let lines = [];
  if (!interlace) lines = scanlines(pixels.map((row) => row.flat()), spp, depth);
  else {
    for (const [x0, y0, dx, dy] of [[0, 0, 8, 8], [4, 0, 8, 8], [0, 4, 4, 8], [2, 0, 4, 4], [0, 2, 2, 4], [1, 0, 2, 2], [0, 1, 1, 2]]) {
      const rows = [];
      for (let y = y0; y < height; y += dy) {
        const row = [];
        for (let x = x0; x < width; x += dx) row.push(...pixels[y][x]);
        if (row.length) rows.push(row);
      }
      lines.push(...scanlines(rows, spp, depth));
    }
  }
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr.set([depth, colorType, 0, 0, interlace], 8);
  const parts = [Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk("IHDR", ihdr)];
  if (exif) parts.push(chunk("eXIf", Uint8Array.from(exif)));
  if (plte) parts.push(chunk("PLTE", Uint8Array.from(plte.flat())));
  if (trns) parts.push(chunk("tRNS", Uint8Array.from(trns)));
  parts.push(chunk("IDAT", zlib.deflateSync(Buffer.concat(lines.map((l) => Buffer.from(l))))));
  parts.push(chunk("IEND", new Uint8Array(0)));
  return new Uint8Array(Buffer.concat(parts));
}

let seed = 12345;
const rand = (n) => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 8) % n;
const image = (w, h, f) => Array.from({ length: h }, () => Array.from({ length: w }, f));

describe("png.js", () => {
  it("decodes RGB and RGBA, 8 and 16 bits, plain and interlaced, every filter", async () => {
    for (const [colorType, depth] of [[2, 8], [6, 8], [2, 16], [6, 16]]) {
      for (const interlace of [0, 1]) {
        const max = (1 << depth) - 1;
        const pixels = image(13, 11, () => Array.from({ length: colorType === 6 ? 4 : 3 }, () => rand(max + 1)));
        const got = await decodePng(encode({ pixels, colorType, depth, interlace }));
        const want = pixels.flat(2).map((v) => (depth === 16 ? v >> 8 : v));
        assert.equal(got.channels, colorType === 6 ? 4 : 3);
        assert.deepEqual([got.width, got.height], [13, 11]);
        assert.deepEqual(Array.from(got.data), want, `colour type ${colorType}, ${depth} bits, interlace ${interlace}`);
      }
    }
  });

  it("decodes grey (1, 2, 4, 8, 16 bits) and grey + alpha to RGB / RGBA as the spec converts them", async () => {
    for (const depth of [1, 2, 4, 8, 16]) {
      const max = (1 << depth) - 1;
      const pixels = image(9, 7, () => [rand(max + 1)]);
      const got = await decodePng(encode({ pixels, colorType: 0, depth, interlace: depth === 4 ? 1 : 0 }));
      // 16-bit: the high byte (docs/bundle-format.md); 1, 2, 4 bits: scaled to 0..255 (1-bit: 0 / 255)
      const grey = (v) => (depth === 16 ? v >> 8 : Math.round((v * 255) / max));
      assert.equal(got.channels, 3);
      assert.deepEqual(Array.from(got.data), pixels.flat().flatMap(([v]) => [grey(v), grey(v), grey(v)]), `${depth} bits`);
    }
    const pixels = image(5, 4, () => [rand(256), rand(256)]);
    const got = await decodePng(encode({ pixels, colorType: 4, depth: 8 }));
    assert.equal(got.channels, 4);
    assert.deepEqual(Array.from(got.data), pixels.flat().flatMap(([v, a]) => [v, v, v, a]));
    const wide = image(5, 4, () => [rand(65536), rand(65536)]);
    const got16 = await decodePng(encode({ pixels: wide, colorType: 4, depth: 16, interlace: 1 }));
    assert.equal(got16.channels, 4);
    assert.deepEqual(Array.from(got16.data), wide.flat().flatMap(([v, a]) => [v >> 8, v >> 8, v >> 8, a >> 8]));
  });

  it("applies an eXIf chunk's orientation (6: rotated 90 degrees clockwise) after decoding", async () => {
    const pixels = image(4, 3, () => [rand(256), rand(256), rand(256)]);
    // big-endian TIFF, one IFD entry: Orientation (0x0112), SHORT, 6
    const exif = [0x4d, 0x4d, 0, 42, 0, 0, 0, 8, 0, 1, 0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0, 0, 0, 0, 0];
    const got = await decodePng(encode({ pixels, colorType: 2, depth: 8, exif }));
    assert.deepEqual([got.width, got.height], [3, 4]);
    for (let y = 0; y < 4; y++) {
      for (let x = 0; x < 3; x++) {
        const want = pixels[3 - 1 - x][y];
        assert.deepEqual(Array.from(got.data.subarray((y * 3 + x) * 3, (y * 3 + x) * 3 + 3)), want, `${x},${y}`);
      }
    }
  });

  it("decodes palette images, with tRNS to RGBA", async () => {
    const plte = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [7, 8, 9]];
    for (const depth of [2, 8]) {
      const pixels = image(10, 3, () => [rand(4)]);
      const plain = await decodePng(encode({ pixels, colorType: 3, depth, plte }));
      assert.equal(plain.channels, 3);
      assert.deepEqual(Array.from(plain.data), pixels.flat().flatMap(([i]) => plte[i]));
      const trns = [0, 128];
      const withAlpha = await decodePng(encode({ pixels, colorType: 3, depth, plte, trns }));
      assert.equal(withAlpha.channels, 4);
      assert.deepEqual(Array.from(withAlpha.data), pixels.flat().flatMap(([i]) => [...plte[i], i < trns.length ? trns[i] : 255]));
    }
  });

  it("ignores tRNS on RGB (as the Python runtime does) and refuses what is not a PNG", async () => {
    const pixels = image(3, 3, () => [1, 2, 3]);
    const got = await decodePng(encode({ pixels, colorType: 2, depth: 8, trns: [0, 1, 0, 2, 0, 3] }));
    assert.equal(got.channels, 3);
    assert.equal(isPng(new Uint8Array([1, 2, 3])), false);
    await assert.rejects(decodePng(new Uint8Array(16)), /not a PNG/);
    const truncated = encode({ pixels, colorType: 2, depth: 8 }).subarray(0, 40);
    await assert.rejects(decodePng(truncated));
  });
});
