"""The SmolVLM family (transformers' Idefics3-style `SmolVLMForConditionalGeneration`) re-expressed for
mmedge's generative path: one image as one tile at the model's image size, its visual tokens placed in
the prompt, and the Llama decoder run layer by layer against a key/value cache held in fixed slots.

What changes against `transformers`' own forward, always checked against it (tests/test_adapt_vlm.py):
- one tile, no image splitting: the processor's `do_image_splitting=False` path, an image of any
  shape resized to the model's square size (a wide or tall image loses its proportions, and the
  detail that splitting into tiles would keep);
- the vision embeddings read the full patch grid: with every patch present transformers' bucketed
  position ids are 0..N-1 in raster order (the NaViT path for partial images is not needed);
- attention is written out (3-D matmuls, softmax in float32) over a cache of ``slots``: the prompt's
  tokens fill slots 0.. in order and each generated token the next one; a token's rotary position is
  given separately from its slot, so a prompt whose visual tokens were pruned keeps every remaining
  token's original position (pruning is then exactly masking the dropped tokens out of attention).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mmedge.adapt.families import Family, source_class
from mmedge.adapt.model import attention_probs
from mmedge.errors import CheckpointError, ConfigError

FAMILY = Family("smolvlm", {"SmolVLMForConditionalGeneration": "generate"})


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


@dataclass
class LayerCache:
    """One decoder layer's keys and values, (B, KV heads, slots, head_dim) each."""
    k: torch.Tensor
    v: torch.Tensor


class SmolVLMBackbone(nn.Module):
    """A `transformers` SmolVLM (weights unchanged): image -> visual tokens, and the decoder by layer."""

    def __init__(self, hf_model) -> None:
        super().__init__()
        self.hf = hf_model
        cfg = hf_model.config
        vc, tc = cfg.vision_config, cfg.text_config
        self.image_size, self.patch_size, self.scale_factor = vc.image_size, vc.patch_size, cfg.scale_factor
        self.num_patches = (vc.image_size // vc.patch_size) ** 2
        self.num_image_tokens = self.num_patches // cfg.scale_factor ** 2
        self.image_token_id = cfg.image_token_id
        self.num_layers, self.dim, self.vocab_size = tc.num_hidden_layers, tc.hidden_size, tc.vocab_size
        self.num_heads, self.num_kv_heads = tc.num_attention_heads, tc.num_key_value_heads
        self.head_dim = getattr(tc, "head_dim", None) or tc.hidden_size // tc.num_attention_heads

    # ------------------------------------------------------------------ modules
    @property
    def vision(self):
        return self.hf.model.vision_model

    @property
    def text(self):
        return self.hf.model.text_model

    @property
    def layers(self):
        return self.text.layers

    # ------------------------------------------------------------------ image
    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """pixel_values (B, 3, S, S) -> the connector's visual tokens (B, M, D), M = num_image_tokens."""
        emb = self.vision.embeddings
        x = emb.patch_embedding(pixel_values).flatten(2).transpose(1, 2)  # (B, N, Dv), raster order
        x = x + emb.position_embedding.weight[None]  # full grid: position ids 0..N-1
        for layer in self.vision.encoder.layers:
            x = self._vision_layer(layer, x)
        return self.hf.model.connector(self.vision.post_layernorm(x))

    @staticmethod
    def _vision_layer(layer, x: torch.Tensor) -> torch.Tensor:
        attn = layer.self_attn
        B, N, D = x.shape
        h = layer.layer_norm1(x)

        def heads(t: torch.Tensor) -> torch.Tensor:  # (B, N, D) -> (B, nh, N, hd)
            return t.view(B, N, attn.num_heads, attn.head_dim).transpose(1, 2)

        q, k, v = heads(attn.q_proj(h)), heads(attn.k_proj(h)), heads(attn.v_proj(h))
        probs = torch.softmax((q @ k.transpose(-1, -2)) * attn.scale, dim=-1, dtype=torch.float32).to(q.dtype)
        out = (probs @ v).transpose(1, 2).reshape(B, N, D)  # (B, nh, N, hd) -> (B, N, D)
        x = x + attn.out_proj(out)
        return x + layer.mlp(layer.layer_norm2(x))

    # ------------------------------------------------------------------ text
    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return self.text.embed_tokens(ids)

    def rotary(self, positions: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """positions (B, T) -> cos, sin (B, T, head_dim), as the decoder's rotary embedding computes them."""
        return self.text.rotary_emb(like, positions)

    def new_cache(self, batch: int, slots: int, dtype=torch.float32) -> list[LayerCache]:
        shape = (batch, self.num_kv_heads, slots, self.head_dim)
        return [LayerCache(torch.zeros(shape, dtype=dtype), torch.zeros(shape, dtype=dtype))
                for _ in range(self.num_layers)]

    def key_values(self, index: int, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """Layer `index`'s keys and values for its input x (B, T, D): (B, KVH, T, hd) each, keys rotated."""
        layer = self.layers[index]
        B, T, _ = x.shape
        h = layer.input_layernorm(x)
        k = layer.self_attn.k_proj(h).view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = layer.self_attn.v_proj(h).view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)
        return k * cos[:, None] + rotate_half(k) * sin[:, None], v

    def layer(self, index: int, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: LayerCache,
              slots: torch.Tensor, additive_mask: torch.Tensor, key_weight: torch.Tensor | None = None,
              attention: list | None = None) -> torch.Tensor:
        """Decoder layer `index` on x (B, T, D) whose tokens go to cache slots `slots` (T,); the cache is
        written in place. additive_mask (B, T, S): 0 where a token may attend to a slot, else MASK_VALUE;
        key_weight (B, S): the prefilter's relaxed keep weights in training (mmedge.adapt.model.attention_probs);
        attention: a list that gets this layer's attention probabilities (B, H, T, S)."""
        k, v = self.key_values(index, x, cos, sin)
        cache.k[:, :, slots] = k
        cache.v[:, :, slots] = v
        return self.attend(index, x, cos, sin, cache.k, cache.v, additive_mask, key_weight, attention)

    def attend(self, index: int, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, keys: torch.Tensor,
               values: torch.Tensor, additive_mask: torch.Tensor, key_weight: torch.Tensor | None = None,
               attention: list | None = None) -> torch.Tensor:
        """The rest of layer `index` once its cache, keys and values (B, KVH, S, hd), holds x's own."""
        layer = self.layers[index]
        attn = layer.self_attn
        B, T, _ = x.shape
        h = layer.input_layernorm(x)
        q = attn.q_proj(h).view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, hd)
        q = q * cos[:, None] + rotate_half(q) * sin[:, None]
        groups = self.num_heads // self.num_kv_heads
        keys = keys.repeat_interleave(groups, dim=1)      # (B, H, S, hd)
        values = values.repeat_interleave(groups, dim=1)  # (B, H, S, hd)
        scores = (q @ keys.transpose(-1, -2)) * attn.scaling  # (B, H, T, S)
        probs = attention_probs(scores.float(), additive_mask[:, None], key_weight).to(q.dtype)
        if attention is not None:
            attention.append(probs)
        out = (probs @ values).transpose(1, 2).reshape(B, T, self.num_heads * self.head_dim)  # (B, T, H * hd)
        x = x + attn.o_proj(out)
        return x + layer.mlp(layer.post_attention_layernorm(x))

    def final_norm(self, x: torch.Tensor) -> torch.Tensor:
        return self.text.norm(x)

    def lm_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.hf.lm_head(x)


# ---------------------------------------------------------------------------------------------- preprocessing
IMAGE, FAKE, GLOBAL = "<image>", "<fake_token_around_image>", "<global-img>"


class SmolVLMPreprocessor:
    """The source's tokenizer, chat template and image processor, for one unsplit tile. (SmolVLMProcessor
    itself needs a video processor and so torchvision; the prompt is laid out with its module's functions.)"""

    def __init__(self, tokenizer, image_processor, image_size: int, image_seq_len: int) -> None:
        self.tokenizer, self.image_processor = tokenizer, image_processor
        self.image_size, self.image_seq_len = image_size, image_seq_len

    def pixels(self, images: list) -> torch.Tensor:
        """HWC uint8 images of any shape -> (B, 3, S, S), each stretched to the square tile first (SmolVLM
        keeps the aspect ratio and pads; one fixed tile loses the proportions of a non-square image)."""
        from PIL import Image

        S = self.image_size
        squares = [np.asarray(Image.fromarray(np.asarray(im, dtype=np.uint8)).resize((S, S), Image.Resampling.LANCZOS))
                   if np.asarray(im).shape[:2] != (S, S) else np.asarray(im, dtype=np.uint8) for im in images]
        out = self.image_processor(images=[[im] for im in squares], return_tensors="pt")["pixel_values"]
        return out[:, 0]  # (B, 1, 3, S, S) -> (B, 3, S, S): one tile per image

    def prompt_text(self, text: str) -> str:
        from transformers.models.smolvlm.processing_smolvlm import _prompt_single_image

        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
        chat = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return chat.replace(IMAGE, _prompt_single_image(self.image_seq_len, FAKE, IMAGE, GLOBAL), 1)

    def prompt_ids(self, text: str) -> torch.Tensor:
        """One prompt's ids (1, T), the image placeholders expanded as the processor expands one tile."""
        return torch.tensor([self.tokenizer(self.prompt_text(text), add_special_tokens=False)["input_ids"]])

    @property
    def stop_ids(self) -> tuple[int, ...]:
        ids = {self.tokenizer.eos_token_id, self.tokenizer.convert_tokens_to_ids("<end_of_utterance>")}
        return tuple(sorted(i for i in ids if i is not None and i != self.tokenizer.unk_token_id))

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()

    def to_dict(self) -> dict:
        """The preprocessing and tokenizer sections of the adapted folder's config.json."""
        ip = self.image_processor
        return {"preprocessing": {"image_size": self.image_size, "channel_order": "RGB", "layout": "NCHW",
                                  "resize": "stretch to square (one tile, no splitting)", "resample": "lanczos",
                                  "rescale_factor": ip.rescale_factor, "mean": list(ip.image_mean),
                                  "std": list(ip.image_std), "image_tokens": self.image_seq_len},
                "tokenizer": {"files": ["tokenizer.json", "tokenizer_config.json"], "chat_template": "SmolVLM's",
                              "stop_ids": list(self.stop_ids)}}

    def save(self, directory: Path, source_dir: Path | None = None) -> None:
        """The tokenizer (with its chat template) and the image processor into `directory`."""
        self.tokenizer.save_pretrained(str(directory))
        self.image_processor.save_pretrained(str(directory))


def _preprocessor(folder: str | Path, backbone: SmolVLMBackbone) -> SmolVLMPreprocessor:
    import transformers

    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
        images = transformers.SmolVLMImageProcessorPil.from_pretrained(str(folder))
    except OSError as exc:
        raise CheckpointError(f"{folder}: could not load the tokenizer and the image processor (save both with "
                              f"save_pretrained into the folder): {exc}") from exc
    if tokenizer.chat_template is None:
        raise CheckpointError(f"{folder}: the tokenizer has no chat template; set tokenizer.chat_template "
                              "(transformers.models.smolvlm.processing_smolvlm.DEFAULT_CHAT_TEMPLATE) and save it")
    return SmolVLMPreprocessor(tokenizer, images, backbone.image_size, backbone.num_image_tokens)


def load_source(source: str | Path, **overrides):
    """(AdaptedVLM, SmolVLMPreprocessor) from a folder holding a SmolVLMForConditionalGeneration, its
    tokenizer (with the chat template) and its image processor."""
    import transformers

    from mmedge.adapt.vlm import AdaptedVLM, VLMAdaptConfig

    name = source_class(source)
    if name not in FAMILY.classes:
        raise ConfigError(f"{source} holds a {name}, not a {' or '.join(FAMILY.classes)}", "source")
    try:
        hf = transformers.SmolVLMForConditionalGeneration.from_pretrained(source).eval()
    except OSError as exc:
        raise CheckpointError(f"{source}: could not load the model: {exc}") from exc
    for p in hf.parameters():
        p.requires_grad_(False)
    backbone = SmolVLMBackbone(hf)
    pre = _preprocessor(source, backbone)
    overrides = {k: v for k, v in overrides.items() if k not in ("image_size", "max_text_len")}  # fixed by the model
    known = {f.name for f in dataclasses.fields(VLMAdaptConfig)} - {"family", "source_class", "depth", "dim",
                                                                      "num_image_tokens"}
    if set(overrides) - known:
        raise ConfigError(f"{', '.join(sorted(set(overrides) - known))} do not apply to a generative model (it takes "
                          f"{', '.join(sorted(known))})", "arguments")
    cfg = VLMAdaptConfig(depth=backbone.num_layers, dim=backbone.dim, num_image_tokens=backbone.num_image_tokens,
                         **overrides)
    return AdaptedVLM(backbone, cfg), pre


def load_adapted(directory: Path, saved: dict):
    """(AdaptedVLM, SmolVLMPreprocessor) of an adapted folder (its weights are loaded by the caller)."""
    import transformers

    from mmedge.adapt.vlm import AdaptedVLM, VLMAdaptConfig

    cfg = VLMAdaptConfig.from_dict(saved["adapt"], f"{directory / 'config.json'} (adapt)")
    if cfg.source_class not in FAMILY.classes:
        raise CheckpointError(f"{directory}: {cfg.source_class} is not a {' or '.join(FAMILY.classes)}")
    hf = transformers.SmolVLMForConditionalGeneration(transformers.SmolVLMConfig.from_dict(saved["source"]["config"]))
    backbone = SmolVLMBackbone(hf.eval())
    return AdaptedVLM(backbone, cfg), _preprocessor(directory, backbone)
