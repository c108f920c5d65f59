"""Images from disk at training speed: decoded, padded and resized once into a memory-mapped
uint8 array, keyed by the files (path, size, mtime) and the preprocessing, reused afterwards.

A missing, truncated or unreadable image is counted and skipped (its records are dropped) with a
summary at the end, never a crash mid-epoch. An image that resolves outside the dataset's root (a
link) or is not a regular file (a FIFO, device, socket, directory) is a DatasetError naming its
record: it is opened without blocking (records.open_inside) and never read. Two images (NLVR2) are
placed side by side first.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmedge.data.preprocess import load_image, resized_rgb, square_resized
from mmedge.data.sources.records import open_inside
from mmedge.errors import ImageError
from mmedge.fileio import atomic_write

CACHE_VERSION = 3  # bump when the decoding, resizing or index changes (2: images confined to the root; 3: sizes)


@dataclass
class CachedImages:
    array: np.ndarray                      # (n, S, S, 3) uint8, memory-mapped
    row: dict[tuple[str, ...], int]        # image path(s) -> row
    skipped: dict[str, list[str]] = field(default_factory=dict)  # reason -> paths
    sizes: dict[tuple[str, ...], tuple[int, int]] = field(default_factory=dict)  # one image's (width, height) as shown

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


def _read(path: Path, image_size: int, root: Path, where: str) -> tuple[np.ndarray, tuple[int, int]]:
    """One image file, opened inside `root` without blocking, decoded from that open file: (S, S, 3),
    and its (width, height) as a viewer shows it (before padding and resizing)."""
    from PIL import Image, UnidentifiedImageError

    with open_inside(path, root, where) as f:
        try:
            img = Image.open(f)
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError, SyntaxError, EOFError,
                ValueError) as exc:
            raise ImageError(f"cannot read image {path}: {exc}") from exc
        with img:
            rgb = load_image(img)  # oriented and converted: its size is the one boxes are given in
            return square_resized(rgb, image_size), rgb.size


def _decode(paths: tuple[Path, ...], image_size: int, root: Path, where: str = ""
            ) -> tuple[np.ndarray, tuple[int, int] | None]:
    """(S, S, 3) of one image, or of two side by side (padded back to a square; no size then)."""
    parts = [_read(p, image_size, root, where) for p in paths]  # each ((S, S, 3), size)
    if len(parts) == 1:
        return parts[0]
    return resized_rgb(np.concatenate([a for a, _ in parts], axis=1), image_size), None


def _reason(exc: Exception) -> str:
    if isinstance(exc, FileNotFoundError) or "not found" in str(exc).lower() or "no such file" in str(exc).lower():
        return "missing"
    return "unreadable"


def _cached(folder: Path, image_size: int) -> CachedImages | None:
    """The cache in `folder`, or None when it is absent or not one this code wrote (then it is rebuilt):
    both files regular (a FIFO there must not block), the index well formed, the rows in range."""
    index_file, array_file = folder / "index.json", folder / "images.npy"
    try:
        if not all(stat.S_ISREG(os.lstat(p).st_mode) for p in (index_file, array_file)):
            return None
        index = json.loads(index_file.read_text(encoding="utf-8"))
        array = np.load(array_file, mmap_mode="r", allow_pickle=False)
        row = {tuple(k.split("\n")): v for k, v in index["row"].items()}
        skipped = {str(k): [str(p) for p in v] for k, v in index["skipped"].items()}
        sizes = {tuple(k.split("\n")): (int(w), int(h)) for k, (w, h) in index["size"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return None
    if array.dtype != np.uint8 or array.shape[1:] != (image_size, image_size, 3) or \
            not all(type(v) is int and 0 <= v < len(array) for v in row.values()):
        return None
    return CachedImages(array, row, skipped, sizes)


def cache_images(items: list[tuple[Path, ...]], image_size: int, cache_dir: Path, workers: int = 2,
                 progress: bool = True, *, root: Path, where: dict[tuple[Path, ...], str] | None = None
                 ) -> CachedImages:
    """Every distinct image (tuple) of `items`, cached under cache_dir; reused when unchanged. Every
    image is read inside `root` (records.open_inside); `where` names each tuple's record for errors."""
    from tqdm.auto import tqdm

    unique = sorted(set(items))
    key = hashlib.sha256(json.dumps([CACHE_VERSION, image_size, [[_fingerprint(p) for p in t] for t in unique]])
                         .encode()).hexdigest()[:20]
    folder = cache_dir / f"images-{image_size}px-{key}"
    cached = _cached(folder, image_size)
    if cached is not None:
        return cached
    folder.mkdir(parents=True, exist_ok=True)
    decoded: dict[tuple[Path, ...], tuple[np.ndarray, tuple[int, int] | None]] = {}
    skipped: dict[str, list[str]] = {}
    where = where or {}

    def work(t: tuple[Path, ...]):
        try:
            return t, _decode(t, image_size, root, where.get(t, "")), None
        except (ImageError, OSError) as exc:
            return t, None, exc

    with ThreadPoolExecutor(max(1, workers)) as pool:
        for t, got, exc in tqdm(pool.map(work, unique), total=len(unique), desc="caching images",
                                disable=not progress):
            if exc is None:
                decoded[t] = got
            else:
                skipped.setdefault(_reason(exc), []).append(" | ".join(map(str, t)))
    tmp = folder / f"images.{os.getpid()}.tmp.npy"
    array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(decoded), image_size, image_size, 3))
    row, sizes = {}, {}
    for i, (t, (img, size)) in enumerate(decoded.items()):
        array[i] = img
        row["\n".join(map(str, t))] = i
        if size is not None:
            sizes["\n".join(map(str, t))] = list(size)
    array.flush()
    del array
    os.replace(tmp, folder / "images.npy")
    atomic_write(folder / "index.json", lambda p: p.write_text(json.dumps({"row": row, "skipped": skipped,
                                                                            "size": sizes})))
    return CachedImages(np.load(folder / "images.npy", mmap_mode="r"),
                        {tuple(k.split("\n")): v for k, v in row.items()}, skipped,
                        {tuple(k.split("\n")): (w, h) for k, (w, h) in sizes.items()})
