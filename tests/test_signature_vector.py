"""The signature vector other runtimes check (tests/vectors/golden/signature.json) is what mmedge's
own verifier accepts for the shipped manifest, and nothing else."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_signature_vector_verifies_with_the_python_verifier(tmp_path):
    from mmedge.bundle.signing import SIGNATURE_FILE, SignatureError, verify_manifest_signature

    doc = json.loads((ROOT / "tests/vectors/golden/signature.json").read_text())
    manifest = (ROOT / doc["bundle"] / "manifest.json").read_bytes()
    (tmp_path / SIGNATURE_FILE).write_text(json.dumps(doc["manifest_sig"]))
    key = doc["public_key_pem"].encode()
    verify_manifest_signature(tmp_path, manifest, key)
    with pytest.raises(SignatureError, match="does not match"):
        verify_manifest_signature(tmp_path, manifest + b" ", key)
