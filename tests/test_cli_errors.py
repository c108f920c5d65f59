"""Issue #17 hardening: every CLI verb refuses nonsense arguments up front, with exit status 2 and
one error line (argparse's, or mmedge's own), never a traceback and never after the expensive part."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mmedge.cli import main

SHIPPED = Path(__file__).resolve().parents[1] / "models" / "vqa-default"


def run_main(capsys, *argv) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse's errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def refused(capsys, *argv, match: str) -> str:
    """Run the CLI; assert exit 2, one error line that contains `match`, no traceback; return the line."""
    code, out, err = run_main(capsys, *argv)
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert code == 2, (code, out, err)
    assert "Traceback" not in err and len(lines) == 1 and err.splitlines()[-1] == lines[0], err
    assert match in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def a_file(tmp_path) -> Path:
    path = tmp_path / "plain.txt"
    path.write_text("not a directory")
    return path


@pytest.fixture
def latin1_config(tmp_path) -> Path:
    path = tmp_path / "latin1.json"
    path.write_bytes('{"description": "caf\u00e9"}'.encode("latin-1"))  # 0xe9: not UTF-8
    return path


# ------------------------------------------------------------------ calibrate (item 8)


@pytest.mark.parametrize("args, match", [
    (["--z", "-3"], "--z"), (["--z", "nan"], "--z"), (["--z", "inf"], "--z"),
    (["--max-drop", "nan"], "--max-drop"), (["--max-drop", "1.5"], "--max-drop"),
    (["--max-drop", "-0.1"], "--max-drop"),
    (["--samples", "1"], "at least 100"), (["--samples", "0"], "at least 100"), (["--data-seed", "-1"], "--data-seed"),
])
def test_calibrate_refuses_a_meaningless_bound_up_front(capsys, tmp_path, args, match):
    refused(capsys, "calibrate", "--artifact", tmp_path / "missing.mmedge", *args, match=match)


def test_config_errors_are_printed_on_one_line(capsys, tmp_path):
    line = refused(capsys, "calibrate", "--artifact", tmp_path / "missing.mmedge", "--samples", "3",
                   match="calibration needs at least 100 samples")
    assert line.startswith("mmedge calibrate: error: invalid calibration arguments: samples 3")


# ------------------------------------------------------------------ demo (items 8, 13)


@pytest.mark.parametrize("args, match", [
    (["--calibration-samples", "1"], "at least 100"), (["--calibration-samples", "0"], "--calibration-samples"),
    (["--max-drop", "nan"], "--max-drop"), (["--threads", "-1"], "--threads"), (["--threads", "0"], "--threads"),
    (["--samples", "0"], "--samples"),
])
def test_demo_refuses_bad_arguments_before_exporting(capsys, tmp_path, args, match):
    refused(capsys, "demo", "--model", tmp_path / "no-model", "--out", tmp_path / "out", *args, match=match)
    assert not (tmp_path / "out").exists()


def test_demo_out_must_be_a_writable_directory(capsys, tmp_path, a_file):
    refused(capsys, "demo", "--model", tmp_path / "no-model", "--out", a_file, match="not a directory")


# ------------------------------------------------------------------ data (item 13)


def test_data_refuses_negative_indices_and_seeds(capsys, tmp_path):
    refused(capsys, "data", "--start", "-1", "--out", tmp_path / "s.png", match="--start")
    refused(capsys, "data", "--data-seed", "-3", "--out", tmp_path / "s.png", match="--data-seed")
    assert not (tmp_path / "s.png").exists()


def test_data_out_that_is_a_directory_is_refused_before_writing(capsys, tmp_path):
    target = tmp_path / "sheets"
    target.mkdir()
    refused(capsys, "data", "--n", "1", "--out", target, match="is a directory")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sheets"]  # no temporary file left beside it
    assert list(target.iterdir()) == []


def test_data_out_under_a_file_is_refused(capsys, a_file):
    refused(capsys, "data", "--n", "1", "--out", a_file / "s.png", match="not a directory")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can write anywhere")
def test_data_out_in_a_read_only_directory_is_refused(capsys, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        refused(capsys, "data", "--n", "1", "--out", locked / "s.png", match="not writable")
    finally:
        locked.chmod(0o700)


# ------------------------------------------------------------------ eval (item 13)


def test_eval_checks_its_json_destination_before_evaluating(capsys, a_file):
    refused(capsys, "eval", "--model", SHIPPED, "--limit", "1", "--no-progress", "--json", a_file / "r.json",
            match="--json")
    assert "Accuracy" not in capsys.readouterr().out


def test_eval_refuses_a_negative_seed_and_a_directory_as_json(capsys, tmp_path):
    refused(capsys, "eval", "--model", SHIPPED, "--data-seed", "-1", match="--data-seed")
    refused(capsys, "eval", "--model", SHIPPED, "--limit", "1", "--json", tmp_path, match="is a directory")


# ------------------------------------------------------------------ train / pretrain (item 13)


def test_train_out_under_a_file_is_refused(capsys, a_file):
    refused(capsys, "train", "--out", a_file / "run", match="not a directory")
    refused(capsys, "train", "--out", a_file, match="not a directory")


def test_config_files_that_are_not_utf8_are_config_errors(capsys, tmp_path, latin1_config):
    refused(capsys, "train", "--config", latin1_config, "--out", tmp_path / "run", match="not UTF-8")
    refused(capsys, "pretrain", "--config", latin1_config, "--out", tmp_path / "pre", match="not UTF-8")
    refused(capsys, "export", "--model", SHIPPED, "--recipe", latin1_config, "--out", tmp_path / "b.mmedge",
            match="not UTF-8")
    assert not (tmp_path / "b.mmedge").exists()


def test_train_resume_with_nothing_to_resume_is_an_error(capsys, tmp_path, tiny_config):
    line = refused(capsys, "train", "--config", tiny_config, "--out", tmp_path / "fresh", "--resume",
                   "--no-progress", match="nothing to resume")
    assert "drop --resume" in line
    assert not (tmp_path / "fresh" / "metrics.jsonl").exists()


def test_trainer_resume_needs_a_checkpoint(tmp_path):
    from mmedge.errors import ConfigError
    from mmedge.train.config import TrainConfig
    from mmedge.train.trainer import Trainer

    from conftest import TINY

    (tmp_path / "metrics.jsonl").write_text("")  # a run stopped before its first checkpoint
    with pytest.raises(ConfigError, match="nothing to resume.*--force"):
        Trainer(TrainConfig(**TINY), tmp_path, resume=True, progress=False)


def test_pretrain_out_under_a_file_is_refused(capsys, a_file):
    refused(capsys, "pretrain", "--out", a_file / "pre", match="not a directory")


# ------------------------------------------------------------------ export (item 13)


def test_export_checks_that_its_out_parent_is_writable(capsys, a_file):
    refused(capsys, "export", "--model", SHIPPED, "--out", a_file / "b.mmedge", match="not a directory")


# ------------------------------------------------------------------ bench (items 9, 13)


@pytest.mark.parametrize("args, match", [
    (["--warmup", "-5"], "--warmup"), (["--cooldown", "-5"], "--cooldown"), (["--cooldown", "nan"], "--cooldown"),
    (["--threads", "0"], "--threads"), (["--samples", "0"], "--samples"), (["--repeats", "-1"], "--repeats"),
    (["--device", "pixel", "--cpu-affinity", "4-7; touch PWNED"], "not a CPU list"),
])
def test_bench_refuses_bad_arguments(capsys, tmp_path, args, match):
    refused(capsys, "bench", "--artifact", tmp_path / "missing.mmedge", *args, match=match)


def test_bench_json_destination_is_checked_up_front(capsys, tmp_path, a_file):
    refused(capsys, "bench", "--artifact", tmp_path / "missing.mmedge", "--json", a_file / "r.json",
            match="not a directory")
    refused(capsys, "bench", "--artifact", tmp_path / "missing.mmedge", "--json", tmp_path, match="is a directory")


def test_valid_paths_and_numbers_still_pass(capsys, tmp_path):
    code, out, err = run_main(capsys, "data", "--n", "1", "--start", "0", "--data-seed", "0",
                              "--out", tmp_path / "new" / "dir" / "s.png")
    assert code == 0 and (tmp_path / "new" / "dir" / "s.png").is_file(), err


# ------------------------------------------------------------------ issue 31, defect 15: an --out that cannot be made


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc (nothing can be created in it)")
@pytest.mark.parametrize("argv", [
    ["export", "--model", SHIPPED, "--out", "/proc/nope/x"],
    ["bundle", "--artifact", SHIPPED / "bundles" / "vqa-default-onnx.mmedge", "--runtime", "onnxruntime",
     "--out", "/proc/nope/x"],
    ["data", "--n", "1", "--out", "/proc/nope/x.png"],
    ["train", "--out", "/proc/nope/x"],
    ["pretrain", "--out", "/proc/nope/x"],
    ["demo", "--out", "/proc/nope/x"],
    ["sign", "--new-key", "/proc/nope/keys"],
    ["eval", "--model", SHIPPED, "--json", "/proc/nope/r.json"],
    ["bench", "--artifact", SHIPPED, "--json", "/proc/nope/r.json"],
    ["probe", "--model", SHIPPED, "--json", "/proc/nope/r.json"],
], ids=lambda argv: argv[0])
def test_an_out_that_cannot_be_created_is_one_line(capsys, argv):
    refused(capsys, *argv, match="/proc/nope")


def test_os_errors_past_the_checks_are_one_line(capsys, monkeypatch, tmp_path):
    """The CLI's last guard: an OSError the up-front checks could not foresee is one line too."""
    import mmedge.cli.data_cmd as data_cmd

    def fail(args):
        raise PermissionError(13, "Permission denied", str(tmp_path / "s.png"))

    monkeypatch.setattr(data_cmd, "run", fail)
    line = refused(capsys, "data", "--n", "1", "--out", tmp_path / "s.png", match="Permission denied")
    assert str(tmp_path / "s.png") in line
