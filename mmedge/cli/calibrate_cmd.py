"""mmedge calibrate: choose exit thresholds and keep ratio within an accuracy drop, into the manifest."""

from __future__ import annotations

import argparse

from mmedge.cli._checks import fraction, non_negative, non_negative_float

EPILOG = """examples:
  mmedge calibrate --artifact bundles/vqa-default.mmedge --max-drop 0.01
  mmedge calibrate --artifact bundles/vqa-default.mmedge --max-drop 0.02 --samples 2000 --dry-run
  mmedge calibrate --artifact bundles/caption-default.mmedge --max-drop-cider 1.0   # a captioner
  mmedge calibrate --artifact vilt.mmedge --data vqa2:/data/vqa2             # a model adapted by `mmedge adapt`
  mmedge calibrate --artifact vilt.mmedge --labels teacher                   # bound the disagreement with full depth
  mmedge calibrate --artifact smolvlm.mmedge --max-drop 0.01 --max-drop-cider 1.0   # a generative VLM

Every exported keep ratio and the policies confidence / max_probability (thresholds 0.5-1.0),
patience (2..exits) and full depth are tried on the validation split; the cheapest in expected
FLOPs whose paired accuracy drop against full depth with every token stays within --max-drop at
its one-sided 95% upper limit is written into manifest.json (atomically). --labels teacher counts
the bundle's own full-depth answer (every token) as correct instead of the data's answers: the bound
is then on disagreement with the full model, and the data needs no labels (what the exits of a
model adapted by `mmedge adapt` are distilled for).

A captioning bundle bounds its CIDEr drop instead: --max-drop-cider points (x100 scale), or
--max-drop D, the same bound on CIDEr's own scale (D x 100 points: --max-drop 0.01 is 1 point).
A generative VLM bundle bounds both: the CIDEr of its captions (--max-drop-cider, default 1.0
point) and the accuracy of its short answers (--max-drop, default 0.01), on --samples validation
scenes (default 64, half each), cheapest in decoder layer passes.
The bundle is calibrated as verified on load: its manifest keeps the same file list (a file added
or changed since export is refused, never signed), the same release name and a higher release
sequence. The old signature is removed; --sign-key signs the new manifest (checked before anything).
"""


def add_parser(sub) -> None:
    p = sub.add_parser("calibrate", help="pick exit thresholds and keep ratio for a bundle",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifact", required=True, help="bundle directory made by `mmedge export`")
    p.add_argument("--max-drop", type=fraction, help="allowed accuracy drop in [0, 1) (default 0.01); a captioning "
                   "bundle: the allowed CIDEr drop on CIDEr's own scale (x100 = points)")
    p.add_argument("--samples", type=int, help="validation samples (default 1000, at least 100; a captioning "
                   "bundle: images, default 200)")
    p.add_argument("--max-drop-cider", type=non_negative_float,
                   help="captioning bundles: allowed CIDEr drop in points (x100 scale; default 1.0)")
    p.add_argument("--backend", default="auto", help="runtime to calibrate with (default: auto)")
    p.add_argument("--z", type=non_negative_float, default=1.645,
                   help="sigmas of the upper limit on the drop, >= 0 (default 1.645)")
    p.add_argument("--data-seed", type=non_negative, default=0)
    p.add_argument("--data", default="scenes", help="scenes (default) or NAME:ROOT: calibrate on a real dataset's "
                   "validation split (docs/guides/data.md; a captioning bundle: coco or cc)")
    p.add_argument("--labels", choices=("data", "teacher"), default="data",
                   help="what counts as correct: the data's answers (default), or the bundle's own full-depth "
                        "answers with every token (teacher)")
    p.add_argument("--sign-key", help="Ed25519 private key (PEM) to re-sign the manifest with (see `mmedge sign`)")
    p.add_argument("--dry-run", action="store_true", help="print the table, leave the manifest as it is")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(run=run)


def run_caption(args: argparse.Namespace) -> int:
    from mmedge.caption.calibrate import calibrate_bundle, check_bundle_arguments, format_rows
    from mmedge.errors import ConfigError

    if args.max_drop is not None and args.max_drop_cider is not None:
        raise ConfigError("give --max-drop-cider POINTS or --max-drop FRACTION (CIDEr / 100), not both", "arguments")
    max_drop = args.max_drop_cider if args.max_drop is None else round(100.0 * args.max_drop, 9)
    max_drop = 1.0 if max_drop is None else max_drop
    samples = 200 if args.samples is None else args.samples
    check_bundle_arguments(max_drop, samples, args.z, args.data_seed, args.data)  # before loading anything
    result = calibrate_bundle(args.artifact, max_drop, samples, args.data_seed, args.backend,
                              progress=not args.no_progress, write=not args.dry_run, sign_key=args.sign_key,
                              z=args.z, data=args.data)
    print(format_rows(result))
    if not args.dry_run:
        print(f"\nwrote the thresholds into {args.artifact}/manifest.json")
        _say_signature(result)
    return 0


def run_generative(args: argparse.Namespace) -> int:
    """A generative VLM bundle: CIDEr of its captions and accuracy of its short answers, both bounded."""
    from mmedge.adapt.vlm_calibrate import calibrate_vlm_bundle, check_arguments, format_rows
    from mmedge.errors import ConfigError

    if args.labels != "data" or args.data != "scenes":
        raise ConfigError("a generative VLM bundle is calibrated on the generated scenes against their captions and "
                          "answers: leave out --labels and --data", "arguments")
    max_drop = 0.01 if args.max_drop is None else args.max_drop
    max_drop_cider = 1.0 if args.max_drop_cider is None else args.max_drop_cider
    samples = 64 if args.samples is None else args.samples
    check_arguments(max_drop, max_drop_cider, samples, args.z, args.data_seed)  # before loading anything
    result = calibrate_vlm_bundle(args.artifact, max_drop, max_drop_cider, samples, args.data_seed, args.backend,
                                  args.z, progress=not args.no_progress, write=not args.dry_run,
                                  sign_key=args.sign_key)
    print(format_rows(result))
    if not args.dry_run:
        print(f"\nwrote the thresholds into {args.artifact}/manifest.json")
        _say_signature(result)
    return 0


def _say_signature(result: dict) -> None:
    if result.get("signature") == "removed":
        print("the bundle was signed: its old signature no longer matched and was removed; sign it again "
              "with `mmedge sign --artifact BUNDLE --key PRIVATE.pem` (or calibrate with --sign-key)")
    elif result.get("signature") == "signed":
        print("re-signed manifest.json (manifest.sig)")


def run(args: argparse.Namespace) -> int:
    from mmedge.errors import ConfigError
    from mmedge.bundle.manifest import VLM
    from mmedge.runtime.engine import _is_caption_bundle, manifest_kind

    if args.dry_run and args.sign_key:
        raise ConfigError("--sign-key signs the rewritten manifest, and --dry-run writes none: drop one of them",
                          "arguments")
    if manifest_kind(args.artifact) == VLM:
        return run_generative(args)
    if _is_caption_bundle(args.artifact):
        if args.labels != "data":
            raise ConfigError("--labels teacher applies to classifier bundles; a captioning bundle bounds its CIDEr "
                              "against the references", "arguments")
        return run_caption(args)
    if args.max_drop_cider is not None:
        raise ConfigError("--max-drop-cider bounds a captioning bundle's CIDEr; this is a classifier bundle: "
                          "use --max-drop (an accuracy drop in [0, 1))", "arguments")
    max_drop = 0.01 if args.max_drop is None else args.max_drop
    samples = 1000 if args.samples is None else args.samples
    from mmedge.runtime.calibrate import calibrate, check_arguments, format_table

    check_arguments(max_drop, args.z, samples, args.labels)  # before loading anything (calibrate checks too)
    result = calibrate(args.artifact, max_drop, samples, "val", args.data_seed, args.backend, args.z,
                       progress=not args.no_progress, write=not args.dry_run, sign_key=args.sign_key, data=args.data,
                       labels=args.labels)
    print(format_table(result))
    if not args.dry_run and result["chosen"] is not None:
        print(f"\nwrote the thresholds into {args.artifact}/manifest.json")
        _say_signature(result)
    return 0
