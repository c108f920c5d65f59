"""The Android app's contract with `mmedge bench --device` (android_demo/BENCHMARK.md), tested from
both sides on this machine: the host's adb orchestration (mmedge.bench.adb, unchanged) drives a
scripted adb stand-in whose `am start` runs the app's benchmark path on the JVM
(android_demo/core: BenchmarkOptions, Engine, BenchmarkRunner, result and .done files; the stage
outputs replayed from the golden vectors instead of ONNX Runtime). The result must validate against
mmedge/bench/bench.schema.json, and its exit histograms, kept tokens and accuracy must equal what
the Python runtime's golden decisions give. A captioning bundle takes the same way through
`mmedge bench --device pixel` (CaptionEngine, CaptionBenchmarkRunner; graph calls replayed from
tests/vectors/caption/replay.json): its result must validate against
mmedge/caption/device_bench.schema.json and its captions and per-word exits equal the caption
vectors. A generative VLM bundle too (VLMEngine, VLMBenchmarkRunner): the host pushes the scene prompts
it draws, the phone's graph calls are replayed from a recording of the Python VLMEngine on those very
prompts (scripts/make_vlm_replay.py's Recorder, made here), and the generations must equal the Python
engine's, each prompt under its task's setting (the bundle copy holds settings per task). The JUnit tests of the core run in scripts/test_android_core.sh."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from mmedge.bench import adb, report
from mmedge.runtime.controller import Policy, standard_policies

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests/vectors/golden"
BUILD = ROOT / "android_demo/core/build/jvm"

FAKE_ADB = r'''#!{python}
"""A scripted adb stand-in: a phone whose file system is a local folder and whose
dev.mmedge.demo/.BenchmarkActivity is the Android core's JVM benchmark path."""
import json, os, shlex, shutil, subprocess, sys
from pathlib import Path
root = Path(os.environ["FAKE_ADB_ROOT"])
args = sys.argv[1:]
with open(root / "calls.log", "a") as f:
    f.write(json.dumps(args) + "\n")
if args[:1] == ["-s"]:
    args = args[2:]
def local(p):
    return root / "fs" / p.lstrip("/")
def unquote(a):
    return shlex.split(a)[0] if a else a
if args == ["devices"]:
    print("List of devices attached")
    print("PHONE1\tdevice")
elif args[:1] == ["push"]:
    shutil.copytree(args[1], local(args[2]) / Path(args[1]).name, dirs_exist_ok=True)
elif args[:1] == ["pull"]:
    shutil.copy(local(args[1]), args[2])
elif args[:3] == ["shell", "getprop", "ro.product.model"]:
    print("Pixel 8")
elif args[:2] == ["shell", "rm"]:
    shutil.rmtree(local(shlex.split(args[-1])[0]))
elif args[:2] == ["shell", "mkdir"]:
    for p in args[3:]:
        local(unquote(p)).mkdir(parents=True, exist_ok=True)
elif args[:3] == ["shell", "am", "start"]:
    words = [unquote(a) for a in args[3:]]
    assert words[:3] == ["-W", "-n", "dev.mmedge.demo/.BenchmarkActivity"], words
    java = ["java", "-Dmmedge.repo=" + os.environ["MMEDGE_REPO"], "-cp", os.environ["CORE_CLASSPATH"],
            "dev.mmedge.core.testing.BenchCli", "--golden", os.environ["GOLDEN"]]
    it = iter(words[3:])
    for flag in it:
        key, value = next(it), next(it)
        if key in ("mmedge.bundle", "mmedge.result", "mmedge.queries"):
            value = str(local(value))
        java += [flag, key, value]
    if os.environ.get("FAKE_REPLAY"):
        java[java.index("--golden"):java.index("--golden")] = ["--replay", os.environ["FAKE_REPLAY"]]
    done = subprocess.run(java, capture_output=True, text=True)
    (root / "app.log").write_text(done.stdout + done.stderr)
    print("Status: ok")
elif args[:1] == ["shell"]:
    path = unquote(args[1].split()[2])
    print("done" if local(path).exists() else "waiting")
else:
    print("unknown command", args, file=sys.stderr)
    sys.exit(1)
'''


@pytest.fixture(scope="module")
def core_classpath() -> str:
    if shutil.which("java") is None and shutil.which("apt-get") is None:
        pytest.skip("no JDK and no apt-get to install one")
    done = subprocess.run(["bash", str(ROOT / "scripts/test_android_core.sh"), "--build"], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return (BUILD / "classpath.txt").read_text().strip()


@pytest.fixture
def phone(tmp_path, monkeypatch, core_classpath):
    script = tmp_path / "adb"
    script.write_text(FAKE_ADB.replace("{python}", sys.executable))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("MMEDGE_ADB", str(script))
    monkeypatch.setenv("FAKE_ADB_ROOT", str(tmp_path))
    monkeypatch.setenv("CORE_CLASSPATH", core_classpath)
    monkeypatch.setenv("GOLDEN", str(GOLDEN))
    monkeypatch.setenv("MMEDGE_REPO", str(ROOT))
    return tmp_path


def _golden_bundle(tmp_path: Path) -> Path:
    doc = json.loads((GOLDEN / "queries.json").read_text())
    src = ROOT / doc["bundle"]
    dst = tmp_path / "host" / src.name
    shutil.copytree(src, dst)
    return dst


def _expected(manifest: dict) -> dict:
    """Per standard policy, from the Python runtime's golden decisions on the answered queries."""
    doc = json.loads((GOLDEN / "queries.json").read_text())
    answers = json.loads((GOLDEN / "android.json").read_text())["answers"]
    out = {}
    for name, (policy, ratio) in standard_policies(manifest).items():
        hist, correct, kept = [0] * len(manifest["exit_layers"]), 0, 0
        for q in doc["queries"]:
            if q["name"] not in answers:
                continue
            entry = q["by_keep_ratio"][str(ratio)]
            row = next(r for r in entry["policies"] if Policy(**r["policy"]) == policy)
            hist[row["exit_index"]] += 1
            correct += row["answer"] == answers[q["name"]]
            kept += len(entry["kept_index"])
        n = sum(hist)
        out[name] = {"exit_histogram": hist, "accuracy": correct / n, "kept_tokens": kept / n,
                     "mean_exit": sum(i * h for i, h in enumerate(hist)) / n}
    return out


def test_app_result_through_adb_validates_and_agrees_with_the_python_runtime(phone, tmp_path):
    bundle = _golden_bundle(tmp_path)
    result = adb.bench_device(bundle, serial="PHONE1", backend="onnxruntime", threads=1, runs=9, warmup=2,
                              cpu_affinity="0-1", poll_s=0.05, timeout_s=120)
    log = (phone / "app.log").read_text()
    assert "error" not in result, log
    # the host side's own validation, and the schema itself
    assert report.validate(result) == []
    schema = json.loads((ROOT / "mmedge/bench/bench.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(result)
    assert result["kind"] == "measured-on-device" and result["device"] == "Pixel 8" and result["serial"] == "PHONE1"
    assert result["schema_version"] == 1 and result["precision"] == "fp32" and result["threads"] == 1
    assert result["runs"] == 9 and result["warmup"] == 2 and result["samples"] == 6
    for key in ("load_ms", "first_inference_ms", "peak_rss_mb"):
        assert isinstance(result[key], float) and result[key] > 0, key
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert result["thresholds"] == manifest["thresholds"] and result["model"] == manifest["name"]
    want = _expected(manifest)
    assert list(result["policies"]) == list(want)
    for name, row in result["policies"].items():
        assert row["exit_histogram"] == want[name]["exit_histogram"], name
        assert row["accuracy"] == pytest.approx(want[name]["accuracy"]), name
        assert row["kept_tokens"] == pytest.approx(want[name]["kept_tokens"]), name
        assert row["mean_exit"] == pytest.approx(want[name]["mean_exit"]), name
        assert row["latency"]["n"] == 9 and row["latency"]["p50_ms"] <= row["latency"]["p99_ms"]
        policy, ratio = standard_policies(manifest)[name]
        first_stage = next(k["stages"][0] for k in manifest["keep_ratios"] if k["keep_ratio"] == ratio)
        assert {"preprocess", first_stage} <= set(row["stages"]) and "total" not in row["stages"]
        assert row["exit_policy"] == policy.to_dict() and row["keep_ratio"] == ratio
    assert result["policies"]["full depth, every token"]["speedup_p50"] == 1.0
    calls = [json.loads(line) for line in (phone / "calls.log").read_text().splitlines()]
    start = next(c for c in calls if "am" in c)
    assert start[start.index("mmedge.cpu_affinity") + 1] == "0-1"


def test_two_image_bundle_runs_on_the_queries_the_host_pushes(phone, tmp_path, monkeypatch):
    """An adapted NLVR2 bundle (two images per query) has no queries in the app: the host writes its
    own folder (mmedge.bench.query_folder), pushes it with the bundle and names it in the extras; the
    app reads it, and its figures equal the Python runtime's decisions on the same images."""
    import importlib.util

    from mmedge.bench.queries import Queries
    from mmedge.bench.query_folder import write_query_folder
    from mmedge.data.tasks import Sample

    vectors = ROOT / "tests/vectors/adapted/queries-nlvr2.json"
    doc = json.loads(vectors.read_text())
    spec = importlib.util.spec_from_file_location("make_adapted_vectors", ROOT / "scripts/make_adapted_vectors.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    answer = doc["labels"][1]  # every query's "right answer": accuracy is then the share answered so
    samples = [Sample([script.generated(im["width"], im["height"], im["channels"], im["pattern"], im["seed"])
                       for im in q["images"]], q["text"], answer, 1, doc["task"], "") for q in doc["queries"]]
    folder = write_query_folder(Queries(samples, "vectors", "test", "the test"), tmp_path / "queries")
    listed = json.loads((folder / "queries.json").read_text())["queries"]
    assert [len(q["images"]) for q in listed] == [2] * len(samples)
    src = ROOT / doc["bundle"]
    bundle = tmp_path / "host" / src.name
    shutil.copytree(src, bundle)
    monkeypatch.setenv("FAKE_REPLAY", str(vectors))
    result = adb.bench_device(bundle, serial="PHONE1", backend="onnxruntime", runs=len(samples), warmup=1,
                              poll_s=0.05, timeout_s=120, queries=folder)
    assert "error" not in result, (phone / "app.log").read_text()
    assert report.validate(result) == [] and result["samples"] == len(samples)
    manifest = json.loads((bundle / "manifest.json").read_text())
    for name, (policy, ratio) in standard_policies(manifest).items():
        rows = [next(r for r in q["by_keep_ratio"][str(ratio)]["policies"] if Policy(**r["policy"]) == policy)
                for q in doc["queries"]]
        row = result["policies"][name]
        hist = [sum(r["exit_index"] == i for r in rows) for i in range(len(manifest["exit_layers"]))]
        assert row["exit_histogram"] == hist, name
        assert row["accuracy"] == pytest.approx(sum(r["answer"] == answer for r in rows) / len(rows)), name
    calls = [json.loads(line) for line in (phone / "calls.log").read_text().splitlines()]
    start = next(c for c in calls if "am" in c)
    remote = start[start.index("mmedge.queries") + 1]
    assert remote.startswith(adb.DEVICE_ROOT + "/queries/")
    assert not (phone / "fs" / remote.lstrip("/")).exists(), "the pushed queries are removed after the run"


def test_app_error_reaches_the_host_as_a_device_error(phone, tmp_path):
    bundle = _golden_bundle(tmp_path)
    stage = next(bundle.glob("onnx/fp32/*stage1.onnx"))
    data = bytearray(stage.read_bytes())
    data[len(data) // 2] ^= 1
    stage.write_bytes(bytes(data))
    with pytest.raises(adb.DeviceError, match=r"the app reported: BundleException: .*hash mismatch"):
        adb.bench_device(bundle, serial="PHONE1", backend="onnxruntime", runs=3, warmup=0, poll_s=0.05, timeout_s=120)
    result = json.loads(next((phone / "fs").rglob("results/*.json")).read_text())
    assert set(result) == {"error"}
    assert list((phone / "fs").rglob("results/*.json.done"))


def test_bad_extras_are_reported_not_hung(phone, tmp_path):
    bundle = _golden_bundle(tmp_path)
    with pytest.raises(adb.DeviceError, match=r"(?s)ConfigException: invalid benchmark extras:.*mmedge.backend 'tflite'"):
        adb.bench_device(bundle, serial="PHONE1", backend="tflite", runs=3, warmup=0, poll_s=0.05, timeout_s=120)


def _caption_vectors():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_caption_vectors", ROOT / "scripts/make_caption_vectors.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_caption_bundle_through_adb_on_the_cli(phone, tmp_path, capsys):
    """`mmedge bench --device pixel` with a captioning bundle: the app's caption benchmark (JVM, replayed
    graph calls) returns captions, per-word exits and timings that validate and equal the caption vectors."""
    pytest.importorskip("safetensors")
    from mmedge.caption.bench import device_problems
    from mmedge.caption.metrics import caption_scores
    from mmedge.cli import main

    vectors = _caption_vectors()
    bundle = vectors.assemble_bundle(tmp_path / "host")
    out = tmp_path / "pixel-caption.json"
    code = main(["bench", "--artifact", str(bundle), "--device", "pixel", "--backend", "onnxruntime", "--samples", "4",
                 "--repeats", "2", "--warmup", "1", "--no-progress", "--json", str(out)])
    captured = capsys.readouterr()
    printed = captured.out
    assert code == 0, captured.err + ((phone / "app.log").read_text() if (phone / "app.log").exists() else "")
    assert "captions/s" in printed and "per-word exits" in printed
    result = json.loads(out.read_text())
    assert out.with_suffix(".md").exists()
    assert device_problems(result) == []
    assert result["kind"] == "measured-on-device" and result["task"] == "caption" and result["device"] == "Pixel 8"
    assert result["runs"] == 8 and result["warmup"] == 1 and result["samples"] == 4 and result["exits"] == 4
    doc = json.loads((ROOT / "tests/vectors/caption/vectors.json").read_text())
    scenes = [e for e in doc["images"] if "reference" in e]
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert list(result["policies"]) == ["full depth, every token", "prefilter only", "exits only", "prefilter + exits"]
    for name, row in result["policies"].items():
        # this bundle's thresholds are uncalibrated ("full", kv copy): every setting is full depth, greedy
        key = f"{row['keep_ratio']:g}"
        want = [next(r for r in e["by_keep_ratio"][key]["runs"] if r["policy"]["kind"] == "full" and r["kv"] == "copy"
                     and r["beam"] == 1 and r["max_len"] == manifest["decoder"]["max_len"]) for e in scenes]
        assert [c["text"] for c in row["captions"]] == [w["text"] for w in want], name
        assert [c["exits"] for c in row["captions"]] == [w["exits"] for w in want], name
        exits = [x for w in want for x in w["exits"]]
        assert row["exit_histogram"] == [exits.count(i) for i in range(4)], name
        assert row["words"] == pytest.approx(len(exits) / len(scenes))
        assert row["latency"]["n"] == 8 and row["captions_per_s"] == pytest.approx(1e3 / row["latency"]["p50_ms"])
        scores = caption_scores([w["text"] for w in want], [[e["reference"]] for e in scenes], meteor=False)
        assert row["cider"] == round(scores.cider, 2) and row["bleu4"] == round(scores.bleu4, 4)
    calls = [json.loads(line) for line in (phone / "calls.log").read_text().splitlines()]
    start = next(c for c in calls if "am" in c)
    assert start[start.index("mmedge.runs") + 1] == "8"


def test_caption_bundle_is_not_modelled(tmp_path):
    pytest.importorskip("safetensors")
    from mmedge.cli import main

    bundle = _caption_vectors().assemble_bundle(tmp_path)
    assert main(["bench", "--artifact", str(bundle), "--device", "pixel", "--modelled"]) == 2


# ---------------------------------------------------------------------------------------------- generative VLM
VLM_BUNDLE = ROOT / "tests/vectors/vlm/tiny-smolvlm-onnx.mmedge"


def _record_vlm_bench(bundle: Path, samples: int, out: Path) -> dict:
    """The Python VLMEngine on the bench's prompts (vlm_bench.bench_prompts, as the host draws and pushes them)
    under the four settings, each prompt under its task's (vlm_bench.settings), every graph call recorded
    (make_vlm_replay.Recorder) with the self-check's; writes the replay document the JVM's ReplayVLMRunner answers
    from and returns the generations and the (policy, keep ratio) per task by setting."""
    import hashlib
    import importlib.util

    from mmedge.adapt.vlm_bench import bench_prompts, settings
    from mmedge.runtime.vlm_engine import VLMEngine

    spec = importlib.util.spec_from_file_location("make_vlm_replay", ROOT / "scripts/make_vlm_replay.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    engine = VLMEngine.load(bundle, backend="onnxruntime", fmt="onnx", threads=1, self_check=False)
    recorder = script.Recorder(engine.session)
    engine.session = recorder
    engine.self_check()
    prompts, texts = bench_prompts(engine.manifest, samples)
    rows = settings(engine)
    made = {name: [engine.generate(image, text, policy=rows[name][task][0], keep_ratio=rows[name][task][1])
                   for image, text, task in zip(prompts.images, texts, prompts.tasks)]
            for name in rows}
    doc = {"format": script.FORMAT,
           "manifest_sha256": hashlib.sha256((bundle / "manifest.json").read_bytes()).hexdigest(),
           "columns": script.COLUMNS, "dim": recorder.dim, "zero": recorder.zero,
           "tensor_count": len(recorder.tensors), "tensors": recorder.tensors, "calls": list(recorder.calls.values())}
    out.write_text(script.dumps(doc))
    return {"generations": made, "settings": rows, "tasks": prompts.tasks, "references": prompts.references,
            "texts": texts}


def test_vlm_bundle_through_adb_on_the_cli(phone, tmp_path, capsys, monkeypatch):
    """`mmedge bench --device pixel` with a generative VLM bundle and a phone attached: the host draws the scene
    prompts as --device host does and pushes them with the bundle; the app's VLM benchmark (JVM, the graph calls
    replayed from the Python engine's) returns generations equal to the Python VLMEngine's under the four settings,
    with timings per setting, which the host checks, scores and reports as measured on the device. The bundle (a
    copy of the tiny one) holds its own settings for captions and for answers (thresholds.tasks, other policies
    and keep ratios than its top-level one's): each prompt runs under its task's, and each setting is reported per
    task as the host bench reports it."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("tokenizers")
    import numpy as np

    from mmedge.adapt.vlm_bench import quality
    from mmedge.bench.vlm_device import device_problems
    from mmedge.cli import main

    bundle = tmp_path / "host" / VLM_BUNDLE.name
    shutil.copytree(VLM_BUNDLE, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["layout"]["keep_ratios"] == [1.0, 0.5] and "manifest.sig" not in {p.name for p in bundle.iterdir()}
    tasks = {"caption": {"policy": "max_probability", "threshold": 0.2, "patience": 2, "keep_ratio": 1.0},
             "answer": {"policy": "patience", "threshold": 1.0, "patience": 2, "keep_ratio": 0.5}}
    manifest["thresholds"]["tasks"] = tasks  # the top level: confidence at keep 0.5
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    samples, repeats = 4, 2
    want = _record_vlm_bench(bundle, samples, tmp_path / "replay.json")
    monkeypatch.setenv("FAKE_REPLAY", str(tmp_path / "replay.json"))
    out = tmp_path / "pixel-vlm.json"
    code = main(["bench", "--artifact", str(bundle), "--device", "pixel", "--backend", "onnxruntime", "--samples",
                 str(samples), "--repeats", str(repeats), "--warmup", "1", "--no-progress", "--json", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err + ((phone / "app.log").read_text() if (phone / "app.log").exists() else "")
    assert "measured on the device" in captured.out and "MODELLED" not in captured.out
    result = json.loads(out.read_text())
    assert out.with_suffix(".md").exists() and out.with_suffix(".png").stat().st_size > 0
    assert device_problems(result) == []
    assert result["kind"] == "measured-on-device" and result["task"] == "vlm" and result["device"] == "Pixel 8"
    assert result["runs"] == samples * repeats and result["warmup"] == 1 and result["samples"] == samples
    assert result["precision"] == "fp32" and result["exits"] == 3 and result["kv"] == "copy"
    assert result["prompts"]["n"] == samples and result["prompts"]["captions"] == samples // 2
    assert result["thresholds"] == manifest["thresholds"] and result["model"] == manifest["name"]
    assert list(result["policies"]) == list(want["generations"])
    assert {t: (p.kind, r) for t, (p, r) in want["settings"]["prefilter + exits"].items()} == \
        {t: (s["policy"], s["keep_ratio"]) for t, s in tasks.items()}
    for (name, row), host_row in zip(result["policies"].items(), result["rows"]):
        gens = want["generations"][name]
        assert [g["text"] for g in row["generations"]] == [g.text for g in gens], name
        assert [g["tokens"] for g in row["generations"]] == [list(g.tokens) for g in gens], name
        assert [g["exits"] for g in row["generations"]] == [list(g.exits) for g in gens], name
        assert [g["prompt"] for g in row["generations"]] == want["texts"]
        assert [g["task"] for g in row["generations"]] == want["tasks"]
        assert [g["reference"] for g in row["generations"]] == want["references"]
        decoded = [e for g in gens for e in g.exits[1:]]
        assert row["exit_histogram"] == [decoded.count(s) for s in range(3)], name
        assert row["tokens"] == pytest.approx(sum(len(g.tokens) for g in gens) / samples)
        assert row["kept_visual_tokens"] == pytest.approx(sum(g.kept_visual_tokens for g in gens) / samples)
        cider, accuracy = quality([g.text for g in gens], want["tasks"], want["references"])
        assert row["cider"] == round(cider, 2) and row["accuracy"] == round(accuracy, 2), name
        assert row["first_token_ms"]["n"] == row["total_ms"]["n"] == samples * repeats
        assert host_row["setting"] == name and host_row["first_token_ms"]["p50"] == row["first_token_ms"]["p50"]
        # per task: the task's setting, its prompts' timings; the host's rows as the host bench's by_task
        settings = want["settings"][name]
        assert list(row["by_task"]) == list(host_row["by_task"]) == ["caption", "answer"]
        for task, part in row["by_task"].items():
            policy, ratio = settings[task]
            assert part["exit_policy"] == policy.to_dict() and part["keep_ratio"] == ratio, (name, task)
            assert part["total_ms"]["n"] == part["first_token_ms"]["n"] == want["tasks"].count(task) * repeats
            mine = [g for g, t in zip(gens, want["tasks"]) if t == task]
            exits = [e for g in mine for e in g.exits[1:]]
            host = host_row["by_task"][task]
            assert host["policy"] == policy.to_dict() and host["keep_ratio"] == ratio
            assert host["quality"] == round(cider if task == "caption" else accuracy, 2)
            assert host["mean_exit"] == (pytest.approx(float(np.mean(exits))) if exits else None)
            assert host["first_token_ms"]["p50"] == part["first_token_ms"]["p50"]
            full = result["policies"]["full depth, every token"]["by_task"][task]
            assert host["speedup_total"] == pytest.approx(full["total_ms"]["p50"] / part["total_ms"]["p50"])
        differ = len({(json.dumps(p.to_dict(), sort_keys=True), r) for p, r in settings.values()}) > 1
        assert differ == (name != "full depth, every token"), name
        assert (row["keep_ratio"] is None and row["exit_policy"] is None and host_row["keep_ratio"] is None
                and host_row["policy"] is None) if differ else (row["keep_ratio"] == 1.0 and host_row["keep_ratio"] == 1.0)
    assert result["rows"][0]["speedup_total"] == 1.0
    assert all(r["by_task"][t]["speedup_total"] == 1.0 for r in result["rows"][:1] for t in r["by_task"])
    markdown = out.with_suffix(".md").read_text()
    assert "Per task" in markdown and "per task" in markdown and "settings per task" in markdown
    calls = [json.loads(line) for line in (phone / "calls.log").read_text().splitlines()]
    start = next(c for c in calls if "am" in c)
    assert start[start.index("mmedge.runs") + 1] == str(samples * repeats)
    remote = start[start.index("mmedge.queries") + 1]
    assert not (phone / "fs" / remote.lstrip("/")).exists(), "the pushed prompts are removed after the run"


def test_vlm_bundle_error_on_the_phone_reaches_the_cli(phone, tmp_path, capsys):
    """A tampered generative VLM bundle: the app refuses it ({"error": ...} and the .done file), the host says so."""
    from mmedge.cli import main

    bundle = tmp_path / "host" / VLM_BUNDLE.name
    shutil.copytree(VLM_BUNDLE, bundle)
    step = bundle / "onnx/fp32/step1.onnx"
    data = bytearray(step.read_bytes())
    data[len(data) // 2] ^= 1
    step.write_bytes(bytes(data))
    # the host reads the manifest without the files' hashes to draw the prompts; the app checks every hash
    code = main(["bench", "--artifact", str(bundle), "--device", "pixel", "--backend", "onnxruntime", "--samples", "2",
                 "--repeats", "1", "--warmup", "0", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "the app reported: BundleException:" in err and "hash mismatch" in err, err
    result = json.loads(next((phone / "fs").rglob("results/*.json")).read_text())
    assert set(result) == {"error"}
    assert list((phone / "fs").rglob("results/*.json.done"))
