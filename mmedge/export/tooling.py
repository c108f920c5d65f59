"""Small helpers shared by the export targets: lazy imports, quiet exporters, typed failures."""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import re
import warnings

from mmedge.errors import ExportError, MissingDependencyError

# "aten.foo.default", "aten::foo", "mylib::bar", "torch.ops.mylib.bar"
_OP_PATTERN = re.compile(r"\b(?:torch\.ops\.)?([a-z_][a-z0-9_]*(?:::|\.)[a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)?)",
                         re.IGNORECASE)
_OP_NAMESPACES = ("aten", "prims", "quantized_decomposed", "torchao")


def require(module: str, install: str):
    """Import an optional package or raise MissingDependencyError with the exact install command."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(f"{module} is not installed; run: {install}") from exc


@contextlib.contextmanager
def quiet():
    """Silence the exporters' warnings, progress bars and INFO logs, and the warnings of the
    onnxruntime sessions their tools make (the ORT-format converter, the quantizer); errors still
    raise (mmedge.runtime.backends.quiet says which library speaks where)."""
    from mmedge.runtime.backends.quiet import IMPORT_LOGGERS, ONNXRUNTIME_TOOL_LOGGERS, onnxruntime_logs

    loggers = [logging.getLogger(n) for n in ("torch", "torch.onnx", "coremltools", "executorch", "onnxscript", "root",
                                              *IMPORT_LOGGERS, *ONNXRUNTIME_TOOL_LOGGERS)]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()), onnxruntime_logs():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


_SPECIFIC = (re.compile(r"OpOverload\(op='([\w.]+)'"), re.compile(r"target=torch\.ops\.([\w.]+)"))
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _chain(exc: BaseException | None):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def unsupported_op(exc_or_message: BaseException | str) -> str | None:
    """The operator an exporter failed on, searched through the exception and its causes."""
    texts = [exc_or_message] if isinstance(exc_or_message, str) else [str(e) for e in _chain(exc_or_message)]
    for pattern in _SPECIFIC:
        for text in texts:
            if m := pattern.search(text):
                return m.group(1).removesuffix(".default")
    for text in texts:
        for match in _OP_PATTERN.finditer(text):
            name = match.group(1)
            if "::" in name or re.split(r"::|\.", name)[0] in _OP_NAMESPACES:
                return name
    return None


def export_failure(target: str, model, spec, exc: BaseException) -> ExportError:
    """An ExportError naming the target, the stage, its layers and (when found) the operator."""
    layers = list(model.stage_layers(spec.stage))
    where = f"stage {spec.stage} ({'embeddings + prefilter + ' if spec.stage == 0 else ''}layers {layers})"
    message = _ANSI.sub("", str(exc)).strip()
    op = unsupported_op(exc)
    first = message.splitlines()[0] if message else type(exc).__name__
    what = f"operator {op} is not supported" if op else "the exporter failed"
    return ExportError(f"{target} export of {spec.name}: {what} in {where}: {first[:500]}")
