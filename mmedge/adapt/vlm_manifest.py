"""The generative VLM bundle's manifest (kind "vlm"): written after the graphs pass their checks, read
back with the other kinds' loader (mmedge.bundle.manifest.load_bundle_manifest: bounded size, strict
JSON, schema version, a JSON schema that bounds every number, the consistency below, rollback limits,
safe member paths, nothing unlisted, the size and SHA-256 of every file, an optional Ed25519
signature), with this kind's schema (``vlm_manifest.schema.json``) and consistency rules."""

from __future__ import annotations

import json
from pathlib import Path

from mmedge.bundle.manifest import MANIFEST_FILE, VLM, hash_files, load_bundle_manifest, schema_violations
from mmedge.errors import BundleError
from mmedge.fileio import atomic_write

VLM_KIND = VLM
GENERATION_TASKS = ("caption", "answer")  # thresholds.tasks: the tasks a bundle may hold its own settings for
SCHEMA_VERSION = 1
SCHEMA_FILE = Path(__file__).with_name("vlm_manifest.schema.json")
MAX_CACHE_VALUES = 1 << 28   # layers x kv heads x slots x head_dim: one of the key and value caches


OUTPUTS = {"vision": ["visual", "scores"], "embed": ["embeds"],
           "step": ["hidden", "exit_hidden", "confidence", "present_k", "present_v"], "head": ["logits"],
           "fill": ["present_k", "present_v"]}


def _kind(name: str) -> str:
    return next(k for k in OUTPUTS if name.startswith(k))


def graph_names(stage_layers: list[list[int]]) -> list[str]:
    """The graphs a layout needs: vision, embed, a step per exit segment, the head, a fill per segment but
    the last (mmedge.adapt.vlm_graphs)."""
    stages = len(stage_layers)
    return ["vision", "embed"] + [f"step{s}" for s in range(stages)] + ["head"] + [f"fill{s}" for s in range(stages - 1)]


def layout_problems(m: dict) -> list[str]:
    """What the schema cannot say: the layout, tokenizer ids, thresholds and artifacts agree, so that a
    bundle that loads can generate. Assumes the manifest passed the schema."""
    p: list[str] = []
    L, t, V = m["layout"], m["tokenizer"], m["model"]["vocab_size"]
    layers = [i for stage in L["stage_layers"] for i in stage]
    if layers != list(range(len(layers))):
        p.append(f"layout.stage_layers {L['stage_layers']} must cover layers 0..n-1 in order")
    ratios = L["keep_ratios"]
    if len(set(ratios)) != len(ratios):
        p.append(f"layout.keep_ratios repeat a ratio: {ratios}")
    if m["thresholds"]["keep_ratio"] not in ratios:
        p.append(f"thresholds.keep_ratio {m['thresholds']['keep_ratio']} is not one of the keep ratios {ratios}")
    p += [f"thresholds.tasks.{task}.keep_ratio {s['keep_ratio']} is not one of the keep ratios {ratios}"
          for task, s in m["thresholds"].get("tasks", {}).items() if s["keep_ratio"] not in ratios]
    if len(layers) * L["num_kv_heads"] * L["max_slots"] * L["head_dim"] > MAX_CACHE_VALUES:
        p.append(f"the key/value cache ({len(layers)} layers x {L['num_kv_heads']} heads x {L['max_slots']} slots x "
                 f"{L['head_dim']}) is over {MAX_CACHE_VALUES} values")
    if L["num_image_tokens"] >= L["max_slots"]:
        p.append(f"layout.max_slots {L['max_slots']} leaves no room after {L['num_image_tokens']} image tokens")
    if t["max_new_tokens"] >= L["max_slots"]:
        p.append(f"tokenizer.max_new_tokens {t['max_new_tokens']} must be below layout.max_slots {L['max_slots']}")
    if any(i >= V for i in [*t["stop_ids"], L["image_token_id"]]):
        p.append(f"stop ids {t['stop_ids']} and the image token {L['image_token_id']} must be below the "
                 f"vocabulary size {V}")
    if p:
        return p
    want = graph_names(L["stage_layers"])
    if sorted(L["graphs"]) != sorted(want):
        return [f"layout.graphs {sorted(L['graphs'])[:20]} != the layout's {sorted(want)[:20]} (a bundle "
                f"exported by an earlier mmedge, with a vision graph per keep ratio? export it again)"]
    p += [f"layout.graphs[{name!r}] outputs {outs} differ from what generation reads {OUTPUTS[_kind(name)]}"
          for name, outs in L["graphs"].items() if outs != OUTPUTS[_kind(name)]]
    for a in m["artifacts"]:
        kind = f"artifact {a['runtime']}/{a['format']}/{a['precision']}"
        if set(a["stages"]) != set(want):
            p.append(f"{kind} does not hold every graph")
        elif a["runtime"] == "executorch":
            p += [f"{kind} method {n!r} outputs {e['outputs']} differ from the layout's {L['graphs'][n]}"
                  for n, e in a["stages"].items() if e["outputs"] != L["graphs"][n]]
    return p[:50]


def schema_problems(m: dict) -> list[str]:
    return schema_violations(m, json.loads(SCHEMA_FILE.read_text()))[0][:10]


def write_vlm_manifest(root: Path, manifest: dict) -> None:
    manifest = {"schema_version": SCHEMA_VERSION, **manifest, "files": hash_files(root)}
    problems = schema_problems(manifest) or layout_problems(manifest)
    if problems:
        raise BundleError("vlm manifest is not valid:\n  " + "\n  ".join(problems))
    atomic_write(Path(root) / MANIFEST_FILE, lambda p: p.write_text(json.dumps(manifest, indent=1) + "\n"))


def load_vlm_manifest(root: str | Path, verify_files: bool = True, verify_key=None, min_sequence: int | None = None,
                      expect_name: str | None = None) -> dict:
    """A generative VLM bundle's checked manifest; BundleError with its reason `code` otherwise."""
    return load_bundle_manifest(root, verify_files, verify_key, min_sequence, expect_name, kinds=(VLM,))
