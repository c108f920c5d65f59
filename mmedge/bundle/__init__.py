"""The artifact bundle (NAME.mmedge/): manifest schema, hashing, loading and verification (no torch)."""

from mmedge.bundle.manifest import MANIFEST_FILE, SCHEMA_VERSION, hash_files, load_manifest, write_manifest

__all__ = ["MANIFEST_FILE", "SCHEMA_VERSION", "hash_files", "load_manifest", "write_manifest"]
