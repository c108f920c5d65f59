"""Slim bundles of the generative kinds (captioning and generative VLM bundles): one runtime, format and
precision, and for a captioning bundle chosen keep ratios, with the source's thresholds. The kinds' own
manifests say which graphs a keep ratio needs; the result is checked by the kind's schema and
consistency rules as any runtime checks it on load (mmedge.bundle.slim writes and publishes it).
"""

from __future__ import annotations

import copy

from mmedge.bundle.manifest import CAPTION, VLM
from mmedge.bundle.slim import artifact_files, kept_ratios
from mmedge.errors import ConfigError


def slim_generative_manifest(manifest: dict, artifact: dict, keep_ratios: list[float] | None,
                             in_graph: bool | list[float]) -> tuple[dict, list[str]]:
    """The slim manifest of a captioning or generative VLM bundle (without `files`) keeping `artifact`, and
    the bundle paths it needs copied."""
    kind = manifest["kind"]
    if in_graph:
        raise ConfigError("the in-graph variant exists only for classifier bundles; leave out --in-graph", "arguments")
    artifact = copy.deepcopy(artifact)
    out = {k: v for k, v in manifest.items() if k not in ("files", "artifacts", "schema_version")}
    if kind == VLM:
        if keep_ratios:
            raise ConfigError("a generative VLM bundle's one vision graph serves every keep ratio (a runtime takes "
                              "any in (0, 1]): there is nothing to leave out; leave out --keep-ratio", "arguments")
        ratios = list(manifest["layout"]["keep_ratios"])
    elif kind == CAPTION:
        ratios = kept_ratios(list(manifest["keep_ratios"]), keep_ratios, manifest["thresholds"])
        graphs = {n: g for n, g in manifest["graphs"].items()  # the fill graphs serve every keep ratio
                  if g["keep_ratio"] is None or g["keep_ratio"] in ratios}
        # an ExecuTorch program or Core ML package holds every graph in its one file: its other methods stay
        artifact["stages"] = {n: s for n, s in artifact["stages"].items() if n in graphs}
        out.update(keep_ratios=ratios, graphs=graphs,
                   flops={k: v for k, v in manifest["flops"].items() if float(k) in ratios})
    else:
        raise ConfigError(f"bundle kind {kind!r} has no generative slim path", "arguments")
    out["artifacts"] = [artifact]
    out["slim"] = {"source": manifest["name"], "runtime": artifact["runtime"], "format": artifact["format"],
                   "precision": artifact["precision"], "keep_ratios": ratios, "in_graph": []}
    return out, [manifest["tokenizer"]["file"], *artifact_files(artifact)]


def write_generative_manifest(root, manifest: dict) -> None:
    """The kind's own writer: schema version, the files' hashes, its schema and consistency checked."""
    if manifest["kind"] == VLM:
        from mmedge.adapt.vlm_manifest import write_vlm_manifest

        write_vlm_manifest(root, manifest)
    else:
        from mmedge.caption.manifest import write_caption_manifest

        write_caption_manifest(root, manifest)
