"""The routine notices of the libraries mmedge runs on, kept off the user's terminal at their source.

Each library is quietened where it speaks, through its own switch, and only around the calls that
make the noise; errors always get through:

  onnxruntime  "Removing initializer ..." and other graph warnings at session creation: a session's
               SessionOptions.log_severity_level (QUIET_SEVERITY, errors still logged), and for the
               sessions its tools create themselves (the ORT-format converter, the quantizer) the
               default logger's severity, raised for the call (`onnxruntime_logs`); the tools' own
               INFO lines ("Created config in ...") through their loggers' levels
               (ONNXRUNTIME_TOOL_LOGGERS, mmedge.export.tooling.quiet)
  torchao      "Failed to load .../_C_mxfp8...so" (optional CUDA kernels) and torch's _pytree
               deprecation notice for torchao's enums, both logging WARNINGs at import, and
               executorch's ExperimentalWarning: logger levels and a warnings filter around the
               import (`library_imports`)
  executorch   "[cpuinfo_utils.cpp:..] ..." and "[threadpool.cpp:..] Resetting threadpool ...",
               printed by native code straight to file descriptor 2 when its thread pool is made
               or resized: no switch exists, so descriptor 2 is captured around those calls only,
               the lines matching EXECUTORCH_NOISE are dropped and every other line is written
               back (everything when the call raises) (`native_stderr`)
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import threading
import warnings

# onnxruntime severities: 0 verbose, 1 info, 2 warning (its default), 3 error, 4 fatal
QUIET_SEVERITY = 3
DEFAULT_SEVERITY = 2
# Python loggers that report routine conditions at WARNING when torchao / executorch are imported
IMPORT_LOGGERS = ("torchao", "torch.utils._pytree")
# onnxruntime's tools log each step at INFO through a root handler they install themselves
# ("ort_format_model.utils [INFO] - Created config in ...")
ONNXRUNTIME_TOOL_LOGGERS = ("ort_format_model.utils", "usability_checker", "check_usability")
EXECUTORCH_NOISE = re.compile(r"^\[(?:cpuinfo_utils|threadpool)\.cpp:\d+\] ")

_fd_lock = threading.RLock()  # descriptor 2 is process-wide: one capture at a time
_ort_depth = [0]               # onnxruntime_logs may nest: the outermost one restores the default
_ort_lock = threading.Lock()


def quiet_session_options(options):
    """SessionOptions that log errors only (graph warnings such as 'Removing initializer' are dropped)."""
    options.log_severity_level = QUIET_SEVERITY
    return options


@contextlib.contextmanager
def onnxruntime_logs(severity: int = QUIET_SEVERITY):
    """onnxruntime's default logger at `severity` for the call (the sessions its tools make
    themselves use it), back at onnxruntime's default (warning) when the outermost such call ends."""
    try:
        import onnxruntime as ort
    except ImportError:
        yield
        return
    with _ort_lock:
        _ort_depth[0] += 1
        ort.set_default_logger_severity(severity)
    try:
        yield
    finally:
        with _ort_lock:
            _ort_depth[0] -= 1
            if not _ort_depth[0]:
                ort.set_default_logger_severity(DEFAULT_SEVERITY)


@contextlib.contextmanager
def library_imports():
    """Around a first import of torchao or executorch: their import-time WARNING log records and
    executorch's ExperimentalWarning are not shown (ERROR and above still are)."""
    loggers = [logging.getLogger(name) for name in IMPORT_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="This API is experimental")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


@contextlib.contextmanager
def native_stderr(noise: re.Pattern = EXECUTORCH_NOISE):
    """Capture file descriptor 2 around a native call that prints routine lines straight to it:
    afterwards the lines matching `noise` are dropped and every other line is written back to
    stderr; when the call raises, everything is written back."""
    with _fd_lock:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError):  # no descriptor 2 to capture: let the call speak
            yield
            return
        failed = False
        with tempfile.TemporaryFile() as capture:
            os.dup2(capture.fileno(), 2)
            try:
                yield
            except BaseException:
                failed = True
                raise
            finally:
                with contextlib.suppress(OSError, ValueError):
                    sys.stderr.flush()
                os.dup2(saved, 2)
                os.close(saved)
                capture.seek(0)
                text = capture.read().decode("utf-8", errors="replace")
                kept = text if failed else "".join(line for line in text.splitlines(keepends=True)
                                                   if not noise.match(line))
                if kept:
                    sys.stderr.write(kept)
                    sys.stderr.flush()
