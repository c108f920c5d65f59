"""Caption metrics from pycocoevalcap (the COCO caption evaluation code): BLEU-4, CIDEr-D, and
METEOR when Java is on the PATH (its scorer is a Java program).

Captions are compared as lowercase words split by ``mmedge.data.tokenizer``'s rule, so the
reference side and the generated side are tokenized alike; pycocoevalcap's PTB tokenizer is a Java
program too and is not used. CIDEr is reported on the usual x100 scale ("CIDEr 95.3").
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass, field

from mmedge.data.tokenizer import _SPLIT


@dataclass
class CaptionScores:
    bleu4: float          # 0..1
    cider: float          # x100
    meteor: float | None  # 0..1, None without Java
    images: int
    cider_per_image: list[float] = field(default_factory=list, repr=False)  # x100; their mean is `cider`

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "cider_per_image"}


def normalize(text: str) -> str:
    return " ".join(_SPLIT.findall(text.lower()))


def caption_scores(generated: list[str], references: list[list[str]], meteor: bool | None = None) -> CaptionScores:
    """Corpus BLEU-4 and CIDEr-D of `generated[i]` against `references[i]` (one or more each).

    meteor: None = when Java is present, True = required, False = skip."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider

    if len(generated) != len(references) or not generated:
        raise ValueError(f"need one generated caption per image and at least one image; got {len(generated)} "
                         f"captions for {len(references)} reference lists")
    if any(not refs for refs in references):
        raise ValueError("every image needs at least one reference caption")
    res = {i: [normalize(g) or "."] for i, g in enumerate(generated)}  # an empty caption scores as "."
    gts = {i: [normalize(r) for r in refs] for i, refs in enumerate(references)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, per_image = Cider().compute_score(gts, res)
    met = None
    use_java = shutil.which("java") is not None
    if meteor is True and not use_java:
        raise RuntimeError("METEOR needs Java on the PATH (apt-get install default-jre-headless)")
    if use_java and meteor is not False:
        from pycocoevalcap.meteor.meteor import Meteor

        met, _ = Meteor().compute_score(gts, res)  # the Java process ends with the scorer
    return CaptionScores(float(bleu[3]), 100.0 * float(cider), None if met is None else float(met), len(generated),
                         [100.0 * float(x) for x in per_image])
