"""The `mmedge` command: one module per verb, each with add_parser() and run()."""

from __future__ import annotations

import argparse
import sys

from mmedge import __version__
from mmedge.errors import MMEdgeError

VERBS = ("train", "pretrain", "eval", "predict", "data", "export", "bundle", "sign", "calibrate", "demo", "bench",
         "probe", "adapt")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(prog="mmedge", description="Train, evaluate and deploy adaptive "
                                     "vision-language models on edge devices.")
    parser.add_argument("--version", action="version", version=f"mmedge {__version__}")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb in VERBS:
        importlib.import_module(f"mmedge.cli.{verb}_cmd").add_parser(sub)
    return parser


def one_line(exc: BaseException) -> str:
    """An error's message on one line (a ConfigError lists its problems on separate lines)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if len(lines) <= 1:
        return lines[0] if lines else type(exc).__name__
    items = [ln[2:] if ln.startswith("- ") else ln for ln in lines[1:]]
    return f"{lines[0]} " + "; ".join(items)


def os_error_line(exc: OSError) -> str:
    """An operating system error as one line: what failed, on which path, and what to do."""
    where = " -> ".join(str(p) for p in (exc.filename, exc.filename2) if p is not None)
    reason = exc.strerror or one_line(exc)
    return (f"{where}: {reason}" if where else reason) + "; check the path (and its permissions), or choose another"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except MMEdgeError as exc:
        print(f"mmedge {args.verb}: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:  # the file system refused (a path that cannot be made, read or written): no traceback
        print(f"mmedge {args.verb}: error: {os_error_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mmedge {args.verb}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
