"""`mmedge demo --model models/caption-default`: the shipped captioner -> bundle (ONNX fp32 + int8,
ExecuTorch, Core ML) -> calibration of the per-word exit (<= max_drop CIDEr points on validation) ->
captions of the test split through ONNX Runtime and ExecuTorch, four settings each, with captions
per second, the speed-up and the CIDEr of each (``mmedge.caption.bench``)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from mmedge.caption.bench import bench_captions, markdown, write
from mmedge.caption.calibrate import calibrate_bundle, format_rows
from mmedge.caption.export import export_caption_bundle
from mmedge.caption.manifest import load_caption_manifest
from mmedge.errors import MMEdgeError
from mmedge.fileio import sha256_file, shown_path

RUNTIMES = [("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("executorch", "fp32")]


def ensure_caption_bundle(model_dir: Path, bundle: Path, force: bool, log=print) -> Path:
    """Export unless a verified bundle of exactly these weights is there (kept with its calibration)."""
    if bundle.exists() and not force:
        try:
            manifest = load_caption_manifest(bundle)
            if manifest.get("weights_sha256") == sha256_file(model_dir / "model.safetensors"):
                log(f"reusing the verified bundle {bundle} (same weights; --force-export to redo)")
                return bundle
            log("re-exporting: the bundle holds other weights")
        except MMEdgeError as exc:
            log(f"re-exporting: {exc}")
    return export_caption_bundle(model_dir, bundle, force=True, log=log)


def run_caption_demo(model_dir: str | Path, out: str | Path = "runs/demo-caption", samples: int = 100,
                     calibration_samples: int = 200, max_drop: float = 1.0, force_export: bool = False,
                     threads: int = 1, repeats: int = 3, progress: bool = True, log=print) -> dict:
    from mmedge.runtime.backends.executorch_backend import set_executorch_threads

    if threads:  # before the export's parity check runs ExecuTorch: its pool is sized once per process
        set_executorch_threads(threads, missing_ok=True)
    started = time.perf_counter()
    model_dir, out = Path(model_dir), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    bundle = ensure_caption_bundle(model_dir, out / f"{model_dir.name}.mmedge", force_export, log)
    manifest = load_caption_manifest(bundle)  # verified once: every file's hash
    th, calibration = manifest["thresholds"], manifest.get("calibration")
    if not th.get("calibrated") or (calibration or {}).get("max_drop") != max_drop:
        log(f"calibrating on {calibration_samples} validation images (CIDEr drop <= {max_drop} points)")
        result = calibrate_bundle(bundle, max_drop, calibration_samples, progress=progress)
        log(format_rows(result))
    manifest = load_caption_manifest(bundle)
    available = {(a["runtime"], a["precision"]) for a in manifest["artifacts"]}
    benches = []
    for backend, precision in RUNTIMES:
        if (backend, precision) not in available:
            continue
        r = bench_captions(bundle, backend, precision, threads, samples, repeats, progress=progress)
        write(r, out / f"caption_{backend}_{precision}.json")
        log(markdown(r))
        benches.append(r)
    summary = {"model": shown_path(model_dir), "bundle": shown_path(bundle), "thresholds": manifest["thresholds"],
               "calibration": manifest.get("calibration"), "benches": [
                   {"backend": b["backend"], "precision": b["precision"], "rows": b["rows"]} for b in benches],
               "coreml": [{"structure_check": a["structure_check"], "parity": a["parity"]}
                          for a in manifest["artifacts"] if a["runtime"] == "coreml"],
               "seconds": time.perf_counter() - started,
               "note": "latencies measured on this machine's CPU, per caption (preprocessing + graphs), batch 1"}
    (out / "demo.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary
