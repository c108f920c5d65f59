/**
 * Pillow's resampling (libImaging/Resample.c, what `Image.resize(size, filter)` runs on an 8-bit
 * image), bit for bit, for any input and output size:
 *
 *  1. per axis, `precompute_coeffs`: for output index o, the input span [lo, lo + count) and one
 *     weight per input index, the filter evaluated at the distance to the span's centre (scaled
 *     down when shrinking, so that the filter widens: antialiasing), divided by their sum, then
 *     converted to fixed point with PRECISION_BITS = 32 - 8 - 2 = 22 (`normalize_coeffs_8bpc`);
 *  2. `ImagingResampleInner`: one pass per axis whose size changes (an image of the same size is
 *     copied), each stored as 8-bit. When both change, Pillow 13 (PR #9549) runs the vertical pass
 *     first, over the whole width, if the height shrinks by more rows than twice the columns the
 *     width shrinks by (dy > 0 and dy > 2 * dx, dy = inHeight - height, dx = inWidth - width, in
 *     integers); otherwise the horizontal pass first, over only the input rows the vertical pass
 *     reads, then the vertical pass (Pillow 12 and older always go horizontal first). Each output
 *     channel value is `clip8(2^21 + sum_j src[lo + j] * k_j)`, clip8 = clamp(acc >> 22, 0, 255).
 *
 * All filter arithmetic is IEEE double, in the C code's order of operations; JavaScript numbers
 * hold the integer sums exactly (they stay below 2^31, as Pillow's int32 sums do). LANCZOS calls
 * sin(), whose last bit may differ between libm and JavaScript engines; that changes a fixed-point
 * weight only at a rounding boundary (tests/vectors/vlm/resize-lanczos.json pins 79 resizes).
 */

import { ImageError } from "./errors.js";

/** Pillow's PRECISION_BITS for 8-bit images. */
export const PRECISION_BITS = 22;

/** The filters this module implements (Pillow's `Image.Resampling.BILINEAR`, `BICUBIC` and `LANCZOS`). */
export type ResampleFilter = "bilinear" | "bicubic" | "lanczos";

interface Filter {
  /** Half-width of the filter at scale 1. */
  support: number;
  weight: (x: number) => number;
}

/** Pillow's `bilinear_filter`: the triangle 1 - |x| on |x| < 1. */
function triangle(x: number): number {
  if (x < 0) x = -x;
  if (x < 1) return 1 - x;
  return 0;
}

/** Pillow's `bicubic_filter`: Keys' cubic convolution with a = -0.5, in the C code's operation order. */
function cubic(x: number): number {
  const a = -0.5;
  if (x < 0) x = -x;
  if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
  return 0;
}

/** Pillow's `sinc_filter`: sin(pi x) / (pi x), 1 at 0. */
function sinc(x: number): number {
  if (x === 0) return 1;
  x = x * Math.PI;
  return Math.sin(x) / x;
}

/** Pillow's `lanczos_filter`: the sinc truncated by a sinc three times wider, on -3 <= x < 3. */
function lanczos(x: number): number {
  if (-3 <= x && x < 3) return sinc(x) * sinc(x / 3);
  return 0;
}

const FILTERS: Record<ResampleFilter, Filter> = {
  bilinear: { support: 1, weight: triangle },
  bicubic: { support: 2, weight: cubic },
  lanczos: { support: 3, weight: lanczos },
};

/** One axis's fixed-point coefficients (Pillow's `bounds` and normalised `kk`). */
export interface AxisCoefficients {
  /** First input index of each output index. */
  lo: Int32Array;
  /** Number of input indices of each output index. */
  count: Int32Array;
  /** Fixed-point weights, `ksize` per output index (zeros after `count`). */
  k: Int32Array;
  ksize: number;
}

/**
 * `precompute_coeffs(inSize, 0, inSize, outSize, filter)` + `normalize_coeffs_8bpc`: scale =
 * inSize / outSize, filterscale = max(scale, 1), support = filter support x filterscale, ksize =
 * ceil(support) x 2 + 1; for output o: center = (o + 0.5) x scale, lo = max(trunc(center - support
 * + 0.5), 0), count = min(trunc(center + support + 0.5), inSize) - lo, w_j = filter((j + lo -
 * center + 0.5) x (1 / filterscale)), each divided by their sum (unless it is 0), then k_j =
 * trunc(w_j x 2^22 + 0.5) (trunc(w_j x 2^22 - 0.5) when negative).
 */
export function axisCoefficients(inSize: number, outSize: number, filter: ResampleFilter): AxisCoefficients {
  const { support: base, weight } = FILTERS[filter];
  const scale = inSize / outSize;
  const filterscale = scale < 1 ? 1 : scale;
  const support = base * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const lo = new Int32Array(outSize);
  const count = new Int32Array(outSize);
  const k = new Int32Array(outSize * ksize);
  const w = new Float64Array(ksize);
  const ss = 1 / filterscale;
  const one = 1 << PRECISION_BITS;
  for (let o = 0; o < outSize; o++) {
    const center = (o + 0.5) * scale;
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const xmax = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
    let total = 0;
    for (let j = 0; j < xmax; j++) {
      const v = weight((j + xmin - center + 0.5) * ss);
      w[j] = v;
      total += v;
    }
    for (let j = 0; j < xmax; j++) {
      const v = total !== 0 ? w[j] / total : w[j];
      k[o * ksize + j] = v < 0 ? Math.trunc(-0.5 + v * one) : Math.trunc(0.5 + v * one);
    }
    lo[o] = xmin;
    count[o] = xmax;
  }
  return { lo, count, k, ksize };
}

/** An 8-bit image, row-major, `channels` values per pixel interleaved. */
export interface PixelImage {
  width: number;
  height: number;
  channels: number;
  data: Uint8Array;
}

function clip8(acc: number): number {
  const v = Math.floor(acc / (1 << PRECISION_BITS)); // an arithmetic shift right by 22
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

/** `ImagingResampleHorizontal_8bpc`: rows first .. first + rows - 1 of `src`, its width -> outWidth. */
function horizontal(src: PixelImage, c: AxisCoefficients, outWidth: number, first: number, rows: number): PixelImage {
  const { width, channels: ch, data } = src;
  const out = new Uint8Array(outWidth * rows * ch);
  const half = 1 << (PRECISION_BITS - 1);
  for (let y = 0; y < rows; y++) {
    const rowIn = (first + y) * width * ch;
    const rowOut = y * outWidth * ch;
    for (let o = 0; o < outWidth; o++) {
      const kBase = o * c.ksize;
      const xmin = c.lo[o];
      const n = c.count[o];
      for (let q = 0; q < ch; q++) {
        let acc = half;
        for (let j = 0; j < n; j++) acc += data[rowIn + (xmin + j) * ch + q] * c.k[kBase + j];
        out[rowOut + o * ch + q] = clip8(acc);
      }
    }
  }
  return { width: outWidth, height: rows, channels: ch, data: out };
}

/** `ImagingResampleVertical_8bpc`: `src` (whose row 0 is input row `first`) -> outHeight rows. */
function vertical(src: PixelImage, c: AxisCoefficients, outHeight: number, first: number): PixelImage {
  const { width, channels: ch, data } = src;
  const stride = width * ch;
  const out = new Uint8Array(outHeight * stride);
  const half = 1 << (PRECISION_BITS - 1);
  for (let o = 0; o < outHeight; o++) {
    const kBase = o * c.ksize;
    const ymin = c.lo[o] - first;
    const n = c.count[o];
    for (let i = 0; i < stride; i++) {
      let acc = half;
      for (let j = 0; j < n; j++) acc += data[(ymin + j) * stride + i] * c.k[kBase + j];
      out[o * stride + i] = clip8(acc);
    }
  }
  return { width, height: outHeight, channels: ch, data: out };
}

/**
 * Pillow 13's pass order when both sizes change: the vertical pass first when the height shrinks by
 * more than twice as many pixels as the width does (`dy > 0 && dy > 2 * dx`).
 */
export function verticalFirst(inWidth: number, inHeight: number, width: number, height: number): boolean {
  const dy = inHeight - height;
  return dy > 0 && dy > 2 * (inWidth - width);
}

/**
 * Pillow `Image.resize((width, height), filter)` of an 8-bit image (no box, no reducing_gap), as
 * Pillow 13 runs it: a copy when neither size changes; one pass when one does; both passes in the
 * order of `verticalFirst` otherwise.
 */
export function resample(image: PixelImage, width: number, height: number, filter: ResampleFilter): PixelImage {
  for (const [name, v] of [["width", width], ["height", height]] as const) {
    if (!Number.isInteger(v) || v < 1) throw new ImageError(`resample ${name} must be a positive integer, got ${v}`);
  }
  if (!(filter in FILTERS)) throw new ImageError(`resample filter ${String(filter)} unknown; choose bilinear, bicubic or lanczos`);
  const needHorizontal = width !== image.width;
  const needVertical = height !== image.height;
  if (!needHorizontal && !needVertical) return { ...image, data: image.data.slice() };
  const vert = axisCoefficients(image.height, height, filter);
  if (needHorizontal && needVertical && verticalFirst(image.width, image.height, width, height)) {
    const tall = vertical(image, vert, height, 0);
    return horizontal(tall, axisCoefficients(image.width, width, filter), width, 0, height);
  }
  let current = image;
  let first = 0;
  if (needHorizontal) {
    first = vert.lo[0];
    const last = vert.lo[height - 1] + vert.count[height - 1];
    current = horizontal(image, axisCoefficients(image.width, width, filter), width, first, last - first);
  }
  return needVertical ? vertical(current, vert, height, first) : current;
}
