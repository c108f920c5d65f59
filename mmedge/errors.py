"""Typed errors raised by mmedge. Each message says what went wrong and what to do."""

from __future__ import annotations


class MMEdgeError(Exception):
    """Base class of every error mmedge raises on purpose."""


class ConfigError(MMEdgeError, ValueError):
    """A configuration file or object is invalid (unknown fields, bad values)."""

    def __init__(self, problems: list[str] | str, source: str = "config") -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid {source}:\n{lines}")


class CheckpointError(MMEdgeError, OSError):
    """A model directory is missing, incomplete or corrupt."""


class ImageError(MMEdgeError, ValueError):
    """An input image cannot be used (unreadable, too small, too large)."""


class ImageCountError(ImageError):
    """A query gave a number of images the bundle does not read: a two-image bundle (NLVR2,
    preprocessing.num_images 2) takes a list of two, a one-image bundle one image."""

    def __init__(self, expected: int, got: int, where: str = "the bundle") -> None:
        self.expected, self.got = expected, got
        how = (f"a list of {expected} images, e.g. predict([image_a, image_b], text)" if expected > 1
               else "one image (a path, PIL image or array), e.g. predict(image, text)")
        super().__init__(f"{where} reads {expected} image{'s' if expected > 1 else ''} per query, got {got}: "
                         f"pass {how}")


class AdaptedModelUnsupported(MMEdgeError, ValueError):
    """A command that reads mmedge's own models was given a folder written by `mmedge adapt`; the
    message names the commands that take it."""

    def __init__(self, command: str, folder, instead: str) -> None:
        self.command, self.folder, self.instead = command, str(folder), instead
        super().__init__(f"{folder} is a model adapted by `mmedge adapt`; `mmedge {command}` runs mmedge's own models "
                         f"only. Instead: {instead}")


class TextError(MMEdgeError, ValueError):
    """An input text cannot be used (empty after normalisation)."""


class UnknownTaskError(MMEdgeError, ValueError):
    """A task name that mmedge does not know."""


class MissingDependencyError(MMEdgeError, ImportError):
    """An optional package is needed; the message gives the install command."""


class BackendUnavailableError(MMEdgeError, RuntimeError):
    """A backend cannot run on this platform (e.g. Core ML prediction off macOS)."""


class ExportError(MMEdgeError, RuntimeError):
    """An export failed: an unsupported op, a failed conversion, or parity out of tolerance."""


class BundleError(MMEdgeError, OSError):
    """An artifact bundle is missing, incomplete, tampered with or of an unknown schema version.

    `code` is the refusal's stable reason code (docs/bundle-format.md, "Refusal codes"), e.g.
    "hash-mismatch" or "unlisted"; "bundle" when no more precise code applies."""

    def __init__(self, *args, code: str = "bundle") -> None:
        super().__init__(*args)
        self.code = code


class DatasetError(MMEdgeError, ValueError):
    """A dataset on disk is unusable: a missing annotation file, a malformed record (the message
    names the file and the line or record), or an unknown image."""
