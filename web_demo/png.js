// A small, exact PNG decoder for the browser (DecompressionStream("deflate") does the inflating).
//
// Why not a <canvas>: getImageData() hands back pixels that went through the canvas's
// premultiplied-alpha storage (semi-transparent pixels come back changed), and browsers may apply
// colour management (gAMA / iCCP / sRGB chunks). The model's preprocessing composites RGBA over
// the bundle's pad colour with Pillow's exact integer formula, so the demo decodes PNG files
// itself and gives the runtime the file's own 8-bit samples: RGB (channels 3) for opaque images,
// RGBA (channels 4) when the file has an alpha channel or is a palette image with a tRNS chunk.
// It follows docs/bundle-format.md ("Image": decoding a file), as the Python runtime
// (mmedge/data/preprocess.py on Pillow) and the Android core do:
//   1. EXIF orientation (an eXIf chunk's Orientation tag, 2..8) is applied first: the image as a
//      viewer shows it;
//   2. grey -> RGB (grey replicated; 1, 2, 4-bit grey scaled to 0..255, so 1-bit gives 0 / 255);
//      grey+alpha -> RGBA; palette -> RGB, or RGBA with a tRNS chunk (a tRNS chunk of a grey or RGB
//      image is ignored, as Pillow's convert("RGB") ignores it); 16-bit samples -> 8 bits by their
//      high byte (v >> 8), grey included.
// tests/vectors/golden/image-modes.json pins the result of each mode (runtimes/js/test/image-modes.test.mjs).
//
// Supports every colour type (grey, RGB, palette, grey+alpha, RGBA), bit depths 1-16 and Adam7
// interlacing.

const SIGNATURE = [137, 80, 78, 71, 13, 10, 26, 10];
const MAX_PIXELS = 64 * 1024 * 1024;

export class PngError extends Error {
  constructor(message) {
    super(message);
    this.name = "PngError";
  }
}

export function isPng(bytes) {
  return bytes.length >= 8 && SIGNATURE.every((b, i) => bytes[i] === b);
}

async function inflate(data) {
  const stream = new Blob([data]).stream().pipeThrough(new DecompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

function paeth(a, b, c) {
  const p = a + b - c;
  const pa = Math.abs(p - a);
  const pb = Math.abs(p - b);
  const pc = Math.abs(p - c);
  if (pa <= pb && pa <= pc) return a;
  return pb <= pc ? b : c;
}

/** Undoes the per-scanline filters of one (sub-)image in place; returns the raw rows. */
function unfilter(src, offset, width, height, bpp, rowBytes) {
  const out = new Uint8Array(rowBytes * height);
  let pos = offset;
  for (let y = 0; y < height; y++) {
    if (pos >= src.length) throw new PngError("PNG image data is truncated");
    const type = src[pos++];
    const row = y * rowBytes;
    const prev = row - rowBytes;
    for (let x = 0; x < rowBytes; x++) {
      const raw = src[pos + x];
      const a = x >= bpp ? out[row + x - bpp] : 0;
      const b = y > 0 ? out[prev + x] : 0;
      const c = y > 0 && x >= bpp ? out[prev + x - bpp] : 0;
      let v;
      switch (type) {
        case 0: v = raw; break;
        case 1: v = raw + a; break;
        case 2: v = raw + b; break;
        case 3: v = raw + ((a + b) >> 1); break;
        case 4: v = raw + paeth(a, b, c); break;
        default: throw new PngError(`PNG filter type ${type} is invalid`);
      }
      out[row + x] = v & 255;
    }
    pos += rowBytes;
  }
  return { rows: out, end: pos };
}

/**
 * The EXIF Orientation (1..8) of a TIFF-format EXIF block (a PNG eXIf chunk, optionally after an
 * "Exif\0\0" prefix); 1 when absent or unreadable.
 */
export function exifOrientation(exif) {
  let base = 0;
  if (exif.length >= 6 && String.fromCharCode(...exif.subarray(0, 6)) === "Exif\0\0") base = 6;
  if (exif.length < base + 8) return 1;
  const order = String.fromCharCode(exif[base], exif[base + 1]);
  if (order !== "II" && order !== "MM") return 1;
  const little = order === "II";
  const view = new DataView(exif.buffer, exif.byteOffset, exif.byteLength);
  const u16 = (at) => view.getUint16(at, little);
  const u32 = (at) => view.getUint32(at, little);
  if (u16(base + 2) !== 42) return 1;
  const ifd = base + u32(base + 4);
  if (ifd + 2 > exif.length) return 1;
  const count = u16(ifd);
  for (let i = 0; i < count; i++) {
    const entry = ifd + 2 + 12 * i;
    if (entry + 12 > exif.length) return 1;
    if (u16(entry) !== 0x0112) continue;
    const type = u16(entry + 2);
    const value = type === 3 ? u16(entry + 8) : type === 4 ? u32(entry + 8) : 1;
    return value >= 1 && value <= 8 ? value : 1;
  }
  return 1;
}

/**
 * An image {width, height, channels, data} turned as EXIF `orientation` (1..8) says, so that it
 * shows as a viewer shows it (Pillow's ImageOps.exif_transpose): 2 mirror, 3 rotate 180, 4 flip,
 * 5 transpose, 6 rotate 90 clockwise, 7 transverse, 8 rotate 90 counter-clockwise.
 */
export function applyOrientation(image, orientation) {
  if (!(orientation >= 2 && orientation <= 8)) return image;
  const { width: W, height: H, channels: C, data } = image;
  const swap = orientation >= 5;
  const w = swap ? H : W;
  const h = swap ? W : H;
  const out = new Uint8Array(data.length);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      let sx, sy;
      switch (orientation) {
        case 2: sx = W - 1 - x; sy = y; break;
        case 3: sx = W - 1 - x; sy = H - 1 - y; break;
        case 4: sx = x; sy = H - 1 - y; break;
        case 5: sx = y; sy = x; break;
        case 6: sx = y; sy = H - 1 - x; break;
        case 7: sx = W - 1 - y; sy = H - 1 - x; break;
        default: sx = W - 1 - y; sy = x; break; // 8
      }
      const from = (sy * W + sx) * C;
      const to = (y * w + x) * C;
      for (let c = 0; c < C; c++) out[to + c] = data[from + c];
    }
  }
  return { width: w, height: h, channels: C, data: out };
}

/** Decodes PNG bytes to {width, height, channels: 3|4, data: Uint8Array}, EXIF orientation applied. */
export async function decodePng(bytes) {
  if (!isPng(bytes)) throw new PngError("not a PNG file");
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let pos = 8;
  let header = null;
  let palette = null;
  let trns = null;
  let exif = null;
  const idat = [];
  while (pos + 8 <= bytes.length) {
    const length = view.getUint32(pos);
    const type = String.fromCharCode(...bytes.subarray(pos + 4, pos + 8));
    const start = pos + 8;
    if (start + length + 4 > bytes.length) throw new PngError(`PNG chunk ${type} is truncated`);
    const body = bytes.subarray(start, start + length);
    if (type === "IHDR") {
      header = {
        width: view.getUint32(start), height: view.getUint32(start + 4), depth: body[8],
        colorType: body[9], compression: body[10], filter: body[11], interlace: body[12],
      };
    } else if (type === "PLTE") palette = body;
    else if (type === "tRNS") trns = body;
    else if (type === "IDAT") idat.push(body);
    else if (type === "eXIf") exif = body;
    else if (type === "IEND") break;
    pos = start + length + 4; // CRC not checked: a damaged file fails to inflate or decodes to noise
  }
  if (!header) throw new PngError("PNG has no IHDR chunk");
  const { width, height, depth, colorType, interlace } = header;
  if (width === 0 || height === 0 || width * height > MAX_PIXELS) {
    throw new PngError(`PNG size ${width}x${height} is not supported`);
  }
  const samplesPer = { 0: 1, 2: 3, 3: 1, 4: 2, 6: 4 }[colorType];
  if (samplesPer === undefined || header.compression !== 0 || header.filter !== 0) {
    throw new PngError(`PNG colour type ${colorType} is invalid`);
  }
  if (colorType === 3 && !palette) throw new PngError("palette PNG without a PLTE chunk");
  const bitsPerPixel = samplesPer * depth;
  const bpp = Math.max(1, bitsPerPixel >> 3);
  const total = idat.reduce((n, c) => n + c.length, 0);
  const compressed = new Uint8Array(total);
  let off = 0;
  for (const c of idat) {
    compressed.set(c, off);
    off += c.length;
  }
  const raw = await inflate(compressed);

  const hasAlpha = colorType === 4 || colorType === 6 || (colorType === 3 && trns !== null);
  const channels = hasAlpha ? 4 : 3;
  const data = new Uint8Array(width * height * channels);
  const maxSample = (1 << Math.min(depth, 8)) - 1;

  const sampleAt = (rows, rowStart, index) => {
    // index-th sample of a row, at the file's depth (16-bit: the full value)
    if (depth === 8) return rows[rowStart + index];
    if (depth === 16) return (rows[rowStart + 2 * index] << 8) | rows[rowStart + 2 * index + 1];
    const bit = index * depth;
    const byte = rows[rowStart + (bit >> 3)];
    return (byte >> (8 - depth - (bit & 7))) & ((1 << depth) - 1);
  };
  const to8 = (v) => (depth === 16 ? v >> 8 : depth === 8 ? v : Math.round((v * 255) / maxSample));

  const writePixel = (rows, rowStart, x, outIndex) => {
    const o = outIndex * channels;
    let r, g, b, a = 255;
    if (colorType === 3) {
      const i = sampleAt(rows, rowStart, x);
      if (3 * i + 2 >= palette.length) throw new PngError("PNG palette index out of range");
      r = palette[3 * i]; g = palette[3 * i + 1]; b = palette[3 * i + 2];
      if (trns) a = i < trns.length ? trns[i] : 255;
    } else if (colorType === 0 || colorType === 4) {
      const v = sampleAt(rows, rowStart, x * samplesPer);
      r = g = b = to8(v);
      if (colorType === 4) a = to8(sampleAt(rows, rowStart, x * samplesPer + 1));
    } else {
      const rv = sampleAt(rows, rowStart, x * samplesPer);
      const gv = sampleAt(rows, rowStart, x * samplesPer + 1);
      const bv = sampleAt(rows, rowStart, x * samplesPer + 2);
      r = to8(rv); g = to8(gv); b = to8(bv);
      if (colorType === 6) a = to8(sampleAt(rows, rowStart, x * samplesPer + 3));
    }
    data[o] = r; data[o + 1] = g; data[o + 2] = b;
    if (channels === 4) data[o + 3] = a;
  };

  if (interlace === 0) {
    const rowBytes = Math.ceil((width * bitsPerPixel) / 8);
    const { rows } = unfilter(raw, 0, width, height, bpp, rowBytes);
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) writePixel(rows, y * rowBytes, x, y * width + x);
    }
  } else if (interlace === 1) {
    const passes = [[0, 0, 8, 8], [4, 0, 8, 8], [0, 4, 4, 8], [2, 0, 4, 4], [0, 2, 2, 4], [1, 0, 2, 2], [0, 1, 1, 2]];
    let offset = 0;
    for (const [x0, y0, dx, dy] of passes) {
      const pw = Math.ceil((width - x0) / dx);
      const ph = Math.ceil((height - y0) / dy);
      if (pw <= 0 || ph <= 0) continue;
      const rowBytes = Math.ceil((pw * bitsPerPixel) / 8);
      const { rows, end } = unfilter(raw, offset, pw, ph, bpp, rowBytes);
      offset = end;
      for (let y = 0; y < ph; y++) {
        for (let x = 0; x < pw; x++) writePixel(rows, y * rowBytes, x, (y0 + y * dy) * width + x0 + x * dx);
      }
    }
  } else {
    throw new PngError(`PNG interlace method ${interlace} is invalid`);
  }
  return applyOrientation({ width, height, channels, data }, exif ? exifOrientation(exif) : 1);
}
