"""`mmedge adapt`: a pretrained Hugging Face vision-language encoder (ViLT first) given mmedge's
exits, confidences and visual-token prefilter, trained by self-distillation from the model itself;
and a generative VLM (SmolVLM) given per-token exits and a prompt-conditioned prefilter.

    families.py  which transformers classes are supported, by which family module
    vilt.py      the ViLT family: the encoder at a fixed size, its head, its processor in numpy
    model.py     AdaptConfig and AdaptedModel: stages, exits, confidences, prefilter (family-agnostic)
    text.py      BERT WordPiece (normaliser, pre-tokenizer, template) in plain Python
    data.py      what to distil on: the generated scenes or a dataset (--data NAME:ROOT)
    distill.py   the self-distillation loop (DDP under torchrun, resumable)
    stages.py    the stage modules under mmedge's export contract
    folder.py    the adapted model folder (config.json with "family", model.safetensors, processor files)
    card.py      its README.md
    smolvlm.py   the SmolVLM family: one tile, the decoder by layer over a slotted KV cache, its prompt
    vlm.py       AdaptedVLM: per-token exits, the prefilter, greedy generation in PyTorch
    vlm_distill.py, vlm_eval.py   its self-distillation; quality, cost and calibration per exit policy
    vlm_graphs.py, vlm_export.py  its graphs, exported to ONNX (fp32 / int8 / int4), ExecuTorch, Core ML
    vlm_bundle.py, vlm_manifest.py  the bundle of kind "vlm" those graphs go into, and its manifest
    vlm_calibrate.py, vlm_bench.py  mmedge calibrate and mmedge bench --device host for those bundles

Needs ``transformers`` (``pip install mmedge[adapt]``); imported only when used.
"""

from __future__ import annotations

from pathlib import Path

from mmedge.errors import MissingDependencyError


def _require_transformers() -> None:
    try:
        import transformers  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError("mmedge adapt needs transformers: pip install 'mmedge[adapt]' "
                                     "(transformers==5.23.0)") from exc


def load_source(source: str | Path, **overrides):
    """(AdaptedModel, preprocessor) for a pretrained model: anything from_pretrained takes (a local
    folder; a hub id only where a hub is reachable). overrides: image_size, max_text_len and
    AdaptConfig fields (exit_layers, prefilter_after, keep_ratios, ...)."""
    _require_transformers()
    from mmedge.adapt.families import family_of_class, source_class

    return family_of_class(source_class(source)).load_source(source, **overrides)


def load_adapted(directory: str | Path):
    """(AdaptedModel, preprocessor) from a folder written by `mmedge adapt`."""
    _require_transformers()
    from mmedge.adapt.folder import load_adapted as load

    return load(directory)


def adapt(source: str | Path, out: str | Path, distill_cfg, task: str | None = None, resume: bool = False,
          force: bool = False, progress: bool = True, log=print, data: str | None = None, **overrides):
    """Wrap `source`, self-distil its exits and prefilter on distill_cfg.data (a generative model: on
    `data`), write the adapted folder and its card into `out`. Returns the DistillResult (rank 0's is
    complete; a generative model's: its report dict)."""
    _require_transformers()
    from mmedge.adapt.card import model_card, write_card
    from mmedge.adapt.distill import Distiller, text_length_hint
    from mmedge.adapt.families import family_of_class, source_class
    from mmedge.adapt.folder import save_adapted
    from mmedge.adapt.vlm_distill import VLMDistillConfig
    from mmedge.errors import ConfigError

    name = source_class(source)
    family = family_of_class(name)
    expected = family.FAMILY.classes[name]
    if task is not None and task != expected:
        wanted = [c for c, t in family.FAMILY.classes.items() if t == task]
        raise ConfigError(f"--task {task} needs a {' or '.join(wanted) or 'model of that task'}; {source} is a "
                          f"{name} ({expected})", "arguments")
    if expected == "generate":
        from mmedge.adapt.vlm_distill import adapt_generative

        if not isinstance(distill_cfg, VLMDistillConfig):
            raise ConfigError("a generative model is distilled with a VLMDistillConfig", "arguments")
        return adapt_generative(source, out, distill_cfg, data=data or "scenes", progress=progress, log=log,
                                resume=resume, force=force, **overrides)
    model, preprocessor = family.load_source(source, **overrides)
    distiller = Distiller(model, preprocessor, distill_cfg, out, resume=resume, force=force, progress=progress)
    try:
        result = distiller.fit()
        if distiller.dist.is_main:
            source_dir = Path(source) if Path(source).is_dir() else None
            save_adapted(model, preprocessor, out, str(source), metadata={"distill_steps": str(result.steps)},
                         source_dir=source_dir)
            import json

            from mmedge.fileio import atomic_write

            report = {"before": result.before, "after": result.after, "steps": result.steps,
                      "wall_s": result.wall_s, "skipped_examples": result.skipped_examples,
                      "text_tokens": result.text_tokens}
            atomic_write(Path(out) / "adapt_report.json", lambda p: p.write_text(json.dumps(report, indent=1) + "\n"))
            write_card(Path(out), model_card(model, result, str(source), distill_cfg, preprocessor))
            log(f"adapted {name} in {result.wall_s:.0f} s; model folder {out}")
            hint = text_length_hint(result.text_tokens, model.config.num_patches + 1)
            if hint:
                log(f"note: {hint}")
    finally:
        distiller.close()
    return result
