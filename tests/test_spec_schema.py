"""The spec (docs/bundle-format.md) and the manifest schemas never disagree: the published schemas
are the package's, every bound the spec's tables state is the schema's (and every schema bound is
stated), the bounds its prose repeats are the schema's and the loader's, and its refusal codes are
the loader's."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SPEC = (ROOT / "docs/bundle-format.md").read_text()


def _sync():
    spec = importlib.util.spec_from_file_location("sync_schemas", ROOT / "scripts/sync_schemas.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SYNC = _sync()


@pytest.mark.parametrize("source, published", list(SYNC.PUBLISHED.items()))
def test_published_schemas_are_the_package_schemas(source, published):
    assert (ROOT / published).read_bytes() == (ROOT / source).read_bytes(), "run python scripts/sync_schemas.py"
    assert f"`{published}`" in SPEC  # named by the spec


def _spec_table(published: str) -> set[tuple[str, str, str, str]]:
    """The rows of the spec's bounds table for one schema, parsed from the markdown."""
    match = re.search(rf"<!-- bounds: {re.escape(published)} -->\n(.*?)\n<!-- /bounds -->", SPEC, re.S)
    assert match, f"the spec has no bounds table for {published}"
    rows = set()
    for line in match.group(1).splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        assert len(cells) == 4 and cells[0].startswith("`"), line
        rows.add((cells[0].strip("`"), *cells[1:]))
    return rows


@pytest.mark.parametrize("source, published", list(SYNC.PUBLISHED.items()))
def test_spec_bounds_are_the_schema_bounds(source, published):
    schema = json.loads((ROOT / source).read_text())
    want = set(SYNC.bounds(schema))
    got = _spec_table(published)
    assert got - want == set(), f"the spec states bounds the schema does not have: {sorted(got - want)}"
    assert want - got == set(), f"the schema has bounds the spec does not state: {sorted(want - got)}"


def _bound(schema: dict, field: str) -> tuple[str, str, str]:
    rows = {f: (what, low, high) for f, what, low, high in SYNC.bounds(schema)}
    return rows[field]


def test_prose_bounds_agree_with_the_schemas_and_the_loader():
    from mmedge.bundle import manifest, paths, signing

    classifier = json.loads((ROOT / "mmedge/bundle/manifest.schema.json").read_text())
    caption = json.loads((ROOT / "mmedge/caption/caption_manifest.schema.json").read_text())
    path = _bound(classifier, "$defs/path")
    assert f"of {path[1]} to {path[2]} characters [`path`]" in SPEC
    assert paths.MAX_PATH_CHARS == int(path[2])
    assert _bound(caption, "$defs/path") == path
    assert "Read at most 8 MiB (8,388,608 bytes)" in SPEC and manifest.MAX_MANIFEST_BYTES == 8_388_608
    assert "of at most 4,096 bytes" in SPEC and signing.MAX_SIGNATURE_BYTES == 4096
    assert "More\n  than 32 levels is refused" in SPEC and manifest.MAX_DEPTH == 32
    assert "exceeds 2^53 - 1\n  (9,007,199,254,740,991)" in SPEC
    name, sequence = _bound(classifier, "$defs/release.name"), _bound(classifier, "$defs/release.sequence")
    assert name == ("characters", "1", "128") and "`name`: 1 to 128 characters" in SPEC
    assert sequence == ("value", "0", "9,007,199,254,740,991") and "an integer from 0 to 2^53 - 1" in SPEC
    assert _bound(caption, "$defs/release.name") == name and _bound(caption, "$defs/release.sequence") == sequence
    assert _bound(caption, "model.config.image_size") == ("value", "8", "4,096")
    assert "`image_size` 8..4096" in SPEC


def _spec_codes() -> list[str]:
    section = SPEC.split("## Refusal codes", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([a-z-]+)` \|", section, re.M)


def test_refusal_codes_are_the_loaders():
    codes = _spec_codes()
    assert len(codes) == len(set(codes)) == 21
    from mmedge.bundle import manifest

    if hasattr(manifest, "CODES"):
        assert sorted(codes) == sorted(manifest.CODES)
    cases = json.loads((ROOT / "tests/vectors/negative/cases.json").read_text())["cases"]
    assert {c["code"] for c in cases} - {None} <= set(codes)
