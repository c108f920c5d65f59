"""`<!-- gen: NAME [ARGS] -->` markers: a page's hand-written text with blocks generated from the
repository (committed results, reports, figures, the CLI) put in at build time.

    <!-- gen: NAME -->             a block of results.BLOCKS (a table from committed JSON), or cli-verbs
    <!-- gen: report PATH [| TITLE] -->  a committed Markdown report, headings moved down two levels
                                   (its title, now a level-3 heading, replaced by TITLE when given)
    <!-- gen: figure PATH ALT -->  a committed PNG, copied beside the page and shown
    <!-- gen: host-bench PATH -->  every policy of a committed `mmedge bench --device host` JSON
    <!-- gen: fields PATH CLASS [-SKIP,...] -->  a config dataclass's fields, defaults and comments,
                                   read from its source (less the fields listed after -)

A marker stands alone on its line. An unknown name or a missing file fails the build.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

import cli_pages
import results

MARKER = re.compile(r"^<!-- gen: (?P<name>[a-z0-9-]+)(?: (?P<args>.*?))? -->$", re.M)


def image_name(rel: str) -> str:
    """Where a figure lands beside its page: img/ + its repository path flattened."""
    parts = PurePosixPath(rel).parts
    if parts[:2] == ("benchmarks", "results"):
        parts = parts[2:]
    return "img/" + "-".join(parts)


FIELD = re.compile(r"^    (?P<name>[a-z_]+): (?P<type>[^=]+?) = (?P<default>.+?)(?:\s+# (?P<doc>.*))?$")


def config_fields(source: str, cls: str, rel: str, skip: tuple[str, ...] = ()) -> str:
    """The fields of dataclass `cls` in `source` as a table: name, default (as JSON writes it), the
    comment beside it."""
    lines = source.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(f"class {cls}")), None)
    if start is None:
        raise ValueError(f"{rel}: no class {cls}")
    rows = ["| field | default | meaning |", "|---|---|---|"]
    for line in lines[start + 1:]:
        if line and not line.startswith(" "):
            break
        if line.strip().startswith("def "):
            break
        m = FIELD.match(line)
        if m and m["name"] not in skip:
            default = m["default"].strip()
            if default.startswith("field(default_factory=lambda: "):
                default = default[len("field(default_factory=lambda: "):-1]
            elif default.startswith("field(default_factory="):
                default = {"dict)": "{}", "list)": "[]"}.get(default[len("field(default_factory="):], default)
            default = {"None": "null", "True": "true", "False": "false"}.get(default, default)
            if re.fullmatch(r"[\d_.e-]+", default):
                default = default.replace("_", "")
            default = default.replace("'", '"')
            doc = (m["doc"] or "").replace("|", "\\|")
            rows.append(f"| `{m['name']}` | `{default}` | {doc} |")
    if len(rows) == 2:
        raise ValueError(f"{rel}: class {cls} has no fields in the expected form")
    return "\n".join(rows) + f"\n\n*Read from `{rel}` (`{cls}`) when the site is built.*"


def expand(text: str, page: str, root: Path) -> tuple[str, dict[str, bytes]]:
    """The page text with every marker replaced, and the files (docs path -> bytes) it needs."""
    files: dict[str, bytes] = {}
    page_dir = PurePosixPath(page).parent

    def block(m: re.Match) -> str:
        name, args = m["name"], (m["args"] or "").strip()
        if name == "report":
            rel, _, title = (part.strip() for part in args.partition("|"))
            text = results.clean_report((root / rel).read_text(encoding="utf-8"))
            if title:
                text = re.sub(r"\A### .*$", f"### {title}", text, count=1, flags=re.M)
            return text
        if name == "figure":
            rel, _, alt = args.partition(" ")
            target = image_name(rel)
            files[str(page_dir / target)] = (root / rel).read_bytes()
            return f"![{alt or PurePosixPath(rel).stem}]({target})"
        if name == "fields":
            rel, cls, *rest = args.split()
            skip = tuple(rest[0].lstrip("-").split(",")) if rest else ()
            return config_fields((root / rel).read_text(encoding="utf-8"), cls, rel, skip)
        if name == "host-bench":
            return results.host_bench(root, args)
        if name == "cli-verbs":
            return cli_pages.verb_table()
        if name not in results.BLOCKS:
            raise ValueError(f"{page}: unknown generated block {name!r}; known: report, figure, cli-verbs, "
                             f"{', '.join(results.BLOCKS)}")
        return results.BLOCKS[name](root)

    return MARKER.sub(block, text), files
