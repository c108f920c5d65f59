"""`mmedge bundle` on a generative VLM bundle: one runtime, format and precision (its one vision graph serves
every keep ratio, so none is left out), the source's thresholds, its own hashes and signature, and the same
generations as the full bundle; refusals say what applies."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mmedge.cli import main

VLM_BUNDLE = Path(__file__).resolve().parents[1] / "tests/vectors/vlm/tiny-smolvlm-onnx.mmedge"


def test_slim_vlm_bundle_generates_as_the_full_one(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("tokenizers")
    from mmedge.bundle.slim import bundle_bytes
    from mmedge.runtime.engine import Engine

    source = tmp_path / "full.mmedge"
    shutil.copytree(VLM_BUNDLE, source)
    assert main(["sign", "--new-key", str(tmp_path / "keys")]) == 0
    key, public = tmp_path / "keys" / "mmedge-signing.pem", tmp_path / "keys" / "mmedge-signing.pub.pem"
    out = tmp_path / "app" / "vlm.mmedge"
    assert main(["bundle", "--artifact", str(source), "--runtime", "onnxruntime", "--out", str(out),
                 "--sign-key", str(key)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    full = json.loads((source / "manifest.json").read_text())
    assert manifest["kind"] == "vlm" and [a["format"] for a in manifest["artifacts"]] == ["ort"]  # what phones ship
    assert manifest["slim"]["format"] == "ort" and manifest["thresholds"] == full["thresholds"]
    assert sorted(p.parts[0] for p in map(Path, manifest["files"])) == ["ort"] * len(manifest["layout"]["graphs"]) \
        + ["tokenizer.json"]
    assert bundle_bytes(out) < bundle_bytes(source)
    slim, whole = Engine.load(out, verify_key=public), Engine.load(source, fmt="ort")
    image = np.full((40, 40, 3), 77, np.uint8)
    for prompt, ratio in (("what color is the circle?", 1.0), ("describe the image.", 0.5)):
        a, b = slim.generate(image, prompt, 6, keep_ratio=ratio), whole.generate(image, prompt, 6, keep_ratio=ratio)
        assert (a.tokens, a.exits, a.text) == (b.tokens, b.exits, b.text)
    for extra, said in ((["--keep-ratio", "1"], "serves every keep ratio"), (["--in-graph"], "in-graph"),
                        (["--runtime", "executorch"], "no executorch")):
        args = ["bundle", "--artifact", str(source), "--out", str(tmp_path / "refused.mmedge"), *extra]
        assert main(args if "--runtime" in extra else [*args, "--runtime", "onnxruntime"]) == 2
        assert said in capsys.readouterr().err
    assert not (tmp_path / "refused.mmedge").exists()
