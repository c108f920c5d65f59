"""Images from disk at training speed: decoded, padded and resized once into a memory-mapped
uint8 array, keyed by the files (path, size, mtime) and the preprocessing, reused afterwards.

A missing, truncated or unreadable image is counted and skipped (its records are dropped) with a
summary at the end, never a crash mid-epoch. Two images (NLVR2) are placed side by side first.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmedge.data.preprocess import resized_rgb
from mmedge.errors import ImageError
from mmedge.fileio import atomic_write

CACHE_VERSION = 1  # bump when the decoding or resizing changes


@dataclass
class CachedImages:
    array: np.ndarray                      # (n, S, S, 3) uint8, memory-mapped
    row: dict[tuple[str, ...], int]        # image path(s) -> row
    skipped: dict[str, list[str]] = field(default_factory=dict)  # reason -> paths

    def summary(self) -> str:
        total = len(self.row) + sum(len(v) for v in self.skipped.values())
        if not self.skipped:
            return f"{total} images, none skipped"
        reasons = ", ".join(f"{len(v)} {k}" for k, v in self.skipped.items())
        first = next(iter(self.skipped.values()))[0]
        return f"skipped {total - len(self.row)} of {total} images ({reasons}); first: {first}"


def _fingerprint(path: Path) -> list:
    try:
        st = path.stat()
        return [str(path), st.st_size, st.st_mtime_ns]
    except OSError:
        return [str(path), None, None]


def _decode(paths: tuple[Path, ...], image_size: int) -> np.ndarray:
    parts = [resized_rgb(p, image_size) for p in paths]  # each (S, S, 3)
    if len(parts) == 1:
        return parts[0]
    return resized_rgb(np.concatenate(parts, axis=1), image_size)  # side by side, padded back to a square


def _reason(exc: Exception) -> str:
    if isinstance(exc, FileNotFoundError) or "not found" in str(exc).lower() or "no such file" in str(exc).lower():
        return "missing"
    return "unreadable"


def cache_images(items: list[tuple[Path, ...]], image_size: int, cache_dir: Path, workers: int = 2,
                 progress: bool = True) -> CachedImages:
    """Every distinct image (tuple) of `items`, cached under cache_dir; reused when unchanged."""
    from tqdm.auto import tqdm

    unique = sorted(set(items))
    key = hashlib.sha256(json.dumps([CACHE_VERSION, image_size, [[_fingerprint(p) for p in t] for t in unique]])
                         .encode()).hexdigest()[:20]
    folder = cache_dir / f"images-{image_size}px-{key}"
    index_file = folder / "index.json"
    if index_file.is_file():
        index = json.loads(index_file.read_text())
        array = np.load(folder / "images.npy", mmap_mode="r")
        return CachedImages(array, {tuple(k.split("\n")): v for k, v in index["row"].items()}, index["skipped"])
    folder.mkdir(parents=True, exist_ok=True)
    decoded: dict[tuple[Path, ...], np.ndarray] = {}
    skipped: dict[str, list[str]] = {}

    def work(t: tuple[Path, ...]):
        try:
            return t, _decode(t, image_size), None
        except (ImageError, OSError) as exc:
            return t, None, exc

    with ThreadPoolExecutor(max(1, workers)) as pool:
        for t, img, exc in tqdm(pool.map(work, unique), total=len(unique), desc="caching images",
                                disable=not progress):
            if exc is None:
                decoded[t] = img
            else:
                skipped.setdefault(_reason(exc), []).append(" | ".join(map(str, t)))
    tmp = folder / f"images.{os.getpid()}.tmp.npy"
    array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(decoded), image_size, image_size, 3))
    row = {}
    for i, (t, img) in enumerate(decoded.items()):
        array[i] = img
        row["\n".join(map(str, t))] = i
    array.flush()
    del array
    os.replace(tmp, folder / "images.npy")
    atomic_write(index_file, lambda p: p.write_text(json.dumps({"row": row, "skipped": skipped})))
    return CachedImages(np.load(folder / "images.npy", mmap_mode="r"),
                        {tuple(k.split("\n")): v for k, v in row.items()}, skipped)
