// Decoding image files as docs/bundle-format.md ("Image") says (EXIF orientation first; grey,
// grey+alpha, palette with tRNS, 16-bit by the high byte; CMYK refused), checked on the golden
// images of tests/vectors/golden/image-modes.json (made from the Python runtime's decoder): the
// JavaScript side decodes PNG files with the web demo's exact decoder (web_demo/png.js), then this
// runtime composites (toRgb) and pads and resizes (preprocessImage); both hashes must match.
// JPEG files are decoded by the browser there (no JavaScript JPEG decoder here): the CMYK case
// checks that web_demo/image.js refuses the file before any decoding.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import test from "node:test";

import { preprocessImage, toRgb } from "../dist/index.js";
import { GOLDEN, REPO, readJson, sha256 } from "../test-support/helpers.mjs";

const { decodePng, applyOrientation, exifOrientation } = await import(join(REPO, "web_demo/png.js"));
const { jpegComponents, refuseUnsupported, DemoImageError } = await import(join(REPO, "web_demo/image.js"));

const doc = readJson(join(GOLDEN, "image-modes.json"));

test("image-modes.json: every PNG decodes to the expected RGB and resized RGB; CMYK is refused", async (t) => {
  assert.equal(doc.format, "mmedge-image-modes-1");
  assert.ok(doc.images.length >= 20);
  const config = { imageSize: doc.image_size, padColor: doc.pad_color, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5], scale: 1 / 255 };
  for (const entry of doc.images) {
    await t.test(entry.file, async () => {
      const bytes = new Uint8Array(readFileSync(join(GOLDEN, entry.file)));
      if (entry.refused) {
        assert.ok(entry.file.endsWith(".jpg"), "only the CMYK JPEG is refused");
        assert.equal(jpegComponents(bytes), 4);
        assert.throws(() => refuseUnsupported(bytes), (e) => e instanceof DemoImageError && /CMYK/.test(e.message) &&
          /convert it to RGB first/.test(e.message));
        return;
      }
      const image = await decodePng(bytes);
      assert.deepEqual([image.width, image.height], [entry.width, entry.height]);
      const rgb = toRgb(image, doc.pad_color);
      assert.equal(sha256(rgb.data), entry.rgb_sha256, "8-bit RGB after orientation, conversion, compositing");
      assert.equal(sha256(preprocessImage(image, config).resized), entry.resized_rgb_sha256, "padded and resized");
    });
  }
});

test("EXIF orientation: parsing (both byte orders, Exif prefix, garbage) and the eight transforms", () => {
  const tiff = (little, value, type = 3) => {
    const b = new Uint8Array(26);
    const v = new DataView(b.buffer);
    b.set(little ? [0x49, 0x49] : [0x4d, 0x4d]);
    v.setUint16(2, 42, little);
    v.setUint32(4, 8, little);
    v.setUint16(8, 1, little);
    v.setUint16(10, 0x0112, little);
    v.setUint16(12, type, little);
    v.setUint32(14, 1, little);
    if (type === 3) v.setUint16(18, value, little);
    else v.setUint32(18, value, little);
    return b;
  };
  for (const little of [true, false]) for (let o = 1; o <= 8; o++) assert.equal(exifOrientation(tiff(little, o)), o);
  assert.equal(exifOrientation(tiff(true, 6, 4)), 6);
  assert.equal(exifOrientation(new Uint8Array([...new TextEncoder().encode("Exif\0\0"), ...tiff(false, 8)])), 8);
  for (const junk of [new Uint8Array(0), new Uint8Array(5), tiff(true, 9), tiff(true, 0), tiff(true, 6).subarray(0, 20)]) {
    assert.equal(exifOrientation(junk), 1);
  }
  // a 3x2 image with distinct pixels: where does each corner go?
  const img = { width: 3, height: 2, channels: 1, data: Uint8Array.from([1, 2, 3, 4, 5, 6]) };
  const rows = (o) => {
    const r = applyOrientation(img, o);
    return Array.from({ length: r.height }, (_, y) => Array.from(r.data.subarray(y * r.width, (y + 1) * r.width)));
  };
  assert.deepEqual(rows(1), [[1, 2, 3], [4, 5, 6]]);
  assert.deepEqual(rows(2), [[3, 2, 1], [6, 5, 4]]);
  assert.deepEqual(rows(3), [[6, 5, 4], [3, 2, 1]]);
  assert.deepEqual(rows(4), [[4, 5, 6], [1, 2, 3]]);
  assert.deepEqual(rows(5), [[1, 4], [2, 5], [3, 6]]);
  assert.deepEqual(rows(6), [[4, 1], [5, 2], [6, 3]]);
  assert.deepEqual(rows(7), [[6, 3], [5, 2], [4, 1]]);
  assert.deepEqual(rows(8), [[3, 6], [2, 5], [1, 4]]);
});

test("JPEG components: grey, RGB and CMYK headers; not a JPEG", () => {
  const jpeg = (components) => Uint8Array.from([0xff, 0xd8, 0xff, 0xe0, 0, 4, 0, 0, 0xff, 0xc0, 0, 8 + 3 * components, 8, 0, 9,
    0, 12, components, ...new Array(3 * components).fill(1), 0xff, 0xda]);
  assert.equal(jpegComponents(jpeg(1)), 1);
  assert.equal(jpegComponents(jpeg(3)), 3);
  assert.equal(jpegComponents(jpeg(4)), 4);
  assert.doesNotThrow(() => refuseUnsupported(jpeg(3)));
  assert.throws(() => refuseUnsupported(jpeg(4)), DemoImageError);
  assert.equal(jpegComponents(Uint8Array.from([0x89, 0x50, 0x4e, 0x47])), undefined);
  assert.equal(jpegComponents(Uint8Array.from([0xff, 0xd8, 0xff, 0xda])), undefined);
});
