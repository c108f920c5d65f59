// Image files to the runtime's image input {width, height, channels, data}.
//
// PNG files are decoded by png.js, exactly (the file's own samples, docs/bundle-format.md's
// decoding rules: EXIF orientation, grey, palette, 16-bit). Other formats (JPEG, WebP, GIF, BMP,
// ...) are decoded by the browser, with colour-space conversion and alpha premultiplication turned
// off and EXIF orientation applied (imageOrientation "from-image", as the spec says); opaque images
// then come back as stored, while semi-transparent pixels may differ by a grey level or so from
// Pillow's decoding (a canvas keeps premultiplied alpha), and JPEG decoders themselves differ
// slightly between libraries. A CMYK (or YCCK) JPEG is refused, as the spec says (browsers would
// convert it with a guessed profile): its colours depend on a colour profile.

import { decodePng, isPng } from "./png.js";

export const MAX_FILE_BYTES = 64 * 1024 * 1024;
export const MAX_SIDE = 16384;
export const MAX_PIXELS = 64 * 1024 * 1024;

export class DemoImageError extends Error {
  constructor(message) {
    super(message);
    this.name = "DemoImageError";
  }
}

/** The number of colour components of a JPEG file (its first SOF segment); undefined if none is found. */
export function jpegComponents(bytes) {
  if (bytes.length < 4 || bytes[0] !== 0xff || bytes[1] !== 0xd8) return undefined;
  let pos = 2;
  while (pos + 4 <= bytes.length) {
    if (bytes[pos] !== 0xff) return undefined;
    const marker = bytes[pos + 1];
    if (marker === 0xff) { // fill byte
      pos++;
      continue;
    }
    if (marker === 0x01 || (marker >= 0xd0 && marker <= 0xd8)) { // no length
      pos += 2;
      continue;
    }
    if (marker === 0xd9 || marker === 0xda) return undefined; // end of image / start of scan before any SOF
    const length = (bytes[pos + 2] << 8) | bytes[pos + 3];
    const isSof = marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc;
    if (isSof) return pos + 9 < bytes.length ? bytes[pos + 9] : undefined;
    pos += 2 + length;
  }
  return undefined;
}

/** DemoImageError for a file the spec refuses before decoding: a CMYK / YCCK JPEG. */
export function refuseUnsupported(bytes) {
  if (jpegComponents(bytes) === 4) {
    throw new DemoImageError("CMYK images are not accepted: their colours depend on a colour profile; convert it " +
      "to RGB first (e.g. with the profile, in an image editor)");
  }
}

async function decodeWithBrowser(blob) {
  let bitmap;
  try {
    bitmap = await createImageBitmap(blob, {
      colorSpaceConversion: "none", premultiplyAlpha: "none", imageOrientation: "from-image",
    });
  } catch {
    throw new DemoImageError(`this file is not an image the browser can decode (${blob.type || "unknown type"})`);
  }
  const { width, height } = bitmap;
  if (width * height > MAX_PIXELS || width > MAX_SIDE || height > MAX_SIDE) {
    bitmap.close();
    throw new DemoImageError(`the image is ${width} x ${height} pixels, over the demo's limit`);
  }
  const canvas = new OffscreenCanvas(width, height);
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0);
  bitmap.close();
  const rgba = ctx.getImageData(0, 0, width, height).data;
  let opaque = true;
  for (let i = 3; i < rgba.length; i += 4) {
    if (rgba[i] !== 255) {
      opaque = false;
      break;
    }
  }
  if (!opaque) return { width, height, channels: 4, data: new Uint8Array(rgba.buffer) };
  const rgb = new Uint8Array(width * height * 3);
  for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) {
    rgb[j] = rgba[i];
    rgb[j + 1] = rgba[i + 1];
    rgb[j + 2] = rgba[i + 2];
  }
  return { width, height, channels: 3, data: rgb };
}

/** A File or Blob to {width, height, channels, data, decoder}. */
export async function decodeImageBlob(blob) {
  if (blob.size > MAX_FILE_BYTES) {
    throw new DemoImageError(`the file is ${(blob.size / 1048576).toFixed(1)} MB, over the demo's 64 MB limit`);
  }
  const bytes = new Uint8Array(await blob.arrayBuffer());
  if (isPng(bytes)) {
    try {
      return { ...(await decodePng(bytes)), decoder: "png.js (exact)" };
    } catch (err) {
      throw new DemoImageError(`this PNG file cannot be decoded: ${err.message}`);
    }
  }
  refuseUnsupported(bytes);
  return { ...(await decodeWithBrowser(blob)), decoder: "browser" };
}

/** Fetches an image URL and decodes it like a chosen file. */
export async function decodeImageUrl(url) {
  const response = await fetch(url);
  if (!response.ok) throw new DemoImageError(`cannot load ${url}: HTTP ${response.status}`);
  return decodeImageBlob(await response.blob());
}

/** An ImageBitmap of the decoded pixels, for drawing (RGBA, as the canvas wants it). */
export async function toBitmap(image) {
  const { width, height, channels, data } = image;
  const rgba = new Uint8ClampedArray(width * height * 4);
  if (channels === 4) rgba.set(data);
  else {
    for (let i = 0, j = 0; j < data.length; i += 4, j += 3) {
      rgba[i] = data[j];
      rgba[i + 1] = data[j + 1];
      rgba[i + 2] = data[j + 2];
      rgba[i + 3] = 255;
    }
  }
  return createImageBitmap(new ImageData(rgba, width, height));
}
