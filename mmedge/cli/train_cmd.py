"""mmedge train: train a model with exits and prefilter on the grounded scenes or a real dataset."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from mmedge.cli._checks import config_file, writable_dir

EPILOG = """examples:
  mmedge train --task vqa --config models/configs/vqa-default.json --out runs/vqa
  mmedge train --task vqa --config cfg.json --out runs/vqa --resume      # continue after a stop
  torchrun --nproc_per_node 2 -m mmedge train --task verify --config cfg.json --out runs/verify
  mmedge train --task vqa --data jsonl:/data/mine --out runs/mine              # your own data
  mmedge train --task vqa --data jsonl:/data/mine --init-from none --out runs/mine-scratch   # from random weights
  mmedge train --task vqa --data vqa2:/data/vqa2 --config models/configs/vqa-default.json --out runs/vqa2
  mmedge train --task verify --data nlvr2:/data/nlvr2 --out runs/nlvr2
  mmedge train --task caption --config models/configs/caption-default.json --out runs/caption   # captioning

Without --config, --data NAME:ROOT trains with the data recipe (mmedge/train/data-recipe.json, 30
minutes) and, for vqa, starts from the shipped model models/vqa-default (--init-from none: from
random weights); both say so in one line each.

--data NAME:ROOT switches the config's scenes-only options off (token_loss_weight, ground_loss_weight,
ground_size, qtype_weights, train_relations: they need the generated scenes) and says so in one line;
ground_loss_weight (the grounding loss, on in the data recipe) stays on for JSON Lines data whose
records point phrases at boxes ("refs"), and is switched off with its own note for data without
them. A config that names a real dataset in its own "data" field and sets one of them is refused.
"""


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a model (single process or under torchrun/DDP)",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=("vqa", "verify", "match", "caption"),
                   help="task (overrides the config's); caption trains the captioner (mmedge.caption)")
    p.add_argument("--config", help="training config JSON (fields of mmedge.train.config.TrainConfig)")
    p.add_argument("--out", type=writable_dir, required=True,
                   help="output directory: model, metrics.jsonl, checkpoint/")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, help="override the config's number of steps")
    budget.add_argument("--minutes", type=float, help="train for about this many minutes: the step count is set "
                        "from the speed of the first steps (the config's steps stay the most it may take)")
    budget.add_argument("--epochs", type=float, help="real data: train this many passes over the training records "
                        "(the config's steps stay the most it may take)")
    p.add_argument("--data", help="scenes (default: the generated scenes) or NAME:ROOT, NAME one of vqa2, gqa, "
                   "nlvr2, coco, cc, jsonl (docs/guides/data.md gives each folder layout); NAME:ROOT switches the "
                   "config's scenes-only options off")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    p.add_argument("--force", action="store_true", help="start over even if OUT holds a run")
    p.add_argument("--init-from", help="initialise from a model directory: matching weights are copied, exit "
                   "heads only when it was trained on the same task (e.g. a pretrained encoder); with --data and "
                   "no --config, vqa starts from the shipped model models/vqa-default unless this is 'none'")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def _is_caption(args: argparse.Namespace) -> bool:
    if args.task is not None:
        return args.task == "caption"
    if args.config:
        from mmedge.models.config import read_json

        return read_json(config_file(args.config, "training config")).get("task") == "caption"
    return False


def run_caption(args: argparse.Namespace) -> int:
    from mmedge.caption.train import CaptionTrainConfig, CaptionTrainer
    from mmedge.errors import ConfigError

    if args.init_from not in (None, "none"):
        raise ConfigError("--init-from is not supported for captioning yet; train the captioner from scratch",
                          "arguments")
    if args.minutes is not None or args.epochs is not None:
        raise ConfigError("--minutes and --epochs budget the classifier's training; the captioner counts steps: "
                          "use --steps", "arguments")
    cfg = CaptionTrainConfig.load(config_file(args.config, "training config")) if args.config else CaptionTrainConfig()
    overrides = {k: v for k, v in (("steps", args.steps), ("data", args.data)) if v is not None}
    if overrides:
        cfg = CaptionTrainConfig(**{**cfg.to_dict(), **overrides})
    result = CaptionTrainer(cfg, args.out, resume=args.resume, force=args.force, progress=not args.no_progress).fit()
    acc = ", ".join(f"{a:.3f}" for a in result["val_word_acc"])
    print(f"trained {result['steps']} steps in {result['wall_s']:.0f} s; val next-word accuracy per exit "
          f"(teacher forced): [{acc}]; model saved to {result['out_dir']}")
    return 0


def run(args: argparse.Namespace) -> int:
    if _is_caption(args):
        return run_caption(args)
    from mmedge.train.config import TrainConfig
    from mmedge.train.trainer import Trainer

    if args.config:
        cfg = TrainConfig.load(config_file(args.config, "training config"))
    elif args.data not in (None, "scenes"):  # your own data: the recipe measured on data it was not tuned on
        cfg = TrainConfig.data_recipe()
        if os.environ.get("RANK", "0") == "0":
            print(f"note: no --config: the data recipe (budget {cfg.minutes:g} minutes, batch {cfg.batch_size}, "
                  f"lr {cfg.lr:g}; docs/guides/training.md)", flush=True)
    else:
        cfg = TrainConfig()
    init_from = None if args.init_from == "none" else args.init_from
    overrides = {k: v for k, v in (("task", args.task), ("steps", args.steps), ("minutes", args.minutes),
                                   ("epochs", args.epochs)) if v is not None}
    if args.steps is not None:  # an explicit step count replaces the config's budget
        overrides.update(minutes=None, epochs=None)
    elif args.minutes is not None:
        overrides["epochs"] = None
    elif args.epochs is not None:
        overrides["minutes"] = None
    if overrides:
        cfg = TrainConfig(**{**cfg.to_dict(), **overrides})
    if args.data is not None:
        cfg, switched_off = cfg.for_data(args.data, grounded=_names_refs(args.data))
        name = args.data.split(":")[0]
        no_refs = [o for o in switched_off if o.startswith("ground_loss_weight ")]  # the grounding loss: its own note
        scenes_only = [o for o in switched_off if o not in no_refs]
        if os.environ.get("RANK", "0") == "0":  # once under torchrun
            if scenes_only:
                print(f"note: --data {name}: switched off the scenes-only option(s) {', '.join(scenes_only)}: they "
                      f"need the generated scenes", flush=True)
            if no_refs:
                print(f"note: --data {name}: no training record has refs, so {no_refs[0]} is off (refs point a "
                      f"question's phrases at boxes and teach the model where things are: docs/guides/data.md)",
                      flush=True)
    if args.init_from is None and not args.config and cfg.data != "scenes" and not args.resume:
        init_from = cfg.shipped_start()
        if init_from is not None and os.environ.get("RANK", "0") == "0":
            shown = init_from.relative_to(Path.cwd()) if init_from.is_relative_to(Path.cwd()) else init_from
            print(f"note: starting from the shipped model {shown} (--init-from none: from random weights)", flush=True)
    trainer = Trainer(cfg, args.out, resume=args.resume, force=args.force, init_from=init_from,
                      progress=not args.no_progress)
    result = trainer.fit()
    if trainer.dist.is_main:
        acc = ", ".join(f"{a:.3f}" for a in result.final_val_accuracy)
        print(f"trained {result.steps} steps in {result.wall_s:.0f} s, {result.train_flops / 1e12:.2f} TFLOPs; "
              f"val accuracy per exit: [{acc}]; model saved to {result.out_dir}")
    return 0


def _names_refs(data: str) -> bool:
    """Whether --data is JSON Lines data whose training records point phrases at boxes (refs)."""
    from mmedge.data.sources import parse_data_spec
    from mmedge.data.sources.jsonl import names_refs

    spec = parse_data_spec(data)
    return spec.name == "jsonl" and (spec.root / "train.jsonl").is_file() and names_refs(spec.root)
