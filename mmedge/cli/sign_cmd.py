"""mmedge sign: make a signing key pair, sign a bundle's manifest, or verify a bundle's signature."""

from __future__ import annotations

import argparse

from mmedge.cli._checks import writable_dir

EPILOG = """examples:
  mmedge sign --new-key keys/                                   # keys/mmedge-signing.pem (private), .pub.pem
  mmedge sign --artifact runs/demo/vqa-default.mmedge --key keys/mmedge-signing.pem
  mmedge sign --artifact runs/demo/vqa-default.mmedge --verify keys/mmedge-signing.pub.pem
  mmedge sign --artifact runs/demo-caption/caption-default.mmedge --key keys/mmedge-signing.pem

The signature (manifest.sig) is Ed25519 over the exact bytes of manifest.json, which lists the
SHA-256 of every other file; an app verifies it before loading (docs/bundle-format.md), and
Engine.load(bundle, verify_key="keys/mmedge-signing.pub.pem") does the same. Classifier and
captioning bundles alike. Only a whole bundle is signed: every listed file with its SHA-256 and
nothing unlisted inside. Calibrating rewrites the manifest and removes the signature: sign again
afterwards (or pass --sign-key to calibrate).
"""


def add_parser(sub) -> None:
    p = sub.add_parser("sign", help="sign a bundle (Ed25519 over its manifest) or verify its signature",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--new-key", metavar="DIR", type=writable_dir, help="write a new key pair into DIR and stop")
    what.add_argument("--key", help="private key (PEM) to sign --artifact with")
    what.add_argument("--verify", metavar="PUBLIC_KEY", help="public key (PEM) to verify --artifact against")
    p.add_argument("--artifact", help="bundle directory made by `mmedge export` (any kind: classifier, captioning, generative VLM)")
    p.set_defaults(run=run)


def _check_signature_file(bundle) -> None:
    """A manifest.sig that is a folder, link or device is named, not met with an OSError."""
    import os
    import stat
    from pathlib import Path

    from mmedge.bundle.signing import SIGNATURE_FILE, SignatureError

    path = Path(bundle) / SIGNATURE_FILE
    if os.path.lexists(path) and not stat.S_ISREG(os.lstat(path).st_mode):
        kind = "a symbolic link" if path.is_symlink() else "a folder" if path.is_dir() else "not a regular file"
        raise SignatureError(f"{path} is {kind}; a signature is a regular file. Remove it, then sign the bundle "
                             "again (`mmedge sign --artifact BUNDLE --key PRIVATE.pem`)", code="signature-malformed")


def run(args: argparse.Namespace) -> int:
    from mmedge.bundle import signing
    from mmedge.bundle.manifest import load_bundle_manifest  # any kind: classifier, captioning, generative VLM
    from mmedge.errors import ConfigError

    if args.new_key:
        if args.artifact:
            raise ConfigError("--new-key writes a key pair and signs nothing: drop --artifact (sign with --key)",
                              "arguments")
        private, public = signing.new_key_pair(args.new_key)
        print(f"wrote {private} (private: keep it secret) and {public} (ship it with your app)")
        return 0
    if not args.artifact:
        raise ConfigError("--artifact BUNDLE is needed with --key or --verify", "arguments")
    _check_signature_file(args.artifact)
    if args.key:
        key = signing.load_private_key(args.key)  # a bad key fails before anything is read or written
        load_bundle_manifest(args.artifact)  # sign only a bundle that is whole: nothing unlisted, every SHA-256
        path = signing.sign_bundle(args.artifact, key)
        print(f"signed {args.artifact}: {path}")
        return 0
    key = signing.load_public_key(args.verify)
    load_bundle_manifest(args.artifact, verify_key=key)
    print(f"{args.artifact}: signature valid (key {signing.fingerprint(key)[:16]}...), every file matches its "
          "SHA-256 and nothing unlisted is inside")
    return 0
