/**
 * Where a bundle's files come from. The loader only ever asks a source for a file's bytes by its
 * bundle-relative path (already checked to be a normalised relative path) with a size limit;
 * filesystem sources also answer link / regular-file / directory questions.
 *
 * - `NodeDirectorySource(dir)`: a bundle directory on disk (Node). Every path component is checked
 *   with `lstat` (no symbolic links), files are opened with `O_NOFOLLOW | O_NONBLOCK` and must be
 *   regular files by `fstat`.
 * - `FetchSource(baseUrl)`: a bundle served over HTTP(S) (browsers, React Native, Node's fetch).
 *   Responses are read with the size limit enforced while streaming.
 * - `MemorySource(files)`: bytes the app already holds (e.g. assets unpacked by React Native).
 *
 * What each can check of the spec's file rules (docs/bundle-format.md, steps 1, 7 and 8):
 *
 * - links, FIFOs, devices and directories in place of a file: NodeDirectorySource only (a served or
 *   in-memory file has no type; the spec says these checks have no meaning there);
 * - unlisted members (a file, link or folder the manifest's `files` does not list): the sources
 *   that can enumerate their members, with `entries`: NodeDirectorySource (the whole directory
 *   tree, without following links) and MemorySource (its keys). FetchSource cannot: HTTP has no
 *   directory listing, so a served bundle's extra files are simply never requested (the runtime
 *   only ever reads manifest.json, manifest.sig and listed files);
 * - sizes and hashes of listed files, and malformed or unlisted names: every source.
 */

import { BundleError, type FileProblem, type ReasonCode } from "./errors.js";

export type MemberKind = "file" | "directory";

/** Everything under a directory of the bundle, by kind (bundle-relative paths). */
export interface TreeListing {
  files: string[];
  links: string[];
  others: string[];
}

/** What a bundle entry is, found without following links. */
export type EntryKind = "file" | "directory" | "link" | "other";

/** One member of a bundle: its bundle-relative path ("/"-separated) and kind. */
export interface BundleEntry {
  path: string;
  kind: EntryKind;
}

export interface BundleSource {
  /** A name for messages (a directory or a URL). */
  readonly name: string;
  /**
   * The bytes of the file at a bundle-relative path. Rejects with a `BundleError` whose `reason` is
   * `"missing"`, `"link"`, `"not-regular"`, `"too-large"` (over `maxBytes`) or `"unreadable"`.
   */
  read(path: string, maxBytes: number): Promise<Uint8Array>;
  /**
   * The size in bytes of the listed file at a path, without reading it (rejects like `read` for a
   * missing, linked or special file): the loader compares every size before it hashes anything.
   */
  sizeOf?(path: string): Promise<number>;
  /** Rejects unless every component exists without being a link and the member is of `kind`. */
  checkMember?(path: string, kind: MemberKind): Promise<void>;
  /** Every entry under a directory of the bundle, without following links. */
  listTree?(path: string): Promise<TreeListing>;
  /**
   * Every member of the bundle, from its root, without following links: the loader refuses any
   * that the manifest does not list. The walk goes into a directory only when `descend(path)` is
   * true, so that it stops at the first unlisted folder instead of reading it.
   */
  entries?(descend: (directory: string) => boolean): AsyncIterable<BundleEntry>;
}

/** The reason code of a listed file's problem (the loader gives manifest.json's and manifest.sig's its own). */
const FILE_CODES: Record<FileProblem, ReasonCode> = {
  missing: "file-missing", link: "file-not-regular", "not-regular": "file-not-regular", "too-large": "size-mismatch",
  unreadable: "file-not-regular",
};

function fail(message: string, path: string, reason: FileProblem, cause?: unknown): BundleError {
  return new BundleError(message, { path, reason, cause, code: FILE_CODES[reason] });
}

// ------------------------------------------------------------------------------------- Node
type FsPromises = typeof import("node:fs/promises");
type PathModule = typeof import("node:path");
type FsModule = typeof import("node:fs");

interface NodeModules {
  fsp: FsPromises;
  fs: FsModule;
  path: PathModule;
}

let nodeModules: Promise<NodeModules> | undefined;

/** node:fs and node:path, loaded on first use so that browser bundles never need them. */
function loadNode(): Promise<NodeModules> {
  if (!nodeModules) {
    const names = ["node:fs/promises", "node:fs", "node:path"];
    nodeModules = Promise.all(names.map((n) => import(/* webpackIgnore: true */ /* @vite-ignore */ n))).then(
      ([fsp, fs, path]) => ({ fsp, fs, path }) as NodeModules,
    );
  }
  return nodeModules;
}

function errno(exc: unknown): string | undefined {
  return typeof exc === "object" && exc !== null && "code" in exc ? String((exc as { code: unknown }).code) : undefined;
}

/** A bundle directory on the local filesystem (Node only). */
export class NodeDirectorySource implements BundleSource {
  readonly name: string;

  constructor(readonly root: string) {
    if (typeof root !== "string" || root.length === 0) {
      throw new BundleError("NodeDirectorySource needs the bundle directory's path (a non-empty string)");
    }
    this.name = root;
  }

  /** lstat every component of root/rel; the last one's stats. */
  private async lstatChain(rel: string) {
    const { fsp, path } = await loadNode();
    let current = this.root;
    let info: Awaited<ReturnType<FsPromises["lstat"]>> | undefined;
    for (const part of rel.split("/")) {
      current = path.join(current, part);
      try {
        info = await fsp.lstat(current);
      } catch (exc) {
        const code = errno(exc);
        if (code === "ENOENT" || code === "ENOTDIR") {
          throw fail(`${rel} is missing from the bundle; export it again`, rel, "missing", exc);
        }
        throw fail(`cannot inspect ${rel} in the bundle (${code ?? String(exc)})`, rel, "unreadable", exc);
      }
      if (info.isSymbolicLink()) {
        throw fail(`${rel} passes through a symbolic link (${part}); a bundle may not contain links: ` +
          "copy the real files in and export it again", rel, "link");
      }
    }
    return info!;
  }

  async checkMember(rel: string, kind: MemberKind): Promise<void> {
    const info = await this.lstatChain(rel);
    const ok = kind === "file" ? info.isFile() : info.isDirectory();
    if (!ok) {
      throw fail(`${rel} is not a ${kind === "file" ? "regular file" : "directory"}; a bundle holds regular ` +
        "files and directories only", rel, "not-regular");
    }
  }

  async sizeOf(rel: string): Promise<number> {
    const info = await this.lstatChain(rel);
    if (!info.isFile()) {
      throw fail(`${rel} is not a regular file; a bundle holds regular files and directories only`, rel, "not-regular");
    }
    return Number(info.size);
  }

  async read(rel: string, maxBytes: number): Promise<Uint8Array> {
    await this.checkMember(rel, "file");
    const { fsp, fs, path } = await loadNode();
    const flags = fs.constants.O_RDONLY | (fs.constants.O_NOFOLLOW ?? 0) | (fs.constants.O_NONBLOCK ?? 0);
    let handle: Awaited<ReturnType<FsPromises["open"]>>;
    try {
      handle = await fsp.open(path.join(this.root, rel), flags);
    } catch (exc) {
      const code = errno(exc);
      if (code === "ENOENT") throw fail(`${rel} is missing from the bundle; export it again`, rel, "missing", exc);
      if (code === "ELOOP" || code === "EMLINK") {
        throw fail(`${rel} is a symbolic link; a bundle may not contain links`, rel, "link", exc);
      }
      throw fail(`cannot open ${rel} (${code ?? String(exc)}); it must be a regular file`, rel, "unreadable", exc);
    }
    try {
      const info = await handle.stat();
      if (!info.isFile()) throw fail(`${rel} is not a regular file`, rel, "not-regular");
      if (info.size > maxBytes) {
        throw fail(`${rel} is ${info.size} bytes, over the ${maxBytes} allowed`, rel, "too-large");
      }
      // Read up to one byte past the limit, so that a file growing after fstat is caught too.
      let buffer: Uint8Array;
      try {
        buffer = new Uint8Array(Math.min(info.size, maxBytes) + 1);
      } catch (exc) {
        throw new BundleError(`${rel} is ${info.size} bytes, more than this JavaScript engine can hold in memory`,
          { cause: exc, path: rel });
      }
      let filled = 0;
      while (filled < buffer.length) {
        const { bytesRead } = await handle.read(buffer, filled, buffer.length - filled, null);
        if (bytesRead === 0) break;
        filled += bytesRead;
      }
      if (filled > maxBytes) throw fail(`${rel} is over the ${maxBytes} bytes allowed`, rel, "too-large");
      return buffer.subarray(0, filled);
    } finally {
      await handle.close();
    }
  }

  async listTree(rel: string): Promise<TreeListing> {
    await this.checkMember(rel, "directory");
    const { fsp, path } = await loadNode();
    const out: TreeListing = { files: [], links: [], others: [] };
    const pending = [rel];
    while (pending.length > 0) {
      const dir = pending.pop()!;
      const entries = await fsp.readdir(path.join(this.root, dir), { withFileTypes: true });
      for (const entry of entries) {
        const member = `${dir}/${entry.name}`;
        if (entry.isSymbolicLink()) out.links.push(member);
        else if (entry.isDirectory()) pending.push(member);
        else if (entry.isFile()) out.files.push(member);
        else out.others.push(member);
      }
    }
    return out;
  }

  async *entries(descend: (directory: string) => boolean): AsyncIterable<BundleEntry> {
    const { fsp, path } = await loadNode();
    const pending = [""];
    while (pending.length > 0) {
      const dir = pending.pop()!;
      const full = dir ? path.join(this.root, ...dir.split("/")) : this.root;
      let handle: Awaited<ReturnType<FsPromises["opendir"]>>;
      try {
        handle = await fsp.opendir(full);
      } catch (exc) {
        const where = dir || ".";
        throw fail(`cannot list ${where} in the bundle ${this.name} (${errno(exc) ?? String(exc)})`, where, "unreadable", exc);
      }
      // for-await closes the directory handle, also when the consumer stops early
      for await (const entry of handle) {
        const member = dir ? `${dir}/${entry.name}` : entry.name;
        let kind: EntryKind = entry.isSymbolicLink() ? "link" : entry.isDirectory() ? "directory"
          : entry.isFile() ? "file" : "other";
        if (kind === "other") {
          // a filesystem that does not report types: ask lstat
          try {
            const info = await fsp.lstat(path.join(full, entry.name));
            kind = info.isSymbolicLink() ? "link" : info.isDirectory() ? "directory" : info.isFile() ? "file" : "other";
          } catch {
            kind = "other";
          }
        }
        yield { path: member, kind };
        if (kind === "directory" && descend(member)) pending.push(member);
      }
    }
  }
}

// ------------------------------------------------------------------------------------- fetch
export interface FetchSourceOptions {
  /** The fetch function to use (default: the global `fetch`). */
  fetch?: typeof fetch;
  /** Extra request options (headers, credentials, signal). */
  init?: RequestInit;
}

/** A bundle served over HTTP(S): `baseUrl` is the bundle directory's URL. */
export class FetchSource implements BundleSource {
  readonly name: string;
  private readonly base: URL;
  private readonly fetchFn: typeof fetch;

  constructor(baseUrl: string | URL, private readonly options: FetchSourceOptions = {}) {
    const text = String(baseUrl);
    const base = typeof globalThis.location !== "undefined" ? new URL(text, globalThis.location.href) : new URL(text);
    if (!base.pathname.endsWith("/")) base.pathname += "/";
    this.base = base;
    this.name = base.href;
    const fn = options.fetch ?? globalThis.fetch;
    if (typeof fn !== "function") {
      throw new BundleError("FetchSource needs fetch(); pass one in the options ({ fetch })");
    }
    this.fetchFn = fn;
  }

  async read(rel: string, maxBytes: number): Promise<Uint8Array> {
    const url = new URL(rel.split("/").map(encodeURIComponent).join("/"), this.base);
    let response: Response;
    try {
      response = await this.fetchFn.call(globalThis, url.href, this.options.init);
    } catch (exc) {
      throw fail(`cannot fetch ${rel} from ${this.name} (${String(exc)})`, rel, "unreadable", exc);
    }
    if (response.status === 404 || response.status === 410) {
      await response.body?.cancel();
      throw fail(`${rel} is missing from the bundle at ${this.name}; publish the whole bundle`, rel, "missing");
    }
    if (!response.ok) {
      await response.body?.cancel();
      throw fail(`fetching ${rel} from ${this.name} failed with HTTP ${response.status}`, rel, "unreadable");
    }
    const declared = Number(response.headers.get("content-length") ?? NaN);
    if (Number.isFinite(declared) && declared > maxBytes) {
      await response.body?.cancel();
      throw fail(`${rel} is ${declared} bytes, over the ${maxBytes} allowed`, rel, "too-large");
    }
    if (!response.body) {
      const data = new Uint8Array(await response.arrayBuffer());
      if (data.length > maxBytes) throw fail(`${rel} is over the ${maxBytes} bytes allowed`, rel, "too-large");
      return data;
    }
    const reader = response.body.getReader();
    const chunks: Uint8Array[] = [];
    let total = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      total += value.length;
      if (total > maxBytes) {
        await reader.cancel();
        throw fail(`${rel} is over the ${maxBytes} bytes allowed`, rel, "too-large");
      }
      chunks.push(value);
    }
    return concat(chunks, total);
  }
}

// ------------------------------------------------------------------------------------- memory
/** Files the app already holds, by bundle-relative path. */
export class MemorySource implements BundleSource {
  readonly name: string;
  private readonly files: Map<string, Uint8Array>;

  constructor(files: Map<string, Uint8Array> | Record<string, Uint8Array>, name = "(memory)") {
    this.files = files instanceof Map ? new Map(files) : new Map(Object.entries(files));
    this.name = name;
  }

  async sizeOf(rel: string): Promise<number> {
    const data = this.files.get(rel);
    if (data === undefined) throw fail(`${rel} is missing from the bundle`, rel, "missing");
    return data.length;
  }

  async read(rel: string, maxBytes: number): Promise<Uint8Array> {
    const data = this.files.get(rel);
    if (data === undefined) throw fail(`${rel} is missing from the bundle`, rel, "missing");
    if (data.length > maxBytes) throw fail(`${rel} is over the ${maxBytes} bytes allowed`, rel, "too-large");
    return data;
  }

  /** Its keys, as files: a key the manifest does not list is refused like an unlisted file on disk. */
  async *entries(): AsyncIterable<BundleEntry> {
    for (const key of this.files.keys()) yield { path: key, kind: "file" as const };
  }
}

function concat(chunks: Uint8Array[], total: number): Uint8Array {
  if (chunks.length === 1) return chunks[0];
  const out = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}
