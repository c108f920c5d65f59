// A PNG writer for the tests: every colour type, bit depths 1 to 16, the five filters (row % 5),
// Adam7, PLTE / tRNS / eXIf chunks. Used by png.test.mjs and, for the caption vectors' generated
// images, by caption.test.mjs.

import zlib from "node:zlib";

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
export function encode({ pixels, colorType, depth, interlace = 0, plte, trns, exif }) {
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

/** An 8-bit RGB or RGBA PNG of a runtime image input {width, height, channels, data}. */
export function encodeImage({ width, height, channels, data }) {
  if (channels !== 3 && channels !== 4) throw new Error(`encodeImage: ${channels} channels; 3 (RGB) or 4 (RGBA)`);
  const pixels = Array.from({ length: height }, (_, y) => Array.from({ length: width }, (_, x) => {
    const at = (y * width + x) * channels;
    return Array.from(data.subarray(at, at + channels));
  }));
  return encode({ pixels, colorType: channels === 4 ? 6 : 2, depth: 8 });
}
