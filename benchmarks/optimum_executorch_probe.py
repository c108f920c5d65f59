"""Ask optimum-executorch to export a SmolVLM source (run by benchmarks/vlm_scale.py in the side venv of
scripts/setup_optimum_executorch_venv.sh, whose transformers is the one optimum-executorch pins).

    python benchmarks/optimum_executorch_probe.py SOURCE WORK    # prints one line: OPTIMUM-ET-JSON {...}

1. The SmolVLM class as it is (`optimum-cli export executorch --task image-text-to-text --recipe xnnpack`).
2. The same weights as `Idefics3ForConditionalGeneration` (SmolVLM's first release's class; the same layers,
   loaded strictly, image features checked equal), exported the same way, with one change: the vision
   export's sample inputs come from a local image (optimum-executorch downloads one from the web, and this
   machine has no web).
Each attempt's outcome (exported, or its error's last line and where transformers' code stopped) is recorded.
"""

from __future__ import annotations

import json
import shutil
import sys
import traceback
from pathlib import Path

import numpy as np


def local_export_inputs(self):
    """optimum-executorch's VisionExportableModule inputs from a local image and the model's own processor."""
    from PIL import Image
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(self.model.config.name_or_path)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8))
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "describe the image."}]}]
    out = processor(text=processor.apply_chat_template(chat, add_generation_prompt=True), images=[image],
                    return_tensors="pt")
    return out["pixel_values"].to(dtype=self.model.dtype), None


def as_idefics3(source: Path, out: Path) -> bool:
    import torch
    import transformers

    m = transformers.SmolVLMForConditionalGeneration.from_pretrained(source).eval()
    d = m.config.to_dict()
    cfg = transformers.Idefics3Config(
        vision_config={k: v for k, v in d["vision_config"].items() if k != "model_type"},
        text_config=d["text_config"], image_token_id=d["image_token_id"], scale_factor=d["scale_factor"],
        tie_word_embeddings=False, pad_token_id=d.get("pad_token_id"))
    n = transformers.Idefics3ForConditionalGeneration(cfg).eval()
    n.load_state_dict(m.state_dict(), strict=True)
    x = torch.randn(1, 1, 3, d["vision_config"]["image_size"], d["vision_config"]["image_size"])
    with torch.no_grad():
        a, b = m.model.get_image_features(pixel_values=x), n.model.get_image_features(pixel_values=x)
    a, b = (t if torch.is_tensor(t) else t.pooler_output for t in (a, b))
    n.save_pretrained(out)
    for f in source.iterdir():
        if f.is_file() and f.name not in ("config.json", "model.safetensors", "generation_config.json"):
            shutil.copy2(f, out / f.name)
    return bool(torch.equal(a, b))


def attempt(model: Path, out: Path) -> dict:
    from optimum.exporters.executorch.__main__ import main_export

    try:
        main_export(str(model), task="image-text-to-text", recipe="xnnpack", output_dir=str(out), max_seq_len=256)
        return {"outcome": "exported", "files": sorted(p.name for p in out.glob("*.pte"))}
    except Exception as exc:  # noqa: BLE001 - recorded, not handled
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/transformers/" in f.filename]
        where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno} ({frames[-1].line})" if frames else None
        text = " ".join(str(exc).split())
        return {"outcome": "refused", "error": f"{type(exc).__name__}: {text[:400]}", "stopped_in_transformers": where}


def main() -> None:
    import importlib.metadata as md

    source, work = Path(sys.argv[1]), Path(sys.argv[2])
    work.mkdir(parents=True, exist_ok=True)
    result = {"versions": {p: md.version(p) for p in ("optimum-executorch", "transformers", "executorch", "torch")}}
    result["smolvlm_class"] = attempt(source, work / "smolvlm")
    from optimum.exporters.executorch import integrations

    integrations.VisionExportableModule.prepare_export_inputs = local_export_inputs
    copy = work / "source-idefics3"
    result["idefics3_same_image_features"] = as_idefics3(source, copy)
    result["idefics3_class_local_image"] = attempt(copy, work / "idefics3")
    print("OPTIMUM-ET-JSON " + json.dumps(result))


if __name__ == "__main__":
    main()
