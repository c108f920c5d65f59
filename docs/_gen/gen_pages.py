"""Build-time pages (run by mkdocs-gen-files during `mkdocs build`; nothing here writes to docs/).

- reference/cli/VERB.md for every verb, from the argparse parsers (cli_pages.py);
- every page with `<!-- gen: ... -->` markers gets its blocks from the committed results (markers.py);
- models/NAME.md: the shipped models' cards, as committed beside the weights.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import mkdocs_gen_files  # noqa: E402

import cli_pages  # noqa: E402
import markers  # noqa: E402
import results  # noqa: E402

DOCS = HERE.parent
ROOT = DOCS.parent
CARDS = {"models/vqa-default.md": "models/vqa-default/README.md",
         "models/caption-default.md": "models/caption-default/README.md"}


def write(path: str, content: str | bytes, edit: str | None = None) -> None:
    mode = "wb" if isinstance(content, bytes) else "w"
    with mkdocs_gen_files.open(path, mode) as f:
        f.write(content)
    if edit:
        mkdocs_gen_files.set_edit_path(path, edit)


for path, text in cli_pages.pages().items():
    write(path, text, "mmedge/cli/__init__.py")

for page, card in CARDS.items():
    write(page, results.clean_report((ROOT / card).read_text(encoding="utf-8"), demote=0), card)

for md in sorted(DOCS.rglob("*.md")):
    rel = md.relative_to(DOCS).as_posix()
    if rel.startswith("_gen/"):
        continue
    text = md.read_text(encoding="utf-8")
    if "<!-- gen:" not in text:
        continue
    expanded, files = markers.expand(text, rel, ROOT)
    write(rel, expanded)
    for path, data in files.items():
        write(path, data)
