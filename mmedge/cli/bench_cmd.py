"""mmedge bench: latency measured on the host or a phone (adb), or modelled for a device profile."""

from __future__ import annotations

import argparse

from mmedge.cli._checks import cpu_list, non_negative, non_negative_float, positive, writable_file

DEVICES = ("host", "pixel", "pixel-7", "pixel-8", "galaxy-s23", "iphone-15", "iphone-15-pro", "raspberry-pi-5")
EPILOG = """examples:
  mmedge bench --artifact runs/demo/vqa-default.mmedge --device host --json runs/bench/host.json
  mmedge bench --artifact runs/demo/vqa-default.mmedge --device host --backend executorch --precision int8
  mmedge bench --artifact runs/mine/mine.mmedge --device host --data jsonl:/data/mine   # your own data
  mmedge bench --artifact runs/demo/vqa-default.mmedge --device pixel        # adb if a phone is attached, else MODELLED
  mmedge bench --artifact runs/demo/vqa-default.mmedge --device pixel --modelled
  mmedge bench --artifact runs/smolvlm.mmedge --device pixel                 # a generative VLM on the phone

--device host measures here, on test queries of the data the bundle answers about: --data when
given, else the dataset the bundle was exported with (its manifest records `mmedge export --data`),
else the generated scenes, only when the scenes' answers are among the bundle's labels. A bundle whose
labels are not the queries' answers is refused before anything runs (accuracy on other data would
mean nothing). A phone profile runs on an attached phone through adb when one is there
(android_demo/BENCHMARK.md is the contract): the app runs the scene queries it ships when they fit the
bundle, else the host draws the queries as --device host would (--data, --split, the manifest's
dataset; an adapted model's, two images per query for NLVR2) and pushes them with the bundle. Without
a phone it is a per-operator cost-model estimate, labelled "modelled", with the model's error
measured on this host (it runs no queries: --data and --split are refused there).
A captioning bundle runs on this host or on an attached phone (the app captions the scene images it
ships: captions per second, per-word exits, CIDEr); no cost model covers captioning graphs.
A generative VLM bundle runs on this host or on an attached phone: time to first token, ms per decoded
token and the whole generation at full depth, with the prefilter, with the exits and with both (its
calibrated settings), and the CIDEr of its captions and accuracy of its short answers on test scenes
(on a phone the host pushes the scenes' prompts and images it draws for --device host and scores the
phone's generations). Without a phone, or with --modelled, a phone profile is modelled: image encode
and time to first token per keep ratio, ms per decoded token per exit, with the host check.
"""


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="benchmark a bundle on the host, a phone, or a modelled device",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifact", required=True, help="bundle directory made by `mmedge export`")
    p.add_argument("--device", default="host", choices=DEVICES)
    p.add_argument("--backend", default="auto", help="onnxruntime | executorch | auto (default)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "int8", "int4"),
                   help="fp32 (default), int8; int4: generative VLM bundles")
    p.add_argument("--threads", type=positive, default=1, help="runtime threads (default 1)")
    p.add_argument("--data", help="a measured bench (host or phone): the queries' data, scenes or NAME:ROOT "
                   "(vqa2, gqa, nlvr2, jsonl; as `mmedge eval --data`); default: the dataset the bundle's manifest "
                   "records, else the scenes")
    p.add_argument("--split", help="a measured bench: the split queried (default: test; a real dataset without a "
                   "test split with answers: its validation split)")
    p.add_argument("--samples", type=positive, help="test queries per policy (default 200; a captioning bundle: "
                   "100 images on the host, 48 captions per pass on a phone; a generative VLM bundle: 40 prompts)")
    p.add_argument("--repeats", type=positive, default=3, help="passes over the queries (default 3)")
    p.add_argument("--warmup", type=non_negative, help="warm-up queries (default 20; a captioning bundle: 5 images; "
                   "a generative VLM bundle: 4 prompts under every setting)")
    p.add_argument("--serial", help="adb serial when several phones are attached")
    p.add_argument("--cooldown", type=non_negative_float, default=0.0, help="seconds to rest the phone before a run")
    p.add_argument("--cpu-affinity", type=cpu_list, help="cores to pin the phone benchmark to, e.g. 4-7 or 0,2,4-5")
    p.add_argument("--modelled", action="store_true", help="for a phone profile: model even if a phone is attached")
    p.add_argument("--no-profile", action="store_true", help="skip onnxruntime's per-operator profile")
    p.add_argument("--json", type=writable_file, help="write the result here (plus .md and .png beside it)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(run=run)


def run_caption(args: argparse.Namespace) -> int:
    from mmedge.caption.bench import bench_captions, markdown, write
    from mmedge.errors import ConfigError

    given = [flag for flag, value in (("--data", args.data), ("--split", args.split)) if value is not None]
    if given:
        raise ConfigError(f"{', '.join(given)}: a captioning bundle benches on the scenes' test captions; leave "
                          "them out", "arguments")
    if args.device != "host":
        return _phone_caption(args)
    result = bench_captions(args.artifact, args.backend, args.precision, args.threads, args.samples or 100,
                            args.repeats, 5 if args.warmup is None else args.warmup, progress=not args.no_progress)
    print(markdown(result))
    if args.json:
        print("\nwrote " + ", ".join(str(m) for m in write(result, args.json)))
    return 0


def run_generative(args: argparse.Namespace) -> int:
    """A generative VLM bundle on this host: time to first token, ms per token, quality per setting."""
    from mmedge.adapt.vlm_bench import bench_generation, markdown, write
    from mmedge.errors import ConfigError

    given = [flag for flag, value in (("--data", args.data), ("--split", args.split)) if value is not None]
    if given:
        raise ConfigError(f"{', '.join(given)}: a generative VLM bundle benches on the scenes' test captions and "
                          "questions; leave them out", "arguments")
    if args.device != "host":
        return _phone_generative(args)
    result = bench_generation(args.artifact, args.backend, args.precision, args.threads, args.samples or 40,
                              args.repeats, 4 if args.warmup is None else args.warmup, progress=not args.no_progress)
    print(markdown(result))
    if args.json:
        print("\nwrote " + ", ".join(str(m) for m in write(result, args.json)))
    return 0


def _phone_generative(args: argparse.Namespace) -> int:
    """A generative VLM bundle on a phone profile: measured on the attached phone through the app's benchmark
    (android_demo/BENCHMARK.md) on the prompts the host draws and pushes; MODELLED without a phone or with
    --modelled."""
    import tempfile
    from pathlib import Path

    from mmedge.adapt.vlm_manifest import load_vlm_manifest
    from mmedge.bench import adb
    from mmedge.bench.vlm_device import (device_markdown, device_problems, score_device_generations, write_device,
                                         write_prompt_folder)
    from mmedge.errors import ConfigError, MissingDependencyError

    if args.modelled:
        return _modelled_generative(args)
    try:
        serial = adb.pick_device(args.serial)
    except (MissingDependencyError, adb.DeviceError) as exc:
        print(f"no phone through adb ({exc}); the figures below are MODELLED")
        return _modelled_generative(args)
    samples = args.samples or 40
    if samples < 2:
        raise ConfigError(f"--samples {samples}: a generative VLM bundle benches on at least 2 prompts (half captions, "
                          "half questions)", "arguments")
    # the manifest's checks; the files' hashes are left to the app, which makes every check of the spec
    manifest = load_vlm_manifest(args.artifact, verify_files=False)
    backend = args.backend
    if backend == "auto":  # ExecuTorch where the bundle has it (the app's default), else ONNX Runtime
        backend = ("executorch" if any(a["runtime"] == "executorch" for a in manifest["artifacts"])
                   else "onnxruntime")
    with tempfile.TemporaryDirectory(prefix="mmedge-prompts-") as tmp:
        folder, record = write_prompt_folder(manifest, samples, Path(tmp) / "prompts")
        print(f"pushing {record['n']} {record['data']} {record['split']} prompts to the app "
              f"({record['captions']} captions, {record['questions']} questions)")
        result = adb.bench_device(args.artifact, serial, backend, args.precision, args.threads, samples * args.repeats,
                                  4 if args.warmup is None else args.warmup, "all", args.cooldown, args.cpu_affinity,
                                  queries=folder)
    result["prompts"] = record
    problems = device_problems(result)
    if problems:
        raise adb.DeviceError("the app's generation benchmark result is not what android_demo/BENCHMARK.md says: "
                              + "; ".join(problems[:5]))
    score_device_generations(result)
    print(device_markdown(result))
    if args.json:
        print("\nwrote " + ", ".join(str(m) for m in write_device(result, args.json)))
    return 0


def _modelled_generative(args: argparse.Namespace) -> int:
    """A generative VLM bundle on a phone profile, MODELLED: the cost model's figures for the device."""
    from mmedge.adapt.vlm_bench import model_generation, modelled_markdown, modelled_plot
    from mmedge.bench.report import write_with

    result = model_generation(args.artifact, args.device, args.precision, args.threads)
    print(modelled_markdown(result))
    if args.json:
        print("\nwrote " + ", ".join(str(m) for m in write_with(result, args.json, modelled_markdown, modelled_plot)))
    return 0


def _phone_caption(args: argparse.Namespace) -> int:
    """A captioning bundle on an attached phone: the app's caption benchmark through adb (android_demo/BENCHMARK.md);
    no cost model covers the caption graphs, so without a phone it is refused, not modelled."""
    from mmedge.bench import adb
    from mmedge.caption.bench import device_markdown, device_problems, score_device_captions, write_device
    from mmedge.errors import ConfigError, MissingDependencyError

    if args.modelled:
        raise ConfigError("--modelled: the phone cost model covers the classifiers' stage graphs, not captioning "
                          "bundles; measure on an attached phone or with --device host", "arguments")
    try:
        serial = adb.pick_device(args.serial)
    except (MissingDependencyError, adb.DeviceError) as exc:
        raise adb.DeviceError(f"{exc}; a captioning bundle is measured on an attached phone (no cost model covers "
                              "its graphs) or on this host with --device host") from exc
    backend = "executorch" if args.backend == "auto" else args.backend
    result = adb.bench_device(args.artifact, serial, backend, args.precision, args.threads,
                              (args.samples or 48) * args.repeats, 5 if args.warmup is None else args.warmup, "all",
                              args.cooldown, args.cpu_affinity)
    problems = device_problems(result)
    if problems:
        raise adb.DeviceError("the app's caption benchmark result is not what android_demo/BENCHMARK.md says: "
                              + "; ".join(problems[:5]))
    score_device_captions(result)
    print(device_markdown(result))
    if args.json:
        print("\nwrote " + ", ".join(str(m) for m in write_device(result, args.json)))
    return 0


def run(args: argparse.Namespace) -> int:
    from mmedge.bench import report
    from mmedge.bundle.manifest import VLM
    from mmedge.runtime.engine import _is_caption_bundle, manifest_kind

    if manifest_kind(args.artifact) == VLM:
        return run_generative(args)
    if _is_caption_bundle(args.artifact):
        return run_caption(args)
    args.samples = args.samples or 200
    args.warmup = 20 if args.warmup is None else args.warmup

    if args.device == "host":
        from mmedge.bench.host import bench_host

        result = bench_host(args.artifact, args.backend, args.precision, args.threads, args.samples, args.repeats,
                            args.warmup, progress=not args.no_progress, data=args.data, split=args.split)
        if result["backend"] == "onnxruntime" and not args.no_profile:
            from mmedge.bench.profile import onnxruntime_op_profile

            result["op_profile"] = onnxruntime_op_profile(args.artifact, args.precision, threads=args.threads)
    else:
        result = _phone(args)
    print(report.markdown(result))
    if args.json:
        made = report.write(result, args.json)
        print("\nwrote " + ", ".join(str(m) for m in made))
    return 0


def _phone(args) -> dict:
    from mmedge.bench import adb
    from mmedge.bench.costmodel import check_host, model_device
    from mmedge.errors import ConfigError, MissingDependencyError

    given = [flag for flag, value in (("--data", args.data), ("--split", args.split)) if value is not None]
    if not args.modelled:
        try:
            serial = adb.pick_device(args.serial)
        except (MissingDependencyError, adb.DeviceError) as exc:
            if given:
                raise ConfigError(f"{', '.join(given)} choose the queries of a measured bench, and no phone is "
                                  f"attached ({exc}); measure with --device host, or leave them out for the "
                                  "modelled figures", "arguments") from None
            print(f"no phone through adb ({exc}); the figures below are MODELLED")
        else:
            return _measured_on_phone(args, serial)
    if given:
        raise ConfigError(f"{', '.join(given)}: a modelled profile runs no queries; leave them out, or measure "
                          "on a phone or with --device host", "arguments")
    return model_device(args.artifact, args.device, args.precision,
                        host_check=check_host(args.artifact, args.threads, "fp32"))


def _measured_on_phone(args, serial: str) -> dict:
    """The app on the phone: its own scene queries when they fit the bundle, else the queries the host
    draws as --device host would (mmedge.bench.query_folder), pushed with the bundle."""
    import tempfile
    from pathlib import Path

    from mmedge.bench import adb
    from mmedge.bench.query_folder import app_queries_fit, draw_query_folder
    from mmedge.bundle.manifest import load_manifest

    manifest = load_manifest(args.artifact)
    backend = "executorch" if args.backend == "auto" else args.backend
    folder = queries = None
    with tempfile.TemporaryDirectory(prefix="mmedge-queries-") as tmp:
        if not (app_queries_fit(manifest, args.data) and args.split is None):
            folder, queries = draw_query_folder(manifest, args.samples, Path(tmp) / "queries", data=args.data,
                                                split=args.split, progress=not args.no_progress)
            print(f"pushing {len(queries.samples)} {queries.data} {queries.split} queries to the app "
                  f"(chosen by {queries.chosen_by})")
        result = adb.bench_device(args.artifact, serial, backend, args.precision, args.threads,
                                  args.samples * args.repeats, args.warmup, "all", args.cooldown, args.cpu_affinity,
                                  queries=folder)
    if queries is not None:  # recorded as the host bench records them (answers outside the labels counted)
        result["queries"] = queries.describe()
    return result
