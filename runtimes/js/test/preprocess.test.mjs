// Preprocessing edge cases. Expected SHA-256 values were computed with Pillow 13 (alpha_composite,
// paste on a pad_color canvas, resize BILINEAR) and numpy float32 on the same generated images.
import assert from "node:assert/strict";
import test from "node:test";

import {
  ImageError, normalize, padToSquare, preprocessImage, resizeCoefficients, resizeSquare, toRgb,
} from "../dist/index.js";
import { sha256 } from "../test-support/helpers.mjs";

const PAD = [118, 118, 124];
const config = (imageSize) => ({ imageSize, padColor: PAD, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5], scale: 1 / 255 });

/** The test pattern (same as the generator of the expected values). */
function pattern(w, h, ch, seed) {
  const data = new Uint8Array(w * h * ch);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      for (let c = 0; c < ch; c++) data[(y * w + x) * ch + c] = (x * 31 + y * 17 + c * 7 + seed) % 256;
      if (ch === 4) data[(y * w + x) * 4 + 3] = y === 0 ? 0 : y === h - 1 ? 255 : (x * 13 + y * 29 + seed) % 256;
    }
  }
  return { width: w, height: h, channels: ch, data };
}

const f32bytes = (a) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

const CASES = {
  "rgba-partial-alpha": { args: [37, 23, 4, 3], S: 16,
    composited: "49279eb8d26aea5c5c2bf4585f25ee07bfa375a6b79c2a69b98ee48d8ee2be16",
    padded: "f292627c68510a9d64a843c6f1039171fad9a636c95e6795389c0c951daca1be",
    resized: "2b5b0126eee820d0212b4eb2b117a8af52b02d50ad13b9d902bb8249b568c8d6",
    pixelValues: "863b6912ac1120bb3ec982e783c4d7553880f4dea818dc9db20208ed0441ab66" },
  "odd-padding": { args: [9, 14, 3, 5], S: 12,
    composited: "818d4efc49566de0f59f50e221ac899973fd176c2bf0cee373838bde155f4831",
    padded: "97b187ef628772e0f62cc1e84957bc460e114121251c0ec925ae0d9077ae2997",
    resized: "201c688aaadd8b309209f985c9bf6e2109e596ae619abb22c769037a82c78d41",
    pixelValues: "0da27806b6386bdf665b4865b107e56b662bcf0e86002d8e95851d0595220010" },
  "at-model-size": { args: [16, 16, 3, 1], S: 16,
    composited: "539621c09c0ee9eaec853a03412e011e268333123072a062f0ab09466b7b38a5",
    padded: "539621c09c0ee9eaec853a03412e011e268333123072a062f0ab09466b7b38a5",
    resized: "539621c09c0ee9eaec853a03412e011e268333123072a062f0ab09466b7b38a5",
    pixelValues: "498fcbd5d33d7bb93866258b87e8daa059b9c5d63fb664cd734a55f266a7acf7" },
  "upscale": { args: [10, 10, 3, 2], S: 24,
    composited: "b7b0e94dec5af5a2a40151a8cc48536ed2a98294a561164f4643e7ddc84fa2b1",
    padded: "b7b0e94dec5af5a2a40151a8cc48536ed2a98294a561164f4643e7ddc84fa2b1",
    resized: "525a9f83278f009e83d3ddbb8214a6410d2cb8b176f1fee49c00201322d556da",
    pixelValues: "72322d9b85508b2bcc6d8e020359133dc2a017e91d42a765ff607f677af5aa29" },
  "large-downscale-rgba": { args: [500, 333, 4, 9], S: 48,
    composited: "d2df4ee0eafbe54ee5fb8b1115984649e7a99b15af000a634b12efb67af6b509",
    padded: "86dc2c6e6a12377d1f83e7450d4ec43b4ec8a3f1de135c789ba72fd2ee14ae73",
    resized: "8a5ffe2fd19d521068f15c52bb9b63fe4cc3d677ffce52dd50349c9ba056a289",
    pixelValues: "c7416579a32b76cae863d1f14e2ca513443f2ee593854fdb3ab4d482f47b22a5" },
};

for (const [name, c] of Object.entries(CASES)) {
  test(`${name}: every step equals Pillow / numpy bit for bit`, () => {
    const image = pattern(...c.args);
    const rgb = toRgb(image, PAD);
    assert.equal(sha256(rgb.data), c.composited, "composited");
    const square = padToSquare(rgb, PAD);
    assert.equal(sha256(square.data), c.padded, "padded");
    assert.equal(sha256(resizeSquare(square, c.S).data), c.resized, "resized");
    const out = preprocessImage(image, config(c.S));
    assert.equal(sha256(out.resized), c.resized);
    assert.equal(sha256(f32bytes(out.pixelValues)), c.pixelValues, "pixel_values");
    assert.equal(out.pixelValues.length, 3 * c.S * c.S);
  });
}

test("RGBA with partial alpha: Pillow's integer alpha_composite, pixel by pixel", () => {
  const image = pattern(37, 23, 4, 3);
  const rgb = toRgb(image, PAD);
  const at = (x, y) => [...rgb.data.subarray((y * 37 + x) * 3, (y * 37 + x) * 3 + 3)];
  assert.deepEqual(at(3, 0), PAD, "alpha 0 is pad_color");
  assert.deepEqual(at(3, 22), [214, 221, 228], "alpha 255 is the pixel");
  assert.deepEqual(at(5, 7), [112, 113, 119], "(21, 28, 35, alpha 15) over the pad colour");
  // By hand: a = 128 over black from white: coef1 = floor(128*255*255*128 / (128*255 + 255*127)) = 16448.
  const half = toRgb({ width: 8, height: 8, channels: 4, data: new Uint8Array(256).map((_, i) => (i % 4 === 3 ? 128 : 255)) }, [0, 0, 0]);
  assert.equal(half.data[0], 128);
});

test("odd padding: the leftover pixel goes to the right / bottom", () => {
  const image = { width: 9, height: 14, channels: 3, data: new Uint8Array(9 * 14 * 3).fill(7) };
  const square = padToSquare(toRgb(image, PAD), PAD);
  assert.equal(square.width, 14);
  const at = (x, y) => [...square.data.subarray((y * 14 + x) * 3, (y * 14 + x) * 3 + 3)];
  assert.deepEqual(at(1, 5), PAD); // x0 = floor(5 / 2) = 2: columns 0-1 pad, 2-10 image, 11-13 pad
  assert.deepEqual(at(2, 5), [7, 7, 7]);
  assert.deepEqual(at(10, 5), [7, 7, 7]);
  assert.deepEqual(at(11, 5), PAD);
  const wide = padToSquare(toRgb({ width: 14, height: 9, channels: 3, data: new Uint8Array(14 * 9 * 3).fill(7) }, PAD), PAD);
  const row = (y) => [...wide.data.subarray(y * 14 * 3, y * 14 * 3 + 3)];
  assert.deepEqual(row(1), PAD);
  assert.deepEqual(row(2), [7, 7, 7]);
  assert.deepEqual(row(10), [7, 7, 7]);
  assert.deepEqual(row(11), PAD);
});

test("an image already at the model size is not resized", () => {
  const image = pattern(16, 16, 3, 1);
  const out = preprocessImage(image, config(16));
  assert.deepEqual(out.resized, image.data);
});

test("normalisation: float32 (v / 255 - mean) / std, each operation rounded", () => {
  const rgb = new Uint8Array([0, 128, 255]);
  const out = normalize(rgb, 1, [0.5, 0.5, 0.5], [0.5, 0.5, 0.5], 1 / 255);
  const f = Math.fround;
  assert.equal(out[0], -1);
  assert.equal(out[1], f(f(f(128 / 255) - 0.5) / 0.5));
  assert.equal(out[2], 1);
  const imagenet = normalize(new Uint8Array([200, 100, 50]), 1, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]);
  assert.equal(imagenet[0], f(f(f(200 / 255) - f(0.485)) / f(0.229)));
});

test("resize coefficients: Pillow's antialiasing triangle filter, normalised to 2^22", () => {
  const c = resizeCoefficients(96, 48); // scale 2: support 2, four taps
  assert.equal(c.lo[0], 0);
  assert.equal(c.count[0], 3);
  const sum = (o) => [...c.k.subarray(o * c.ksize, o * c.ksize + c.count[o])].reduce((a, b) => a + b, 0);
  for (let o = 0; o < 48; o++) assert.ok(Math.abs(sum(o) - (1 << 22)) <= 2);
});

test("bad images are ImageErrors", () => {
  assert.throws(() => preprocessImage({ width: 7, height: 20, data: new Uint8Array(7 * 20 * 3) }, config(16)), ImageError);
  assert.throws(() => preprocessImage({ width: 20, height: 16385, data: new Uint8Array(20 * 16385 * 3) }, config(16)), ImageError);
  assert.throws(() => preprocessImage({ width: 10, height: 10, data: new Uint8Array(299) }, config(16)), ImageError);
  assert.throws(() => preprocessImage({ width: 10, height: 10, data: new Float32Array(300) }, config(16)), ImageError);
  assert.throws(() => preprocessImage({ width: 10.5, height: 10, data: new Uint8Array(300) }, config(16)), ImageError);
  assert.throws(() => preprocessImage(null, config(16)), ImageError);
  // channels inferred from the data length; a browser ImageData (Uint8ClampedArray RGBA) works as it is
  const rgba = new Uint8ClampedArray(10 * 10 * 4).fill(255);
  assert.equal(preprocessImage({ width: 10, height: 10, data: rgba }, config(16)).resized[0], 255);
});
