/**
 * Image preprocessing, bit for bit as the spec ("Inputs / Image") and Pillow do it:
 *  1. RGBA -> RGB by Pillow's integer `alpha_composite` over pad_color;
 *  2. pad to a centred square with pad_color (an odd leftover pixel goes right / bottom);
 *  3. Pillow's BILINEAR resize (antialiasing triangle filter, two 8-bit fixed-point passes);
 *  4. float32 NCHW normalisation, each operation rounded to float32.
 * An adapted encoder's bundle (`preprocessing.resize` "pillow-bicubic", spec "Adapted encoders") is
 * prepared by `preprocessStretched` instead: step 1 over the background grey, no padding, Pillow's
 * BICUBIC resample to the square (resample.ts), then the manifest's scale, mean and std.
 */

import { ImageError } from "./errors.js";
import { resample, type ResampleFilter } from "./resample.js";

export const MIN_SIDE = 8;
export const MAX_SIDE = 16384;
/** The scene background grey: transparency is composited over it when a bundle states no pad_color. */
export const BACKGROUND = [118, 118, 124] as const;
/** `preprocessing.resize` of an adapted encoder's bundle: stretched to the square with Pillow's bicubic filter. */
export const ADAPTED_RESIZE = "pillow-bicubic";

/** An 8-bit image, row-major, channels interleaved (RGB or RGBA). A browser `ImageData` is one. */
export interface ImageInput {
  width: number;
  height: number;
  data: Uint8Array | Uint8ClampedArray;
  /** 3 (RGB) or 4 (RGBA); inferred from data.length when omitted. */
  channels?: 3 | 4;
}

export interface RGBImage {
  width: number;
  height: number;
  /** width * height * 3 bytes, row-major RGB. */
  data: Uint8Array;
}

export interface PreprocessConfig {
  imageSize: number;
  padColor: readonly [number, number, number] | readonly number[];
  mean: readonly number[];
  std: readonly number[];
  /** The manifest's `preprocessing.scale` (1 / 255). */
  scale?: number;
}

export interface Preprocessed {
  /** The resized 8-bit RGB image (imageSize x imageSize, row-major RGB): what the model sees. */
  resized: Uint8Array;
  /** float32 [1, 3, S, S], channels R, G, B. */
  pixelValues: Float32Array;
}

/** Checks the input and returns its channel count. */
export function checkImage(image: ImageInput): 3 | 4 {
  if (typeof image !== "object" || image === null) {
    throw new ImageError("an image must be an object {width, height, data, channels?} (e.g. a browser ImageData)");
  }
  const { width, height, data } = image;
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new ImageError(`image width and height must be positive integers, got ${width} x ${height}`);
  }
  if (!(data instanceof Uint8Array || data instanceof Uint8ClampedArray)) {
    throw new ImageError("image data must be a Uint8Array or Uint8ClampedArray of 8-bit RGB or RGBA values; " +
      "convert other pixel formats to 8-bit RGB first");
  }
  let channels = image.channels;
  if (channels === undefined) {
    if (data.length === width * height * 4) channels = 4;
    else if (data.length === width * height * 3) channels = 3;
  }
  if (channels !== 3 && channels !== 4) {
    throw new ImageError(`image data has ${data.length} bytes for ${width} x ${height} pixels; expected ` +
      `${width * height * 3} (RGB) or ${width * height * 4} (RGBA)`);
  }
  if (data.length !== width * height * channels) {
    throw new ImageError(`image data has ${data.length} bytes; ${width} x ${height} x ${channels} channels needs ` +
      `${width * height * channels}`);
  }
  if (Math.min(width, height) < MIN_SIDE) {
    throw new ImageError(`image is ${width}x${height}; at least ${MIN_SIDE} px per side is needed`);
  }
  if (Math.max(width, height) > MAX_SIDE) {
    throw new ImageError(`image is ${width}x${height}; downscale it below ${MAX_SIDE} px per side first`);
  }
  return channels;
}

/** Pillow's `alpha_composite` of one channel value over an opaque background value. */
function compositeChannel(src: number, pad: number, coef1: number, coef2: number): number {
  const t = src * coef1 + pad * coef2 + (128 << 7);
  return (((t >> 8) + t) >> 8) >> 7;
}

/** Step 1: RGB bytes; RGBA composited over `padColor` exactly as Pillow's `alpha_composite`. */
export function toRgb(image: ImageInput, padColor: readonly number[]): RGBImage {
  const channels = checkImage(image);
  const { width, height, data } = image;
  const n = width * height;
  const out = new Uint8Array(n * 3);
  if (channels === 3) {
    out.set(data);
    return { width, height, data: out };
  }
  const [pr, pg, pb] = padColor;
  for (let p = 0; p < n; p++) {
    const a = data[p * 4 + 3];
    const o = p * 3;
    if (a === 0) {
      out[o] = pr;
      out[o + 1] = pg;
      out[o + 2] = pb;
      continue;
    }
    // P = 7: coef1 = floor(a * 255 * 255 * 2^7 / (a * 255 + 255 * (255 - a))), all below 2^32.
    const coef1 = Math.floor((a * 255 * 255 * 128) / (a * 255 + 255 * (255 - a)));
    const coef2 = 255 * 128 - coef1;
    out[o] = compositeChannel(data[p * 4], pr, coef1, coef2);
    out[o + 1] = compositeChannel(data[p * 4 + 1], pg, coef1, coef2);
    out[o + 2] = compositeChannel(data[p * 4 + 2], pb, coef1, coef2);
  }
  return { width, height, data: out };
}

/** Step 2: the image centred on a side x side canvas of `padColor` (side = max(W, H)). */
export function padToSquare(image: RGBImage, padColor: readonly number[]): RGBImage {
  const { width: w, height: h } = image;
  if (w === h) return image;
  const side = Math.max(w, h);
  const out = new Uint8Array(side * side * 3);
  for (let p = 0; p < side * side; p++) {
    out[p * 3] = padColor[0];
    out[p * 3 + 1] = padColor[1];
    out[p * 3 + 2] = padColor[2];
  }
  const x0 = Math.floor((side - w) / 2);
  const y0 = Math.floor((side - h) / 2);
  for (let y = 0; y < h; y++) {
    out.set(image.data.subarray(y * w * 3, (y + 1) * w * 3), ((y0 + y) * side + x0) * 3);
  }
  return { width: side, height: side, data: out };
}

const PRECISION_BITS = 22;

export interface ResizeCoefficients {
  /** First input index of each output index. */
  lo: Int32Array;
  /** Number of input indices of each output index. */
  count: Int32Array;
  /** Fixed-point weights, `ksize` per output index. */
  k: Int32Array;
  ksize: number;
}

/**
 * Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for the bilinear (triangle) filter, in
 * IEEE double precision: scale = n / m, filterscale = max(scale, 1), support = filterscale; the
 * filter is evaluated at `(j + lo - center + 0.5) * (1 / filterscale)` as Pillow's C code does.
 */
export function resizeCoefficients(n: number, m: number): ResizeCoefficients {
  const scale = n / m;
  const filterscale = Math.max(scale, 1);
  const support = filterscale; // the bilinear filter's support is 1
  const ksize = Math.ceil(support) * 2 + 1;
  const lo = new Int32Array(m);
  const count = new Int32Array(m);
  const k = new Int32Array(m * ksize);
  const ss = 1 / filterscale;
  const w = new Float64Array(ksize);
  for (let o = 0; o < m; o++) {
    const center = (o + 0.5) * scale;
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const xmax = Math.min(Math.trunc(center + support + 0.5), n) - xmin;
    let total = 0;
    for (let j = 0; j < xmax; j++) {
      const t = Math.abs((j + xmin - center + 0.5) * ss);
      const weight = t < 1 ? 1 - t : 0;
      w[j] = weight;
      total += weight;
    }
    for (let j = 0; j < xmax; j++) {
      const weight = total !== 0 ? w[j] / total : w[j];
      k[o * ksize + j] = weight < 0
        ? Math.trunc(-0.5 + weight * (1 << PRECISION_BITS))
        : Math.trunc(0.5 + weight * (1 << PRECISION_BITS));
    }
    lo[o] = xmin;
    count[o] = xmax;
  }
  return { lo, count, k, ksize };
}

function clip8(acc: number): number {
  const v = Math.floor(acc / (1 << PRECISION_BITS));
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

/**
 * Step 3: Pillow `Image.resize((m, m), BILINEAR)` of a square RGB image of side n: the horizontal
 * pass over the rows the vertical pass reads, then the vertical pass, both 8-bit.
 */
export function resizeSquare(image: RGBImage, m: number): RGBImage {
  const n = image.width;
  if (image.height !== n) throw new ImageError("resizeSquare takes a square image");
  if (n === m) return image;
  const c = resizeCoefficients(n, m);
  const src = image.data;
  const first = c.lo[0];
  const last = c.lo[m - 1] + c.count[m - 1];
  const rows = last - first;
  const half = 1 << (PRECISION_BITS - 1);
  // Horizontal pass: rows first..last-1 of the input, n -> m columns.
  const tmp = new Uint8Array(rows * m * 3);
  for (let y = 0; y < rows; y++) {
    const rowIn = (first + y) * n * 3;
    const rowOut = y * m * 3;
    for (let o = 0; o < m; o++) {
      const kBase = o * c.ksize;
      const xmin = c.lo[o];
      let r = half, g = half, b = half;
      for (let j = 0; j < c.count[o]; j++) {
        const kj = c.k[kBase + j];
        const p = rowIn + (xmin + j) * 3;
        r += src[p] * kj;
        g += src[p + 1] * kj;
        b += src[p + 2] * kj;
      }
      tmp[rowOut + o * 3] = clip8(r);
      tmp[rowOut + o * 3 + 1] = clip8(g);
      tmp[rowOut + o * 3 + 2] = clip8(b);
    }
  }
  // Vertical pass: rows -> m rows, with the bounds shifted by `first`.
  const out = new Uint8Array(m * m * 3);
  for (let o = 0; o < m; o++) {
    const kBase = o * c.ksize;
    const ymin = c.lo[o] - first;
    for (let x = 0; x < m; x++) {
      let r = half, g = half, b = half;
      for (let j = 0; j < c.count[o]; j++) {
        const kj = c.k[kBase + j];
        const p = ((ymin + j) * m + x) * 3;
        r += tmp[p] * kj;
        g += tmp[p + 1] * kj;
        b += tmp[p + 2] * kj;
      }
      const q = (o * m + x) * 3;
      out[q] = clip8(r);
      out[q + 1] = clip8(g);
      out[q + 2] = clip8(b);
    }
  }
  return { width: m, height: m, data: out };
}

/**
 * Step 4: float32 [1, 3, S, S]: x = float32(v) / 255, then (x - mean[c]) / std[c], each operation
 * rounded to float32 as numpy's float32 arithmetic does.
 */
export function normalize(rgb: Uint8Array, size: number, mean: readonly number[], std: readonly number[],
  scale = 1 / 255): Float32Array {
  const plane = size * size;
  // The spec's first step divides by 255 (scale = 1 / 255); an integral 1 / scale is a division.
  const inverse = 1 / scale;
  const divisor = Math.abs(inverse - Math.round(inverse)) < 1e-6 ? Math.round(inverse) : 0;
  const f = Math.fround;
  const scaleF = f(scale);
  const lut: Float32Array[] = [0, 1, 2].map((ch) => {
    const table = new Float32Array(256);
    const meanF = f(mean[ch]);
    const stdF = f(std[ch]);
    for (let v = 0; v < 256; v++) {
      const x = divisor ? f(v / divisor) : f(v * scaleF);
      table[v] = f(f(x - meanF) / stdF);
    }
    return table;
  });
  return toPlanes(rgb, plane, lut);
}

/** Interleaved 8-bit RGB -> float32 channel planes [3 * plane], each value looked up in its channel's table. */
function toPlanes(rgb: Uint8Array, plane: number, lut: Float32Array[]): Float32Array {
  const out = new Float32Array(3 * plane);
  for (let p = 0; p < plane; p++) {
    out[p] = lut[0][rgb[p * 3]];
    out[plane + p] = lut[1][rgb[p * 3 + 1]];
    out[2 * plane + p] = lut[2][rgb[p * 3 + 2]];
  }
  return out;
}

/** Steps 1 to 4: the resized 8-bit RGB image and the model's `pixel_values`. */
export function preprocessImage(image: ImageInput, config: PreprocessConfig): Preprocessed {
  const rgb = toRgb(image, config.padColor);
  const square = padToSquare(rgb, config.padColor);
  const resized = resizeSquare(square, config.imageSize);
  return {
    resized: resized.data,
    pixelValues: normalize(resized.data, config.imageSize, config.mean, config.std, config.scale),
  };
}

// ------------------------------------------------------------------------------- adapted encoders
/** An adapted encoder's preprocessing (`preprocessing.resize` "pillow-bicubic", `fit` "stretch"). */
export interface StretchConfig {
  imageSize: number;
  /** `preprocessing.scale` (ViLT: 1 / 255). */
  scale: number;
  mean: readonly number[];
  std: readonly number[];
  /** Pillow's filter for the stretch: "bicubic" (an adapted encoder's, the default) or "lanczos" (a SmolVLM's). */
  filter?: ResampleFilter;
}

/**
 * float32 [1, 3, S, S] of an adapted encoder: x = float32(float64(v) * scale), then
 * (x - mean[c]) / std[c] in float32 (what numpy computes in mmedge.data.preprocess.preprocess_stretched).
 */
export function normalizeScaled(rgb: Uint8Array, size: number, scale: number, mean: readonly number[],
  std: readonly number[]): Float32Array {
  const plane = size * size;
  const f = Math.fround;
  const lut: Float32Array[] = [0, 1, 2].map((ch) => {
    const table = new Float32Array(256);
    const meanF = f(mean[ch]);
    const stdF = f(std[ch]);
    for (let v = 0; v < 256; v++) table[v] = f(f(f(v * scale) - meanF) / stdF);
    return table;
  });
  return toPlanes(rgb, plane, lut);
}

/**
 * An adapted encoder's image preparation (docs/bundle-format.md, "Adapted encoders"): transparency
 * composited over the background grey (step 1 of "Image"), the image stretched to S x S with
 * Pillow's BICUBIC resample (no padding; not resampled when already S x S), then normalizeScaled.
 * A generative VLM bundle ("Generative VLM bundles", Input) is prepared the same way with its
 * `preprocessing.resample` filter (`filter` "lanczos" for SmolVLM).
 */
export function preprocessStretched(image: ImageInput, config: StretchConfig): Preprocessed {
  const rgb = toRgb(image, BACKGROUND);
  const S = config.imageSize;
  const resized = resample({ ...rgb, channels: 3 }, S, S, config.filter ?? "bicubic").data;
  return { resized, pixelValues: normalizeScaled(resized, S, config.scale, config.mean, config.std) };
}
