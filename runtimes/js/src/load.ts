/**
 * loadEngine: open a bundle of any kind with its engine, as the Python runtime's `Engine.load` does:
 * a classifier bundle (no `kind`) as an Engine, `"kind": "caption"` as a CaptionEngine, `"kind":
 * "vlm"` as a VLMEngine. The kind is read from the manifest first (a bounded read); every check of
 * the chosen engine's loader follows, so a manifest that cannot be read is reported by Engine.load.
 *
 *   const engine = await loadEngine(new NodeDirectorySource("smolvlm.mmedge"), { ort });
 *   if (engine instanceof VLMEngine) await engine.generate(image, "what color is the car?");
 */

import { CaptionEngine, type CaptionEngineOptions } from "./caption.js";
import { Engine, toSource, type EngineOptions } from "./engine.js";
import { BundleError } from "./errors.js";
import { parseManifest, readManifestFile } from "./manifest.js";
import type { BundleSource } from "./source.js";
import { VLMEngine, type VLMEngineOptions } from "./vlm.js";

export type AnyEngine = Engine | CaptionEngine | VLMEngine;
/** The options of the engine the bundle's kind needs (each engine checks its own). */
export type LoadEngineOptions = EngineOptions | CaptionEngineOptions | VLMEngineOptions;

/** The bundle's `kind` ("classifier" when it states none); undefined when the manifest cannot be read. */
export async function bundleKind(bundle: BundleSource | string | URL): Promise<string | undefined> {
  try {
    const { manifestBytes, where } = await readManifestFile(toSource(bundle), {});
    const kind = (parseManifest(manifestBytes, where) as Record<string, unknown>).kind;
    return kind === undefined ? "classifier" : typeof kind === "string" ? kind : undefined;
  } catch (exc) {
    if (exc instanceof BundleError) return undefined; // the loader says what is wrong
    throw exc;
  }
}

/** The engine for the bundle's kind (Engine, CaptionEngine or VLMEngine), loaded with every check. */
export async function loadEngine(bundle: BundleSource | string | URL, options: LoadEngineOptions): Promise<AnyEngine> {
  const source = toSource(bundle);
  const kind = await bundleKind(source);
  if (kind === "vlm") return VLMEngine.load(source, options as VLMEngineOptions);
  if (kind === "caption") return CaptionEngine.load(source, options as CaptionEngineOptions);
  return Engine.load(source, options as EngineOptions);
}
