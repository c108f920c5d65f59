"""The CLI reference, generated from the argparse parsers: one page per verb of `mmedge.cli.VERBS`.

Each page holds the verb's one-line summary and its `--help` text exactly as `mmedge VERB --help`
prints it (at a fixed width, so the pages do not depend on the terminal that builds them).
"""

from __future__ import annotations

import argparse
import functools
import os

WIDTH = 100  # columns argparse wraps the help at


@functools.lru_cache(maxsize=1)
def subparsers() -> dict[str, tuple[str, argparse.ArgumentParser]]:
    """verb -> (one-line summary, its parser), in the order of mmedge.cli.VERBS."""
    from mmedge.cli import VERBS, build_parser

    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    summaries = {a.dest: a.help or "" for a in action._choices_actions}
    return {verb: (summaries.get(verb, ""), action.choices[verb]) for verb in VERBS}


def help_text(parser: argparse.ArgumentParser) -> str:
    """parser.format_help() at WIDTH columns (argparse reads COLUMNS when it formats)."""
    before = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(WIDTH)
    try:
        return parser.format_help().rstrip()
    finally:
        if before is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = before


def verb_page(verb: str, summary: str, parser: argparse.ArgumentParser) -> str:
    return (f"# mmedge {verb}\n\n{summary[:1].upper() + summary[1:]}.\n\n"
            f"Generated from the parser: this is what `mmedge {verb} --help` prints.\n\n"
            f"```text\n{help_text(parser)}\n```\n")


def verb_table() -> str:
    rows = ["| command | what it does |", "|---|---|"]
    for verb, (summary, _) in subparsers().items():
        rows.append(f"| [`mmedge {verb}`]({verb}.md) | {summary} |")
    return "\n".join(rows)


def pages() -> dict[str, str]:
    """docs path -> page text, for every verb."""
    return {f"reference/cli/{verb}.md": verb_page(verb, summary, parser)
            for verb, (summary, parser) in subparsers().items()}
