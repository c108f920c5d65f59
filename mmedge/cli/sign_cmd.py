"""mmedge sign: make a signing key pair, sign a bundle's manifest, or verify a bundle's signature."""

from __future__ import annotations

import argparse

EPILOG = """examples:
  mmedge sign --new-key keys/                                   # keys/mmedge-signing.pem (private), .pub.pem
  mmedge sign --artifact runs/demo/vqa-default.mmedge --key keys/mmedge-signing.pem
  mmedge sign --artifact runs/demo/vqa-default.mmedge --verify keys/mmedge-signing.pub.pem

The signature (manifest.sig) is Ed25519 over the exact bytes of manifest.json, which lists the
SHA-256 of every other file; an app verifies it before loading (docs/bundle-format.md), and
Engine.load(bundle, verify_key="keys/mmedge-signing.pub.pem") does the same. Calibrating rewrites
the manifest and removes the signature: sign again afterwards (or pass --sign-key to calibrate).
"""


def add_parser(sub) -> None:
    p = sub.add_parser("sign", help="sign a bundle (Ed25519 over its manifest) or verify its signature",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--new-key", metavar="DIR", help="write a new key pair into DIR and stop")
    what.add_argument("--key", help="private key (PEM) to sign --artifact with")
    what.add_argument("--verify", metavar="PUBLIC_KEY", help="public key (PEM) to verify --artifact against")
    p.add_argument("--artifact", help="bundle directory made by `mmedge export`")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mmedge.bundle import signing
    from mmedge.bundle.manifest import load_manifest
    from mmedge.errors import ConfigError

    if args.new_key:
        private, public = signing.new_key_pair(args.new_key)
        print(f"wrote {private} (private: keep it secret) and {public} (ship it with your app)")
        return 0
    if not args.artifact:
        raise ConfigError("--artifact BUNDLE is needed with --key or --verify", "arguments")
    if args.key:
        load_manifest(args.artifact)  # sign only a bundle that is whole
        path = signing.sign_bundle(args.artifact, args.key)
        print(f"signed {args.artifact}: {path}")
        return 0
    load_manifest(args.artifact, verify_key=args.verify)
    key = signing.fingerprint(signing.load_public_key(args.verify))
    print(f"{args.artifact}: signature valid (key {key[:16]}...), every file matches its SHA-256")
    return 0
