"""mmedge demo: the shipped model exported, calibrated and run adaptively in every runtime here."""

from __future__ import annotations

import argparse

from mmedge.cli._checks import fraction, non_negative_float, positive, writable_dir

EPILOG = """examples:
  mmedge demo
  mmedge demo --samples 1000 --max-drop 0.02 --out runs/demo-2pt
  mmedge demo --model runs/vqa --force-export          # a model trained on the scenes
  mmedge demo --model models/caption-default --out runs/demo-caption   # the captioner

Writes OUT/demo.json, OUT/demo.md and OUT/demo.png, and keeps the bundle in OUT/NAME.mmedge
(reused on the next run when its weights are the same).
"""


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="export, calibrate and run the adaptive model in every runtime here",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="models/vqa-default", help="model directory (default: the shipped model)")
    p.add_argument("--out", type=writable_dir, default="runs/demo", help="output directory (default runs/demo)")
    p.add_argument("--samples", type=positive, help="test samples per row (default 300; captioner: 100 images)")
    p.add_argument("--calibration-samples", type=int,
                   help="validation samples for calibration (default 1000, at least 100; captioner: 200 images)")
    p.add_argument("--max-drop-cider", type=non_negative_float, default=1.0,
                   help="captioner: calibration's CIDEr drop bound in points (default 1.0)")
    p.add_argument("--max-drop", type=fraction, default=0.01,
                   help="calibration's accuracy drop bound in [0, 1) (default 0.01)")
    p.add_argument("--threads", type=positive, default=1, help="runtime threads (default 1, like one phone core)")
    p.add_argument("--force-export", action="store_true", help="export again even if the bundle is current")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(run=run)


def run_caption(args: argparse.Namespace) -> int:
    from mmedge.caption.demo import run_caption_demo

    out = args.out if args.out != "runs/demo" else "runs/demo-caption"
    calibration = 200 if args.calibration_samples is None else args.calibration_samples
    result = run_caption_demo(args.model, out, args.samples or 100, calibration,
                              args.max_drop_cider, args.force_export, args.threads, progress=not args.no_progress)
    print(f"\ntook {result['seconds']:.0f} s; wrote {out}/demo.json and caption_<runtime>_<precision>.json/.md/.png")
    return 0


def run(args: argparse.Namespace) -> int:
    from mmedge.adapt.folder import instead, is_adapted_dir
    from mmedge.caption.checkpoint import is_caption_dir

    if is_adapted_dir(args.model):  # the demo's scenes, labels and model card are mmedge's own models'
        from mmedge.demo import ADAPTED_INSTEAD
        from mmedge.errors import AdaptedModelUnsupported

        raise AdaptedModelUnsupported("demo", args.model, instead(args.model, ADAPTED_INSTEAD))
    if is_caption_dir(args.model):
        return run_caption(args)
    args.samples = args.samples or 300
    args.calibration_samples = 1000 if args.calibration_samples is None else args.calibration_samples
    from mmedge.demo import check_demo_arguments, format_rows, run_demo

    check_demo_arguments(args.samples, args.calibration_samples, args.max_drop, args.threads)
    result = run_demo(args.model, args.out, args.samples, args.calibration_samples, args.max_drop,
                      args.force_export, args.threads, progress=not args.no_progress)
    print()
    print(format_rows(result["rows"]))
    print(f"\n{result['note']}; took {result['seconds']:.0f} s. Wrote {args.out}/demo.json, demo.md, demo.png")
    return 0
