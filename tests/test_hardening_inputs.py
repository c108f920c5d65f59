"""Issue #17 hardening: float images, broken Pillow images, exit-policy types, calibration's
arguments and shell quoting for adb (no model, no export: fast)."""

from __future__ import annotations

import io
import json
import math
import shlex
import stat
import sys

import numpy as np
import pytest
from PIL import Image

from mmedge.data.preprocess import preprocess_image
from mmedge.data.tasks import make_sample
from mmedge.errors import ConfigError, ImageError
from mmedge.runtime.controller import Policy

# ------------------------------------------------------------------ preprocess: float arrays


def test_float_images_in_0_255_are_refused_not_whitened():
    img = make_sample("vqa", 0, "test", 0).image.astype(np.float32)  # 0..255 floats
    with pytest.raises(ImageError, match="float images must be in 0..1; divide by 255 or pass uint8"):
        preprocess_image(img, 48)
    with pytest.raises(ImageError, match="0..1"):
        preprocess_image(np.full((16, 16, 3), -0.5, dtype=np.float64), 16)
    with pytest.raises(ImageError, match="0..1"):
        preprocess_image(np.full((16, 16), 1.01, dtype=np.float32), 16)


def test_float_images_in_0_1_and_rounding_overshoot_are_accepted():
    img = make_sample("vqa", 0, "test", 0).image
    assert np.allclose(preprocess_image(img.astype(np.float32) / 255.0, 48), preprocess_image(img, 48), atol=1e-6)
    over = np.full((16, 16, 3), 1.0 + 5e-4, dtype=np.float32)  # within the documented 1e-3 tolerance
    assert np.allclose(preprocess_image(over, 16), 1.0)
    assert np.allclose(preprocess_image(np.full((16, 16, 3), -5e-4), 16), -1.0)


def test_pillow_float_images_keep_their_handling():
    bright = Image.fromarray(np.full((16, 16), 300.0, dtype=np.float32), "F")  # over 255: clipped, as before
    assert np.allclose(preprocess_image(bright, 16), 1.0)
    unit = Image.fromarray(np.full((16, 16), 0.5, dtype=np.float32), "F")   # 0..1 read as such
    assert np.allclose(preprocess_image(unit, 16), (128 / 255 - 0.5) / 0.5, atol=1e-6)
    with pytest.raises(ImageError, match="NaN"):
        preprocess_image(Image.fromarray(np.full((16, 16), np.nan, dtype=np.float32), "F"), 16)


# ------------------------------------------------------------------ preprocess: broken Pillow images


def _encoded(fmt: str) -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_lazy_pillow_images_are_image_errors(tmp_path, fmt):
    data = _encoded(fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(data[: len(data) * 2 // 3])
    with Image.open(path) as lazy:  # opening reads only the header
        with pytest.raises(ImageError, match="truncated, closed"):
            preprocess_image(lazy, 16)
    with pytest.raises(ImageError, match="truncated"):
        preprocess_image(path, 16)


def test_closed_pillow_images_are_image_errors(tmp_path):
    path = tmp_path / "ok.png"
    path.write_bytes(_encoded("PNG"))
    lazy = Image.open(path)
    lazy.close()
    with pytest.raises(ImageError, match="truncated, closed"):
        preprocess_image(lazy, 16)
    loaded = Image.open(path)
    loaded.load()
    loaded.close()
    with pytest.raises(ImageError, match="closed"):
        preprocess_image(loaded, 16)
    in_memory = Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8))
    in_memory.close()
    with pytest.raises(ImageError, match="closed"):
        preprocess_image(in_memory, 16)


# ------------------------------------------------------------------ controller: Policy types


@pytest.mark.parametrize("kwargs", [
    dict(patience="2"), dict(patience=2.0), dict(patience=True),
    dict(threshold="0.9"), dict(threshold=True), dict(threshold=math.inf), dict(threshold=math.nan),
    dict(kind="latency_budget", budget_ms=math.nan), dict(kind="latency_budget", budget_ms=math.inf),
    dict(kind="latency_budget", budget_ms=True), dict(kind="latency_budget", budget_ms="5"),
    dict(budget_ms=math.nan),
])
def test_policy_refuses_mistyped_and_non_finite_values(kwargs):
    with pytest.raises(ConfigError, match="exit policy"):
        Policy(**kwargs)


def test_policy_accepts_numpy_and_plain_numbers():
    p = Policy("confidence", threshold=np.float32(0.5), patience=np.int64(3))
    assert p.threshold == 0.5 and p.patience == 3
    assert Policy("latency_budget", threshold=0, budget_ms=5).budget_ms == 5
    assert Policy("confidence", threshold=1).threshold == 1


# ------------------------------------------------------------------ calibration arguments


def test_calibration_refuses_a_meaningless_bound_before_loading_anything(tmp_path):
    from mmedge.runtime.calibrate import MIN_SAMPLES, calibrate, choose

    missing = tmp_path / "no-such.mmedge"  # never opened: the arguments are refused first
    for kwargs, what in [(dict(z=-3), "z -3"), (dict(z=math.nan), "z nan"), (dict(z=math.inf), "z inf"),
                         (dict(max_drop=math.nan), "max drop nan"), (dict(max_drop=1.0), "max drop 1.0"),
                         (dict(max_drop=-0.1), "max drop -0.1"), (dict(samples=1), f"at least {MIN_SAMPLES}"),
                         (dict(samples=0), f"at least {MIN_SAMPLES}"), (dict(data_seed=-1), "data seed")]:
        with pytest.raises(ConfigError, match=what):
            calibrate(missing, **kwargs)
    labels = np.zeros(MIN_SAMPLES - 1, dtype=int)
    with pytest.raises(ConfigError, match=f"at least {MIN_SAMPLES}"):
        choose(labels, {}, 0.01)
    with pytest.raises(ConfigError, match="z -1"):
        choose(np.zeros(MIN_SAMPLES, dtype=int), {}, 0.01, z=-1)


def test_demo_refuses_too_few_calibration_samples_before_exporting(tmp_path):
    from mmedge.demo import run_demo

    for kwargs, what in [(dict(calibration_samples=1), "--calibration-samples 100"),
                         (dict(calibration_samples=0), "at least 100"), (dict(max_drop=math.nan), "max drop"),
                         (dict(threads=0), "threads"), (dict(threads=-1), "threads"), (dict(samples=0), "samples")]:
        with pytest.raises(ConfigError, match=what):
            run_demo(tmp_path / "no-model", tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ adb: quoting and validation

# A stand-in adb whose `shell` re-parses its joined arguments the way the phone's shell does
# (adb joins them with spaces), and records the words the phone would run.
DEVICE_ADB = r'''#!{python}
import json, os, shlex, sys
from pathlib import Path
root = Path(os.environ["FAKE_ADB_ROOT"])
args = sys.argv[1:]
if args[:1] == ["-s"]:
    args = args[2:]
with open(root / "calls.log", "a") as f:
    f.write(json.dumps(args) + "\n")
def local(p):
    return root / "fs" / p.lstrip("/")
if args == ["devices"]:
    print("List of devices attached\nPHONE\tdevice")
elif args[:1] == ["push"]:
    import shutil
    shutil.copytree(args[1], local(args[2]) / Path(args[1]).name, dirs_exist_ok=True)
elif args[:1] == ["pull"]:
    import shutil
    shutil.copy(local(args[1]), args[2])
elif args[:1] == ["shell"]:
    line = " ".join(args[1:])
    with open(root / "device_lines.log", "a") as f:
        f.write(line + "\n")
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    commands, words = [[]], None
    for token in lexer:  # unquoted ; && || | & separate commands, as on the phone
        if token in (";", "&&", "||", "|", "&"):
            commands.append([])
        else:
            commands[-1].append(token)
    with open(root / "device_words.log", "a") as f:
        for command in commands:
            if command:
                f.write(json.dumps(command) + "\n")
    words = commands[0]
    if words[:2] == ["getprop", "ro.product.model"]:
        print("Pixel 8")
    elif words[:1] == ["mkdir"]:
        for p in words[2:]:
            local(p).mkdir(parents=True, exist_ok=True)
    elif words[:2] == ["am", "start"]:
        extras = {}
        it = iter(words[5:])
        for flag in it:
            key = next(it)
            extras[key] = next(it)
        result = local(extras["mmedge.result"])
        lat = {"n": 3, "mean_ms": 5.0, "std_ms": 0.1, "min_ms": 4.9, "p50_ms": 5.0, "p90_ms": 5.1, "p99_ms": 5.2,
               "max_ms": 5.2}
        result.write_text(json.dumps({"schema_version": 1, "backend": extras["mmedge.backend"],
            "precision": extras["mmedge.precision"], "threads": int(extras["mmedge.threads"]),
            "load_ms": 12.0, "first_inference_ms": 9.0, "peak_rss_mb": 80.0,
            "policies": {"full depth, every token": {"latency": lat, "accuracy": 0.9, "exit_histogram": [0, 0, 3],
                         "kept_tokens": 36, "mean_exit": 2.0, "throughput_qps": 200.0}}}))
        Path(str(result) + ".done").write_text("")
    elif words[:2] == ["test", "-f"]:
        print("done" if local(words[2]).exists() else "waiting")
'''


@pytest.fixture
def device_adb(tmp_path, monkeypatch):
    script = tmp_path / "adb"
    script.write_text(DEVICE_ADB.replace("{python}", sys.executable))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("MMEDGE_ADB", str(script))
    monkeypatch.setenv("FAKE_ADB_ROOT", str(tmp_path))
    return tmp_path


def _bundle(tmp_path, name="b.mmedge"):
    bundle = tmp_path / name
    bundle.mkdir()
    (bundle / "manifest.json").write_text("{}")
    return bundle


def test_adb_shell_arguments_are_quoted_for_the_phone(device_adb, tmp_path):
    from mmedge.bench import adb

    backend = "executorch; touch PWNED"  # free text from --backend reaches the intent extras
    result = adb.bench_device(_bundle(tmp_path), backend=backend, cpu_affinity="0,2,4-5", poll_s=0.01)
    assert result["backend"] == backend  # arrived as one word, not as a second command
    words = [json.loads(line) for line in (device_adb / "device_words.log").read_text().splitlines()]
    assert not any(w[:1] == ["touch"] for w in words)
    start = next(w for w in words if w[:2] == ["am", "start"])
    assert start[start.index("mmedge.backend") + 1] == backend
    assert start[start.index("mmedge.cpu_affinity") + 1] == "0,2,4-5"
    calls = [json.loads(line) for line in (device_adb / "calls.log").read_text().splitlines()]
    am = next(c for c in calls if c[:3] == ["shell", "am", "start"])
    assert shlex.quote(backend) in am  # each argument is quoted for the phone's shell
    assert all(len(shlex.split(a)) == 1 and shlex.quote(shlex.split(a)[0]) == a for a in am[1:])


@pytest.mark.parametrize("affinity", ["4-7; touch PWNED", "4-7 && reboot", "$(reboot)", "`id`", "4-", "a-b",
                                      "7-4", "", " 4-7"])
def test_adb_refuses_anything_but_a_cpu_list(device_adb, tmp_path, affinity):
    from mmedge.bench import adb

    with pytest.raises(ConfigError, match="not a CPU list"):
        adb.bench_device(_bundle(tmp_path), cpu_affinity=affinity, poll_s=0.01)
    assert not (device_adb / "calls.log").exists()  # refused before adb ran at all


@pytest.mark.parametrize("name", ["b;touch PWNED.mmedge", "b c.mmedge", "$(id).mmedge", "-rf.mmedge",
                                  "b'q.mmedge"])
def test_adb_refuses_a_bundle_name_unsafe_on_the_phone(device_adb, tmp_path, name):
    from mmedge.bench import adb

    with pytest.raises(ConfigError, match="unsafe"):
        adb.bench_device(_bundle(tmp_path, name), poll_s=0.01)
    assert not (device_adb / "calls.log").exists()
