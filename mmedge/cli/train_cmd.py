"""mmedge train: train a model with exits and prefilter on the grounded scenes or a real dataset."""

from __future__ import annotations

import argparse

from mmedge.cli._checks import config_file, writable_dir

EPILOG = """examples:
  mmedge train --task vqa --config models/vqa-default/train_config.json --out runs/vqa
  mmedge train --task vqa --config cfg.json --out runs/vqa --resume      # continue after a stop
  torchrun --nproc_per_node 2 -m mmedge train --task verify --config cfg.json --out runs/verify
  mmedge train --task vqa --data vqa2:/data/vqa2 --config cfg.json --out runs/vqa2   # a real dataset
  mmedge train --task verify --data nlvr2:/data/nlvr2 --out runs/nlvr2
"""


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a model (single process or under torchrun/DDP)",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=("vqa", "verify", "match"), help="task (overrides the config's)")
    p.add_argument("--config", help="training config JSON (fields of mmedge.train.config.TrainConfig)")
    p.add_argument("--out", type=writable_dir, required=True,
                   help="output directory: model, metrics.jsonl, checkpoint/")
    p.add_argument("--steps", type=int, help="override the config's number of steps")
    p.add_argument("--data", help="scenes (default: the generated scenes) or NAME:ROOT, NAME one of vqa2, gqa, "
                   "nlvr2, coco, cc, jsonl (the README's Real data section gives each folder layout)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    p.add_argument("--force", action="store_true", help="start over even if OUT holds a run")
    p.add_argument("--init-from", help="initialise from a model directory: matching weights are copied, exit "
                   "heads only when it was trained on the same task (e.g. a pretrained encoder)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mmedge.train.config import TrainConfig
    from mmedge.train.trainer import Trainer

    cfg = TrainConfig.load(config_file(args.config, "training config")) if args.config else TrainConfig()
    overrides = {k: v for k, v in (("task", args.task), ("steps", args.steps), ("data", args.data)) if v is not None}
    if overrides:
        cfg = TrainConfig(**{**cfg.to_dict(), **overrides})
    trainer = Trainer(cfg, args.out, resume=args.resume, force=args.force, init_from=args.init_from,
                      progress=not args.no_progress)
    result = trainer.fit()
    if trainer.dist.is_main:
        acc = ", ".join(f"{a:.3f}" for a in result.final_val_accuracy)
        print(f"trained {result.steps} steps in {result.wall_s:.0f} s, {result.train_flops / 1e12:.2f} TFLOPs; "
              f"val accuracy per exit: [{acc}]; model saved to {result.out_dir}")
    return 0
