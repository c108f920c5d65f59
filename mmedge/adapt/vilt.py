"""The ViLT family (Kim et al. 2021): ``ViltForQuestionAnswering``, ``ViltForImagesAndTextClassification``
(NLVR2, two images) and ``ViltForImageAndTextRetrieval``, re-expressed for mmedge.

Sequence (as in transformers' ViltEmbeddings): L text tokens ([CLS] question [SEP] [PAD]...), then
the image's [CLS] token, then N = (S / patch)^2 patch tokens, row-major; G = L + 1 tokens are never
pruned. The model's head reads the text [CLS] (token 0): final LayerNorm -> pooler (dense + tanh)
-> classifier (NLVR2: the two images' pooled vectors side by side; retrieval: one score).

What differs from ``transformers``' own forward, and why (each checked against it in tests/test_adapt.py):
- the image size is fixed (AdaptConfig.image_size): the pixel mask is all ones, so the patch
  position embeddings are interpolated once to a static grid (``transformers`` reads the sizes
  from the pixel mask per image, a data-dependent shape ``torch.export`` cannot trace) and every
  patch is kept in raster order. ``transformers`` shuffles the patches (``torch.multinomial``),
  which changes nothing but the float summation order; a source with ``max_image_length`` below
  N would sample patches at random even at inference, which the adapted model does not do;
- attention is written with 3-D ``bmm`` and explicit softmax (no fused kernel), as
  mmedge.models.attention, and takes key weights for the prefilter's relaxed training;
- NLVR2's two passes run as one batch of 2B sequences (image token types 1 and 2).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from mmedge.adapt.families import Family, UnsupportedModelError, family_of_class, source_class
from mmedge.adapt.model import AdaptConfig, AdaptedModel, Backbone, attention_probs
from mmedge.adapt.text import BertWordPiece
from mmedge.errors import CheckpointError, ConfigError

FAMILY = Family("vilt", {"ViltForQuestionAnswering": "vqa", "ViltForImagesAndTextClassification": "nlvr2",
                         "ViltForImageAndTextRetrieval": "retrieval"})
PROCESSOR_FILES = ("tokenizer.json", "tokenizer_config.json", "processor_config.json", "preprocessor_config.json",
                   "special_tokens_map.json", "vocab.txt")


def _classifier(hf_model) -> nn.Module:
    """The module after the pooler: ``classifier`` (VQA, NLVR2) or ``rank_output`` (retrieval)."""
    return hf_model.rank_output if hasattr(hf_model, "rank_output") else hf_model.classifier


class ViltHead(nn.Module):
    """LayerNorm -> pooler -> classifier on the text [CLS]: (B', T, D) -> logits (B, C), features (B, I * D)."""

    def __init__(self, norm: nn.LayerNorm, pooler: nn.Module, classifier: nn.Module, num_images: int) -> None:
        super().__init__()
        self.norm, self.pooler, self.classifier, self.num_images = norm, pooler, classifier, num_images

    def forward(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return vilt_head(self.norm, self.pooler, self.classifier, self.num_images, hidden)


def vilt_head(norm, pooler, classifier, num_images: int, hidden: torch.Tensor):
    pooled = pooler(norm(hidden[:, :1]))  # (B', D): ViltPooler reads token 0 (LayerNorm is per token)
    features = pooled.reshape(-1, num_images * pooled.shape[-1]) if num_images > 1 else pooled  # (B, I * D)
    return classifier(features), features


class ViltBackbone(Backbone):
    """A ``transformers`` ViLT model (weights unchanged) at a fixed image size and text length."""

    def __init__(self, hf_model, image_size: int, max_text_len: int) -> None:
        super().__init__()
        cfg = hf_model.config
        name = type(hf_model).__name__
        if name not in FAMILY.classes:
            raise UnsupportedModelError(name, FAMILY.classes)
        problems = []
        if not isinstance(cfg.image_size, int) or not isinstance(cfg.patch_size, int):
            problems.append(f"image_size {cfg.image_size} and patch_size {cfg.patch_size} must be single "
                            f"integers (square images and patches)")
        elif image_size % cfg.patch_size:
            problems.append(f"image size {image_size} is not a multiple of the patch size {cfg.patch_size}")
        if not 2 <= max_text_len <= cfg.max_position_embeddings:
            problems.append(f"max_text_len {max_text_len} must be in 2..{cfg.max_position_embeddings} "
                            f"(the model's text positions)")
        images = cfg.num_images if name == "ViltForImagesAndTextClassification" else 1
        if images < 1 or cfg.modality_type_vocab_size < images + 1:
            problems.append(f"num_images {cfg.num_images} needs modality_type_vocab_size >= images + 1 "
                            f"(got {cfg.modality_type_vocab_size})")
        if problems:
            raise ConfigError(problems, f"{name} at the adapted size")
        self.hf = hf_model
        self.image_size, self.patch_size = image_size, cfg.patch_size
        self.grid, self.native_grid = image_size // cfg.patch_size, cfg.image_size // cfg.patch_size
        self.num_layers, self.dim = cfg.num_hidden_layers, cfg.hidden_size
        self.num_heads, self.head_dim = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads
        self.num_text, self.num_global = max_text_len, max_text_len + 1  # + the image [CLS]
        self.num_patches, self.num_images = self.grid ** 2, images
        self.feature_dim = images * cfg.hidden_size
        self.num_outputs = _classifier(hf_model).out_features if name == "ViltForImageAndTextRetrieval" \
            else cfg.num_labels

    # ------------------------------------------------------------------ embeddings
    def patch_positions(self) -> torch.Tensor:
        """(1, N, D): the patch position embeddings at the fixed grid (bilinear, corners aligned, as
        ViltEmbeddings.visual_embed does for a full pixel mask; no-op at the model's own size)."""
        pos = self.hf.vilt.embeddings.position_embeddings[:, 1:, :]  # (1, g0 * g0, D)
        if self.grid == self.native_grid:
            return pos
        spatial = pos.transpose(1, 2).reshape(1, self.dim, self.native_grid, self.native_grid)
        spatial = F.interpolate(spatial, size=(self.grid, self.grid), mode="bilinear", align_corners=True)
        return spatial.flatten(2).transpose(1, 2)  # (1, g * g, D)

    def embed(self, pixel_values: torch.Tensor, input_ids: torch.Tensor,
              text_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """pixel_values (B, 3, S, S) or (B, I, 3, S, S), input_ids / text_mask (B, L)
        -> hidden (B', L + 1 + N, D), mask (B', L + 1 + N)."""
        e, I = self.hf.vilt.embeddings, self.num_images
        S = self.image_size
        text = e.text_embeddings(input_ids=input_ids.long())  # (B, L, D): word + type + position, LayerNorm
        text = text + e.token_type_embeddings.weight[0]  # modality 0: text
        # (B', 3, S, S), image-major within a sample. One image: the input itself, not a reshape of it, so that
        # the patch projection reads a graph input and ExecuTorch int8 can quantize it (executorch_target)
        pixels = pixel_values if pixel_values.dim() == 4 else pixel_values.reshape(-1, 3, S, S)
        patches = e.patch_embeddings.projection(pixels).flatten(2).transpose(1, 2)  # (B', N, D)
        Bp = patches.shape[0]
        cls = (e.cls_token + e.position_embeddings[:, :1]).expand(Bp, -1, -1)  # (B', 1, D)
        visual = torch.cat([cls, patches + self.patch_positions()], dim=1)  # (B', 1 + N, D)
        types = e.token_type_embeddings.weight[1: 1 + I]  # (I, D): image i has modality i + 1
        visual = visual + (types.repeat(Bp // I, 1) if I > 1 else types).unsqueeze(1)
        text_mask = text_mask.to(visual.dtype)
        if I > 1:
            text, text_mask = text.repeat_interleave(I, dim=0), text_mask.repeat_interleave(I, dim=0)
        hidden = torch.cat([text, visual], dim=1)  # (B', L + 1 + N, D)
        mask = torch.cat([text_mask, torch.ones_like(visual[..., 0])], dim=1)  # (B', L + 1 + N)
        return hidden, mask

    # ------------------------------------------------------------------ layers
    def layer(self, index: int, hidden: torch.Tensor, additive_mask: torch.Tensor,
              key_weight: torch.Tensor | None = None, need_probs: bool = False):
        """ViltLayer `index` (pre-norm attention and MLP, residuals), its weights as they are."""
        layer = self.hf.vilt.encoder.layer[index]
        att = layer.attention.attention
        B, T, D = hidden.shape
        nh, hd = self.num_heads, self.head_dim
        x = layer.layernorm_before(hidden)

        def heads(t: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B * nh, T, hd)
            return t.reshape(B, T, nh, hd).transpose(1, 2).reshape(B * nh, T, hd)

        q, k, v = heads(att.query(x)), heads(att.key(x)), heads(att.value(x))
        scores = torch.bmm(q, k.transpose(1, 2)) / math.sqrt(hd)  # (B * nh, T, T)
        probs = attention_probs(scores.reshape(B, nh, T, T), additive_mask, key_weight)  # (B, nh, T, T)
        context = torch.bmm(probs.reshape(B * nh, T, T), v)  # (B * nh, T, hd)
        context = context.reshape(B, nh, T, hd).transpose(1, 2).reshape(B, T, D)
        hidden = layer.attention.output.dense(context) + hidden  # first residual
        mlp = layer.intermediate.intermediate_act_fn(layer.intermediate.dense(layer.layernorm_after(hidden)))
        hidden = layer.output.dense(mlp) + hidden  # second residual
        return hidden, (probs if need_probs else None)

    # ------------------------------------------------------------------ heads
    def head(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return vilt_head(self.hf.vilt.layernorm, self.hf.vilt.pooler, _classifier(self.hf), self.num_images, hidden)

    def new_exit_head(self) -> nn.Module:
        return ViltHead(copy.deepcopy(self.hf.vilt.layernorm), copy.deepcopy(self.hf.vilt.pooler),
                        copy.deepcopy(_classifier(self.hf)), self.num_images)

    def prefilter_norm(self, after_layer: int) -> nn.LayerNorm:
        layers = self.hf.vilt.encoder.layer
        norm = layers[after_layer + 1].layernorm_before if after_layer + 1 < len(layers) else self.hf.vilt.layernorm
        return copy.deepcopy(norm)


# ---------------------------------------------------------------------------------------------- preprocessing
@dataclass
class ViltPreprocessor:
    """ViltProcessor's preparation at the fixed size, in numpy and Pillow (what a runtime repeats):
    the image converted to RGB (mmedge.data.preprocess.load_image: EXIF orientation applied,
    transparency over grey), resized to S x S with the processor's filter (bicubic for ViLT), x *
    rescale_factor (in float64, then float32), then (x - mean) / std per channel; the pixel mask is
    all ones. For a square image this is exactly what ViltProcessor computes (its shortest edge set to
    S); any other image is stretched to the square, where ViltProcessor keeps the aspect ratio
    (and the model then sees a different patch grid): the price of one static input shape."""

    image_size: int
    tokenizer: BertWordPiece
    num_images: int = 1
    resample: int = 3                     # PIL filter code: 3 = bicubic (ViltImageProcessor's)
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    image_mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    image_std: tuple[float, ...] = (0.5, 0.5, 0.5)
    hf_processor: object = None           # the transformers processor it was read from (saved with the model)
    files_from: Path | None = None        # or the folder whose processor files it was read from

    def pixels(self, image) -> np.ndarray:
        """One image (path, PIL image or array) -> float32 (3, S, S)."""
        from PIL import Image

        from mmedge.data.preprocess import load_image, preprocess_stretched

        if self.resample == 3:  # bicubic: the one code path the bundle's runtimes repeat
            return preprocess_stretched(image, self.image_size, self.rescale_factor if self.do_rescale else 1.0,
                                        self.image_mean if self.do_normalize else (0.0,) * 3,
                                        self.image_std if self.do_normalize else (1.0,) * 3)
        img = load_image(image)
        if img.size != (self.image_size, self.image_size):
            img = img.resize((self.image_size, self.image_size), Image.Resampling(self.resample))
        arr = np.asarray(img)  # (S, S, 3) uint8
        if self.do_rescale:
            arr = (arr.astype(np.float64) * self.rescale_factor).astype(np.float32)
        else:
            arr = arr.astype(np.float32)
        if self.do_normalize:
            arr = (arr - np.array(self.image_mean, np.float32)) / np.array(self.image_std, np.float32)
        return np.ascontiguousarray(arr.transpose(2, 0, 1))  # (3, S, S)

    def encode(self, images: list, texts: list[str]) -> dict[str, torch.Tensor]:
        """Per example: a tuple of `num_images` images and a text -> the model's inputs."""
        pix = np.stack([np.stack([self.pixels(im) for im in ims]) for ims in images])  # (B, I, 3, S, S)
        if self.num_images == 1:
            pix = pix[:, 0]
        ids, mask = self.tokenizer.encode_batch(texts)
        return {"pixel_values": torch.from_numpy(pix), "input_ids": torch.from_numpy(ids),
                "text_mask": torch.from_numpy(mask)}

    def to_dict(self) -> dict:
        """The preprocessing and tokenizer sections of the adapted folder's config.json."""
        return {"preprocessing": {"image_size": self.image_size, "num_images": self.num_images,
                                  "channel_order": "RGB", "layout": "NCHW", "resize": "stretch to square",
                                  "resample": {2: "bilinear", 3: "bicubic"}.get(self.resample, str(self.resample)),
                                  "resample_pil": self.resample, "do_rescale": self.do_rescale,
                                  "rescale_factor": self.rescale_factor, "do_normalize": self.do_normalize,
                                  "mean": list(self.image_mean), "std": list(self.image_std), "pixel_mask": "ones"},
                "tokenizer": {"file": "tokenizer.json", **self.tokenizer.manifest_fields()}}

    def save(self, directory: Path, source_dir: Path | None = None) -> None:
        """The processor's own files (tokenizer.json, processor config) into `directory`."""
        source_dir = source_dir or self.files_from
        if self.hf_processor is not None:
            self.hf_processor.save_pretrained(str(directory))
        elif source_dir is not None:
            for name in PROCESSOR_FILES:
                if (source_dir / name).is_file() and source_dir != directory:
                    (directory / name).write_bytes((source_dir / name).read_bytes())


def fixed_size(image_processor) -> int:
    """The square side ViltImageProcessor gives a square image: its shortest edge, rounded down to
    its size divisor."""
    size = image_processor.size
    shortest = size.get("shortest_edge") if isinstance(size, dict) else getattr(size, "shortest_edge", None)
    if not shortest:
        raise CheckpointError(f"the image processor's size {size} has no shortest_edge; pass --image-size")
    divisor = getattr(image_processor, "size_divisor", None) or 1
    return int(shortest) // divisor * divisor


def preprocessor_from_hf(processor, image_size: int, max_text_len: int, num_images: int) -> ViltPreprocessor:
    ip, tok = processor.image_processor, processor.tokenizer
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:  # the tokenizer's own tokenizer.json: vocabulary and flags
        tok.save_pretrained(tmp)
        words = BertWordPiece.from_tokenizer_json(Path(tmp) / "tokenizer.json", max_text_len)
    return ViltPreprocessor(image_size, words, num_images, resample=int(ip.resample),
                            do_rescale=bool(ip.do_rescale), rescale_factor=float(ip.rescale_factor),
                            do_normalize=bool(ip.do_normalize), image_mean=tuple(map(float, ip.image_mean)),
                            image_std=tuple(map(float, ip.image_std)), hf_processor=processor)


def preprocessor_from_dict(directory: Path, saved: dict) -> ViltPreprocessor:
    pre, tok = saved["preprocessing"], saved["tokenizer"]
    words = BertWordPiece.from_tokenizer_json(directory / tok["file"], tok["max_length"])
    return ViltPreprocessor(pre["image_size"], words, pre["num_images"], resample=pre["resample_pil"],
                            do_rescale=pre["do_rescale"], rescale_factor=pre["rescale_factor"],
                            do_normalize=pre["do_normalize"], image_mean=tuple(pre["mean"]),
                            image_std=tuple(pre["std"]), files_from=directory)


# ---------------------------------------------------------------------------------------------- loading
def _labels(hf_model, task: str) -> list[str]:
    if task == "retrieval":
        return ["match"]
    id2label = hf_model.config.id2label
    return [str(id2label[i]) for i in range(hf_model.config.num_labels)]


def adapt_config(hf_model, image_size: int, max_text_len: int, **overrides) -> AdaptConfig:
    name = type(hf_model).__name__
    cfg = hf_model.config
    task = FAMILY.classes[name]
    return AdaptConfig(family=FAMILY.name, source_class=name, task=task, labels=_labels(hf_model, task),
                       image_size=image_size, patch_size=cfg.patch_size,
                       num_images=cfg.num_images if task == "nlvr2" else 1, max_text_len=max_text_len,
                       dim=cfg.hidden_size, depth=cfg.num_hidden_layers, **overrides)


def load_source(source: str | Path, image_size: int | None = None, max_text_len: int | None = None,
                **overrides) -> tuple[AdaptedModel, ViltPreprocessor]:
    """A pretrained ViLT and its processor (anything ``from_pretrained`` takes), wrapped; the fixed
    image size defaults to the processor's shortest edge, the text length to the tokenizer's limit."""
    import transformers

    name = source_class(source)
    if family_of_class(name).FAMILY is not FAMILY:
        raise UnsupportedModelError(name, FAMILY.classes)
    try:
        hf_model = getattr(transformers, name).from_pretrained(str(source))
        processor = transformers.ViltProcessor.from_pretrained(str(source))
    except (OSError, ValueError, TypeError) as exc:
        raise CheckpointError(f"cannot load {name} and its ViltProcessor from {source}: "
                              f"{str(exc).splitlines()[0][:300]} (save both with save_pretrained into "
                              f"one folder)") from exc
    hf_model.eval()
    size = image_size or fixed_size(processor.image_processor)
    limit = min(hf_model.config.max_position_embeddings, processor.tokenizer.model_max_length)
    text_len = max_text_len or limit
    cfg = adapt_config(hf_model, size, text_len, **overrides)
    model = AdaptedModel(ViltBackbone(hf_model, size, text_len), cfg)
    return model, preprocessor_from_hf(processor, size, text_len, cfg.num_images)


def hf_model_from_dict(class_name: str, config: dict):
    """An untrained ``transformers`` model of `class_name` built from its saved config (the weights
    are then loaded from the adapted folder's model.safetensors)."""
    import transformers

    if class_name not in FAMILY.classes:
        raise UnsupportedModelError(class_name, FAMILY.classes)
    hf_config = transformers.ViltConfig.from_dict(config)
    return getattr(transformers, class_name)(hf_config).eval()


def load_adapted(directory: Path, saved: dict) -> tuple[AdaptedModel, ViltPreprocessor]:
    cfg = AdaptConfig.from_dict(saved["adapt"], f"{directory / 'config.json'} (adapt)")
    hf_model = hf_model_from_dict(cfg.source_class, saved["source"]["config"])
    model = AdaptedModel(ViltBackbone(hf_model, cfg.image_size, cfg.max_text_len), cfg)
    return model, preprocessor_from_dict(directory, saved)
