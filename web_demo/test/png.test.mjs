// png.js on PNG files written by png-writer.mjs (every colour type, bit depths 1-16, all five filters, Adam7),
// against the pixels they were made from. The browser tests check the golden images end to end.

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { decodePng, isPng } from "../png.js";
import { encode } from "./png-writer.mjs";

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
