/**
 * Signed bundles: `manifest.sig` holds an Ed25519 signature (RFC 8032) over the exact bytes of
 * `manifest.json`. Verified with WebCrypto (`importKey("spki", ...)` + `verify`) from the app's
 * PEM public key (SubjectPublicKeyInfo, `-----BEGIN PUBLIC KEY-----`).
 */

import { BundleError, SignatureError, short } from "./errors.js";
import { sha256Hex, toHex } from "./hash.js";
import { parseStrictJson } from "./json.js";
import type { BundleSource } from "./source.js";

export const SIGNATURE_FILE = "manifest.sig";
export const SIGNATURE_FORMAT = "mmedge-signature-1";
export const MAX_SIGNATURE_BYTES = 4096;
const MAX_KEY_CHARS = 16384;
// DER prefix of an Ed25519 SubjectPublicKeyInfo: SEQUENCE { SEQUENCE { OID 1.3.101.112 }, BIT STRING (33) }
const ED25519_SPKI_PREFIX = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

/** An Ed25519 public key as the app passes it: PEM text or PEM bytes. */
export type VerifyKey = string | Uint8Array;

export interface PublicKeyInfo {
  /** The SubjectPublicKeyInfo DER bytes (what WebCrypto's "spki" import takes). */
  spki: Uint8Array;
  /** The raw 32-byte public key. */
  raw: Uint8Array;
}

function base64Bytes(text: string, what: string): Uint8Array {
  const clean = text.replace(/\s+/g, "");
  if (!/^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/.test(clean)) {
    throw new SignatureError(`${what} is not valid base64`, { code: "signature-malformed" });
  }
  const binary = atob(clean);
  const out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
  return out;
}

/** The DER and raw bytes of an Ed25519 PEM public key; SignatureError for anything else. */
export function parsePublicKey(key: VerifyKey): PublicKeyInfo {
  let text: string;
  if (typeof key === "string") text = key;
  else if (key instanceof Uint8Array) text = new TextDecoder("utf-8").decode(key);
  else throw new SignatureError(`a verification key must be PEM text or PEM bytes, got ${typeof key}`, { code: "signature-key" });
  if (text.length > MAX_KEY_CHARS) {
    throw new SignatureError("the verification key is too long for a PEM public key", { code: "signature-key" });
  }
  const match = /-----BEGIN PUBLIC KEY-----([A-Za-z0-9+/=\s]+)-----END PUBLIC KEY-----/.exec(text);
  if (!match) {
    throw new SignatureError("the verification key is not a PEM public key (-----BEGIN PUBLIC KEY-----); " +
      "pass the .pub.pem that `mmedge sign --new-key DIR` wrote", { code: "signature-key" });
  }
  let spki: Uint8Array;
  try {
    spki = base64Bytes(match[1], "the PEM public key");
  } catch (exc) {
    throw new SignatureError((exc as Error).message, { code: "signature-key", cause: exc });
  }
  const isEd25519 = spki.length === 44 && ED25519_SPKI_PREFIX.every((b, i) => spki[i] === b);
  if (!isEd25519) {
    throw new SignatureError("the verification key is not an Ed25519 public key; bundles are signed with Ed25519",
      { code: "signature-key" });
  }
  return { spki, raw: spki.slice(12) };
}

/** Hex SHA-256 of the raw 32-byte public key (manifest.sig's `public_key_sha256`). */
export async function fingerprint(key: VerifyKey | PublicKeyInfo): Promise<string> {
  const info = typeof key === "string" || key instanceof Uint8Array ? parsePublicKey(key) : key;
  return sha256Hex(info.raw);
}

/** Ed25519 verification of `signature` over `data` with WebCrypto. */
export async function ed25519Verify(spki: Uint8Array, signature: Uint8Array, data: Uint8Array): Promise<boolean> {
  const subtle = (globalThis as { crypto?: Crypto }).crypto?.subtle;
  if (!subtle) {
    throw new SignatureError("verifying a signature needs WebCrypto (crypto.subtle) with Ed25519: use Node 20+, " +
      "a current browser over HTTPS, or install a WebCrypto polyfill (React Native)", { code: "signature-invalid" });
  }
  let cryptoKey: CryptoKey;
  try {
    cryptoKey = await subtle.importKey("spki", spki as Uint8Array<ArrayBuffer>, { name: "Ed25519" }, false, ["verify"]);
  } catch (exc) {
    throw new SignatureError(`this platform's WebCrypto cannot import an Ed25519 key (${short(String(exc), 120)}); ` +
      "use a platform with Ed25519 in WebCrypto", { cause: exc, code: "signature-invalid" });
  }
  return subtle.verify({ name: "Ed25519" }, cryptoKey, signature as Uint8Array<ArrayBuffer>,
    data as Uint8Array<ArrayBuffer>);
}

/**
 * SignatureError unless the source's manifest.sig is a valid signature, by `key`, of exactly
 * `manifestBytes` (the bytes that will be parsed; the manifest is never read twice).
 */
export async function verifyManifestSignature(source: BundleSource, manifestBytes: Uint8Array,
  key: VerifyKey): Promise<void> {
  const info = parsePublicKey(key);
  let sigBytes: Uint8Array;
  try {
    sigBytes = await source.read(SIGNATURE_FILE, MAX_SIGNATURE_BYTES);
  } catch (exc) {
    if (exc instanceof BundleError && exc.reason === "missing") {
      throw new SignatureError(`${source.name} is not signed (no ${SIGNATURE_FILE}) but a verification key was ` +
        "given; sign it with `mmedge sign --artifact BUNDLE --key PRIVATE.pem`",
        { cause: exc, path: SIGNATURE_FILE, code: "signature-missing" });
    }
    if (exc instanceof BundleError) {
      // a link, FIFO, directory or device, or over 4,096 bytes
      throw new SignatureError(`${SIGNATURE_FILE} cannot be used: ${exc.message}`,
        { cause: exc, path: SIGNATURE_FILE, reason: exc.reason, code: "signature-malformed" });
    }
    throw exc;
  }
  let record: Record<string, unknown>;
  let signature: Uint8Array;
  try {
    // strict JSON, as for manifest.json: no BOM, duplicate keys, overflowing numbers or lone surrogates
    const parsed: unknown = parseStrictJson(sigBytes, { maxDepth: 32 }).value;
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw new Error("not a JSON object");
    record = parsed as Record<string, unknown>;
    if (record.format !== SIGNATURE_FORMAT || record.algorithm !== "ed25519" || record.signed_file !== "manifest.json") {
      throw new Error(`format ${short(JSON.stringify(record.format) ?? "none", 40)} / algorithm ` +
        `${short(JSON.stringify(record.algorithm) ?? "none", 40)} / signed_file ` +
        `${short(JSON.stringify(record.signed_file) ?? "none", 40)}`);
    }
    if (typeof record.signature !== "string") throw new Error("no signature string");
    signature = base64Bytes(record.signature, "the signature");
  } catch (exc) {
    throw new SignatureError(`${SIGNATURE_FILE} is malformed (${short(String((exc as Error).message ?? exc), 120)}); ` +
      "sign the bundle again", { cause: exc, path: SIGNATURE_FILE, code: "signature-malformed" });
  }
  const mine = await sha256Hex(info.raw);
  if (record.public_key_sha256 !== mine) {
    throw new SignatureError(`${source.name} was signed with another key (fingerprint ` +
      `${short(String(record.public_key_sha256), 16 + 3)}, yours ${mine.slice(0, 16)}...)`,
      { path: SIGNATURE_FILE, code: "signature-key" });
  }
  if (signature.length !== 64 || !(await ed25519Verify(info.spki, signature, manifestBytes))) {
    throw new SignatureError(`${source.name}: the signature does not match manifest.json: the manifest was changed ` +
      "after signing (calibrating removes the signature; sign again)", { path: SIGNATURE_FILE, code: "signature-invalid" });
  }
}

