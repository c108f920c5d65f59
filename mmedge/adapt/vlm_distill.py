"""Self-distillation of a generative VLM's exits, confidences and prefilter (mmedge.adapt.vlm).

The teacher is the frozen model itself: for each prompt (an image and a text, no labels) it writes its
own greedy continuation (transformers' generate), and along that continuation, teacher-forced:
- each exit before the last learns KL(teacher || exit) on every continuation position, reading the
  frozen hidden states (its loss trains its residual map and norm only: the LM head is the model's, shared);
- each confidence learns BCE against "this exit's token is the teacher's";
- at keep ratios below 1 the prefilter learns KL(teacher || the pruned model's final output): the
  dropped visual tokens are masked out of attention exactly (the pruned prompt *is* that), and the
  gradient reaches the scorer through mmedge.adapt.model.attention_probs' straight-through weights.
  Optionally (``attention_prior_weight`` > 0) also soft cross-entropy of its scores' softmax against the
  teacher's own attention from the continuation to each visual token (all layers and heads). Off by
  default: on the small SmolVLM teacher it kept worse tokens than the KL alone (a one-off comparison, not
  a committed benchmark: 300 steps of 16 at lr 3e-3 on keep ratios 0.5 and 0.25, then 64 test captions at
  keep 0.5 and full depth: CIDEr 525 with the KL alone, 378 at weight 0.1, 323 at weight 1.0).

Batches: prompts left-padded, continuations right-padded, rotary positions counted over the real
tokens (as transformers' generate counts them).

Prompts (``--data``): the generated scenes (half caption prompts, half questions), or a dataset on disk
(NAME:ROOT): its questions (vqa2, gqa, jsonl) or the caption prompt on its images (coco, cc).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from mmedge.adapt.model import keep_weights
from mmedge.adapt.vlm import AdaptedVLM
from mmedge.models.attention import MASK_VALUE


@dataclass
class VLMDistillConfig:
    steps: int = 300
    batch_size: int = 16
    lr: float = 3e-3
    temperature: float = 1.0
    train_keep_ratios: list[float] | None = None  # cycled per step; None: the model's keep ratios below 1
    max_new_tokens: int = 24
    relax_temperature: float = 1.0
    attention_prior_weight: float = 0.0
    seed: int = 0
    checkpoint_every: int = 100  # steps between resumable checkpoints (OUT/checkpoint)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Batch:
    ids: torch.Tensor        # (B, T) prompt (left-padded) + continuation (right-padded)
    valid: torch.Tensor      # (B, T) bool: a real token
    pixels: torch.Tensor     # (B, 3, S, S)
    targets: torch.Tensor    # (B, T) bool: position t predicts a continuation token (t + 1)
    prompt_len: int          # the prompts' (padded) length: the image placeholders lie before it


@torch.no_grad()
def teacher_batch(model: AdaptedVLM, pre, images: list, texts: list[str], max_new_tokens: int) -> Batch:
    """The prompts and the frozen model's own greedy continuations (up to and including a stop token)."""
    hf, tok = model.backbone.hf, pre.tokenizer
    pixels = pre.pixels(images)
    prompts = [pre.prompt_ids(t)[0] for t in texts]
    Tp = max(len(p) for p in prompts)
    pad = tok.pad_token_id
    ids = torch.full((len(prompts), Tp), pad)
    mask = torch.zeros((len(prompts), Tp), dtype=torch.long)
    for row, p in enumerate(prompts):
        ids[row, Tp - len(p):], mask[row, Tp - len(p):] = p, 1
    out = hf.generate(input_ids=ids, attention_mask=mask, pixel_values=pixels[:, None], max_new_tokens=max_new_tokens,
                      do_sample=False, eos_token_id=list(pre.stop_ids), pad_token_id=pad)[:, Tp:]
    stops = torch.tensor(pre.stop_ids)
    cont_valid = torch.ones_like(out, dtype=torch.bool)
    for row in range(out.shape[0]):
        hit = torch.isin(out[row], stops).nonzero()
        if len(hit):
            cont_valid[row, int(hit[0]) + 1:] = False
    ids = torch.cat([ids, out], dim=1)
    valid = torch.cat([mask.bool(), cont_valid], dim=1)
    targets = torch.zeros_like(valid)
    targets[:, Tp - 1:-1] = valid[:, Tp:]
    return Batch(ids, valid, pixels, targets, Tp)


def _layout(batch: Batch):
    """Rotary positions (B, T) over the real tokens and the additive mask (B, T, T): causal, real keys."""
    positions = (batch.valid.long().cumsum(-1) - 1).clamp(min=0)
    T = batch.ids.shape[1]
    causal = torch.arange(T)[None, :] <= torch.arange(T)[:, None]  # (T, T)
    see = causal[None] & batch.valid[:, None, :]
    return positions, torch.where(see, 0.0, MASK_VALUE)


def image_mask(model: AdaptedVLM, batch: Batch) -> torch.Tensor:
    """(B, T) bool: the prompts' image placeholders (a generated placeholder id is just a token)."""
    is_image = batch.ids == model.backbone.image_token_id
    is_image[:, batch.prompt_len:] = False
    return is_image


def prefilter_logits(model: AdaptedVLM, batch: Batch, visual: torch.Tensor) -> torch.Tensor:
    """The prefilter's scores (B, M) of the visual tokens against each prompt's text."""
    text_mask = (batch.valid & ~image_mask(model, batch)).float()
    return model.prefilter_scores(visual, model.backbone.embed_tokens(batch.ids), text_mask)


def run_stages(model: AdaptedVLM, batch: Batch, keep_ratio: float = 1.0, relaxed: bool = False,
               attention: list | None = None):
    """Teacher-forced pass over the whole batch -> the visual tokens (B, M, D) and the hidden state after
    each stage [(B, T, D)]. At keep < 1 the prefilter's dropped visual tokens are masked out as keys
    (relaxed: with its straight-through gradient; the tokens stay in the sequence, so every position is
    where it was). attention: a list that gets every layer's attention probabilities."""
    bb = model.backbone
    is_image = image_mask(model, batch)
    with torch.no_grad():
        visual = bb.encode_image(batch.pixels)  # (B, M, D)
    embeds = bb.embed_tokens(batch.ids).masked_scatter(is_image[..., None], visual)
    positions, mask = _layout(batch)
    key_weight = None
    k = model.config.kept_tokens(keep_ratio)
    if k < visual.shape[1]:
        scores = prefilter_logits(model, batch, visual)  # (B, M)
        weight = keep_weights(scores, scores.topk(k, dim=-1).indices, model.relax_temperature if relaxed else None)
        key_weight = torch.ones_like(batch.valid, dtype=weight.dtype).masked_scatter(is_image, weight)  # (B, T)
    cos, sin = bb.rotary(positions, embeds)
    cache = bb.new_cache(batch.ids.shape[0], batch.ids.shape[1], embeds.dtype)
    slots = torch.arange(batch.ids.shape[1])
    hidden, x = [], embeds
    for stage in range(model.num_stages):
        for i in model.stage_layers(stage):
            x = bb.layer(i, x, cos, sin, cache[i], slots, mask, key_weight, attention)
        hidden.append(x)
    return visual, hidden


def attention_prior(model: AdaptedVLM, batch: Batch, attention: list[torch.Tensor]) -> torch.Tensor:
    """(B, M): the share of the continuation's attention (every layer and head) that each visual token gets."""
    mass = torch.stack(attention).mean(dim=(0, 2))  # (layers, B, H, T, S) -> (B, T, S)
    mass = (mass * batch.targets[..., None]).sum(1)  # (B, S): from the predicting positions
    M = model.config.num_image_tokens
    prior = mass[image_mask(model, batch)].view(-1, M)  # (B, M)
    return prior / prior.sum(-1, keepdim=True).clamp(min=1e-12)


def _kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    return F.kl_div(F.log_softmax(student / temperature, -1), F.log_softmax(teacher / temperature, -1),
                    log_target=True, reduction="batchmean") * temperature ** 2


def distill_step(model: AdaptedVLM, batch: Batch, keep_ratio: float, cfg: VLMDistillConfig) -> dict:
    """The losses of one batch (see the module docstring); returns them as floats after backward."""
    last = model.num_stages - 1
    sel = batch.targets  # (B, T)
    attention: list[torch.Tensor] | None = [] if cfg.attention_prior_weight > 0 else None
    with torch.no_grad():
        visual, hidden = run_stages(model, batch, attention=attention)
        teacher = model.exit(last, hidden[last])[0][sel]  # (P, V) at the predicting positions
    choice = teacher.argmax(-1)
    loss, parts = 0.0, {}
    for stage in range(model.num_stages):
        logits, confidence = model.exit(stage, hidden[stage].detach())
        logits, confidence = logits[sel], confidence[sel]
        if stage < last:
            kl = _kl(logits, teacher, cfg.temperature)
            loss = loss + kl
            parts[f"kl{stage}"] = float(kl.detach())
        agree = (logits.argmax(-1) == choice).float()
        loss = loss + F.binary_cross_entropy(confidence.clamp(1e-6, 1 - 1e-6), agree)
    if cfg.attention_prior_weight > 0:
        prior = attention_prior(model, batch, attention)
        scores = prefilter_logits(model, batch, visual)
        prior_loss = -(prior * F.log_softmax(scores, -1)).sum(-1).mean()
        loss = loss + cfg.attention_prior_weight * prior_loss
        parts["attention_prior"] = float(prior_loss.detach())
    if keep_ratio < 1.0:
        _, pruned = run_stages(model, batch, keep_ratio, relaxed=True)
        student = model.exit(last, pruned[last])[0][sel]
        kl = _kl(student, teacher, cfg.temperature)
        loss = loss + kl
        parts[f"prefilter_kl@{keep_ratio:g}"] = float(kl.detach())
    loss.backward()
    return {"loss": float(loss.detach()), **parts}


@torch.no_grad()
def agreement(model: AdaptedVLM, batches: list[Batch], keep_ratio: float = 1.0) -> list[float]:
    """Per exit, the share of continuation tokens (teacher-forced) whose argmax is the full model's at keep 1."""
    last = model.num_stages - 1
    hits, total = torch.zeros(model.num_stages), 0
    for batch in batches:
        sel = batch.targets
        want = model.exit(last, run_stages(model, batch)[1][last])[0][sel].argmax(-1)
        _, hidden = run_stages(model, batch, keep_ratio)
        for stage in range(model.num_stages):
            hits[stage] += float((model.exit(stage, hidden[stage])[0][sel].argmax(-1) == want).sum())
        total += int(sel.sum())
    return (hits / max(total, 1)).tolist()


@torch.no_grad()
def pruned_kl(model: AdaptedVLM, batches: list[Batch], keep_ratio: float, temperature: float = 1.0) -> float:
    """Mean KL(full model || the model on the pruned prompt) of the next-token distributions along the
    teacher's continuations: how far the prefilter moves the output."""
    last, total, count = model.num_stages - 1, 0.0, 0
    for batch in batches:
        sel = batch.targets
        teacher = model.exit(last, run_stages(model, batch)[1][last])[0][sel]
        student = model.exit(last, run_stages(model, batch, keep_ratio)[1][last])[0][sel]
        total += float(_kl(student, teacher, temperature)) * teacher.shape[0]
        count += teacher.shape[0]
    return total / max(count, 1)


@torch.no_grad()
def kept_attention(model: AdaptedVLM, batches: list[Batch], keep_ratio: float) -> float:
    """Mean share of the full model's attention from the continuation to the visual tokens that falls on
    the tokens the prefilter keeps at `keep_ratio` (keeping k of M at random gives k / M on average)."""
    k, shares = model.config.kept_tokens(keep_ratio), []
    for batch in batches:
        attention: list[torch.Tensor] = []
        visual, _ = run_stages(model, batch, attention=attention)
        prior = attention_prior(model, batch, attention)
        kept = prefilter_logits(model, batch, visual).topk(k, dim=-1).indices
        shares += prior.gather(1, kept).sum(-1).tolist()
    return sum(shares) / max(len(shares), 1)


def distill(model: AdaptedVLM, pre, data, cfg: VLMDistillConfig, progress: bool = True, log=print,
            out: Path | None = None, resume: bool = False) -> dict:
    """Train the adapter parts for cfg.steps; data(step, batch_size) -> (images, texts). Returns a log.
    With `out`, a checkpoint every cfg.checkpoint_every steps (OUT/checkpoint: the adapter's weights, the
    optimizer and torch's RNG state); `resume` continues from it to the weights an uninterrupted run reaches
    (the data are a function of the step)."""
    torch.manual_seed(cfg.seed)
    model.relax_temperature = cfg.relax_temperature
    params = [p for _, p in model.adapter_parameters()]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    # every step trains the exits on the unpruned pass; the keep ratio is for the prefilter
    ratios = cfg.train_keep_ratios or [r for r in model.config.keep_ratios if r < 1] or [1.0]
    first, wall_offset, history = load_checkpoint(out, model, opt, cfg) if resume else (0, 0.0, [])
    if first:
        log(f"resumed at step {first} of {cfg.steps}")
    started = time.perf_counter()
    bar = tqdm(range(first, cfg.steps), initial=first, total=cfg.steps, desc="distil exits and prefilter",
               unit="step", disable=not progress)
    for step in bar:
        images, texts = data(step, cfg.batch_size)
        batch = teacher_batch(model, pre, images, texts, cfg.max_new_tokens)
        ratio = ratios[step % len(ratios)]
        opt.zero_grad(set_to_none=True)
        row = distill_step(model, batch, ratio, cfg)
        opt.step()
        history.append({"step": step + 1, "keep_ratio": ratio, **row})
        bar.set_postfix(loss=f"{row['loss']:.3f}")
        if out is not None and ((step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps):
            save_checkpoint(out, model, opt, cfg, step + 1, wall_offset + time.perf_counter() - started, history)
    return {"steps": cfg.steps, "wall_s": round(wall_offset + time.perf_counter() - started, 1), "history": history}


def _adapter_state(model: AdaptedVLM) -> dict[str, torch.Tensor]:
    return {name: p.detach().contiguous() for name, p in model.adapter_parameters()}


def save_checkpoint(out: Path, model: AdaptedVLM, opt, cfg: VLMDistillConfig, step: int, wall_s: float,
                    history: list) -> None:
    """OUT/checkpoint: the adapter's weights and the optimizer (safetensors), then state.json, written
    last (its presence marks a complete checkpoint)."""
    from safetensors.torch import save_file

    from mmedge.adapt.distill import CHECKPOINT_DIR, OPTIM_FILE, STATE_FILE, TRAINED_FILE
    from mmedge.fileio import atomic_write
    from mmedge.train.trainer import optimizer_tensors

    ckpt = Path(out) / CHECKPOINT_DIR
    ckpt.mkdir(parents=True, exist_ok=True)
    tensors, groups = optimizer_tensors(opt)
    atomic_write(ckpt / TRAINED_FILE, lambda p: save_file(_adapter_state(model), str(p)))
    atomic_write(ckpt / OPTIM_FILE, lambda p: save_file(tensors, str(p)))
    meta = {"step": step, "wall_s": wall_s, "distill_config": cfg.to_dict(), "adapt_config": model.config.to_dict(),
            "history": history, "optimizer": {"param_groups": groups}}
    atomic_write(ckpt / STATE_FILE, lambda p: p.write_text(json.dumps(meta)))


def load_checkpoint(out: Path, model: AdaptedVLM, opt, cfg: VLMDistillConfig) -> tuple[int, float, list]:
    """Restore OUT/checkpoint into the model and optimizer: (step, wall seconds so far, history)."""
    from safetensors.torch import load_file

    from mmedge.adapt.distill import CHECKPOINT_DIR, OPTIM_FILE, STATE_FILE, TRAINED_FILE
    from mmedge.errors import CheckpointError, ConfigError
    from mmedge.train.trainer import restore_optimizer

    ckpt = Path(out) / CHECKPOINT_DIR
    try:
        meta = json.loads((ckpt / STATE_FILE).read_text())
        if meta["distill_config"] != cfg.to_dict() or meta["adapt_config"] != model.config.to_dict():
            raise ConfigError("the distillation or adapt settings differ from the checkpoint's; resume with the same "
                              "arguments, or start over with --force", "resume")
        trained, tensors = load_file(str(ckpt / TRAINED_FILE)), load_file(str(ckpt / OPTIM_FILE))
    except (OSError, KeyError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise CheckpointError(f"cannot resume from {ckpt}: {exc}") from exc
    params = dict(model.adapter_parameters())
    if set(trained) != set(params):
        raise CheckpointError(f"{ckpt / TRAINED_FILE} holds other weights than this run trains")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(trained[name])
    restore_optimizer(opt, tensors, meta["optimizer"]["param_groups"])
    return meta["step"], meta["wall_s"], meta["history"]


def scene_prompts(image_size: int, seed: int = 0, split: str = "train"):
    """data(step, n) over the generated scenes, no labels: half caption prompts, half VQA questions."""
    from mmedge.caption.data import scene_captions
    from mmedge.data.batches import generate

    def data(step: int, n: int):
        n_cap, start = n // 2, step * n
        images, _ = scene_captions(seed, split, range(start, start + n_cap), image_size)
        questions = generate("vqa", seed, split, range(start, start + n - n_cap), image_size=image_size)
        return images + [q.image for q in questions], [CAPTION_PROMPT] * n_cap + [q.text for q in questions]

    return data


CAPTION_PROMPT = "describe the image."
RECORD_TASKS = {"vqa2": "vqa", "gqa": "vqa", "jsonl": "vqa", "coco": "caption", "cc": "caption"}


def generative_records(data: str, split: str):
    """(spec, records) of a dataset on disk a generative model reads (one image and a prompt per example):
    DatasetError naming what to use for another dataset, an empty split or a record with other than one image."""
    from mmedge.data.sources import parse_data_spec, read_records
    from mmedge.errors import DatasetError

    spec = parse_data_spec(data)
    if spec.name not in RECORD_TASKS:
        raise DatasetError(f"--data {spec.name}: a generative model reads one image and a prompt per example; "
                           f"use one of {', '.join(RECORD_TASKS)} (or the generated scenes)")
    records = read_records(spec, RECORD_TASKS[spec.name], split)
    if not records:
        raise DatasetError(f"{data}: the {split} split has no records")
    wrong = next((r for r in records if len(r.images) != 1), None)
    if wrong is not None:
        raise DatasetError(f"{wrong.where}: a generative model reads one image per example, this record names "
                           f"{len(wrong.images)}")
    return spec, records


def dataset_prompts(data: str, seed: int = 0, split: str = "train"):
    """data(step, n) over a dataset on disk (NAME:ROOT, read by mmedge.data.sources as `mmedge train` reads
    it), no labels: its questions (vqa2, gqa, jsonl), or the caption prompt on its images (coco, cc). The
    order is a permutation fixed by the seed; positions wrap around the split."""
    from mmedge.adapt.data import _OpenInside, materialise

    spec, records = generative_records(data, split)
    order = np.random.default_rng(seed).permutation(len(records))
    caption = RECORD_TASKS[spec.name] == "caption"

    def prompts(step: int, n: int):
        picked = [records[order[(step * n + i) % len(records)]] for i in range(n)]
        images = [materialise(_OpenInside(r.images[0], spec.root, r.where)) for r in picked]
        return images, [CAPTION_PROMPT if caption else r.text for r in picked]

    return prompts


def prompt_source(data: str, image_size: int, seed: int = 0, split: str = "train"):
    """data(step, n) for `--data`: the generated scenes, or a dataset on disk (its validation split for
    "val": mmedge.data.provider.VAL_SPLIT)."""
    if data == "scenes":
        return scene_prompts(image_size, seed, split)
    from mmedge.data.provider import VAL_SPLIT
    from mmedge.data.sources import parse_data_spec

    name = parse_data_spec(data).name
    return dataset_prompts(data, seed, VAL_SPLIT.get(name, "val") if split == "val" else split)


def adapt_generative(source, out, cfg: VLMDistillConfig, data: str = "scenes", progress: bool = True, log=print,
                     resume: bool = False, force: bool = False, **overrides) -> dict:
    """`mmedge adapt` for a generative family: wrap, distil on `data` (checkpointed in OUT/checkpoint;
    `resume` continues there), write the folder and its card."""
    from mmedge.adapt.distill import STATE_FILE
    from mmedge.adapt.families import family_of_class, source_class
    from mmedge.adapt.folder import save_adapted
    from mmedge.fileio import atomic_write
    from mmedge.train.distributed import DistInfo
    from mmedge.train.trainer import prepare_run_dir

    out = Path(out)
    prepare_run_dir(out, DistInfo(), resume, force, STATE_FILE, "an adaptation run",
                    lambda o: atomic_write(o / "distill_config.json",
                                           lambda p: p.write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")))
    family = family_of_class(source_class(source))
    torch.manual_seed(cfg.seed)
    model, pre = family.load_source(source, **overrides)
    prompts = prompt_source(data, pre.image_size, cfg.seed)
    held_out = prompt_source(data, pre.image_size, cfg.seed, "val")
    held = [teacher_batch(model, pre, *held_out(i, cfg.batch_size), cfg.max_new_tokens) for i in range(2)]
    ratios = [r for r in model.config.keep_ratios if r < 1]
    before = {"agreement": agreement(model, held), "kept_attention": {str(r): kept_attention(model, held, r)
                                                                        for r in ratios}}
    result = distill(model, pre, prompts, cfg, progress=progress, log=log, out=out, resume=resume)
    model.eval()
    after = {"agreement": agreement(model, held), "kept_attention": {str(r): kept_attention(model, held, r)
                                                                       for r in ratios}}
    save_adapted(model, pre, out, str(source), metadata={"distill_steps": str(cfg.steps)})
    report = {"before": before, "after": after, "steps": cfg.steps, "wall_s": result["wall_s"], "config": cfg.to_dict(),
              "data": data.split(":")[0]}
    atomic_write(out / "adapt_report.json", lambda p: p.write_text(json.dumps(report, indent=1) + "\n"))
    atomic_write(out / "README.md", lambda p: p.write_text(card(model, report, str(source))))
    log(f"adapted {model.config.source_class} in {result['wall_s']:.0f} s; model folder {out}")
    return report


def card(model: AdaptedVLM, report: dict, source: str) -> str:
    """The adapted folder's README.md."""
    cfg = model.config
    exits = [e + 1 for e in cfg.exits]
    row = lambda key: " | ".join(f"{a:.3f}" for a in report[key]["agreement"])  # noqa: E731
    lines = [f"# {cfg.source_class}, adapted by mmedge (generate)", "",
             f"Source: `{source}`, {cfg.depth} decoder layers x {cfg.dim}, its weights unchanged and frozen.", "",
             "## What was adapted", "",
             f"- Exits after decoder layers {exits}: the last is the model's own norm and LM head; each other is a "
             f"rank-{cfg.exit_adapter_rank} residual map and a copy of the final norm before the shared LM head, with "
             "a learned confidence that its token is the full model's.",
             f"- A prompt-conditioned prefilter on the {cfg.num_image_tokens} visual tokens of one tile, at keep ratios "
             f"{cfg.keep_ratios}; kept tokens keep their positions.",
             f"- Self-distillation: {report['steps']} steps on unlabelled prompts of "
             f"{'the generated scenes' if report.get('data', 'scenes') == 'scenes' else report['data']} "
             f"({report['wall_s']:.0f} s).", "",
             "## Agreement with the full model (held out, teacher-forced)", "",
             "| | " + " | ".join(f"exit {e}" for e in exits) + " |", "|---|" + "---|" * len(exits),
             f"| before | {row('before')} |", f"| after | {row('after')} |", "",
             "Share of the full model's attention to the visual tokens that falls on the kept ones: " +
             ", ".join(f"keep {k}: {report['before']['kept_attention'][k]:.3f} -> {v:.3f}"
                       for k, v in report["after"]["kept_attention"].items()) + ".", ""]
    return "\n".join(lines)
