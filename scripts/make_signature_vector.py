"""Write tests/vectors/golden/signature.json: an Ed25519 signature of the shipped bundle's
manifest.json made by mmedge's own signing code with a throw-away key (the private key is not
kept), so that other runtimes (android_demo/core) check they verify what `mmedge sign` writes.

    python scripts/make_signature_vector.py
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BUNDLE = ROOT / "models/vqa-default/bundles/vqa-default-onnx.mmedge"
OUT = ROOT / "tests/vectors/golden/signature.json"


def main() -> None:
    from mmedge.bundle.signing import SIGNATURE_FILE, new_key_pair, sign_bundle
    from mmedge.fileio import atomic_write

    with tempfile.TemporaryDirectory() as tmp:
        private, public = new_key_pair(tmp)
        copy = Path(tmp) / "bundle"
        copy.mkdir()
        shutil.copyfile(BUNDLE / "manifest.json", copy / "manifest.json")
        sign_bundle(copy, private)
        doc = {"bundle": str(BUNDLE.relative_to(ROOT)),
               "manifest_sha256": hashlib.sha256((BUNDLE / "manifest.json").read_bytes()).hexdigest(),
               "public_key_pem": public.read_text(), "manifest_sig": json.loads((copy / SIGNATURE_FILE).read_text())}
    atomic_write(OUT, lambda p: p.write_text(json.dumps(doc, indent=1) + "\n"))
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
