"""mmedge adapt: a pretrained Hugging Face ViLT given exits and a prefilter by self-distillation."""

from __future__ import annotations

import argparse

from mmedge.cli._checks import config_file, positive, writable_dir

EPILOG = """examples:
  mmedge adapt --from runs/vilt-teacher --task vqa --data scenes --out models/vilt-adapted
  mmedge adapt --from ./vilt-b32-finetuned-vqa --task vqa --data vqa2:/data/vqa2 --out runs/vilt-vqa --steps 3000
  mmedge adapt --from ./vilt-nlvr2 --task nlvr2 --data nlvr2:/data/nlvr2 --out runs/vilt-nlvr2 --exits 3,6,9,12
  mmedge adapt --from ./vilt-coco --task retrieval --data coco:/data/coco --out runs/vilt-itr --resume
  torchrun --nproc_per_node 2 -m mmedge adapt --from DIR --task vqa --data jsonl:/data/mine --out runs/mine

--from takes what transformers' from_pretrained takes: a folder holding the model and its
ViltProcessor (both saved with save_pretrained), or a hub id where a hub is reachable (download
it into a folder first where it is not). No labels are needed: the model's own answers are the
teacher; where the data has labels they are mixed in and accuracy is reported.
"""


def _layers(value: str) -> list[int] | str:
    if value == "all":
        return value  # every layer: the default
    try:
        return [int(v) - 1 for v in value.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: give 1-based layer numbers such as 3,6,9,12, or 'all'") from None


def _rank(value: str) -> int | str:
    if value == "full":
        return value
    try:
        rank = int(value)
    except ValueError:
        rank = 0
    if rank < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: give a positive rank such as 128, or 'full'")
    return rank


def add_parser(sub) -> None:
    p = sub.add_parser("adapt", help="give a Hugging Face ViLT or SmolVLM exits and a prefilter (self-distillation)",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--from", dest="source", required=True,
                   help="pretrained model: a folder (model + processor) or a hub id where a hub is reachable")
    p.add_argument("--task", required=True, choices=("vqa", "nlvr2", "retrieval", "generate"),
                   help="vqa (ViltForQuestionAnswering), nlvr2 (ViltForImagesAndTextClassification), "
                        "retrieval (ViltForImageAndTextRetrieval), generate (SmolVLMForConditionalGeneration)")
    p.add_argument("--data", default="scenes", help="scenes (the generated scenes, default) or NAME:ROOT with NAME "
                   "one of vqa2, gqa, nlvr2, coco, cc, jsonl (docs/guides/data.md gives each layout; --task "
                   "generate: vqa2, gqa, jsonl questions or coco, cc images under the caption prompt)")
    p.add_argument("--out", type=writable_dir, required=True, help="the adapted model folder (and its checkpoint/)")
    p.add_argument("--config", help="distillation config JSON (fields of mmedge.adapt.distill.DistillConfig)")
    p.add_argument("--steps", type=positive, help="override the config's number of steps")
    p.add_argument("--batch-size", type=positive, help="override the config's batch size (per process)")
    p.add_argument("--exits", type=_layers, help="1-based layers followed by an exit, e.g. 3,6,9,12 (must include "
                   "the last), or 'all' (default)")
    p.add_argument("--prefilter-after", type=int, help="the prefilter scores the output of this 1-based layer "
                   "(0: the embeddings); at most the first exit layer (default 1)")
    p.add_argument("--exit-rank", type=_rank, help="store each exit head's linear maps as rank-r pairs where "
                   "smaller (default 128: a real-size VQA head is 26 MB, read at every exit), or 'full' for exact copies")
    p.add_argument("--keep-ratios", type=float, nargs="+", help="visual-token keep ratios (default 1.0 0.5 0.25)")
    p.add_argument("--image-size", type=positive, help="exported square image side in px (default: the "
                   "processor's shortest edge)")
    p.add_argument("--max-text-len", type=positive, help="text tokens with [CLS]/[SEP] (default: the model's)")
    p.add_argument("--train-backbone", action="store_true", help="also train the pretrained weights (the teacher "
                   "is then a frozen copy); by default they stay unchanged")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    p.add_argument("--force", action="store_true", help="start over even if OUT holds a run")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(run=run)


def run_generative(args: argparse.Namespace) -> int:
    """A generative VLM: its exits and prefilter distilled on the scenes' prompts (mmedge.adapt.vlm_distill)."""
    from mmedge.adapt import adapt
    from mmedge.adapt.vlm_distill import VLMDistillConfig
    from mmedge.errors import ConfigError
    from mmedge.models.config import from_dict, read_json

    if args.train_backbone:
        raise ConfigError("--train-backbone: a generative model's own weights stay frozen", "arguments")
    cfg = from_dict(VLMDistillConfig, read_json(config_file(args.config, "distillation config")),
                    args.config) if args.config else VLMDistillConfig()
    changes = {k: v for k, v in {"steps": args.steps, "batch_size": args.batch_size}.items() if v is not None}
    cfg = VLMDistillConfig(**{**cfg.to_dict(), **changes})
    overrides = {"keep_ratios": args.keep_ratios, "exit_layers": args.exits if isinstance(args.exits, list) else None}
    for flag, value in (("--prefilter-after", args.prefilter_after), ("--exit-rank", args.exit_rank),
                        ("--image-size", args.image_size), ("--max-text-len", args.max_text_len)):
        if value is not None:
            raise ConfigError(f"{flag} applies to encoder models; a generative model's prefilter sits after its "
                              "connector and its image size and prompt are the model's own", "arguments")
    report = adapt(args.source, args.out, cfg, task="generate", resume=args.resume, force=args.force,
                   progress=not args.no_progress, data=args.data,
                   **{k: v for k, v in overrides.items() if v is not None})
    agree = ", ".join(f"{a:.3f}" for a in report["after"]["agreement"])
    print(f"token agreement with the full model per exit [{agree}]")
    return 0


def run(args: argparse.Namespace) -> int:
    from mmedge.adapt import adapt
    from mmedge.adapt.distill import DistillConfig

    if args.task == "generate":
        return run_generative(args)
    cfg = DistillConfig.load(config_file(args.config, "distillation config")) if args.config else DistillConfig()
    changes = {"steps": args.steps, "batch_size": args.batch_size, "data": args.data,
               "train_backbone": args.train_backbone or None}
    changes = {k: v for k, v in changes.items() if v is not None}
    if changes:
        cfg = DistillConfig(**{**cfg.to_dict(), **changes})
    overrides = {"image_size": args.image_size, "max_text_len": args.max_text_len, "keep_ratios": args.keep_ratios,
                 "prefilter_after": None if args.prefilter_after is None else args.prefilter_after - 1}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if isinstance(args.exits, list):
        overrides["exit_layers"] = args.exits
    if args.exit_rank is not None:
        overrides["exit_rank"] = None if args.exit_rank == "full" else args.exit_rank
    result = adapt(args.source, args.out, cfg, task=args.task, resume=args.resume, force=args.force,
                   progress=not args.no_progress, **overrides)
    after = result.after.get("by_keep_ratio", {})
    if after:
        for ratio, res in after.items():
            agree = ", ".join(f"{a:.3f}" for a in res["agreement"])
            print(f"keep {ratio}: agreement with the teacher per exit [{agree}]")
    return 0

