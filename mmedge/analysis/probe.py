"""Modality probe: how much each layer of a trained model uses the text and the image.

For every sample of a generated split, run the model layer by layer (its own modules, unchanged) and
record, per layer:

- activation magnitude: the mean L2 norm of the real text tokens' hidden states (the text mask picks
  them; [CLS] is reported apart) and of the kept visual tokens' hidden states, after each layer
  (index 0 = the embedded input of layer 1);
- attention mass: the attention probability that [CLS], and each real text token, put on the visual
  keys (summed over visual key positions), and that each visual token puts on [CLS] + the real text
  keys; averaged over heads and over the query tokens of that kind;
- an ablation: for each L in 0..depth, the visual tokens are dropped after layer L (layers L+1.. run on
  [CLS] + text only: the hidden state and the mask are sliced) and the final exit answers. L = depth
  drops them after the last layer, right before the final exit head, which reads [CLS] + text only,
  so it equals the intact model (checked on every batch against ``model.forward``).

Every per-sample figure is averaged over samples with equal weight (each sample's own mean over its
tokens first), overall and per question type; the spread across samples is kept (std, 10th and 90th
percentiles), and every ablation accuracy carries a Wilson 95% interval.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from mmedge.data.batches import build_batch, generate
from mmedge.errors import ConfigError
from mmedge.models.model import MASK_VALUE, AdaptiveVLModel

SPLITS = ("train", "val", "test", "compositional")
NORM_KINDS = ("text", "visual", "cls")
ATTENTION_KINDS = ("cls_to_visual", "text_to_visual", "visual_to_text")

DEFINITIONS = {
    "activation_index": "0 = the embedded input of layer 1, i = the hidden state after layer i (1-based)",
    "activation.text": "per sample: mean L2 norm of the real text tokens' hidden states (text mask; [CLS] excluded)",
    "activation.visual": "per sample: mean L2 norm of the kept visual tokens' hidden states",
    "activation.cls": "per sample: L2 norm of the [CLS] hidden state",
    "attention_layers": "i = the attention probabilities of layer i (1-based)",
    "attention.cls_to_visual": "per sample: [CLS]'s attention probability summed over visual keys, mean over heads",
    "attention.text_to_visual": "per sample: each real text token's probability summed over visual keys, "
                                "mean over heads and real text tokens",
    "attention.visual_to_text": "per sample: each visual token's probability summed over [CLS] + real text keys, "
                                "mean over heads and visual tokens (null for attention variants that return "
                                "only the [CLS] and text query rows)",
    "attention.uniform_visual_share": "per sample: visual keys / (1 + real text + visual keys): the mass on visual "
                                      "keys under uniform attention, a reference for text_to_visual",
    "ablation_visual_layers": "L = visual tokens dropped after layer L (layers L+1.. see [CLS] + text only); "
                              "0 = the image is never seen, depth = dropped before the final exit head only "
                              "(the intact model)",
    "ablation.accuracy": "final-exit accuracy; ci95 = Wilson 95% interval",
    "aggregation": "each figure is a per-sample value averaged over samples with equal weight; std, p10 and p90 "
                   "describe the spread across samples",
}


# ----------------------------------------------------------------------------------------------- per batch
# what `mmedge probe` says to use for a model adapted by `mmedge adapt` (whose sequence, preprocessor
# and head are its source's, not the ones this probe reads)
ADAPTED_INSTEAD = ("mmedge eval --model DIR (every exit's agreement with the full model and accuracy, per keep "
                   "ratio), or the attention of mmedge.adapt.load_adapted(DIR)'s model: model(**inputs, "
                   "return_attention=True) (docs/adapt.md)")


def token_norms(hidden: torch.Tensor, text_mask: torch.Tensor, num_text: int) -> dict[str, torch.Tensor]:
    """hidden (B, 1 + L + N, D), text_mask (B, L) -> per-sample mean L2 norm of text / visual tokens and
    the [CLS] norm, each (B,). A sequence without visual tokens gives NaN for them."""
    norms = hidden.float().norm(dim=-1)  # (B, T)
    m = text_mask.to(norms.dtype)  # (B, L)
    text = (norms[:, 1: 1 + num_text] * m).sum(1) / m.sum(1).clamp(min=1.0)
    vis = norms[:, 1 + num_text:]
    visual = vis.mean(1) if vis.shape[1] else torch.full_like(text, float("nan"))
    return {"text": text, "visual": visual, "cls": norms[:, 0]}


def attention_mass(probs: torch.Tensor, text_mask: torch.Tensor, num_text: int) -> dict[str, torch.Tensor]:
    """probs (B, nh, Q, T) with T = 1 + L + N, text_mask (B, L) -> per-sample attention mass (B,) each:
    [CLS] -> visual, real text -> visual, visual -> [CLS] + real text (heads and queries averaged).

    Q = T: every query row (full attention). Q = 1 + L: only the [CLS] and text rows (what the efficient
    attention variants return); visual -> text is then absent from the result."""
    p = probs.float().mean(1)  # (B, Q, T): a sum over keys commutes with the mean over heads
    m = text_mask.to(p.dtype)  # (B, L)
    on_visual = p[:, :, 1 + num_text:].sum(-1)  # (B, Q): each query's mass on the visual keys
    text_to_visual = (on_visual[:, 1: 1 + num_text] * m).sum(1) / m.sum(1).clamp(min=1.0)
    out = {"cls_to_visual": on_visual[:, 0], "text_to_visual": text_to_visual}
    if p.shape[1] == p.shape[2] and p.shape[2] > 1 + num_text:
        keys = torch.cat([torch.ones_like(m[:, :1]), m], dim=1)  # (B, 1 + L): [CLS] + real text keys
        on_text = (p[:, 1 + num_text:, : 1 + num_text] * keys[:, None, :]).sum(-1)  # (B, N)
        out["visual_to_text"] = on_text.mean(1)
    return out


def _additive(mask: torch.Tensor) -> torch.Tensor:
    """(B, T) 1 = real token -> (B, 1, 1, T) additive mask, exactly as ``forward_stage`` builds it."""
    return ((1.0 - mask) * MASK_VALUE)[:, None, None, :]


def run_layers(model: AdaptiveVLModel, hidden: torch.Tensor, mask: torch.Tensor, layers,
               each=None) -> torch.Tensor:
    """Run the model's own blocks `layers` on (B, T, D) hidden and (B, T) mask; each(i, hidden, probs)
    is called after layer i."""
    additive = _additive(mask)
    for i in layers:
        hidden, probs = model.blocks[i](hidden, additive)
        if each is not None:
            each(i, hidden, probs)
    return hidden


@dataclass
class BatchProbe:
    norms: dict[str, np.ndarray]       # kind -> (B, depth + 1), index 0 = the embedded input
    attention: dict[str, np.ndarray]   # kind -> (B, depth), NaN where a layer's probs do not give it
    uniform_share: np.ndarray          # (B,) visual keys / all real keys
    ablation_preds: np.ndarray         # (B, depth + 1) final-exit answer with visual tokens dropped after layer L
    forward_preds: np.ndarray          # (B,) the intact model's final-exit answer (model.forward)
    max_logit_diff: float              # |probe's L = depth logits - model.forward's final logits|, max


@torch.no_grad()
def probe_batch(model: AdaptiveVLModel, pixels: torch.Tensor, input_ids: torch.Tensor, text_mask: torch.Tensor,
                keep_ratio: float = 1.0) -> BatchProbe:
    cfg = model.config
    depth, num_text = cfg.depth, cfg.max_text_len
    keep = 1 + num_text  # [CLS] + text positions
    emb = model.embed(pixels, input_ids, text_mask, keep_ratio)
    B = pixels.shape[0]
    norms = {k: np.full((B, depth + 1), np.nan) for k in NORM_KINDS}
    attn = {k: np.full((B, depth), np.nan) for k in ATTENTION_KINDS}
    for k, v in token_norms(emb.hidden, text_mask, num_text).items():
        norms[k][:, 0] = v.numpy()
    states: list[torch.Tensor] = []  # hidden after layer i (with the visual tokens)

    def record(i: int, hidden: torch.Tensor, probs) -> None:
        states.append(hidden)
        for k, v in token_norms(hidden, text_mask, num_text).items():
            norms[k][:, i + 1] = v.numpy()
        T = hidden.shape[1]
        if isinstance(probs, torch.Tensor) and probs.dim() == 4 and probs.shape[-1] == T and \
                probs.shape[-2] in (T, keep):  # every query row, or only [CLS] + text (efficient variants)
            for k, v in attention_mass(probs, text_mask, num_text).items():
                attn[k][:, i] = v.numpy()

    run_layers(model, emb.hidden, emb.mask, range(depth), record)
    head = model.exit_heads[model.num_stages - 1]  # the final exit, after the last layer
    text_only_mask = emb.mask[:, :keep]
    preds, final_logits = [], None
    for L in range(depth + 1):  # drop the visual tokens after layer L
        start = emb.hidden if L == 0 else states[L - 1]
        h = run_layers(model, start[:, :keep], text_only_mask, range(L, depth))
        logits, _ = head(h, text_only_mask)
        preds.append(logits.argmax(-1).numpy())
        final_logits = logits
    ref = model(pixels, input_ids, text_mask, keep_ratio=keep_ratio).logits[-1]
    n_visual = emb.hidden.shape[1] - keep
    real_keys = 1 + text_mask.float().sum(1) + n_visual
    return BatchProbe(norms, attn, (n_visual / real_keys).numpy(), np.stack(preds, axis=1),
                      ref.argmax(-1).numpy(), float((final_logits - ref).abs().max()))


# ----------------------------------------------------------------------------------------------- statistics
def wilson(correct: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score 95% interval of a binomial proportion."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (0.0 if correct == 0 else max(0.0, centre - half), 1.0 if correct == n else min(1.0, centre + half))


def _finite(x: float) -> float | None:
    return None if not np.isfinite(x) else float(x)


def spread(values: np.ndarray) -> dict[str, list[float | None]]:
    """(n, K) per-sample values -> mean, std, p10 and p90 over samples for each of the K columns."""
    out: dict[str, list[float | None]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column (a layer without probs) stays null
        stats = {"mean": np.nanmean(values, 0), "std": np.nanstd(values, 0),
                 "p10": np.nanpercentile(values, 10, axis=0), "p90": np.nanpercentile(values, 90, axis=0)}
    for k, v in stats.items():
        out[k] = [_finite(x) for x in v]
    return out


def summarise_group(norms: dict[str, np.ndarray], attn: dict[str, np.ndarray], uniform: np.ndarray,
                    correct: np.ndarray) -> dict:
    """Figures of one group of samples (all of them, or one question type)."""
    n = int(correct.shape[0])
    hits = correct.sum(0).astype(int)
    cis = [wilson(int(c), n) for c in hits]
    return {
        "n": n,
        "activation": {k: spread(v) for k, v in norms.items()},
        "attention": {**{k: spread(v) for k, v in attn.items()},
                      "uniform_visual_share": float(uniform.mean()) if n else None},
        "ablation": {"correct": hits.tolist(), "accuracy": [float(c / n) if n else None for c in hits],
                     "ci95_low": [c[0] for c in cis], "ci95_high": [c[1] for c in cis]},
    }


# ----------------------------------------------------------------------------------------------- the probe
def check_settings(split: str, samples: int, keep_ratio: float, data_seed: int, batch_size: int) -> None:
    """Raise ConfigError listing every bad setting (before any model is loaded)."""
    problems = []
    if split not in SPLITS:
        problems.append(f"split {split!r} unknown; choose one of {list(SPLITS)}")
    if not isinstance(samples, int) or samples < 1:
        problems.append(f"samples must be a whole number >= 1, got {samples!r}")
    if not (isinstance(keep_ratio, (int, float)) and math.isfinite(keep_ratio) and 0 < keep_ratio <= 1):
        problems.append(f"keep_ratio must be in (0, 1], got {keep_ratio!r}")
    if not isinstance(data_seed, int) or data_seed < 0:
        problems.append(f"data_seed must be a whole number >= 0, got {data_seed!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        problems.append(f"batch_size must be a whole number >= 1, got {batch_size!r}")
    if problems:
        raise ConfigError(problems, "probe settings")


@torch.no_grad()
def probe(model: AdaptiveVLModel, tokenizer, split: str = "val", samples: int = 1000, keep_ratio: float = 1.0,
          data_seed: int = 0, batch_size: int = 64, progress: bool = True) -> dict:
    """Probe `model` on `samples` generated samples of `split`; a JSON-ready dict (see DEFINITIONS)."""
    check_settings(split, samples, keep_ratio, data_seed, batch_size)
    if getattr(model, "is_adapted", False):  # its own sequence, preprocessor and head: not this probe's
        from mmedge.errors import AdaptedModelUnsupported

        raise AdaptedModelUnsupported("probe", type(model).__name__, ADAPTED_INSTEAD)
    cfg = model.config
    was_training = model.training
    model.eval()
    parts: list[BatchProbe] = []
    labels, qtypes = [], []
    try:
        bar = tqdm(total=samples, desc="probe", unit="sample", disable=not progress, leave=False)
        for start in range(0, samples, batch_size):
            chunk = generate(cfg.task, data_seed, split, range(start, min(samples, start + batch_size)),
                             cfg.image_size)
            batch = build_batch(chunk, tokenizer, cfg.image_size)
            parts.append(probe_batch(model, torch.from_numpy(batch.pixels), torch.from_numpy(batch.input_ids),
                                     torch.from_numpy(batch.text_mask), keep_ratio))
            labels.append(batch.labels)
            qtypes += batch.qtypes
            bar.update(len(chunk))
        bar.close()
    finally:
        model.train(was_training)
    labels_a = np.concatenate(labels)
    norms = {k: np.concatenate([p.norms[k] for p in parts]) for k in NORM_KINDS}
    attn = {k: np.concatenate([p.attention[k] for p in parts]) for k in ATTENTION_KINDS}
    uniform = np.concatenate([p.uniform_share for p in parts])
    correct = np.concatenate([p.ablation_preds for p in parts]) == labels_a[:, None]  # (n, depth + 1)
    forward_correct = np.concatenate([p.forward_preds for p in parts]) == labels_a
    q = np.array(qtypes)
    per_qtype = {t: summarise_group({k: v[q == t] for k, v in norms.items()}, {k: v[q == t] for k, v in attn.items()},
                                    uniform[q == t], correct[q == t]) for t in sorted(set(qtypes))}
    return {
        "task": cfg.task,
        "settings": {"split": split, "samples": int(len(labels_a)), "keep_ratio": keep_ratio, "data_seed": data_seed,
                     "batch_size": batch_size, "depth": cfg.depth, "text_tokens_max": cfg.max_text_len,
                     "visual_tokens": cfg.kept_tokens(keep_ratio), "exit_pool": cfg.exit_pool,
                     "attention": cfg.attention},
        "definitions": DEFINITIONS,
        "activation_index": list(range(cfg.depth + 1)),
        "attention_layers": list(range(1, cfg.depth + 1)),
        "ablation_visual_layers": list(range(cfg.depth + 1)),
        "overall": summarise_group(norms, attn, uniform, correct),
        "per_qtype": per_qtype,
        "check": {"forward_final_exit_accuracy": float(forward_correct.mean()),
                  "max_abs_logit_diff_vs_forward": max(p.max_logit_diff for p in parts),
                  "note": "the L = depth ablation (visual tokens dropped right before the final exit head) against "
                          "model.forward's final exit on the same samples"},
    }


# ----------------------------------------------------------------------------------------------- reporting
def _f(x, fmt: str = ".3f") -> str:
    return "-" if x is None else format(x, fmt)


def format_report(result: dict) -> str:
    from tabulate import tabulate

    s, o = result["settings"], result["overall"]
    depth = s["depth"]
    act, att, abl = o["activation"], o["attention"], o["ablation"]
    lines = [f"probe {result.get('model_name', '')} | task {result['task']} | split {s['split']} | {s['samples']} "
             f"samples | keep ratio {s['keep_ratio']:g} ({s['visual_tokens']} visual tokens) | depth {depth}", ""]
    rows = []
    for i in range(depth + 1):
        a = [_f(att[k]["mean"][i - 1]) if i else "" for k in ATTENTION_KINDS]
        rows.append(["embed" if i == 0 else i, _f(act["text"]["mean"][i], ".2f"), _f(act["visual"]["mean"][i], ".2f"),
                     _f(act["cls"]["mean"][i], ".2f"), *a,
                     f"{abl['accuracy'][i]:.3f} [{abl['ci95_low'][i]:.3f}, {abl['ci95_high'][i]:.3f}]"])
    head = ["layer", "|text|", "|visual|", "|CLS|", "CLS->vis", "text->vis", "vis->text",
            "acc, image dropped after layer (95% CI)"]
    lines += ["Per layer: mean L2 norm after the layer; attention mass in the layer; final-exit accuracy with the "
              "visual tokens dropped after it", tabulate(rows, head, tablefmt="github"),
              f"(uniform attention would put {att['uniform_visual_share']:.3f} of a text token's mass on visual keys; "
              f"layer {depth} = the intact model)", ""]
    rows = [[t, g["n"], *[_f(a) for a in g["ablation"]["accuracy"]]] for t, g in result["per_qtype"].items()]
    rows.append(["all", o["n"], *[_f(a) for a in abl["accuracy"]]])
    lines += ["Final-exit accuracy per question type, visual tokens dropped after layer L",
              tabulate(rows, ["type", "n", *[f"L={L}" for L in range(depth + 1)]], tablefmt="github"), ""]
    rows = [[t, *[_f(v) for v in g["attention"]["text_to_visual"]["mean"]]] for t, g in result["per_qtype"].items()]
    lines += ["Text -> visual attention mass per question type and layer",
              tabulate(rows, ["type", *[f"layer {i + 1}" for i in range(depth)]], tablefmt="github")]
    chk = result["check"]
    lines += ["", f"check: L = {depth} equals model.forward (max |logit diff| "
              f"{chk['max_abs_logit_diff_vs_forward']:.2g}, forward accuracy {chk['forward_final_exit_accuracy']:.3f})"]
    return "\n".join(lines)


def plot(result: dict, path: Path) -> Path:
    """Three panels: activation magnitude, attention mass, accuracy with the image dropped after layer L."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mmedge.fileio import atomic_write

    s, o = result["settings"], result["overall"]
    depth = s["depth"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))

    ax = axes[0]
    x = np.array(result["activation_index"])
    for kind, colour in (("text", "tab:blue"), ("visual", "tab:orange")):
        st = o["activation"][kind]
        mean = np.array(st["mean"], dtype=float)
        lo, hi = np.array(st["p10"], dtype=float), np.array(st["p90"], dtype=float)
        ax.fill_between(x, lo, hi, color=colour, alpha=0.2, label=f"{kind}: 10th-90th pct of samples")
        ax.plot(x, mean, "o-", color=colour, label=f"{kind} tokens: mean over samples")
    ax.set_xticks(x, ["embed"] + [str(i) for i in x[1:]])
    ax.set(xlabel="after layer", ylabel="mean L2 norm of token hidden states", title="Activation magnitude")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)

    ax = axes[1]
    x = np.array(result["attention_layers"])
    names = {"cls_to_visual": ("[CLS] -> visual", "tab:green"), "text_to_visual": ("text -> visual", "tab:blue"),
             "visual_to_text": ("visual -> [CLS] + text", "tab:orange")}
    for kind, (label, colour) in names.items():
        st = o["attention"][kind]
        mean = np.array([np.nan if v is None else v for v in st["mean"]], dtype=float)
        if np.isnan(mean).all():
            continue
        lo = np.array([np.nan if v is None else v for v in st["p10"]], dtype=float)
        hi = np.array([np.nan if v is None else v for v in st["p90"]], dtype=float)
        ax.fill_between(x, lo, hi, color=colour, alpha=0.15)
        ax.plot(x, mean, "o-", color=colour, label=f"{label} (band: 10th-90th pct)")
    ax.axhline(o["attention"]["uniform_visual_share"], color="grey", ls="--", lw=1,
               label="visual share of keys (uniform attention)")
    ax.set_xticks(x)
    ax.set_ylim(0, 1)
    ax.set(xlabel="layer", ylabel="attention probability mass", title="Attention mass between modalities")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)

    ax = axes[2]
    x = np.array(result["ablation_visual_layers"], dtype=float)
    groups = [(t, g) for t, g in result["per_qtype"].items()] + [("all", o)]
    width = 0.5 / max(1, len(groups) - 1)
    for j, (name, g) in enumerate(groups):
        a = g["ablation"]
        acc = np.array(a["accuracy"], dtype=float)
        err = np.array([acc - np.array(a["ci95_low"]), np.array(a["ci95_high"]) - acc])
        xs = x - 0.25 + j * width
        style = dict(color="black", lw=2.2, ms=7) if name == "all" else dict(lw=1, ms=4, alpha=0.85)
        ax.errorbar(xs, acc, yerr=err, fmt="o-", capsize=2, label=f"{name} (n={g['n']})", **style)
    ax.set_xticks(x, [f"{int(v)}" + (" (intact)" if v == depth else "") for v in x])
    ax.set_ylim(0, 1.02)
    ax.set(xlabel="visual tokens dropped after layer L (0 = image never seen)", ylabel="final-exit accuracy",
           title="Accuracy left when the image is dropped (95% Wilson CI)")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)

    fig.suptitle(f"mmedge probe: {result.get('model_name', '')} on {s['samples']} {s['split']} samples, keep ratio "
                 f"{s['keep_ratio']:g} ({s['visual_tokens']} visual tokens)")
    fig.tight_layout()
    path = Path(path)
    atomic_write(path, lambda p: fig.savefig(p, dpi=110, format="png"))
    plt.close(fig)
    return path
