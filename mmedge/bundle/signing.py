"""Signed bundles: an Ed25519 signature over the exact bytes of ``manifest.json``.

The manifest lists the size and SHA-256 of every other file, and loading refuses any file the
manifest does not list, so one signature over the manifest's bytes covers the whole bundle. The
signature lives in ``manifest.sig`` (JSON: format, algorithm, signed file, the public key's SHA-256
fingerprint, the base64 signature). Keys are PEM files (PKCS#8 private, SubjectPublicKeyInfo
public), which Java (``X509EncodedKeySpec``), WebCrypto (``importKey("spki")``) and OpenSSL read.

Why not OpenSSF ``model-signing``: it pulls in sigstore, in-toto and blake3 and hashes the files a
second time into a DSSE envelope that every app runtime (JavaScript, Java) would have to parse;
the manifest already is the list of hashes. Uses ``cryptography`` (``pip install cryptography``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

from mmedge.errors import BundleError, MissingDependencyError

SIGNATURE_FILE = "manifest.sig"
SIGNATURE_FORMAT = "mmedge-signature-1"
MAX_SIGNATURE_BYTES = 4096
MAX_KEY_BYTES = 16384
INSTALL = "pip install cryptography"


class SignatureError(BundleError):
    """A bundle's signature is missing, malformed, or does not match the manifest and key."""


def _crypto():
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as exc:
        raise MissingDependencyError(f"signing and verifying bundles needs cryptography; run: {INSTALL}") from exc
    return serialization, ed25519


def _key_bytes(key) -> bytes:
    if isinstance(key, (bytes, bytearray)):
        return bytes(key)
    if isinstance(key, (str, os.PathLike)):
        from mmedge.bundle.paths import read_bounded

        path = Path(key)
        if not path.is_file():
            raise SignatureError(f"key file {path} does not exist; make a key pair with `mmedge sign --new-key DIR`")
        return read_bounded(path, MAX_KEY_BYTES)
    raise SignatureError(f"a key must be a PEM file path or PEM bytes, got {type(key).__name__}")


def load_private_key(key):
    """An Ed25519 private key from a PEM path, PEM bytes or a key object."""
    serialization, ed25519 = _crypto()
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    try:
        loaded = serialization.load_pem_private_key(_key_bytes(key), password=None)
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"not an unencrypted PEM private key ({exc})") from exc
    if not isinstance(loaded, ed25519.Ed25519PrivateKey):
        raise SignatureError(f"the private key is {type(loaded).__name__}; mmedge signs with Ed25519 keys "
                             "(`mmedge sign --new-key DIR` makes a pair)")
    return loaded


def load_public_key(key):
    """An Ed25519 public key from a PEM path, PEM bytes or a key object."""
    serialization, ed25519 = _crypto()
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    try:
        loaded = serialization.load_pem_public_key(_key_bytes(key))
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"not a PEM public key ({exc})") from exc
    if not isinstance(loaded, ed25519.Ed25519PublicKey):
        raise SignatureError(f"the public key is {type(loaded).__name__}; bundles are signed with Ed25519")
    return loaded


def fingerprint(public_key) -> str:
    """SHA-256 of the raw 32-byte public key, hex."""
    serialization, _ = _crypto()
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def new_key_pair(out_dir: str | Path, name: str = "mmedge-signing") -> tuple[Path, Path]:
    """Write NAME.pem (private, mode 0600) and NAME.pub.pem into out_dir; refuses to overwrite."""
    from mmedge.fileio import atomic_write

    serialization, ed25519 = _crypto()
    out_dir = Path(out_dir)
    private_path, public_path = out_dir / f"{name}.pem", out_dir / f"{name}.pub.pem"
    for path in (private_path, public_path):
        if path.exists():
            raise SignatureError(f"{path} exists; choose another directory or remove it first")
    key = ed25519.Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)

    def write_private(tmp: Path) -> None:
        tmp.write_bytes(private_pem)

    atomic_write(private_path, write_private)
    os.chmod(private_path, 0o600)
    atomic_write(public_path, lambda tmp: tmp.write_bytes(public_pem))
    return private_path, public_path


def sign_bundle(root: str | Path, private_key) -> Path:
    """Sign root/manifest.json as it is on disk (a classifier or captioning bundle alike); writes
    root/manifest.sig atomically. It signs the bytes as they are: check the bundle first
    (mmedge.bundle.load_bundle_manifest), as `mmedge sign` does."""
    import stat

    from mmedge.bundle.manifest import read_manifest_bytes
    from mmedge.fileio import atomic_write

    root = Path(root)
    key = load_private_key(private_key)
    path = root / SIGNATURE_FILE
    if os.path.lexists(path) and not stat.S_ISREG(os.lstat(path).st_mode):
        raise SignatureError(f"{path} is not a regular file (a folder, link or device); remove it, then sign again",
                             code="signature-malformed")
    data = read_manifest_bytes(root)
    record = {"format": SIGNATURE_FORMAT, "algorithm": "ed25519", "signed_file": "manifest.json",
              "public_key_sha256": fingerprint(key.public_key()),
              "signature": base64.b64encode(key.sign(data)).decode("ascii")}
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(record, indent=1) + "\n"))
    return path


def verify_manifest_signature(root: Path, manifest_bytes: bytes, public_key) -> None:
    """SignatureError unless root/manifest.sig is a valid signature of `manifest_bytes` by `public_key`.
    Codes: signature-missing, signature-malformed (not a regular file, over 4,096 bytes, not strict
    JSON, another format or algorithm, bad base64), signature-key, signature-invalid."""
    from mmedge.bundle.manifest import parse_json
    from mmedge.bundle.paths import read_bounded

    key = load_public_key(public_key)
    path = Path(root) / SIGNATURE_FILE
    if not os.path.lexists(path):
        raise SignatureError(f"{root} is not signed (no {SIGNATURE_FILE}) but a verification key was given; "
                             "sign it with `mmedge sign --artifact BUNDLE --key PRIVATE.pem`", code="signature-missing")
    malformed = "signature-malformed"
    try:
        data = read_bounded(path, MAX_SIGNATURE_BYTES, missing="signature-missing", not_regular=malformed,
                            too_large=malformed)
        record = parse_json(data, SIGNATURE_FILE, malformed)
    except BundleError as exc:
        raise SignatureError(f"{SIGNATURE_FILE} is malformed ({str(exc)[:160]}); sign the bundle again",
                             code=exc.code) from exc
    try:
        if not isinstance(record, dict):
            raise ValueError("not a JSON object")
        if record.get("format") != SIGNATURE_FORMAT or record.get("algorithm") != "ed25519" \
                or record.get("signed_file") != "manifest.json":
            raise ValueError(f"format {str(record.get('format'))[:40]!r} / algorithm {str(record.get('algorithm'))[:40]!r}"
                             f" / signed_file {str(record.get('signed_file'))[:40]!r}")
        signature = base64.b64decode(record["signature"], validate=True)
    except (ValueError, KeyError, TypeError) as exc:
        raise SignatureError(f"{SIGNATURE_FILE} is malformed ({str(exc)[:120]}); sign the bundle again",
                             code=malformed) from exc
    if record.get("public_key_sha256") != fingerprint(key):
        raise SignatureError(f"{root} was signed with another key (fingerprint "
                             f"{str(record.get('public_key_sha256'))[:16]}..., yours {fingerprint(key)[:16]}...)",
                             code="signature-key")
    from cryptography.exceptions import InvalidSignature

    try:
        key.verify(signature, manifest_bytes)
    except InvalidSignature as exc:
        raise SignatureError(f"{root}: the signature does not match manifest.json: the manifest was changed "
                             "after signing (calibrating removes the signature; sign again)",
                             code="signature-invalid") from exc
