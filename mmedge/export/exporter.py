"""`mmedge export`: a trained model directory -> a validated artifact bundle, atomically.

Everything is written into a hidden temporary directory beside the destination, checked (parity
in every runtime that runs here, Core ML structure), described (report + manifest with hashes),
and only then renamed into place. Any failure or interruption removes the temporary directory.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from mmedge.bundle.manifest import ADAPTED_RESIZE, SCHEMA_VERSION, hash_files, write_manifest
from mmedge.bundle.publish import check_destination, check_sequence, new_release, sign_and_publish
from mmedge.data.batches import build_batch, generate
from mmedge.data.preprocess import MEAN, STD
from mmedge.data.scenes import BACKGROUND
from mmedge.data.tokenizer import _SPLIT, PAD, UNK
from mmedge.errors import ConfigError, ExportError
from mmedge.export import coreml_target, executorch_target, ingraph, onnx_target
from mmedge.export.onnx_weights import share_weights
from mmedge.export.parity import accuracy, compare, run_chain, stage0_feeds
from mmedge.export.recipe import ExportRecipe
from mmedge.export.report import write_report
from mmedge.export.pruning import measure_rule, pruned_chain
from mmedge.export.pruning import section as pruning_section
from mmedge.export.stages import StageSpec, example_inputs, is_adapted, stage_specs, text_stage_specs
from mmedge.fileio import make_parent, pid_alive
from mmedge.models.checkpoint import CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE, from_pretrained
from mmedge.runtime.backends import open_session
from mmedge.runtime.backends.torch_backend import TorchSession
from mmedge.versions import package_versions

ADAPTED_FILES = ("processor_config.json", "tokenizer_config.json")
TOOLS = ("mmedge", "torch", "onnx", "onnxscript", "onnxruntime", "executorch", "torchao", "coremltools", "numpy")


def tool_versions() -> dict[str, str]:
    return package_versions(TOOLS)


def _io(names, tensors) -> list[dict]:
    return [{"name": n, "shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", "")}
            for n, t in zip(names, tensors)]


def expected_io(model, specs: list[StageSpec]) -> dict[str, dict]:
    """Each stage's input and output names, shapes and dtypes, read off the reference."""
    import torch

    from mmedge.export.stages import stage_module

    out = {}
    for spec in specs:
        inputs = example_inputs(model, spec)
        with torch.no_grad():
            outputs = stage_module(model, spec)(*inputs)
        out[spec.name] = {"inputs": _io(spec.inputs, inputs), "outputs": _io(spec.outputs, outputs)}
    return out


def _groups(specs: list[StageSpec]) -> dict[float, list[StageSpec]]:
    groups: dict[float, list[StageSpec]] = {}
    for spec in specs:
        groups.setdefault(spec.keep_ratio, []).append(spec)
    return groups


def _samples(model, tokenizer, split: str, n: int, seed: int, data: str = "scenes"):
    """n samples of `split`: generated scenes (seed `seed`), or a real dataset's first n records of
    that split (`data` NAME:ROOT; every check then uses the same first records). An adapted model's
    come from mmedge.adapt.data prepared by its own preprocessor (`tokenizer` is that preprocessor)."""
    cfg = model.config
    if is_adapted(model):
        return _adapted_samples(model, tokenizer, split, n, seed, data)
    if data == "scenes":
        samples = generate(cfg.task, seed, split, range(n), cfg.image_size)
    else:
        from mmedge.data.provider import real_samples

        samples = real_samples(data, cfg.task, list(cfg.labels), cfg.image_size, split, n)
    return build_batch(samples, tokenizer, cfg.image_size)


class UnsupportedAdaptedExport(ExportError):
    """An adapted model whose task the bundle format cannot state (every task of mmedge adapt exports
    today: VQA, NLVR2 and retrieval; kept for a family with another task)."""

    supported = ("vqa", "nlvr2", "retrieval")


# an adapted model's task -> the bundle's task (the format's: a classifier over answers, a true / false
# statement about two images, an image-text match) and how its logits are read (docs/bundle-format.md)
ADAPTED_BUNDLE_TASK = {"vqa": "vqa", "nlvr2": "verify", "retrieval": "match"}


def adapted_head(cfg) -> tuple[str, list[str], str | None]:
    """(the manifest's task, labels, head) of an adapted model: a retrieval model's one score s is
    exported as logits [0, s] over labels [no, yes] (head match-score: softmax = sigmoid(s))."""
    from mmedge.bundle.manifest import MATCH_LABELS, MATCH_SCORE

    if cfg.task == "retrieval":
        return ADAPTED_BUNDLE_TASK[cfg.task], list(MATCH_LABELS), MATCH_SCORE
    return ADAPTED_BUNDLE_TASK[cfg.task], list(cfg.labels), None


class _AdaptedBatch:
    """What stage0_feeds reads, for an adapted model: its preprocessor's inputs (the example as rows)."""

    def __init__(self, pixels: np.ndarray, input_ids: np.ndarray, text_mask: np.ndarray, labels: np.ndarray) -> None:
        self.pixels, self.input_ids, self.text_mask, self.labels = pixels, input_ids, text_mask, labels

    def __len__(self) -> int:
        return len(self.labels)


def _adapted_samples(model, preprocessor, split: str, n: int, seed: int, data: str) -> _AdaptedBatch:
    """n examples of `split` (mmedge.adapt.data: the scenes or a dataset) through the adapted model's
    preprocessor; labels as label_of gives them (-1 where an answer is not among the model's labels)."""
    from mmedge.adapt.data import AdaptData, materialise

    cfg = model.config
    source = AdaptData(data, cfg.task, list(cfg.labels), cfg.image_size, cfg.num_images, seed)
    examples = source.train(range(n)) if split == "train" else source.val(n)
    encoded = preprocessor.encode([tuple(materialise(im) for im in ex.images) for ex in examples],
                                  [ex.text for ex in examples])
    return _AdaptedBatch(encoded["pixel_values"].numpy(), encoded["input_ids"].numpy(),
                         encoded["text_mask"].numpy(), np.array([ex.label for ex in examples], np.int64))


def check_adapted_exportable(model) -> None:
    """The adapted tasks a bundle can state: VQA, NLVR2 (two images per query) and retrieval (one score,
    exported as logits [0, s]; docs/bundle-format.md, Adapted encoders)."""
    cfg = model.config
    if cfg.task not in UnsupportedAdaptedExport.supported:
        raise UnsupportedAdaptedExport(f"exporting an adapted {cfg.task} model ({cfg.source_class}) is not supported: "
                                       f"`mmedge export` supports adapted models of task "
                                       f"{', '.join(UnsupportedAdaptedExport.supported)}")


def _check_artifact(artifact: dict, root: Path, groups, reference, feeds, acc_feeds, acc_labels,
                    recipe: ExportRecipe, log, text_specs: list[StageSpec] = (), pruned_reference=None) -> None:
    """Parity (and, when asked, val accuracy) of one runnable artifact; results go into the entry.
    With text-only stages, the pruned chains of every keep ratio are compared too."""
    session = open_session(artifact["runtime"], root, artifact)
    parity, acc, pruned = {}, {}, {}
    tol = recipe.tolerances(artifact["precision"])
    for ratio, specs in groups.items():
        got = [run_chain(session, specs, f) for f in feeds]
        parity[str(ratio)] = compare(reference[ratio], got, recipe.default_threshold, tol)
        if text_specs:
            got = [pruned_chain(session, specs, list(text_specs), f) for f in feeds]
            pruned[str(ratio)] = compare(pruned_reference[ratio], got, recipe.default_threshold, tol)
        if acc_feeds is not None:
            acc[str(ratio)] = accuracy(session, specs, acc_feeds, acc_labels, recipe.default_threshold)
    artifact["parity"] = {"status": "measured", "backend": artifact["runtime"], "by_keep_ratio": parity,
                          "passed": all(p["passed"] for p in (*parity.values(), *pruned.values()))}
    if pruned:
        artifact["parity"]["modality_pruning"] = pruned
    if acc:
        artifact["accuracy"] = {"split": "val", "data": recipe.data.split(":")[0], "by_keep_ratio": acc}
    worst = max(s["logits_max_abs_err"] for p in (*parity.values(), *pruned.values()) for s in p["stages"])
    log(f"  parity {artifact['target']}/{artifact['format']}/{artifact['precision']}: "
        f"max logits error {worst:.2e}, {'passed' if artifact['parity']['passed'] else 'FAILED'}")


def _manifest(name: str, model, model_dir: Path, tokenizer, specs, groups, recipe, artifacts, in_graph,
              flops, seconds, root: Path, pruning: dict | None = None, release: dict | None = None) -> dict:
    cfg = model.config
    io = expected_io(model, specs)
    stages = {s.name: {"stage": s.stage, "keep_ratio": s.keep_ratio, "layers": list(model.stage_layers(s.stage)),
                       **io[s.name], "flops": flops[s.keep_ratio][s.stage]} for s in specs}
    keep = [{"keep_ratio": r, "kept_tokens": ss[0].kept_tokens, "seq_len": ss[0].seq_len,
             "stages": [s.name for s in ss], "exit_flops": np.cumsum(flops[r]).astype(int).tolist()}
            for r, ss in groups.items()]
    task, labels, head = cfg.task, list(cfg.labels), None
    if is_adapted(model):
        preprocessing, tokenizer_section = adapted_sections(tokenizer)
        task, labels, head = adapted_head(cfg)
    else:
        preprocessing = {"image_size": cfg.image_size, "channel_order": "RGB", "layout": "NCHW",
                         "scale": 1 / 255, "mean": [MEAN] * 3, "std": [STD] * 3,
                         "resize": "pillow-bilinear",  # after padding to a centred square; docs/bundle-format.md
                         "pad_color": list(BACKGROUND)}
        tokenizer_section = {"file": TOKENIZER_FILE, "max_length": tokenizer.max_length, "lowercase": True,
                             "split_regex": _SPLIT.pattern, "pad_id": tokenizer.vocab[PAD],
                             "unk_id": tokenizer.vocab[UNK], **tokenizer.manifest_fields()}
    return {
        "schema_version": SCHEMA_VERSION, "name": name, "release": release or new_release(name),
        "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "task": task, "labels": labels, **({"head": head} if head else {}),
        "model": {"config": cfg.to_dict(), "parameters": model.num_parameters(), "source": str(model_dir)},
        "exit_layers": cfg.exits,
        "preprocessing": preprocessing, "tokenizer": tokenizer_section,
        "keep_ratios": keep, "stages": stages,
        "thresholds": {"source": "default", "policy": "confidence", "confidence": recipe.default_threshold,
                       "max_probability": recipe.default_threshold, "patience": 2, "keep_ratio": max(groups)},
        "artifacts": artifacts, **({"in_graph": in_graph} if in_graph else {}),
        **({"modality_pruning": pruning} if pruning else {}),
        "files": hash_files(root), "tools": tool_versions(),
        "export": {"recipe": recipe.to_dict(), "seconds": seconds},
    }


def adapted_sections(preprocessor) -> tuple[dict, dict]:
    """The manifest's preprocessing and tokenizer of an adapted model (docs/bundle-format.md, Adapted
    encoders): stretch to the square with Pillow bicubic, x scale, (x - mean) / std per channel; BERT
    WordPiece with [CLS] / [SEP] inside input_ids."""
    pre = preprocessor.to_dict()["preprocessing"]
    if pre["resample_pil"] != 3:
        raise ExportError(f"the adapted model's processor resizes with PIL filter {pre['resample_pil']}; bundles "
                          "state only bicubic (3, ViLT's) for adapted models")
    preprocessing = {"image_size": pre["image_size"], "channel_order": "RGB", "layout": "NCHW",
                     "scale": pre["rescale_factor"] if pre["do_rescale"] else 1.0,
                     "mean": pre["mean"] if pre["do_normalize"] else [0.0] * 3,
                     "std": pre["std"] if pre["do_normalize"] else [1.0] * 3,
                     "resize": ADAPTED_RESIZE, "fit": "stretch", "num_images": pre["num_images"]}
    return preprocessing, {"file": TOKENIZER_FILE, **preprocessor.tokenizer.manifest_fields()}


def check_recipe_options(recipe: ExportRecipe) -> None:
    """Refuse options that would be ignored: the modality pruning settings without
    drop_visual_after (no text-only stages, so no rule to set)."""
    if recipe.drop_visual_after is not None:
        return
    default = ExportRecipe()
    given = [name for name in ("drop_visual_threshold", "drop_visual_signal", "drop_visual_when",
                               "drop_visual_samples", "drop_visual_min_agreement")
             if getattr(recipe, name) != getattr(default, name)]
    if given:
        flags = ", ".join(f"{n} (--{n.replace('_', '-')})" if n == "drop_visual_threshold" else n for n in given)
        raise ConfigError(f"{flags} set without drop_visual_after (--drop-visual-after STAGE): without text-only "
                          "stages there is no pruning rule, so it would be ignored. Give the stage after which the "
                          "visual tokens are dropped, or leave it out", "export recipe")


def export_bundle(model_dir: str | Path, out: str | Path, recipe: ExportRecipe, force: bool = False,
                  log=print, sign_key=None, release_sequence: int | None = None) -> Path:
    """Export, validate and atomically publish the bundle at `out`; returns its path.

    With `sign_key` (an Ed25519 private key PEM path) the manifest is signed (manifest.sig). The
    manifest's release is {name: the bundle's name, sequence: `release_sequence`, by default the
    current Unix time in milliseconds}."""
    from mmedge.train.flops import stage_flops

    started = time.perf_counter()
    model_dir, out = Path(model_dir), Path(out)
    check_recipe_options(recipe)
    check_sequence(release_sequence)
    # a model folder may hold its own bundles, but --out may not be it nor hold it
    check_destination(out, force, model_dir, "the model directory", out_inside_source_ok=True)
    if sign_key is not None:
        from mmedge.bundle.signing import load_private_key

        sign_key = load_private_key(sign_key)  # a bad key fails now, not after the export
    model, tokenizer = from_pretrained(model_dir)  # adapted: (AdaptedModel, its preprocessor)
    model.eval()
    if is_adapted(model):
        check_adapted_exportable(model)
    cfg = model.config
    ratios = recipe.keep_ratios or list(cfg.keep_ratios)
    specs = stage_specs(model, ratios)
    groups = _groups(specs)
    after = recipe.drop_visual_after
    text_specs = text_stage_specs(model, after) if after is not None else []  # checks the stage index
    all_specs = specs + text_specs
    make_parent(out)
    _remove_stale_partials(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-{os.getpid()}-", dir=out.parent))
    try:
        seconds: dict[str, float] = {}
        log(f"exporting {model_dir} -> {out}: {len(groups)} keep ratio(s) x {model.num_stages} stages, "
            f"targets {', '.join(recipe.targets)}, precisions {', '.join(recipe.precisions)}")
        parity_batch = _samples(model, tokenizer, "val", recipe.parity_samples, recipe.data_seed, recipe.data)
        feeds = stage0_feeds(parity_batch)
        reference_session = TorchSession(model, all_specs)
        reference = {r: [run_chain(reference_session, ss, f) for f in feeds] for r, ss in groups.items()}
        pruned_reference = {r: [pruned_chain(reference_session, ss, text_specs, f) for f in feeds]
                            for r, ss in groups.items()} if text_specs else None
        acc_feeds = acc_labels = calibration = None
        if recipe.quantize:
            acc_batch = _samples(model, tokenizer, "val", recipe.accuracy_samples, recipe.data_seed + 1, recipe.data)
            acc_feeds, acc_labels = stage0_feeds(acc_batch), acc_batch.labels
            calibration = _calibration(model, tokenizer, specs, groups, recipe, reference_session, text_specs)

        artifacts: list[dict] = []
        for target in recipe.targets:
            t0 = time.perf_counter()
            if target == "onnx":
                made = onnx_target.export(model, all_specs, tmp, recipe, log=log)
            elif target == "executorch":
                made = executorch_target.export(model, all_specs, tmp, recipe, calibration, log=log)
            else:
                made = coreml_target.export(model, all_specs, tmp, recipe, expected_io(model, all_specs), log=log)
            for artifact in made:
                if artifact["runtime"] == "coreml" and not coreml_target.can_predict():
                    artifact["parity"] = {"status": "not run", "passed": None,
                                          "reason": "Core ML prediction needs macOS; this export was checked "
                                                    "structurally (functions, inputs, outputs, shapes, dtypes)"}
                    continue
                _check_artifact(artifact, tmp, groups, reference, feeds, acc_feeds, acc_labels, recipe, log,
                                text_specs, pruned_reference)
            artifacts += made
            seconds[target] = time.perf_counter() - t0

        in_graph = None
        two_images = is_adapted(model) and model.backbone.num_images > 1
        if recipe.in_graph and "onnx" in recipe.targets and two_images:
            log("  onnx: no in-graph form for two images per query (docs/bundle-format.md); the staged files only")
        elif recipe.in_graph and "onnx" in recipe.targets:
            t0 = time.perf_counter()
            in_graph = _in_graph(model, groups, tmp, recipe, feeds, artifacts, log)
            seconds["onnx_in_graph"] = time.perf_counter() - t0

        if recipe.quantize:
            _reference_accuracy(artifacts, reference_session, groups, acc_feeds, acc_labels, recipe)
        shutil.copy2(model_dir / TOKENIZER_FILE, tmp / TOKENIZER_FILE)
        artifacts.append(_torch_reference(model_dir, tmp, all_specs))
        flops = {r: stage_flops(model, r) for r in groups}
        seconds["total"] = time.perf_counter() - started
        failures = [f"{a['target']}/{a['format']}/{a['precision']} keep {r}: {f}"
                    for a in artifacts if a.get("parity", {}).get("status") == "measured"
                    for r, p in a["parity"]["by_keep_ratio"].items() for f in p["failures"]]
        failures += [f"{a['target']}/{a['format']}/{a['precision']} keep {r}, visual tokens dropped after stage "
                     f"{after}: {f}" for a in artifacts if a.get("parity", {}).get("status") == "measured"
                     for r, p in a["parity"].get("modality_pruning", {}).items() for f in p["failures"]]
        if in_graph and not in_graph["check"]["passed"]:
            failed = {f"{ratio} {key.removesuffix('check').rstrip('_') or 'fp32'}": check
                      for ratio, entry in in_graph["by_keep_ratio"].items() for key, check in entry.items()
                      if key.endswith("check") and not check["passed"]}
            failures.append(f"in-graph ONNX disagrees with the staged form: {failed}")
        failures += _accuracy_failures(artifacts, recipe)
        manifest_stub = {"name": out.name, "artifacts": artifacts, "in_graph": in_graph, "seconds": seconds,
                         "recipe": recipe.to_dict(), "model": str(model_dir), "tools": tool_versions(),
                         "failures": failures}
        write_report(tmp, manifest_stub)
        if failures:
            raise ExportError("exported files are out of tolerance against the PyTorch reference:\n  "
                              + "\n  ".join(failures))
        pruning = _pruning(model, tokenizer, specs, groups, text_specs, recipe, reference_session, flops, log) \
            if text_specs else None
        manifest = _manifest(out.name, model, model_dir, tokenizer, specs, groups, recipe, artifacts, in_graph,
                             flops, seconds, tmp, pruning, new_release(out.name, release_sequence))
        kept = _calibration_to_keep(out, manifest)
        if kept:
            manifest["thresholds"], old_rule = kept
            if old_rule is not None:
                manifest["modality_pruning"]["rule"] = old_rule
            log("  kept the calibrated thresholds of the bundle it replaces (same weights)")
        write_manifest(tmp, manifest)
        sign_and_publish(tmp, out, force, model_dir, sign_key)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"wrote {out} in {time.perf_counter() - started:.0f} s")
    return out


def _pruning(model, tokenizer, specs, groups, text_specs, recipe, reference_session, flops, log) -> dict:
    """The modality_pruning section: text-only stages, pruned exit FLOPs, and the rule measured on
    validation samples at the full keep ratio (the PyTorch reference)."""
    from mmedge.train.flops import text_stage_flops

    full = groups[max(groups)]
    batch = _samples(model, tokenizer, "val", recipe.drop_visual_samples, recipe.data_seed + 2, recipe.data)
    rule = measure_rule(reference_session, full, text_specs, stage0_feeds(batch), model.config.max_text_len,
                        recipe.drop_visual_signal, recipe.drop_visual_when, recipe.drop_visual_threshold,
                        recipe.drop_visual_min_agreement)
    m = rule["measured"]
    log(f"  modality pruning after stage {text_specs[0].stage - 1}: {rule['signal']} {rule['prune_when']} "
        f"{rule['threshold']:.4g} ({rule['source']}) drops the image for {m['pruned_share']:.0%} of "
        f"{m['samples']} val samples, final answers unchanged on {m['final_answer_agreement']:.1%}")
    return pruning_section(model, text_specs[0].stage - 1, text_specs, expected_io(model, text_specs),
                           text_stage_flops(model, text_specs[0].stage - 1), flops, rule)


def _calibration_to_keep(out: Path, manifest: dict) -> tuple[dict, dict | None] | None:
    """The calibrated thresholds of the bundle being replaced, when it holds the same weights and its
    calibrated keep ratio is exported again (re-exporting used to drop them); with them its calibrated
    modality pruning rule when both bundles drop the visual tokens after the same stage by the same signal."""
    from mmedge.bundle.manifest import load_manifest
    from mmedge.errors import MMEdgeError

    weights = f"torch/{WEIGHTS_FILE}"
    try:
        old = load_manifest(out, verify_files=False)
    except MMEdgeError:
        return None  # nothing there, or not a readable bundle: nothing to keep
    thresholds = old["thresholds"]
    same = old["files"].get(weights, {}).get("sha256") == manifest["files"].get(weights, {}).get("sha256")
    ratios = {k["keep_ratio"] for k in manifest["keep_ratios"]}
    if thresholds["source"] == "calibrated" and same and thresholds["keep_ratio"] in ratios:
        old_p, new_p = old.get("modality_pruning"), manifest.get("modality_pruning")
        rule = None
        if old_p and new_p and old_p["rule"]["source"] == "calibrated" and old_p["after_stage"] == new_p["after_stage"] \
                and old_p["rule"]["signal"] == new_p["rule"]["signal"]:
            rule = old_p["rule"]
        return thresholds, rule
    return None


def _torch_reference(model_dir: Path, root: Path, specs: list[StageSpec]) -> dict:
    """The PyTorch checkpoint itself (torch/): the reference, and the runtime's `torch` backend."""
    (root / "torch").mkdir()
    for name in (CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE):
        shutil.copy2(model_dir / name, root / "torch" / name)
    for name in ADAPTED_FILES:  # an adapted model's processor files (load_adapted reads them)
        if (model_dir / name).is_file():
            shutil.copy2(model_dir / name, root / "torch" / name)
    return {"target": "torch", "format": "safetensors", "precision": "fp32", "runtime": "torch", "file": "torch",
            "stages": {s.name: {} for s in specs},
            "parity": {"status": "reference", "passed": True, "reason": "the PyTorch reference itself"}}


def _calibration(model, tokenizer, specs, groups, recipe, reference_session,
                 text_specs: list[StageSpec] = ()) -> dict[str, list[tuple]]:
    """int8 calibration inputs per stage from real training samples (later stages: the reference's
    own hidden states at that point; text-only stages: those of the pruned chains of every keep ratio)."""
    import torch

    batch = _samples(model, tokenizer, "train", recipe.calibration_samples, recipe.data_seed, recipe.data)
    calibration: dict[str, list[tuple]] = {s.name: [] for s in (*specs, *text_specs)}
    for feed in stage0_feeds(batch):
        for ratio, ss in groups.items():
            chain = run_chain(reference_session, ss, feed)
            calibration[ss[0].name].append(tuple(torch.from_numpy(v) for v in feed.values()))
            for spec, prev in zip(ss[1:], chain[:-1]):
                calibration[spec.name].append((torch.from_numpy(prev["hidden"]),
                                               torch.from_numpy(chain[0]["attention_mask"])))
            if text_specs:
                pruned = pruned_chain(reference_session, ss, list(text_specs), feed)
                keep = text_specs[0].seq_len
                mask = torch.from_numpy(np.ascontiguousarray(chain[0]["attention_mask"][:, :keep]))
                for spec, prev in zip(text_specs, pruned[text_specs[0].stage - 1:]):
                    calibration[spec.name].append((torch.from_numpy(np.ascontiguousarray(prev["hidden"][:, :keep])),
                                                   mask))
    return calibration


def _in_graph(model, groups, root: Path, recipe, feeds, artifacts, log) -> dict:
    """The in-graph form per keep ratio, beside the fp32 stage files (sharing their weights file when
    they have one), and with int8 stages also quantized beside the int8 stage files (keys `int8_file`,
    `int8_external_data`, `int8_ort_file`); each checked against the staged chain of its precision."""
    onnx_artifacts = {a["precision"]: a for a in sorted(artifacts, key=lambda a: a["precision"] != "fp32")
                      if a["target"] == "onnx" and a["format"] == "onnx"}  # fp32 first: int8 quantizes it
    entries: dict[str, dict] = {}
    for precision, artifact in onnx_artifacts.items():
        prefix = "" if precision == "fp32" else f"{precision}_"
        sub = "in_graph" if precision == "fp32" else f"in_graph_{precision}"  # ort/in_graph, ort/in_graph_int8
        folder = root / "onnx" / (precision if "external_data" in artifact else sub)
        paths = {ratio: folder / f"k{specs[0].kept_tokens}_exits.onnx" for ratio, specs in groups.items()}
        for ratio, specs in groups.items():
            log(f"  onnx: in-graph exits (keep {ratio}, {precision})")
            if precision == "fp32":
                ingraph.export(model, specs[0], paths[ratio], recipe.opset)
            else:  # the fp32 graph quantized as the stages are
                onnx_target.quantize_int8(root / entries[str(ratio)]["file"], paths[ratio])
        if "external_data" in artifact:
            share_weights(folder)
        session = open_session("onnxruntime", root, artifact)
        for ratio, specs in groups.items():
            path = paths[ratio]
            chains = [run_chain(session, specs, f) for f in feeds]
            entry = entries.setdefault(str(ratio), {"keep_ratio": ratio, "kept_tokens": specs[0].kept_tokens})
            entry.update({f"{prefix}file": str(path.relative_to(root)), f"{prefix}ops": onnx_target.op_counts(path),
                          f"{prefix}check": ingraph.check_against_staged(path, chains, feeds,
                                                                         recipe.tolerances(precision)),
                          **({f"{prefix}external_data": artifact["external_data"]} if "external_data" in artifact
                             else {})})
            if recipe.ort_format:
                log(f"  onnx: in-graph exits (keep {ratio}, {precision}), ORT format")
                converted = onnx_target.convert_to_ort(path, root / "ort" / sub,
                                                       fold_dequantize=precision == "int8")
                entry[f"{prefix}ort_file"] = str(converted[path.stem].relative_to(root))
    checks = [v for e in entries.values() for k, v in e.items() if k.endswith("check")]
    return {"inputs": list(ingraph.INPUTS), "outputs": list(ingraph.OUTPUTS), "by_keep_ratio": entries,
            "check": {"passed": all(c["passed"] for c in checks)}}


def _reference_accuracy(artifacts, reference_session, groups, feeds, labels, recipe) -> None:
    """The PyTorch fp32 accuracy on the same samples, and each artifact's change against it."""
    ref = {str(r): accuracy(reference_session, ss, feeds, labels, recipe.default_threshold) for r, ss in groups.items()}
    for artifact in artifacts:
        if "accuracy" in artifact:
            artifact["accuracy"]["reference"] = ref
            for r, a in artifact["accuracy"]["by_keep_ratio"].items():
                a["change_vs_reference"] = a["final_exit_accuracy"] - ref[r]["final_exit_accuracy"]


def _accuracy_failures(artifacts, recipe) -> list[str]:
    out = []
    for a in artifacts:
        tol = recipe.tolerances(a["precision"])
        for r, acc in a.get("accuracy", {}).get("by_keep_ratio", {}).items():
            if -acc.get("change_vs_reference", 0.0) > tol.max_accuracy_drop + 1e-9:
                out.append(f"{a['target']}/{a['format']}/{a['precision']} keep {r}: val accuracy drops "
                           f"{-acc['change_vs_reference']:.3f} > {tol.max_accuracy_drop}")
    return out


def _remove_stale_partials(out: Path) -> None:
    """Delete temporary directories left by exports to `out` whose process no longer exists
    (a killed export cannot clean up after itself; a running one is left alone)."""
    for partial in out.parent.glob(f".{out.name}.partial-*"):
        try:
            pid = int(partial.name.rsplit(".partial-", 1)[1].split("-", 1)[0])
        except (ValueError, IndexError):
            continue  # not a name this exporter makes
        if not pid_alive(pid):
            shutil.rmtree(partial, ignore_errors=True)
