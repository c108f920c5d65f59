"""10. Datasets: every `--data` source (JSON Lines, VQA v2, GQA, NLVR2, COCO Captions, Conceptual
Captions) built small in its official layout (tests/dataset_fixtures.py), then given one hostile
record or file each: an image path with `..` or absolute (pointing at a canary outside ROOT), an
image that is a link to a canary, a FIFO, a link to /dev/zero or a folder; the annotation file in
Latin-1 or UTF-16, a FIFO, or a link to a copy outside ROOT; a record nested 100,000 deep, a
5,000-digit number, a 1 MB text. Each case runs `mmedge eval --model M --data NAME:ROOT` in a child
process (timeout, memory limit) with a small model of the source's task (WordPiece classifiers
trained here on the fixtures, so the tokenizer's cost on a long text is measured; the captioner for
the caption sources, scored without METEOR: Java is hidden from the child). Fine: refused
(DatasetError) or done (the record dropped); a defect: an untyped error, a hang, a crash, or a
canary read.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from benchmarks.hardening.common import ROOT, case_problem, case_totals, count_rows, n_cases, progress, section_result, words
from benchmarks.hardening.probe import Canaries, run_cases

TITLE = "10. Datasets"
SOURCES = ("jsonl", "vqa2", "gqa", "nlvr2", "coco", "cc")
SPLIT = {"jsonl": "val", "vqa2": "val", "gqa": "val", "nlvr2": "dev", "coco": "val", "cc": "val"}
TASK = {"jsonl": "vqa", "vqa2": "vqa", "gqa": "vqa", "nlvr2": "verify", "coco": "caption", "cc": "caption"}
TEXT_KEY = {"jsonl": "question", "vqa2": "question", "gqa": "question", "nlvr2": "sentence", "coco": "caption"}
TINY = {"dim": 32, "depth": 2, "num_heads": 2, "image_size": 48, "patch_size": 8, "max_text_len": 24,
        "keep_ratios": [1.0, 0.5]}
KINDS = ("control (unchanged)", "image path '..' to a canary", "image path absolute (a canary)",
         "image a link to a canary", "image a FIFO", "image a link to /dev/zero", "image a folder",
         "annotations in Latin-1", "annotations in UTF-16", "a record nested 100,000 deep", "a 5,000-digit number",
         "a 1 MB text", "a 60,000-character text (one long line of words)", "annotation file a FIFO",
         "annotation file a link to a copy outside ROOT")
QUICK_KINDS = ("image path '..' to a canary", "image a link to a canary", "image a FIFO", "annotations in Latin-1")
QUICK_JSONL = ("a record nested 100,000 deep", "a 1 MB text", "control (unchanged)")
# METEOR off (Java hidden from the child, as on a machine without it): a JVM's start is not the dataset's cost
SETUP = """
import shutil
_which = shutil.which
shutil.which = lambda cmd, *a, **k: None if cmd == "java" else _which(cmd, *a, **k)
import mmedge.cli, mmedge.evaluation.real, mmedge.caption.evaluate, torch
torch.set_num_threads(1)
"""


def _fixtures():
    tests = str(ROOT / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    import dataset_fixtures

    return dataset_fixtures


def build(name: str, root: Path, split: str | None = None) -> Path:
    fx = _fixtures()
    split = split or SPLIT[name]
    make = {"jsonl": lambda: fx.make_jsonl(root, 4, split), "vqa2": lambda: fx.make_vqa2(root, 4, split),
            "gqa": lambda: fx.make_gqa(root, 4, split), "nlvr2": lambda: fx.make_nlvr2(root, 2, split),
            "coco": lambda: fx.make_coco(root, 4, split), "cc": lambda: fx.make_cc(root, 4, split)}[name]
    return make()


def annotation_file(name: str, root: Path, split: str) -> Path:
    return {"jsonl": root / f"{split}.jsonl", "vqa2": root / f"v2_OpenEnded_mscoco_{split}2014_questions.json",
            "gqa": root / "questions" / f"{split}_balanced_questions.json", "nlvr2": root / f"{split}.json",
            "coco": root / "annotations" / f"captions_{split}2017.json", "cc": root / f"{split}.tsv"}[name]


def victim_image(root: Path) -> Path:
    """An image a record uses (the second one found): every fixture image belongs to a record."""
    images = sorted(p for p in root.rglob("*") if p.suffix in (".jpg", ".png") and ".mmedge-cache" not in p.parts)
    return images[1]


# ---------------------------------------------------------------------------------------------- hostile edits
def _json_lines_edit(path: Path, change) -> None:
    lines = path.read_text().splitlines()
    row = json.loads(lines[1])
    change(row)
    lines[1] = json.dumps(row)
    path.write_text("\n".join(lines) + "\n")


def set_image_path(name: str, root: Path, split: str, target: Path, absolute: bool) -> None:
    """Point one record's image at `target` by the path its format reads (relative with '..', or absolute)."""
    ann = annotation_file(name, root, split)
    if name == "jsonl":
        value = str(target) if absolute else os.path.relpath(target, root)
        _json_lines_edit(ann, lambda r: r.__setitem__("image", value))
    elif name == "coco":
        data = json.loads(ann.read_text())
        data["images"][1]["file_name"] = str(target) if absolute else os.path.relpath(target, root / f"{split}2017")
        ann.write_text(json.dumps(data))
    elif name == "cc":
        lines = ann.read_text().splitlines()
        caption = lines[1].split("\t")[0]
        lines[1] = f"{caption}\t{target if absolute else os.path.relpath(target, root)}"
        ann.write_text("\n".join(lines) + "\n")
    elif name == "gqa":  # the path is images/{imageId}.jpg
        data = json.loads(ann.read_text())
        key = sorted(data)[1]
        value = str(target) if absolute else os.path.relpath(target, root / "images")
        data[key]["imageId"] = value[: -len(".jpg")]
        ann.write_text(json.dumps(data))
    elif name == "nlvr2":  # images/{split}[/directory]/{split-set-pair}-img0.png from the identifier
        if absolute:  # train only: the directory field, absolute
            _json_lines_edit(ann, lambda r: r.__setitem__("directory", str(target)))
        else:
            stem = os.path.relpath(target, root / "images" / split)  # .../cnry<token>-b-c (no other '-')
            _json_lines_edit(ann, lambda r: r.__setitem__("identifier", f"{stem}-0"))
    else:
        raise ValueError(f"{name} names images by id only")


def _reencode(path: Path, encoding: str, name: str) -> None:
    text = path.read_text()
    key = TEXT_KEY.get(name)
    if key:
        needle = f'"{key}": "'
        text = text.replace(needle, needle + "café ", 1) if needle in text else text
    else:  # the TSV: the first caption
        text = "café " + text
    path.write_bytes(text.encode(encoding))


def _nested(path: Path, name: str, payload: str) -> None:
    text = path.read_text()
    if name in ("jsonl", "nlvr2"):
        lines = text.splitlines()
        lines[1] = '{"deep": ' + payload + ", " + lines[1].lstrip()[1:]
        path.write_text("\n".join(lines) + "\n")
    else:
        path.write_text('{"deep": ' + payload + ", " + text.lstrip()[1:])


def _long_text(path: Path, name: str, chars: int = 1 << 20) -> None:
    long = ("why " * (chars // 4 + 1))[:chars]
    if name == "cc":
        lines = path.read_text().splitlines()
        lines[1] = long.strip() + "\t" + lines[1].split("\t")[1]
        path.write_text("\n".join(lines) + "\n")
    elif name in ("jsonl", "nlvr2"):
        _json_lines_edit(path, lambda r: r.__setitem__(TEXT_KEY[name], long))
    else:
        data = json.loads(path.read_text())
        if name == "vqa2":
            data["questions"][1]["question"] = long
        elif name == "gqa":
            data[sorted(data)[1]]["question"] = long
        else:
            data["annotations"][1]["caption"] = long
        path.write_text(json.dumps(data))


def make_case(name: str, kind: str, root: Path, canaries: Canaries, nlvr_out: Path) -> dict | None:
    """Build ROOT for (source, kind); None when the format cannot express the case. Returns the
    extra eval arguments."""
    split = SPLIT[name]
    if kind == "image path absolute (a canary)" and name == "nlvr2":
        split = "train"
    if kind.startswith("image path") and name == "vqa2":
        return None  # VQA v2 names images by id: no path to escape with
    if kind in ("a record nested 100,000 deep", "a 5,000-digit number") and name == "cc":
        return None  # a TSV has no nesting or numbers
    build(name, root, split)
    ann = annotation_file(name, root, split)
    suffix = ".jpg" if name in ("gqa", "vqa2", "coco", "cc") else ".png"
    if kind == "image path '..' to a canary":
        if name == "nlvr2":
            token = canaries.token
            for i in (0, 1):
                canaries.image(name=f"cnry{token}{root.name}-b-c-img{i}.png", folder=nlvr_out)
            set_image_path(name, root, split, nlvr_out / f"cnry{canaries.token}{root.name}-b-c", absolute=False)
        else:
            set_image_path(name, root, split, canaries.image(f"{root.name}dots", suffix), absolute=False)
    elif kind == "image path absolute (a canary)":
        if name == "nlvr2":
            folder = canaries.folder(f"{root.name}abs")
            for stem in sorted({p.name.rsplit("-img", 1)[0] for p in (root / "images" / split).rglob("*.png")}):
                for i in (0, 1):
                    canaries.image(name=f"{stem}-img{i}.png", folder=folder)
            canaries.paths = [p for p in canaries.paths if p.parent != folder]  # matched by path, not name
            set_image_path(name, root, split, folder, absolute=True)
        else:
            set_image_path(name, root, split, canaries.image(f"{root.name}abs", suffix), absolute=True)
    elif kind == "image a link to a canary":
        victim = victim_image(root)
        victim.unlink()
        victim.symlink_to(canaries.image(f"{root.name}link", victim.suffix))
    elif kind == "image a FIFO":
        victim = victim_image(root)
        victim.unlink()
        os.mkfifo(victim)
    elif kind == "image a link to /dev/zero":
        victim = victim_image(root)
        victim.unlink()
        victim.symlink_to("/dev/zero")
    elif kind == "image a folder":
        victim = victim_image(root)
        victim.unlink()
        victim.mkdir()
    elif kind == "annotations in Latin-1":
        _reencode(ann, "latin-1", name)
    elif kind == "annotations in UTF-16":
        _reencode(ann, "utf-16", name)
    elif kind == "a record nested 100,000 deep":
        _nested(ann, name, "[" * 100_000 + "]" * 100_000)
    elif kind == "a 5,000-digit number":
        _nested(ann, name, "9" * 5000)
    elif kind == "a 1 MB text":
        _long_text(ann, name)
    elif kind.startswith("a 60,000-character text"):  # under a 65,536-character cap: the tokenizer's own cost
        _long_text(ann, name, 60_000)
    elif kind == "annotation file a FIFO":
        ann.unlink()
        os.mkfifo(ann)
    elif kind == "annotation file a link to a copy outside ROOT":
        copy = canaries.copy(ann, f"{root.name}ann")
        ann.unlink()
        ann.symlink_to(copy)
    return {"split": split}


# ---------------------------------------------------------------------------------------------- models
def models(ctx, work: Path) -> dict[str, Path]:
    """A small model per task: WordPiece classifiers trained on the fixtures (vqa, verify), the captioner."""
    from mmedge.train.config import TrainConfig
    from mmedge.train.trainer import Trainer

    from benchmarks.hardening.caption import train_tiny_captioner

    out = {}
    for task, source in (("vqa", "jsonl"), ("verify", "nlvr2")):
        model = work / f"model-{task}"
        if not (model / "config.json").exists():
            data = work / f"train-{source}"
            build(source, data, "train")
            build(source, data, SPLIT[source])
            cfg = TrainConfig(task=task, data=f"{source}:{data}", steps=2, batch_size=4, warmup_steps=1,
                              eval_every=2, eval_samples=4, checkpoint_every=2, log_every=1, threads=1,
                              answer_vocab_size=6, model=TINY)
            Trainer(cfg, model, progress=False).fit()
        out[task] = model
    if ctx.captioner is None:
        ctx.captioner = train_tiny_captioner(ctx.work / "tiny-captioner")
    out["caption"] = Path(ctx.captioner)
    return out


# ---------------------------------------------------------------------------------------------- the section
def datasets(ctx) -> dict:
    work = ctx.work / "s10"
    cases_dir = work / "cases"
    cases_dir.mkdir(parents=True, exist_ok=True)
    canaries = Canaries(work)
    nlvr_out = work / f"nlvrout{canaries.token}"  # no '-' in it: NLVR2 splits identifiers on '-'
    nlvr_out.mkdir()
    by_task = models(ctx, work)
    cases, skipped = [], []
    for name in SOURCES:
        kinds = KINDS if not ctx.quick else QUICK_KINDS + (QUICK_JSONL if name == "jsonl" else ())
        for kind in kinds:
            root = cases_dir / f"{name}{len(cases) + len(skipped)}"
            extra = make_case(name, kind, root, canaries, nlvr_out)
            if extra is None:
                skipped.append(f"{name}: {kind}")
                shutil.rmtree(root, ignore_errors=True)
                continue
            argv = ["eval", "--model", str(by_task[TASK[name]]), "--data", f"{name}:{root}", "--limit", "8",
                    "--split", extra["split"], "--no-progress"]
            cases.append({"id": f"d{len(cases)}", "source": name, "kind": kind, "argv": argv,
                          "dataset_refusal": True, "expected": "done" if kind.startswith("control") else None,
                          "timeout": ctx.case_timeout})
    bar = progress(range(len(cases)), "10 datasets", ctx.quiet)
    rows = run_cases(cases, work / "runs", canaries, setup=SETUP, timeout=ctx.case_timeout, bar=bar)
    bar.close()
    out_rows = []
    for c in cases:
        r = rows[c["id"]]
        out_rows.append({"source": c["source"], "case": c["kind"], "expected": c["expected"],
                         "outcome": r["outcome"], "error": r["error"], "seconds": r["seconds"],
                         "read_outside": r["read_outside"], "read_by": r["read_by"], "message": r["message"][:200]})
    shutil.rmtree(cases_dir, ignore_errors=True)
    by_source = {}
    for r in out_rows:
        by_source.setdefault(r["source"], []).append(r)
    return {"sources": {s: {"cases": len(rs), "counts": count_rows(rs), "result": section_result(rs)}
                        for s, rs in by_source.items()},
            "command": "mmedge eval --model M --data NAME:ROOT --limit 8 --split SPLIT --no-progress",
            "models": {"vqa": "WordPiece classifier trained here on a JSON Lines fixture (2 steps)",
                       "verify": "WordPiece classifier trained here on an NLVR2 fixture (2 steps)",
                       "caption": "the captioner of section 9"},
            "inotify": next(iter(rows.values()), {}).get("inotify_active", False),
            "counts": count_rows(out_rows), "result": section_result(out_rows), "not_expressible": skipped,
            "problems": [{**r, "problem": case_problem(r)} for r in out_rows if case_problem(r)], "cases": out_rows}


# ---------------------------------------------------------------------------------------------- report
def summary_rows(s: dict) -> list[list]:
    return [["10", f"datasets: {name}", n_cases(v['cases']), v["result"], words(v["counts"])]
            for name, v in s.get("sources", {}).items()]


def defects(s: dict) -> list[str]:
    return [f"dataset {p['source']} '{p['case']}': {p['problem']} ({p['error'] or '-'}: {p['message'][:160]})"
            for p in s.get("problems", [])]


def totals(s: dict) -> dict:
    return case_totals(s.get("cases", []))


def render(s: dict, table) -> list[str]:
    if "cases" not in s:
        return []
    lines = [f"## {TITLE}", "",
             f"`{s['command']}` in a child process per case (timeout, memory limit); models: "
             + "; ".join(f"{k}: {v}" for k, v in s["models"].items())
             + ". Canaries (valid images, a copy of the annotation file) outside ROOT; read outside: audit hook"
             + (", inotify" if s.get("inotify") else "") + ", marker in the output. *refused* = `DatasetError` "
             "(or an argument refused); *done* = the evaluation ran (the hostile record dropped).", ""]
    sources = list(s["sources"])
    kinds = list(dict.fromkeys(r["case"] for r in s["cases"]))
    cell = {(r["source"], r["case"]): r for r in s["cases"]}

    def show(r):
        if r is None:
            return "n/a"
        mark = " **read outside**" if r["read_outside"] else ""
        return f"{r['outcome']}{' (' + r['error'] + ')' if r['error'] else ''}, {r['seconds']} s{mark}"

    lines += table(["case"] + sources, [[k] + [show(cell.get((src, k))) for src in sources] for k in kinds]) + [""]
    lines += table(["source", "cases", "counts", "result"],
                   [[src, v["cases"], words(v["counts"]), v["result"]] for src, v in s["sources"].items()]) + [""]
    if s["problems"]:
        lines += table(["source", "case", "problem", "message"],
                       [[p["source"], p["case"], p["problem"], p["message"][:120]] for p in s["problems"]]) + [""]
    if s.get("not_expressible"):
        lines += ["Not expressible in the format (n/a): " + "; ".join(s["not_expressible"]) + ".", ""]
    return lines
