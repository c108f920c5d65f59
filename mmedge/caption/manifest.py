"""The captioning bundle's manifest: written after the graphs pass their checks, read back with the
classifier bundle's loader (mmedge.bundle.manifest.load_bundle_manifest: bounded size, strict JSON,
schema version, a JSON schema that bounds every number, the consistency below, rollback limits, safe
member paths, nothing unlisted, the size and SHA-256 of every file, and an optional Ed25519
signature), with this kind's schema (``caption_manifest.schema.json``) and consistency rules."""

from __future__ import annotations

import json
from pathlib import Path

from mmedge.bundle.manifest import (CAPTION, MANIFEST_FILE, graph_named_paths, hash_files, load_bundle_manifest,
                                    schema_violations)
from mmedge.errors import BundleError
from mmedge.fileio import atomic_write

CAPTION_KIND = CAPTION
SCHEMA_VERSION = 1
SCHEMA_FILE = Path(__file__).with_name("caption_manifest.schema.json")
MAX_CACHE_VALUES = 1 << 27   # decoder layers x cache positions x width: a decoding's key (and value) cache
F32, I64 = "float32", "int64"


def schema_problems(m: dict) -> list[str]:
    return schema_violations(m, json.loads(SCHEMA_FILE.read_text()))[0][:10]


def _tag(ratio: float) -> str:
    return f"k{ratio:g}"


def layout_problems(m: dict) -> list[str]:
    """What the schema cannot say: the decoder layout, model config, graphs (names, inputs and
    outputs with their shapes), artifacts, tokenizer ids and FLOPs table agree with one another, so
    that a bundle that loads can caption. Assumes the manifest passed the schema."""
    p: list[str] = []
    d, cfg, t = m["decoder"], m["model"]["config"], m["tokenizer"]
    stage_layers = d["stage_layers"]
    layers = [i for stage in stage_layers for i in stage]
    if layers != list(range(len(layers))):
        p.append(f"decoder.stage_layers {stage_layers} must cover layers 0..n-1 in order")
    depth, stages = len(layers), len(stage_layers)
    H, hd, D, P = d["num_heads"], d["head_dim"], d["dim"], d["max_len"]
    if H * hd != D:
        p.append(f"decoder.num_heads {H} x head_dim {hd} = {H * hd}, not decoder.dim {D}")
    for key, want in (("decoder_depth", depth), ("num_heads", H), ("dim", D), ("max_len", P)):
        if cfg[key] != want:
            p.append(f"model.config.{key} {cfg[key]} differs from the decoder's {want}")
    if depth * P * D > MAX_CACHE_VALUES:
        p.append(f"the key/value cache of {depth} layers x {P} positions x {D} is over {MAX_CACHE_VALUES} values")
    ratios = m["keep_ratios"]
    if len(set(ratios)) != len(ratios):
        p.append(f"keep_ratios repeat a ratio: {ratios}")
    if m["thresholds"]["keep_ratio"] not in ratios:
        p.append(f"thresholds.keep_ratio {m['thresholds']['keep_ratio']} is not an exported keep ratio")
    if t["max_length"] != P:
        p.append("tokenizer.max_length must equal decoder.max_len")
    V = cfg["vocab_size"]
    ids = {k: t[k] for k in ("pad_id", "unk_id", "bos_id", "eos_id")}
    if len(set(ids.values())) != len(ids):
        p.append(f"tokenizer {ids} must be four different ids")
    if any(i >= V for i in ids.values()):
        p.append(f"tokenizer {ids} must be below model.config.vocab_size {V}")
    if p:
        return p
    p += _graph_problems(m, stage_layers, ratios, cfg)
    names = set(m["graphs"])
    for a in m["artifacts"]:
        kind = f"artifact {a['runtime']}/{a['format']}/{a['precision']}"
        if set(a["stages"]) != names:
            p.append(f"{kind} does not hold every graph")
        if a["runtime"] == "executorch":
            p += [f"{kind} stage {n!r} outputs {e['outputs']} differ from the graph's"
                  for n, e in a["stages"].items() if n in names
                  and e["outputs"] != [o["name"] for o in m["graphs"][n]["outputs"]]]
    want = {f"{r:g}" for r in ratios}
    if set(m["flops"]) != want:
        p.append(f"flops must give keep ratios {sorted(want)}, it gives {sorted(m['flops'])}")
    for r, f in m["flops"].items():
        if any(len(f[k]) != stages for k in ("stage", "head", "fill")):
            p.append(f"flops[{r}] must give {stages} stage, head and fill entries")
    return p[:50]


def _graph_problems(m: dict, stage_layers: list[list[int]], ratios: list[float], cfg: dict) -> list[str]:
    """Each graph the layout needs, with the inputs and outputs (names in order, shapes, dtypes)
    that decoding feeds and reads (docs/bundle-format.md, Captioning bundles)."""
    d = m["decoder"]
    H, hd, D, P, V, S = d["num_heads"], d["head_dim"], d["dim"], d["max_len"], cfg["vocab_size"], cfg["image_size"]
    L, stages = sum(len(x) for x in stage_layers), len(stage_layers)
    patches = (S // cfg["patch_size"]) ** 2
    graphs = m["graphs"]
    want_names = {f"fill{s}" for s in range(stages - 1)}
    for r in ratios:
        want_names |= {f"encoder_{_tag(r)}"} | {f"step{s}_{_tag(r)}" for s in range(stages)}
    if set(graphs) != want_names:
        return [f"graphs {sorted(graphs)[:20]} != the layout's {sorted(want_names)[:20]}"]

    def cache(n: int, length: int) -> list[int]:
        return [n, 1, H, length, hd]

    expected: dict[str, tuple[str, int | None, float | None, list[int], list, list]] = {}
    problems = []
    for r in ratios:
        enc = graphs[f"encoder_{_tag(r)}"]
        outs = enc["outputs"]
        k = outs[0]["shape"][3] if len(outs[0]["shape"]) == 5 else 0
        if not 1 <= k <= patches:
            problems.append(f"encoder_{_tag(r)} keeps {k} visual tokens; the image has {patches}")
            continue
        expected[f"encoder_{_tag(r)}"] = ("encoder", None, r, [], [("pixel_values", [1, 3, S, S], F32)],
                                          [("cross_k", cache(L, k), F32), ("cross_v", cache(L, k), F32)])
        for s, layers in enumerate(stage_layers):
            n = len(layers)
            first = ("token", [1], I64) if s == 0 else ("hidden_in", [1, 1, D], F32)
            expected[f"step{s}_{_tag(r)}"] = (
                "step", s, r, layers,
                [first, ("position", [1], I64), ("past_k", cache(n, P), F32), ("past_v", cache(n, P), F32),
                 ("cross_k", cache(n, k), F32), ("cross_v", cache(n, k), F32)],
                [("hidden", [1, 1, D], F32), ("logits", [1, V], F32), ("confidence", [1], F32),
                 ("present_k", cache(n, P), F32), ("present_v", cache(n, P), F32)])
    for s in range(stages - 1):
        later = [i for x in stage_layers[s + 1:] for i in x]
        n = len(later)
        expected[f"fill{s}"] = ("fill", s, None, later,
                                [("hidden_in", [1, 1, D], F32), ("position", [1], I64), ("past_k", cache(n, P), F32),
                                 ("past_v", cache(n, P), F32)],
                                [("present_k", cache(n, P), F32), ("present_v", cache(n, P), F32)])
    for name, (kind, stage, ratio, layers, inputs, outputs) in expected.items():
        g = graphs[name]
        if g["kind"] != kind or g.get("stage", stage) != stage or g.get("keep_ratio", ratio) != ratio \
                or g.get("layers", layers) != layers:
            problems.append(f"graph {name} is described as {g['kind']} stage {g.get('stage')} keep ratio "
                            f"{g.get('keep_ratio')} layers {g.get('layers')}; the layout says {kind} {stage} {ratio} "
                            f"{layers}")
        for side, want in (("inputs", inputs), ("outputs", outputs)):
            got = [(x["name"], x["shape"], x["dtype"]) for x in g[side]]
            if got != [(n, list(sh), dt) for n, sh, dt in want]:
                problems.append(f"graph {name} {side} {_brief(got)} differ from what decoding uses {_brief(want)}")
    return problems


def _brief(tensors) -> str:
    return "[" + ", ".join(f"{n} {list(s)} {t}" for n, s, t in tensors)[:160] + "]"


def named_paths(m: dict) -> list[str]:
    return list(graph_named_paths(m))


def write_caption_manifest(root: Path, manifest: dict) -> None:
    manifest = {"schema_version": SCHEMA_VERSION, **manifest, "files": hash_files(root)}
    problems = schema_problems(manifest) or layout_problems(manifest)
    if problems:
        raise BundleError("caption manifest is not valid:\n  " + "\n  ".join(problems))
    atomic_write(Path(root) / MANIFEST_FILE, lambda p: p.write_text(json.dumps(manifest, indent=1) + "\n"))


def is_caption_manifest(manifest: dict) -> bool:
    return manifest.get("kind") == CAPTION_KIND


def load_caption_manifest(root: str | Path, verify_files: bool = True, verify_key=None, min_sequence: int | None = None,
                          expect_name: str | None = None) -> dict:
    """A captioning bundle's checked manifest (every check of mmedge.bundle.manifest.load_manifest);
    BundleError with its reason `code` otherwise."""
    return load_bundle_manifest(root, verify_files, verify_key, min_sequence, expect_name, kinds=(CAPTION,))
