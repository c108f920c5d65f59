"""mmedge pretrain: replaced word/object detection (rwd-rod) or masked modelling (mlm-mop)."""

from __future__ import annotations

import argparse

from mmedge.cli._checks import config_file, writable_dir

EPILOG = """examples:
  mmedge pretrain --objective rwd-rod --config models/configs/pretrain-small.json --out runs/pre-rwd
  mmedge pretrain --objective mlm-mop --config models/configs/pretrain-small.json --out runs/pre-mlm
  torchrun --nproc_per_node 2 -m mmedge pretrain --objective rwd-rod --config CFG --out runs/pre-ddp
  mmedge train --task vqa --config models/configs/vqa-default.json --init-from runs/pre-rwd --out runs/vqa-pre

metrics.jsonl logs the loss terms, the pretraining FLOPs (counted by torch.utils.flop_counter,
the generator's included) and wall-clock; the encoder is saved as a model directory.
"""


def add_parser(sub) -> None:
    p = sub.add_parser("pretrain", help="pretrain an encoder on image-caption pairs",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--objective", choices=("rwd-rod", "mlm-mop", "mlm-rod", "rwd-mop"), help="overrides the config's objective (text half - visual half)")
    p.add_argument("--config", help="PretrainConfig JSON (default: the built-in defaults)")
    p.add_argument("--out", type=writable_dir, required=True, help="output directory")
    p.add_argument("--steps", type=int, help="overrides the config's steps")
    p.add_argument("--data", help="scenes (default) or coco:ROOT | cc:ROOT: real image-caption pairs (WordPiece "
                                  "vocabulary learnt from the captions; no object classes, so only the text half "
                                  "and image-text matching train)")
    p.add_argument("--force", action="store_true", help="replace an existing run in --out")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from mmedge.pretrain.config import PretrainConfig
    from mmedge.pretrain.trainer import Pretrainer

    cfg = PretrainConfig.load(config_file(args.config, "pretraining config")) if args.config else PretrainConfig()
    changes = {k: v for k, v in (("objective", args.objective), ("steps", args.steps), ("data", args.data))
               if v is not None}
    cfg = dataclasses.replace(cfg, **changes)
    result = Pretrainer(cfg, args.out, force=args.force, progress=not args.no_progress).fit()
    print(f"pretrained {cfg.objective} for {result.steps} steps: {result.pretrain_flops / 1e12:.3f} TFLOPs, "
          f"{result.wall_s:.0f} s; encoder in {result.out_dir}")
    return 0
