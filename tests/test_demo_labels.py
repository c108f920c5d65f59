"""`mmedge demo --model DIR` scores answers as strings, and refuses a model whose labels cannot
answer the scenes' questions (a model trained on a dataset of your own) before exporting anything."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from mmedge.bench.queries import LabelMismatchError
from mmedge.data.batches import generate
from mmedge.data.tasks import LABELS
from mmedge.errors import MMEdgeError
from mmedge.runtime.controller import Policy


class OracleEngine:
    """Answers every sample right, as a string, with its labels in another order than the scenes'
    (a model trained on JSON Lines data orders its labels by answer frequency)."""

    def __init__(self, samples, labels):
        self.labels = labels
        self.answers = iter([s.answer for s in samples])

    def predict(self, image, text, **_):
        return SimpleNamespace(answer=next(self.answers), visual_dropped_after=None, exit_index=1,
                               kept_visual_tokens=[0, 1], timings_ms={"total": 1.0})


def test_accuracy_is_counted_by_answer_string_not_label_index():
    from mmedge.demo import run_policy

    samples = generate("vqa", 0, "test", range(24))
    reordered = list(reversed(LABELS["vqa"]))
    assert any(reordered[s.label] != s.answer for s in samples)
    row = run_policy(OracleEngine(samples, reordered), samples, Policy("full"), 1.0)
    assert row["accuracy"] == 1.0


def write_config(root, labels, task="vqa"):
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps({"task": task, "labels": labels}))
    return root


def test_a_model_with_other_labels_is_refused_before_exporting(tmp_path):
    from mmedge.demo import run_demo

    model = write_config(tmp_path / "mine", ["red", "car", "two", "yes"])
    with pytest.raises(LabelMismatchError, match="not the scenes' vqa labels") as caught:
        run_demo(model, tmp_path / "out", samples=4, calibration_samples=100, progress=False, log=lambda *_: None)
    assert isinstance(caught.value, MMEdgeError)  # the CLI prints it on one line, exit status 2
    assert "--data NAME:ROOT" in str(caught.value)
    assert not (tmp_path / "out" / "mine.mmedge").exists()


def test_labels_in_another_order_or_with_more_answers_are_accepted(tmp_path):
    from mmedge.demo import check_model_labels

    check_model_labels(write_config(tmp_path / "a", list(reversed(LABELS["vqa"]))))
    check_model_labels(write_config(tmp_path / "b", [*LABELS["vqa"], "purple"]))
    with pytest.raises(LabelMismatchError):
        check_model_labels(write_config(tmp_path / "c", list(LABELS["vqa"][:-1])))
