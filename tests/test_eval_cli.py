import json
import subprocess
import sys

import numpy as np
import pytest

from mmedge.cli import VERBS, main
from mmedge.evaluation.metrics import early_exit


def run_cli(*args):
    proc = subprocess.run([sys.executable, "-m", "mmedge", *args], capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout, proc.stderr


def test_eval_writes_tables_and_json(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert main(["eval", "--model", str(tiny_model_dir), "--split", "test", "--limit", "40", "--json", str(out),
                 "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "Accuracy per exit and keep ratio" in text and "Accuracy per question type" in text
    result = json.loads(out.read_text())
    assert result["samples"] == 40 and set(result["keep_ratios"]) == {"1", "0.5", "0.25"}
    full, quarter = result["keep_ratios"]["1"], result["keep_ratios"]["0.25"]
    assert len(full["accuracy_per_exit"]) == 3 and quarter["exit_flops"][-1] < full["exit_flops"][-1]
    assert sum(v["n"] for v in full["accuracy_per_qtype"].values()) == 40
    sweep = full["threshold_sweep"]["learned"]
    assert sweep[0]["mean_exit"] == 0 and sweep[-1]["mean_exit"] == 2  # threshold 0 / above 1
    assert sweep[-1]["accuracy"] == pytest.approx(full["accuracy_per_exit"][-1])
    assert 0 <= quarter["prefilter"]["object_token_recall"] <= 1 and full["prefilter"] is None
    assert quarter["random_selection"]["accuracy_per_exit"]


def test_early_exit_picks_the_first_confident_exit():
    conf = np.array([[0.2, 0.95, 0.99], [0.99, 0.1, 0.1], [0.1, 0.2, 0.3]])
    assert early_exit(conf, 0.9).tolist() == [1, 0, 2]


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_has_help_with_examples(verb):
    code, out, _ = run_cli(verb, "--help")
    assert code == 0 and "examples:" in out and f"mmedge {verb}" in out


def test_errors_are_clear_and_not_tracebacks(tmp_path, tiny_model_dir):
    code, _, err = run_cli("eval", "--model", str(tmp_path / "missing"))
    assert code == 2 and "model directory not found" in err and "Traceback" not in err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"stepz": 1}))
    code, _, err = run_cli("train", "--config", str(bad), "--out", str(tmp_path / "o"))
    assert code == 2 and "unknown field 'stepz'" in err and "Traceback" not in err
    code, _, err = run_cli("train", "--task", "retrieval", "--out", str(tmp_path / "o"))
    assert code == 2 and "invalid choice" in err
    code, _, err = run_cli("eval", "--model", str(tiny_model_dir), "--limit", "0")
    assert code == 2 and "--limit" in err


def test_predict_converts_odd_images_and_refuses_bad_input(tiny_model_dir, tmp_path):
    from PIL import Image

    from mmedge.data.tasks import make_sample
    from mmedge.errors import ImageError, TextError
    from mmedge.models.predictor import TorchPredictor

    predictor = TorchPredictor(tiny_model_dir)
    s = make_sample("vqa", 0, "test", 0, image_size=48)
    rgb = predictor.predict(s.image, s.text, keep_ratio=0.5)
    assert len(rgb.exits) == 3 and len(rgb.kept_visual_tokens) == 18
    assert rgb.answer in predictor.config.labels
    for mode in ("RGBA", "L"):
        assert predictor.predict(Image.fromarray(s.image).convert(mode), s.text).answer in predictor.config.labels
    with pytest.raises(ImageError, match="CMYK"):  # its colours depend on a profile (docs/bundle-format.md, Image)
        predictor.predict(Image.fromarray(s.image).convert("CMYK"), s.text)
    big = Image.fromarray(s.image).resize((480, 300))  # other size, not square
    assert predictor.predict(big, s.text).answer in predictor.config.labels
    with pytest.raises(TextError):
        predictor.predict(s.image, "  ")
    with pytest.raises(ImageError):
        predictor.predict(np.zeros((1, 1, 3), dtype=np.uint8), s.text)
    Image.fromarray(s.image).save(tmp_path / "scene.png")
    code, out, _ = run_cli("predict", "--model", str(tiny_model_dir), "--image", str(tmp_path / "scene.png"),
                           "--text", s.text, "--json")
    assert code == 0 and json.loads(out)["answer"] in predictor.config.labels
    code, _, err = run_cli("predict", "--model", str(tiny_model_dir), "--image", str(tmp_path / "nope.png"),
                           "--text", s.text)
    assert code == 2 and "image file not found" in err and "Traceback" not in err
