"""Slim bundles: a copy of a bundle holding only what one app ships (one runtime, format and
precision; chosen keep ratios; optionally the in-graph variant), with its own consistent manifest
and hashes and the source's calibrated thresholds. Every kind: classifier bundles here, captioning and
generative VLM bundles through mmedge.bundle.slim_generative. No torch: app developers run it too.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from pathlib import Path

from mmedge.bundle.manifest import CLASSIFIER, bundle_kind, hash_files, load_bundle_manifest, write_manifest
from mmedge.bundle.publish import check_apart, check_destination
from mmedge.errors import ConfigError
from mmedge.fileio import publish_dir

RUNNABLE_FORMATS = {"onnxruntime": ("onnx", "ort"), "executorch": ("pte",), "coreml": ("mlpackage",),
                    "torch": ("safetensors",)}


def _choose_artifact(manifest: dict, runtime: str, fmt: str | None, precision: str) -> dict:
    matches = [a for a in manifest["artifacts"] if a["runtime"] == runtime and a["precision"] == precision
               and (fmt is None or a["format"] == fmt)]
    if runtime == "onnxruntime" and fmt is None:
        matches = [a for a in matches if a["format"] == "ort"] or matches  # ORT format: what mobile ships
    if not matches:
        have = sorted({(a["runtime"], a["format"], a["precision"]) for a in manifest["artifacts"]})
        raise ConfigError(f"the bundle has no {runtime}/{fmt or 'any format'}/{precision} artifact; it has {have}",
                          "arguments")
    return matches[0]


def artifact_files(artifact: dict) -> list[str]:
    """The bundle paths an artifact needs: its one file (a program or package) or its stages' files, and its
    external weights."""
    files = [artifact["file"]] if "file" in artifact else [s["file"] for s in artifact["stages"].values()]
    return files + ([artifact["external_data"]] if "external_data" in artifact else [])


def kept_ratios(exported: list[float], keep_ratios: list[float] | None, thresholds: dict) -> list[float]:
    """The keep ratios a slim bundle keeps (default: every exported one); ConfigError for one not exported, or
    a choice without the thresholds' keep ratio."""
    ratios = exported if not keep_ratios else [float(r) for r in keep_ratios]
    missing = [r for r in ratios if r not in exported]
    if missing:
        raise ConfigError(f"keep ratios {missing} were not exported; the bundle has {exported}", "arguments")
    if thresholds["keep_ratio"] not in ratios:
        source = f" ({thresholds['source']})" if "source" in thresholds else ""
        raise ConfigError(f"the thresholds use keep ratio {thresholds['keep_ratio']}{source}; "
                          f"keep it, or calibrate the slim bundle afterwards (`mmedge calibrate`) after keeping "
                          f"{thresholds['keep_ratio']} too", "arguments")
    return ratios


def slim_manifest(manifest: dict, runtime: str, fmt: str | None, precision: str,
                  keep_ratios: list[float] | None, in_graph: bool | list[float]) -> tuple[dict, list[str]]:
    """The slim manifest (without `files`) and the bundle paths it needs copied. `in_graph`: True for
    the in-graph variant of every kept keep ratio, or a list of kept keep ratios."""
    artifact = copy.deepcopy(_choose_artifact(manifest, runtime, fmt, precision))
    ratios = kept_ratios([k["keep_ratio"] for k in manifest["keep_ratios"]], keep_ratios, manifest["thresholds"])
    groups = [k for k in manifest["keep_ratios"] if k["keep_ratio"] in ratios]
    names = [n for g in groups for n in g["stages"]]
    pruning = copy.deepcopy(manifest.get("modality_pruning"))
    text_names = [s["name"] for s in pruning["stages"]] if pruning else []  # shared by every keep ratio: kept
    artifact["stages"] = {n: artifact["stages"][n] for n in names + text_names}
    out = {k: v for k, v in manifest.items() if k not in ("files", "in_graph", "artifacts", "keep_ratios", "stages")}
    out.update(keep_ratios=groups, stages={n: manifest["stages"][n] for n in names}, artifacts=[artifact])
    if pruning:
        pruning["exit_flops"] = [e for e in pruning["exit_flops"] if e["keep_ratio"] in ratios]
        out["modality_pruning"] = pruning
    needed = [manifest["tokenizer"]["file"], *artifact_files(artifact)]
    if in_graph:
        if runtime != "onnxruntime" or "in_graph" not in manifest:
            raise ConfigError("the in-graph variant exists only for onnxruntime bundles exported with it "
                              "(`mmedge export` with in_graph in the recipe)", "arguments")
        if precision != "fp32":
            raise ConfigError(f"a slim bundle keeps the in-graph variant in fp32 only; slim a {precision} bundle "
                              "without --in-graph (its staged files), or the full bundle keeps both", "arguments")
        key = "ort_file" if artifact["format"] == "ort" else "file"
        wanted = ratios if in_graph is True else [float(r) for r in in_graph]
        if not set(wanted) <= set(ratios):
            raise ConfigError(f"in-graph keep ratios {wanted} must be among the kept ones {ratios}", "arguments")
        entries = {r: dict(e) for r, e in manifest["in_graph"]["by_keep_ratio"].items() if float(r) in wanted}
        for entry in entries.values():
            if key not in entry:
                raise ConfigError("this bundle has no ORT-format in-graph file; export it again", "arguments")
            entry.pop("ort_file" if key == "file" else "file", None)
            for k in [k for k in entry if k.startswith("int8_")]:  # the int8 graph: not in an fp32 slim bundle
                entry.pop(k)
            if key == "ort_file":  # the slim bundle names the ORT file as its `file` (weights inside)
                entry["file"] = entry.pop("ort_file")
                entry.pop("external_data", None)
            needed += [entry["file"]] + ([entry["external_data"]] if "external_data" in entry else [])
        out["in_graph"] = {**{k: v for k, v in manifest["in_graph"].items() if k != "by_keep_ratio"},
                           "by_keep_ratio": entries}
    out["slim"] = {"source": manifest["name"], "runtime": runtime, "format": artifact["format"],
                   "precision": precision, "keep_ratios": ratios,
                   "in_graph": sorted(float(r) for r in out.get("in_graph", {}).get("by_keep_ratio", {}))}
    return out, needed


def slim_bundle(source: str | Path, out: str | Path, runtime: str = "onnxruntime", fmt: str | None = None,
                precision: str = "fp32", keep_ratios: list[float] | None = None, in_graph: bool | list[float] = False,
                force: bool = False, sign_key=None) -> Path:
    """Write the slim bundle at `out` atomically (verified source, re-hashed result); returns its path."""
    if runtime not in RUNNABLE_FORMATS:
        raise ConfigError(f"runtime {runtime!r} unknown; choose one of {sorted(RUNNABLE_FORMATS)}", "arguments")
    source, out = Path(source), Path(out)
    check_apart(source, out)  # before anything is read or written: `--out SOURCE --force` would replace it
    manifest = load_bundle_manifest(source)
    kind = bundle_kind(manifest)
    if kind == CLASSIFIER:
        slim, needed = slim_manifest(manifest, runtime, fmt, precision, keep_ratios, in_graph)
    else:
        from mmedge.bundle.slim_generative import slim_generative_manifest

        slim, needed = slim_generative_manifest(manifest, _choose_artifact(manifest, runtime, fmt, precision),
                                                keep_ratios, in_graph)
    check_destination(out, force, source)
    if sign_key is not None:
        from mmedge.bundle.signing import load_private_key

        sign_key = load_private_key(sign_key)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-{os.getpid()}-", dir=out.parent))
    try:
        for rel in dict.fromkeys(needed):
            src, dst = source / rel, tmp / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, dst)
            else:
                shutil.copy2(src, dst)
        if kind == CLASSIFIER:
            slim["files"] = hash_files(tmp)
            write_manifest(tmp, slim)
        else:
            from mmedge.bundle.slim_generative import write_generative_manifest

            write_generative_manifest(tmp, slim)
        load_bundle_manifest(tmp, kinds=(kind,))  # the slim bundle passes every check a runtime makes
        if sign_key is not None:
            from mmedge.bundle.signing import sign_bundle

            sign_bundle(tmp, sign_key)
        check_destination(out, force, source)  # again: the destination may have changed meanwhile
        publish_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def bundle_bytes(root: str | Path) -> int:
    """Total size of a bundle's files (manifest included)."""
    return sum(p.stat().st_size for p in Path(root).rglob("*") if p.is_file())

