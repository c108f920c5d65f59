"""The README and the documentation site stay true to the code.

- every `mmedge ...` command in a code block of the README or a docs page parses with the real
  argparse parser (the verb and every flag exist, every value is accepted), and every repository
  file it names as an input exists;
- the README stays a front door: at most 200 lines, no issue numbers, no dated run logs, no
  machine paths, and every local link resolves;
- every docs page (hand-written or generated at build time) is in mkdocs.yml's nav, every nav
  entry exists, and the CLI reference has a page per registered verb;
- every generated block of the study pages builds from the committed results.

Running the example commands for real is tests/test_docs_run.py's job (every command, page by page; opt-in: MMEDGE_DOCS_RUN=1).
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
GEN = DOCS / "_gen"
README = ROOT / "README.md"

# Flags whose value is a file or folder the command reads: a value inside one of these committed
# folders must exist (runs/, bundles/, my_photos/ ... are what the reader makes).
INPUT_FLAGS = {"--config", "--recipe", "--model", "--artifact", "--init-from", "--image", "--key", "--verify",
               "--from"}
COMMITTED = ("models/", "export/", "benchmarks/", "docs/", "scripts/", "tests/", "web_demo/", "runtimes/",
             "android_demo/", "mmedge/")
ISSUE = re.compile(r"(?<![\w&/])#\d+\b|\bissues?\s+#?\d+", re.I)
DATE = re.compile(r"\b20\d\d-\d\d-\d\d\b")
MACHINE_PATH = re.compile(r"(?<![\w.])/(?:work|root|home|Users|mnt|opt)/")
FENCE = re.compile(r"^([ \t]*)```([\w-]*)[^\n]*\n(.*?)^\1```", re.M | re.S)


def doc_sources() -> list[Path]:
    """The hand-written Markdown: the README and every docs page except the build-time scripts'."""
    pages = sorted(p for p in DOCS.rglob("*.md") if GEN not in p.parents)
    return [README, *pages]


def shell_blocks(text: str) -> list[str]:
    """The code blocks of a Markdown text that hold shell commands (bash, sh, console, text or none)."""
    return [m.group(3) for m in FENCE.finditer(text) if m.group(2) in ("", "bash", "sh", "shell", "console", "text")]


def commands(text: str) -> list[str]:
    """Every command line of the shell blocks: continuation lines joined, `&&` chains split."""
    out = []
    for block in shell_blocks(text):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            for part in re.split(r"&&|;", line):
                part = part.strip()
                if part:
                    out.append(part)
    return out


def mmedge_argv(command: str) -> list[str] | None:
    """The arguments after `mmedge` (also `torchrun ... -m mmedge`, `python -m mmedge`), else None."""
    if not re.match(r"(mmedge|torchrun|python3?)\s", command):
        return None
    try:
        words = shlex.split(command, comments=True)
    except ValueError as exc:
        raise AssertionError(f"cannot split {command!r}: {exc}") from None
    if words[:1] == ["mmedge"]:
        return words[1:]
    if words and words[0] in ("torchrun", "python", "python3") and "-m" in words:
        i = words.index("-m")
        if words[i + 1:i + 2] == ["mmedge"]:
            return words[i + 2:]
    return None


def all_mmedge_commands() -> list[tuple[str, str, list[str]]]:
    found = []
    for path in doc_sources():
        for command in commands(path.read_text(encoding="utf-8")):
            argv = mmedge_argv(command)
            if argv is not None:
                found.append((str(path.relative_to(ROOT)), command, argv))
    return found


def parse(argv: list[str]):
    from mmedge.cli import build_parser

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            return build_parser().parse_args(argv), ""
        except SystemExit:
            return None, err.getvalue().strip().splitlines()[-1] if err.getvalue().strip() else "exit"


def test_docs_have_mmedge_commands():
    found = all_mmedge_commands()
    verbs = {argv[0] for _, _, argv in found if argv}
    assert len(found) > 40 and {"train", "eval", "export", "calibrate", "bench"} <= verbs, verbs


def test_every_documented_command_parses(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # --out / --json values are checked for writability relative to here
    problems = []
    for where, command, argv in all_mmedge_commands():
        args, error = parse(argv)
        if args is None:
            problems.append(f"{where}: `{command}`: {error}")
            continue
        for flag, value in zip(argv, argv[1:]):
            if flag in INPUT_FLAGS and value.startswith(COMMITTED) and not (ROOT / value).exists():
                problems.append(f"{where}: `{command}`: {flag} {value} does not exist in the repository")
    assert not problems, "\n".join(problems)


def test_scripts_named_in_docs_exist():
    missing = []
    for path in doc_sources():
        for command in commands(path.read_text(encoding="utf-8")):
            if not re.match(r"(python3?|bash)\s", command):
                continue
            words = shlex.split(command, comments=True)
            if len(words) >= 2 and words[0] in ("python", "python3", "bash") and words[1].endswith((".py", ".sh")):
                if not (ROOT / words[1]).is_file():
                    missing.append(f"{path.relative_to(ROOT)}: {words[1]}")
    assert not missing, missing


def test_cli_examples_parse(tmp_path, monkeypatch):
    """The examples in every verb's --help epilog (what the CLI reference pages show) parse too."""
    from mmedge.cli import VERBS, build_parser

    monkeypatch.chdir(tmp_path)
    parser = build_parser()
    problems = []
    for verb in VERBS:
        sub = next(a for a in parser._actions if a.dest == "verb").choices[verb]
        for line in re.sub(r"\\\n\s*", " ", sub.epilog or "").splitlines():
            argv = mmedge_argv(line.strip()) if line.strip() else None
            if argv:
                args, error = parse(argv)
                if args is None:
                    problems.append(f"mmedge {verb} --help: `{line.strip()}`: {error}")
    assert not problems, "\n".join(problems)


# ----------------------------------------------------------------------------- the README
def test_readme_is_a_front_door():
    text = README.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move reference material into docs/"
    assert lines[2:6] == ["```", "bash scripts/setup.sh && mmedge demo", "bash scripts/setup.sh && bash scripts/test.sh",
                          "```"], "the README's first lines must stay the two commands"
    for pattern, what in ((ISSUE, "an issue number"), (DATE, "a dated log"), (MACHINE_PATH, "a machine path")):
        hits = [f"{i}: {ln.strip()[:100]}" for i, ln in enumerate(lines, 1) if pattern.search(ln)]
        assert not hits, f"README.md holds {what}:\n" + "\n".join(hits)


def test_ci_runs_the_readme_test_command():
    assert "bash scripts/setup.sh && bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()


def local_links(path: Path) -> list[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    return [t for t in re.findall(r"\]\(([^)\s]+)\)", text) if not re.match(r"[a-z]+:", t) and not t.startswith("#")]


def test_readme_links_resolve():
    broken = [t for t in local_links(README) if not (ROOT / t.split("#")[0]).exists()]
    assert not broken, broken


def test_hand_written_docs_carry_no_issue_numbers_dates_or_machine_paths():
    hits = []
    for path in doc_sources()[1:]:
        if path.name == "bundle-format.md":
            continue  # the normative spec, written elsewhere
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for pattern, what in ((ISSUE, "issue number"), (DATE, "date"), (MACHINE_PATH, "machine path")):
                if pattern.search(line):
                    hits.append(f"{path.relative_to(ROOT)}:{i}: {what}: {line.strip()[:100]}")
    assert not hits, "\n".join(hits)


# ----------------------------------------------------------------------------- the site
@pytest.fixture(scope="module")
def gen():
    sys.path.insert(0, str(GEN))
    try:
        import cli_pages
        import markers
        import results

        yield cli_pages, markers, results
    finally:
        sys.path.remove(str(GEN))


def nav_pages() -> list[str]:
    yaml = pytest.importorskip("yaml")
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    pages: list[str] = []

    def walk(item):
        if isinstance(item, str):
            pages.append(item)
        elif isinstance(item, list):
            for x in item:
                walk(x)
        elif isinstance(item, dict):
            for x in item.values():
                walk(x)

    walk(config["nav"])
    return [p for p in pages if not re.match(r"[a-z]+://", p)]


def generated_pages(gen) -> set[str]:
    cli_pages, _, _ = gen
    card_pages = {"models/vqa-default.md", "models/caption-default.md"}  # docs/_gen/gen_pages.py CARDS
    return set(cli_pages.pages()) | card_pages


def test_every_page_is_in_the_nav_and_every_nav_entry_exists(gen):
    nav = nav_pages()
    assert len(nav) == len(set(nav)), "a page is listed twice in mkdocs.yml's nav"
    sources = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md") if GEN not in p.parents}
    pages = sources | generated_pages(gen)
    assert not sorted(pages - set(nav)), f"pages missing from mkdocs.yml's nav: {sorted(pages - set(nav))}"
    assert not sorted(set(nav) - pages), f"nav entries with no page: {sorted(set(nav) - pages)}"


def test_cli_reference_has_a_page_per_verb(gen):
    from mmedge.cli import VERBS

    cli_pages, _, _ = gen
    assert sorted(cli_pages.pages()) == sorted(f"reference/cli/{v}.md" for v in VERBS)
    nav_cli = [p for p in nav_pages() if p.startswith("reference/cli/") and p != "reference/cli/index.md"]
    assert nav_cli == [f"reference/cli/{v}.md" for v in VERBS], "list the verbs in mmedge.cli.VERBS order in the nav"


def test_generated_blocks_build_from_the_committed_results(gen):
    _, markers, _ = gen
    expanded = 0
    for path in sorted(DOCS.rglob("*.md")):
        if GEN in path.parents:
            continue
        text = path.read_text(encoding="utf-8")
        if "<!-- gen:" not in text:
            continue
        rel = path.relative_to(DOCS).as_posix()
        out, files = markers.expand(text, rel, ROOT)
        assert "<!-- gen:" not in out, f"{rel}: a marker was not expanded (is it alone on its line?)"
        for what, pattern in (("an issue number", ISSUE), ("a machine path", MACHINE_PATH)):
            hit = pattern.search(out)
            assert hit is None, f"{rel}: the generated page holds {what}: {out[max(0, hit.start() - 60):hit.end() + 20]!r}"
        assert all(data[:8] == b"\x89PNG\r\n\x1a\n" for data in files.values()), f"{rel}: a figure is not a PNG"
        expanded += 1
    assert expanded >= 8


def test_study_pages_exist_for_every_study():
    for name in ("pretraining", "attention", "probing", "captioning", "performance"):
        text = (DOCS / "studies" / f"{name}.md").read_text(encoding="utf-8")
        assert "<!-- gen:" in text, f"docs/studies/{name}.md carries no table generated from its results"
