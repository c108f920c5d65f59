"""mmedge bundle: a slim copy of a bundle with only what one app ships."""

from __future__ import annotations

import argparse

from mmedge.cli._checks import writable_parent

EPILOG = """examples:
  mmedge bundle --artifact runs/demo/vqa-default.mmedge --runtime onnxruntime --format ort --out app/vqa.mmedge
  mmedge bundle --artifact runs/demo/vqa-default.mmedge --runtime executorch --precision int8 --out app/vqa-et.mmedge
  mmedge bundle --artifact runs/demo/vqa-default.mmedge --runtime onnxruntime --format onnx --keep-ratio 1.0 0.25 \\
      --in-graph --out web/vqa.mmedge
  mmedge bundle --artifact caption.mmedge --runtime executorch --keep-ratio 1.0 --out app/caption.mmedge
  mmedge bundle --artifact smolvlm.mmedge --runtime onnxruntime --precision int4 --out app/smolvlm.mmedge

The slim bundle keeps the source's calibrated thresholds (their keep ratio must be among those
kept), has its own manifest and SHA-256 list, and passes every check a runtime makes on load.
Every kind: classifier, captioning (keep ratios as for classifiers; no in-graph variant) and generative
VLM bundles (one vision graph serves every keep ratio: runtime, format and precision only).
"""


def add_parser(sub) -> None:
    p = sub.add_parser("bundle", help="write a slim bundle: one runtime/format/precision, chosen keep ratios",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifact", required=True, help="source bundle made by `mmedge export`")
    p.add_argument("--out", required=True, type=writable_parent, help="slim bundle directory to create")
    p.add_argument("--runtime", required=True, choices=("onnxruntime", "executorch", "coreml", "torch"))
    p.add_argument("--format", dest="fmt", choices=("onnx", "ort", "pte", "mlpackage", "safetensors"),
                   help="file format (onnxruntime: ort by default, or onnx)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "int8", "int4"),
                   help="fp32 (default), int8, or int4 (generative VLM bundles exported with it)")
    p.add_argument("--keep-ratio", type=float, nargs="+", dest="keep_ratios",
                   help="keep ratios to keep (default: all exported)")
    p.add_argument("--in-graph", type=float, nargs="*", metavar="RATIO",
                   help="also keep the in-graph variant (onnxruntime): of every kept keep ratio, or of those listed")
    p.add_argument("--sign-key", help="Ed25519 private key (PEM) to sign the slim manifest with")
    p.add_argument("--force", action="store_true", help="replace an existing bundle at --out (never anything else)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mmedge.bundle.slim import bundle_bytes, slim_bundle

    out = slim_bundle(args.artifact, args.out, args.runtime, args.fmt, args.precision, args.keep_ratios,
                      True if args.in_graph == [] else (args.in_graph or False), args.force, args.sign_key)
    print(f"wrote {out}: {bundle_bytes(out) / 1e6:.2f} MB (source {bundle_bytes(args.artifact) / 1e6:.2f} MB)")
    return 0
