"""The standard benchmarks' own metrics: VQA v2 soft accuracy with the official answer
normalisation, accuracy per type (GQA), NLVR2 consistency, and image-text retrieval Recall@K.

The VQA normalisation follows the official evaluation script (vqaEval.py): newlines and tabs
become spaces; then, only for questions whose human answers disagree, punctuation is removed
or spaced (commas between digits kept as one number), periods not part of a number dropped,
number words become digits, articles are dropped, and single-word contractions get their
apostrophe ("dont" -> "don't").
"""

from __future__ import annotations

import re
from collections import defaultdict

import numpy as np

_CONTRACTIONS = {w.replace("'", ""): w for w in (
    "ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've hasn't haven't he'd "
    "he'd've he's how'd how'll how's i'd i'd've i'm i've isn't it'd it'd've it'll let's ma'am mightn't "
    "mightn't've might've mustn't must've needn't not've o'clock oughtn't shan't she'd she'd've she'll "
    "should've shouldn't shouldn't've somebody'd somebody'd've somebody'll somebody's someone'd someone'd've "
    "someone'll someone's something'd something'd've something'll that's there'd there'd've there're there's "
    "they'd they'd've they'll they're they've 'twas wasn't we'd we'd've we'll we're we've weren't what'll "
    "what're what's what've when's where'd where's where've who'd who'd've who'll who're who's who've why'll "
    "why're why's won't would've wouldn't wouldn't've y'all y'all'll y'all'd've you'd you'd've you'll you're "
    "you've").split()}
_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
            "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = {"a", "an", "the"}
_PUNCT = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]
_PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_DIGITS = re.compile(r"(\d)(,)(\d)")


def _punctuation(text: str) -> str:
    out = text
    for p in _PUNCT:
        if (p + " " in text or " " + p in text) or _COMMA_DIGITS.search(text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD.sub("", out)


def _digits_and_articles(text: str) -> str:
    words = [_NUMBERS.get(w, w) for w in text.lower().split()]
    return " ".join(_CONTRACTIONS.get(w, w) for w in words if w not in _ARTICLES)


def normalize_answer(answer: str) -> str:
    """An answer as the official VQA evaluation compares it (when annotators disagree)."""
    return _digits_and_articles(_punctuation(answer.replace("\n", " ").replace("\t", " ").strip()))


def vqa_soft_accuracy(prediction: str, human_answers: list[str]) -> float:
    """The official VQA v2 accuracy of one prediction: for each of the (ten) human answers left
    out in turn, min(#other humans who gave the prediction / 3, 1), averaged."""
    if not human_answers:
        raise ValueError("a VQA question needs its human answers")
    gts = [a.replace("\n", " ").replace("\t", " ").strip() for a in human_answers]
    pred = prediction.replace("\n", " ").replace("\t", " ").strip()
    if len(set(gts)) > 1:
        gts = [normalize_answer(a) for a in gts]
        pred = normalize_answer(pred)
    scores = []
    for i in range(len(gts)):
        others = gts[:i] + gts[i + 1:]
        scores.append(min(1.0, sum(a == pred for a in others) / 3.0))
    return float(np.mean(scores))


def vqa_accuracy(predictions: list[str], human_answers: list[list[str]], answer_types: list[str]) -> dict:
    """Overall and per-answer-type soft accuracy (in [0, 1]; the official script prints x100)."""
    per = [vqa_soft_accuracy(p, a) for p, a in zip(predictions, human_answers)]
    by_type = defaultdict(list)
    for s, t in zip(per, answer_types):
        by_type[t].append(s)
    return {"accuracy": float(np.mean(per)) if per else 0.0, "n": len(per),
            "per_answer_type": {t: {"accuracy": float(np.mean(v)), "n": len(v)} for t, v in sorted(by_type.items())}}


def accuracy_per_type(correct: list[bool], types: list[str]) -> dict:
    """Accuracy overall and per type (GQA: structural or semantic type)."""
    by_type = defaultdict(list)
    for c, t in zip(correct, types):
        by_type[t].append(bool(c))
    return {"accuracy": float(np.mean(correct)) if correct else 0.0, "n": len(correct),
            "per_type": {t: {"accuracy": float(np.mean(v)), "n": len(v)} for t, v in sorted(by_type.items())}}


def nlvr2_consistency(correct: list[bool], groups: list[str]) -> float:
    """NLVR2 consistency: the share of sentences whose every image pair is answered correctly."""
    by_group = defaultdict(list)
    for c, g in zip(correct, groups):
        by_group[g].append(bool(c))
    return float(np.mean([all(v) for v in by_group.values()])) if by_group else 0.0


def retrieval_recall(scores: np.ndarray, image_of_text: np.ndarray, ks=(1, 5, 10)) -> dict:
    """Recall@K both ways from a (texts, images) similarity matrix; image_of_text[t] is the image
    that text t describes (an image may have several texts, as COCO's five captions).

    text -> image: a text is a hit when its image is among its top K images;
    image -> text: an image is a hit when any of its texts is among its top K texts."""
    scores = np.asarray(scores, dtype=np.float64)
    T, I = scores.shape
    order_images = np.argsort(-scores, axis=1, kind="stable")  # (T, I)
    rank_t2i = np.argmax(order_images == image_of_text[:, None], axis=1)  # (T,)
    order_texts = np.argsort(-scores.T, axis=1, kind="stable")  # (I, T)
    owns = image_of_text[order_texts] == np.arange(I)[:, None]  # (I, T): is the j-th best text one of the image's
    has_text = owns.any(1)
    rank_i2t = np.where(has_text, np.argmax(owns, axis=1), T)
    out = {}
    for k in ks:
        out[f"text_to_image_R@{k}"] = float(np.mean(rank_t2i < k))
        out[f"image_to_text_R@{k}"] = float(np.mean(rank_i2t[has_text] < k))
    return out
