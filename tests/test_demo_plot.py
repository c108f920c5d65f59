"""The demo's figure: intervals on both axes, no lines between policies; results carry no machine paths."""

from __future__ import annotations

import pytest


def test_demo_plot_has_intervals_and_no_lines(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mmedge import demo

    rows = [{"backend": "onnxruntime", "precision": "fp32", "policy": "full depth, every token", "accuracy": 0.98,
             "p10_ms": 2.0, "p50_ms": 2.2, "p90_ms": 2.6},
            {"backend": "onnxruntime", "precision": "fp32", "policy": "prefilter + exits", "accuracy": 0.977,
             "p10_ms": 0.6, "p50_ms": 0.73, "p90_ms": 0.9}]
    figures = []
    monkeypatch.setattr(plt, "close", lambda fig: figures.append(fig))
    demo.plot(rows, tmp_path / "demo.png", samples=300)
    ax = figures[0].axes[0]
    assert (tmp_path / "demo.png").stat().st_size > 0
    assert all(len(line.get_xdata()) <= 2 for line in ax.get_lines())  # error-bar segments only: no polyline
    low, high = ax.get_ylim()
    assert high - low >= 0.1  # 0.977 vs 0.980 is not stretched over the whole axis
    lo, hi = demo.wilson(0.98, 300)
    assert lo == pytest.approx(0.957, abs=1e-3) and hi == pytest.approx(0.991, abs=1e-3)


def test_shown_paths_are_repo_relative(tmp_path, monkeypatch):
    from mmedge.fileio import shown_path

    monkeypatch.chdir(tmp_path)
    (tmp_path / "models" / "m").mkdir(parents=True)
    assert shown_path(tmp_path / "models" / "m") == "models/m"
    assert shown_path("/elsewhere/x") == "/elsewhere/x"  # outside the working directory: left as given
