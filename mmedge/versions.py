"""Installed versions of the packages that made or measured something (recorded in outputs)."""

from __future__ import annotations

from importlib import metadata


def package_versions(names) -> dict[str, str]:
    """{name: version} for each installed package among `names` (missing ones are left out)."""
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:  # not installed: nothing to record
            continue
    return out
