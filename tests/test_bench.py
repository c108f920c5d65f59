"""The bench harness: statistics, schema, reports, cost model, and adb orchestration against a
scripted adb stand-in (no timing assertions)."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import numpy as np
import pytest

from mmedge.bench import report
from mmedge.bench.stats import iqr_ratio, summarize


def test_summarize_gives_percentiles_and_spread():
    s = summarize(range(1, 101))
    assert s["n"] == 100 and s["min_ms"] == 1 and s["max_ms"] == 100
    assert s["p50_ms"] == pytest.approx(50.5) and s["p90_ms"] == pytest.approx(90.1)
    assert s["std_ms"] == pytest.approx(np.std(np.arange(1, 101), ddof=1))
    with pytest.raises(ValueError):
        summarize([])
    r = iqr_ratio([2.0] * 50, [1.0] * 50)
    assert r["ratio"] == 2.0 and r["ci90"] == [2.0, 2.0]


@pytest.mark.slow
def test_host_bench_result_matches_its_schema_and_reports(tiny_bundle, tmp_path):
    from mmedge.bench.host import bench_host
    from mmedge.bench.profile import onnxruntime_op_profile

    result = bench_host(tiny_bundle, "onnxruntime", "fp32", threads=1, samples=6, repeats=2, warmup=2,
                        progress=False)
    result["op_profile"] = onnxruntime_op_profile(tiny_bundle, runs=3)
    assert report.validate(result) == []
    assert result["queries"] == {"data": "scenes", "split": "test", "n": 6, "chosen_by": "the bundle's labels",
                                 "out_of_vocabulary": 0}  # a scene-trained bundle: the scenes' test split
    assert set(result["policies"]) == {"full depth, every token", "prefilter only", "exits only", "prefilter + exits"}
    for p in result["policies"].values():
        assert sum(p["exit_histogram"]) == 6 and p["latency"]["n"] == 12
        assert p["latency"]["p50_ms"] <= p["latency"]["p90_ms"] <= p["latency"]["p99_ms"]
    full = result["policies"]["full depth, every token"]
    assert full["mean_exit"] == 2 and full["speedup_p50"] == 1.0
    assert result["machine"]["logical_cores"] >= 1 and "onnxruntime" in result["machine"]["libraries"]
    assert any("MatMul" in ops or "Gemm" in ops for ops in result["op_profile"]["stages"].values())
    made = report.write(result, tmp_path / "host.json")
    assert [p.suffix for p in made] == [".json", ".md", ".png"]
    text = (tmp_path / "host.md").read_text()
    assert "speed-up (p50)" in text and "Per-operator time" in text
    bad = dict(result, kind="guessed")
    assert report.validate(bad)


@pytest.mark.slow
def test_cost_model_counts_the_graphs_flops_and_is_labelled(tiny_bundle):
    from mmedge.bench.costmodel import PROFILES, MATMUL_OPS, graph_costs, model_device, predict_ms
    from mmedge.bundle.manifest import load_manifest

    manifest = load_manifest(tiny_bundle)
    art = next(a for a in manifest["artifacts"] if a["format"] == "onnx" and a["precision"] == "fp32")
    for stage in ("k36_stage1", "k18_stage2"):
        costs = graph_costs(tiny_bundle / art["stages"][stage]["file"])
        matmul = sum(c.flops for c in costs if c.op in MATMUL_OPS)
        torch_count = manifest["stages"][stage]["flops"]  # torch.utils.flop_counter at export
        assert matmul == pytest.approx(torch_count, rel=0.1)
    costs = graph_costs(tiny_bundle / art["stages"]["k36_stage1"]["file"])
    assert predict_ms(costs, PROFILES["pixel-8"]) < predict_ms(costs, PROFILES["raspberry-pi-5"])
    modelled = model_device(tiny_bundle, "pixel")
    assert modelled["kind"] == "modelled" and "MODELLED" in modelled["note"]
    assert modelled["profile"]["name"] == "pixel-8"
    exits = modelled["by_keep_ratio"]["1.0"]["exit_ms"]
    assert exits == sorted(exits)
    assert report.validate(modelled) == []
    assert "MODELLED, not measured" in report.markdown(modelled)


FAKE_ADB = r'''#!{python}
"""A scripted adb stand-in: a device whose file system is a local folder."""
import json, os, shlex, shutil, sys
from pathlib import Path
root = Path(os.environ["FAKE_ADB_ROOT"])
log = root / "calls.log"
args = sys.argv[1:]
with open(log, "a") as f:
    f.write(json.dumps(args) + "\n")
if args[:1] == ["-s"]:
    args = args[2:]
def local(p):
    return root / "fs" / p.lstrip("/")
if args == ["devices"]:
    print("List of devices attached")
    for serial in os.environ.get("FAKE_ADB_DEVICES", "").split():
        print(f"{serial}\tdevice")
elif args[:1] == ["push"]:
    dst = local(args[2]) / Path(args[1]).name
    shutil.copytree(args[1], dst, dirs_exist_ok=True)
elif args[:1] == ["pull"]:
    shutil.copy(local(args[1]), args[2])
elif args[:3] == ["shell", "getprop", "ro.product.model"]:
    print("Pixel 8")
elif args[:2] == ["shell", "rm"]:
    gone = local(shlex.split(args[-1])[0])
    (root / "removed").mkdir(exist_ok=True)
    shutil.move(gone, root / "removed" / gone.name)
elif args[:2] == ["shell", "mkdir"]:
    for p in args[3:]:
        local(p).mkdir(parents=True, exist_ok=True)
elif args[:3] == ["shell", "am", "start"]:
    it = iter(args[6:])
    extras = {}
    for flag in it:
        key = next(it); value = next(it)
        extras[key] = value
    result = local(extras["mmedge.result"])
    bundle = local(extras["mmedge.bundle"])
    if not (bundle / "manifest.json").is_file():
        result.write_text(json.dumps({"error": "bundle not found"}))
    else:
        lat = {"n": 3, "mean_ms": 5.0, "std_ms": 0.1, "min_ms": 4.9, "p50_ms": 5.0, "p90_ms": 5.1, "p99_ms": 5.2, "max_ms": 5.2}
        # the fields BenchmarkRunner writes (android_demo/BENCHMARK.md), with fixed figures
        result.write_text(json.dumps({"schema_version": 1, "backend": extras["mmedge.backend"],
            "precision": extras["mmedge.precision"], "threads": int(extras["mmedge.threads"]), "model": "m",
            "task": "vqa", "bundle": extras["mmedge.bundle"], "artifact": "stages", "samples": 3,
            "runs": int(extras["mmedge.runs"]), "warmup": int(extras["mmedge.warmup"]),
            "load_ms": 12.0, "first_inference_ms": 9.0, "peak_rss_mb": 80.0, "peak_pss_mb": 60.0,
            "app": "fake adb",
            "policies": {"full depth, every token": {"keep_ratio": 1.0, "latency": lat, "stages": {},
                         "accuracy": 0.9, "exit_histogram": [0, 0, 3], "kept_tokens": 36, "mean_exit": 2.0,
                         "throughput_qps": 200.0, "speedup_p50": 1.0}}}))
    Path(str(result) + ".done").write_text("")
elif args[:1] == ["shell"]:
    cmd = args[1]
    path = cmd.split()[2]
    print("done" if local(path).exists() else "waiting")
else:
    print("unknown command", args, file=sys.stderr)
    sys.exit(1)
'''


@pytest.fixture
def fake_adb(tmp_path, monkeypatch):
    script = tmp_path / "adb"
    script.write_text(FAKE_ADB.replace("{python}", sys.executable))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("MMEDGE_ADB", str(script))
    monkeypatch.setenv("FAKE_ADB_ROOT", str(tmp_path))
    return tmp_path


def test_adb_orchestration_against_a_scripted_stand_in(fake_adb, tmp_path, monkeypatch):
    from mmedge.bench import adb

    bundle = tmp_path / "b.mmedge"
    bundle.mkdir()
    (bundle / "manifest.json").write_text("{}")
    monkeypatch.setenv("FAKE_ADB_DEVICES", "")
    with pytest.raises(adb.DeviceError, match="no Android device"):
        adb.bench_device(bundle)
    monkeypatch.setenv("FAKE_ADB_DEVICES", "AAA BBB")
    with pytest.raises(adb.DeviceError, match="--serial"):
        adb.bench_device(bundle)
    result = adb.bench_device(bundle, serial="BBB", backend="executorch", threads=2, runs=30, warmup=5,
                              cpu_affinity="4-7", poll_s=0.01)
    assert result["kind"] == "measured-on-device" and result["device"] == "Pixel 8" and result["serial"] == "BBB"
    assert result["threads"] == 2 and report.validate(result) == []
    calls = [json.loads(line) for line in (fake_adb / "calls.log").read_text().splitlines()]
    start = next(c for c in calls if "am" in c)
    assert start[:2] == ["-s", "BBB"] and "dev.mmedge.demo/.BenchmarkActivity" in start
    assert start[start.index("mmedge.cpu_affinity") + 1] == "4-7"
    assert start[start.index("mmedge.runs") + 1] == "30"
    assert (fake_adb / "fs/sdcard/Android/data/dev.mmedge.demo/files/bundles/b.mmedge/manifest.json").is_file()


def test_adb_missing_is_a_typed_error(monkeypatch):
    from mmedge.bench import adb
    from mmedge.errors import MissingDependencyError

    monkeypatch.delenv("MMEDGE_ADB", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(MissingDependencyError, match="platform-tools"):
        adb.devices()


def test_cli_bench_modelled_without_a_phone(tiny_bundle, tmp_path, monkeypatch, capsys):
    from mmedge.cli import main

    monkeypatch.setenv("PATH", "/nonexistent" + os.pathsep + os.environ["PATH"])
    monkeypatch.delenv("MMEDGE_ADB", raising=False)
    import shutil

    if shutil.which("adb"):
        pytest.skip("a real adb is installed")
    rc = main(["bench", "--artifact", str(tiny_bundle), "--device", "raspberry-pi-5", "--json",
               str(tmp_path / "pi.json")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "MODELLED" in out and "Cost-model check on this host" in out
    data = json.loads((tmp_path / "pi.json").read_text())
    assert data["kind"] == "modelled" and data["host_check"]["stages"]


# ------------------------------------------------------------------ bench --data: the user's own data
def _relabel(root, split: str) -> None:
    """Answers the scenes never give: a bundle trained on them has labels other than the scenes'."""
    path = root / f"{split}.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps({**r, "answer": f"my-{r['answer']}"}) + "\n" for r in rows))


@pytest.fixture(scope="module")
def own_bundle(tmp_path_factory):
    """A tiny model trained on a JSON Lines set with its own labels, exported with --data (ONNX fp32)."""
    import dataset_fixtures as fx
    from conftest import TINY, TINY_RECIPE
    from mmedge.export.exporter import export_bundle
    from mmedge.export.recipe import ExportRecipe
    from mmedge.train.config import TrainConfig
    from mmedge.train.trainer import Trainer

    tmp = tmp_path_factory.mktemp("own")
    root = tmp / "own"
    for split, n in (("train", 24), ("val", 12), ("test", 12)):
        fx.make_jsonl(root, n, split)
        _relabel(root, split)
    cfg, _ = TrainConfig(**{**TINY, "steps": 2, "eval_every": 2, "checkpoint_every": 2, "eval_samples": 8}
                         ).for_data(f"jsonl:{root}")
    Trainer(cfg, tmp / "model", progress=False).fit()
    recipe = {**TINY_RECIPE, "keep_ratios": [1.0], "targets": ["onnx"], "ort_format": False, "in_graph": False,
              "data": f"jsonl:{root}"}
    bundle = export_bundle(tmp / "model", tmp / "own.mmedge", ExportRecipe(**recipe), log=lambda *_: None)
    return bundle, root


@pytest.mark.slow
def test_cli_bench_defaults_to_the_dataset_the_bundle_was_exported_with(own_bundle, tmp_path, capsys):
    from mmedge.cli import main

    bundle, root = own_bundle
    args = ["bench", "--artifact", str(bundle), "--device", "host", "--samples", "5", "--repeats", "1",
            "--warmup", "1", "--no-profile", "--no-progress"]
    assert main([*args, "--json", str(tmp_path / "own.json")]) == 0
    result = json.loads((tmp_path / "own.json").read_text())
    q = result["queries"]
    assert {k: q[k] for k in ("data", "split", "n", "chosen_by")} == {"data": "jsonl", "split": "test", "n": 5,
                                                                      "chosen_by": "the bundle's manifest"}
    assert q["out_of_vocabulary"] <= 2  # a test answer never seen in training counts wrong, as in eval
    assert report.validate(result) == [] and result["samples"] == 5
    assert all(0 <= p["accuracy"] <= 1 for p in result["policies"].values())
    assert "Queries: 5 from the test split of jsonl (chosen by the bundle's manifest)" in capsys.readouterr().out
    # --data and --split choose explicitly (the validation split of the same dataset here)
    assert main([*args, "--data", f"jsonl:{root}", "--split", "val", "--json", str(tmp_path / "val.json")]) == 0
    q = json.loads((tmp_path / "val.json").read_text())["queries"]
    assert (q["split"], q["chosen_by"]) == ("val", "--data")


@pytest.mark.slow
def test_cli_bench_refuses_queries_whose_answers_are_not_the_bundles_labels(own_bundle, tmp_path, capsys):
    import dataset_fixtures as fx
    from mmedge.cli import main

    bundle, _ = own_bundle
    args = ["bench", "--artifact", str(bundle), "--device", "host", "--samples", "4", "--no-profile", "--no-progress"]
    # the scenes for a bundle trained on other labels: refused, not an IndexError or a wrong accuracy
    assert main([*args, "--data", "scenes"]) == 2
    err = capsys.readouterr().err
    assert "mmedge bench: error: the bundle's" in err and "are not the scenes' vqa labels" in err
    assert "Traceback" not in err
    # another dataset whose answers the bundle never learnt
    other = fx.make_jsonl(tmp_path / "other", 8, "test")
    assert main([*args, "--data", f"jsonl:{other}"]) == 2
    err = capsys.readouterr().err
    assert "4 of 4 jsonl test answers" in err and "are not among the bundle's" in err
    # a modelled profile runs no queries: --data is refused there, not ignored
    assert main(["bench", "--artifact", str(bundle), "--device", "pixel", "--modelled", "--data", "scenes"]) == 2
    assert "a modelled profile runs no queries" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_bench_on_a_phone_pushes_the_queries_the_app_does_not_ship(own_bundle, fake_adb, monkeypatch, capsys):
    """A bundle trained on the user's own data: the phone app has no such queries, so the host draws them
    as --device host would (the manifest's dataset), pushes them with the bundle and names them in the
    extras; the folder is removed from the phone after the run."""
    from PIL import Image

    from mmedge.bench.queries import draw_queries
    from mmedge.cli import main

    bundle, root = own_bundle
    monkeypatch.setenv("FAKE_ADB_DEVICES", "AAA")
    assert main(["bench", "--artifact", str(bundle), "--device", "pixel", "--samples", "5", "--repeats", "2",
                 "--warmup", "1", "--no-progress"]) == 0
    assert "pushing 5 jsonl test queries to the app (chosen by the bundle's manifest)" in capsys.readouterr().out
    calls = [json.loads(line) for line in (fake_adb / "calls.log").read_text().splitlines()]
    start = next(c for c in calls if "am" in c)
    remote = start[start.index("mmedge.queries") + 1]
    assert start[start.index("mmedge.runs") + 1] == "10"
    removed = fake_adb / "removed" / Path(remote).name  # where the stand-in keeps what `rm` removed
    doc = json.loads((removed / "queries.json").read_text())
    rows = [json.loads(line) for line in (root / "test.jsonl").read_text().splitlines()][:5]
    assert (doc["format"], doc["data"], doc["split"], doc["n"]) == ("mmedge-bench-queries-1", "jsonl", "test", 5)
    assert [q["text"] for q in doc["queries"]] == [r["question"] for r in rows]
    assert [q["answer"] for q in doc["queries"]] == [r["answer"] for r in rows]
    host = draw_queries(json.loads((bundle / "manifest.json").read_text()), 5).samples  # what --device host runs
    for q, sample in zip(doc["queries"], host):
        with Image.open(removed / q["image"]) as got:
            assert got.mode == "RGB" and np.array_equal(np.asarray(got), sample.image)
    # without a phone, --data has nothing to measure: refused rather than silently modelled
    monkeypatch.setenv("FAKE_ADB_DEVICES", "")
    assert main(["bench", "--artifact", str(bundle), "--device", "pixel", "--data", f"jsonl:{root}"]) == 2
    assert "no phone is attached" in capsys.readouterr().err


def test_bench_queries_follow_the_manifest_and_the_labels(tmp_path):
    """Which data a bench draws from, on manifests alone (no bundle runs)."""
    from mmedge.bench.queries import LabelMismatchError, draw_queries
    from mmedge.data.tasks import LABELS
    from mmedge.errors import DatasetError

    scenes = {"task": "verify", "labels": list(LABELS["verify"]), "preprocessing": {"image_size": 48},
              "export": {"recipe": {"data": "scenes"}}}
    q = draw_queries(scenes, 3)
    assert (q.data, q.split, q.chosen_by, len(q.samples)) == ("scenes", "test", "the bundle's labels", 3)
    own = {**scenes, "labels": ["no", "yes"]}  # the labels of another dataset, recorded as the scenes
    with pytest.raises(LabelMismatchError, match=r"are not the scenes' verify labels .* pass --data NAME:ROOT"):
        draw_queries(own, 3)
    wider = {**scenes, "labels": ["maybe", *reversed(LABELS["verify"])]}  # every scene answer among them
    assert draw_queries(wider, 3).data == "scenes"
    from mmedge.bench.query_folder import app_queries_fit

    assert not app_queries_fit(wider, None)  # the phone app's own scene queries: the scenes' labels in order
    assert app_queries_fit({**scenes, "export": {}}, None) and not app_queries_fit({**scenes, "export": {}}, "scenes")
    # a scene-labelled bundle on a user's set of scene-like answers: the labels fit, out-of-vocabulary counted
    import dataset_fixtures as fx

    root = fx.make_jsonl(tmp_path / "own", 6, "test")
    _relabel(root, "test")
    rows = [json.loads(line) for line in (root / "test.jsonl").read_text().splitlines()]
    (root / "test.jsonl").write_text("".join(json.dumps({**r, "answer": r["answer"].removeprefix("my-") if i else
                                                         "never-a-label"}) + "\n" for i, r in enumerate(rows)))
    vqa = {**scenes, "task": "vqa", "labels": list(LABELS["vqa"])}
    q = draw_queries(vqa, 6, f"jsonl:{root}")
    assert (q.data, q.split, q.chosen_by, q.out_of_vocabulary) == ("jsonl", "test", "--data", 1)
    assert [s.answer for s in q.samples][0] == "never-a-label" and q.samples[0].label == -1
    gone = {**own, "export": {"recipe": {"data": f"jsonl:{tmp_path / 'moved'}"}}}
    with pytest.raises(DatasetError, match=r"exported with --data jsonl:.*moved \(its manifest records it\).*"
                                           r"pass --data NAME:ROOT"):
        draw_queries(gone, 3)
