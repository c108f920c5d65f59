"""Every committed report regenerates from committed data.

Each benchmark's `--report-only` mode is run on a copy of its committed JSON (or unit ledger) in a
temporary folder, through the script's own main(); every Markdown report under benchmarks/results/
must come back byte for byte, and every figure must be written again: byte for byte too when this
matplotlib is the one that drew the committed figure (its PNG says which), else at the same size
(PNG bytes follow the matplotlib and FreeType versions). A report that no benchmark regenerates
fails the test.
"""

from __future__ import annotations

import importlib
import json
import shutil
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

# (script, folder under benchmarks/results, what of the folder is data: copied before the run)
REGENERATORS = [
    ("run_benchmarks", ".", ("*.json", "staging/*.json", "anchors/*.json", "optimum/*.json")),
    ("attention_efficiency", "attention", ("attention_efficiency.json",)),
    ("attention_efficiency", "attention/dim64", ("attention_efficiency.json",)),
    ("captioning", "caption", ("*.json",)),
    ("hardening_audit", "hardening", ("audit.json",)),
    ("onnx_weights", "onnx_weights", ("onnx_weights.json",)),
    ("real_data", "real_data", ("real_data.json",)),
    ("data_recipe", "data_recipe", ("results.json",)),
    ("staging_overhead", "staging", ("staging_overhead.json",)),
    ("phone_anchors", "anchors", ("anchors.json",)),
    ("optimum_int8", "optimum", ("optimum_int8.json",)),
    ("vilt_teacher", "vilt_teacher", ("results.json",)),
    ("hf_scale", "hf_scale", ("hf_scale.json",)),
    ("vlm_teacher", "vlm_teacher", ("results.json",)),
    ("vlm_teacher", "vlm_teacher_64", ("results.json",)),
    ("vlm_scale", "vlm_scale", ("results.json",)),
    ("pretraining_efficiency", "pretraining", ("pretraining_efficiency.json", "units/**/*.json")),
    ("pretraining_efficiency", "pretraining-prelim", ("pretraining_efficiency.json",)),
    ("pretraining_efficiency", "pretraining-round1", ("pretraining_efficiency.json",)),
]


def _script(name: str):
    for path in (ROOT, ROOT / "benchmarks"):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
    return importlib.import_module(name)


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def _png_software(path: Path) -> str | None:
    """The PNG's tEXt "Software" entry (matplotlib writes its version there)."""
    data, i = path.read_bytes(), 8
    while i + 8 <= len(data):
        (n,), kind = struct.unpack(">I", data[i:i + 4]), data[i + 4:i + 8]
        if kind == b"tEXt":
            key, _, value = data[i + 8:i + 8 + n].partition(b"\0")
            if key == b"Software":
                return value.decode("latin-1")
        i += 12 + n
    return None


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory) -> dict[str, Path]:
    """{report path relative to benchmarks/results: the regenerated file}, every regenerator run once."""
    made: dict[str, Path] = {}
    for script, folder, data in REGENERATORS:
        src, out = RESULTS / folder, tmp_path_factory.mktemp(script) / "out"
        out.mkdir()
        for pattern in data:
            for f in src.glob(pattern):
                (out / f.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, out / f.relative_to(src))
        before = {p for p in out.rglob("*") if p.is_file()}
        argv = ["--report-only", "--out", str(out)]
        _script(script).main(argv)
        for p in out.rglob("*"):
            if p.is_file() and p not in before:
                made[(Path(folder) / p.relative_to(out)).as_posix().removeprefix("./")] = p
    return made


def test_every_committed_report_has_a_regenerator(regenerated):
    committed = {p.relative_to(RESULTS).as_posix() for p in RESULTS.rglob("*.md")}
    missing = sorted(committed - set(regenerated))
    assert not missing, f"no benchmark's --report-only regenerates {missing}"


def test_reports_regenerate_byte_identical(regenerated):
    differ = [name for name in sorted(regenerated) if name.endswith(".md")
              and (RESULTS / name).exists() and regenerated[name].read_bytes() != (RESULTS / name).read_bytes()]
    assert not differ, (f"regenerated from their committed data, these reports differ from the committed ones: "
                        f"{differ}; fix the renderer, or re-render the report with the script's --report-only")


def test_figures_are_written_again(regenerated):
    committed = {p.relative_to(RESULTS).as_posix() for p in RESULTS.rglob("*.png")} - {"probe/vqa-default.png"}
    assert committed <= set(regenerated), f"figures not regenerated: {sorted(committed - set(regenerated))}"
    import matplotlib

    for name in sorted(committed):
        assert _png_size(regenerated[name]) == _png_size(RESULTS / name), f"{name}: another size than committed"
        if f"version{matplotlib.__version__}," in (_png_software(RESULTS / name) or ""):  # the same drawing code
            assert regenerated[name].read_bytes() == (RESULTS / name).read_bytes(), f"{name} differs from its data"


def test_pretraining_report_is_complete_and_shows_both_budgets():
    result = json.loads((RESULTS / "pretraining" / "pretraining_efficiency.json").read_text())
    assert result["pending"] == [], "the committed pretraining ledger has unfinished groups"
    text = (RESULTS / "pretraining" / "pretraining_efficiency.md").read_text()
    plan = result["plan"]
    assert "Incomplete" not in text
    for steps in (plan["finetune_steps"], plan["long_finetune_steps"]):
        for arm in ("rwd-rod", "mlm-mop", "floor"):
            assert f"{arm}/vqa/ft{steps}" in result["analysis"]["arms"], (arm, steps)
    assert f"## Both fine-tuning budgets, per seed ({plan['finetune_steps']} and {plan['long_finetune_steps']}" in text


def test_pretraining_ledger_keys_written_by_either_version_match():
    """Units recorded with an added field at its default (text_vocab='wordpiece') and without it are
    the same unit: the long fine-tunes were recorded one way, the short ones the other."""
    pe = _script("pretraining_efficiency")
    key = {"finetune": "TrainConfig(task='vqa', steps=600, data='scenes', text_vocab='wordpiece', "
                       "text_vocab_size=8000, model={})", "init": None}
    assert pe.normal_key(key) == pe.normal_key({**key, "finetune": "TrainConfig(task='vqa', steps=600, model={})"})
    assert pe.normal_key(key) != pe.normal_key({**key, "finetune": "TrainConfig(task='vqa', steps=601, model={})"})


def test_modality_pruning_signals_report_round_trip(tmp_path):
    """The one benchmark without committed results: its report is rewritten from its own JSON."""
    m = _script("modality_pruning_signals")
    rng = np.random.default_rng(0)
    rec = {a: {**{k: rng.random(40) for k in m.SIGNALS}, "changed": rng.random(40) < 0.3} for a in range(2)}
    summary = m.summarise(rec, 0.9, {"model": "models/tiny", "split": "val", "keep_ratio": 1.0})
    (tmp_path / "modality_pruning_signals.json").write_text(json.dumps(summary))
    m.main(["--report-only", "--out", str(tmp_path)])
    text = (tmp_path / "modality_pruning_signals.md").read_text()
    assert text == m.markdown(summary) + "\n" and "## After stage 1" in text
