"""The artifact bundle (NAME.mmedge/): manifest schema, hashing, loading and verification (no torch)."""

from mmedge.bundle.manifest import (CODES, MANIFEST_FILE, SCHEMA_VERSION, hash_files, load_bundle_manifest,
                                    load_manifest, write_manifest)


def refusal_code(exc: BaseException) -> str | None:
    """The reason code of a bundle refusal (a BundleError: "hash-mismatch", "unlisted", ... as in
    docs/bundle-format.md), None for any other exception."""
    from mmedge.errors import BundleError

    return exc.code if isinstance(exc, BundleError) else None


__all__ = ["CODES", "MANIFEST_FILE", "SCHEMA_VERSION", "hash_files", "load_bundle_manifest", "load_manifest",
           "refusal_code", "write_manifest"]
