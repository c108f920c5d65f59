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

from dataclasses import dataclass

import torch
from torch import nn

from mmedge.adapt.families import Family

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
              slots: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        """Decoder layer `index` on x (B, T, D) whose tokens go to cache slots `slots` (T,); the cache is
        written in place. additive_mask (B, T, S): 0 where a token may attend to a slot, else MASK_VALUE."""
        layer = self.layers[index]
        attn = layer.self_attn
        B, T, _ = x.shape
        h = layer.input_layernorm(x)
        q = attn.q_proj(h).view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, hd)
        q = q * cos[:, None] + rotate_half(q) * sin[:, None]
        k, v = self.key_values(index, x, cos, sin)
        cache.k[:, :, slots] = k
        cache.v[:, :, slots] = v
        groups = self.num_heads // self.num_kv_heads
        keys = cache.k.repeat_interleave(groups, dim=1)    # (B, H, S, hd)
        values = cache.v.repeat_interleave(groups, dim=1)  # (B, H, S, hd)
        scores = (q @ keys.transpose(-1, -2)) * attn.scaling + additive_mask[:, None]  # (B, H, T, S)
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        out = (probs @ values).transpose(1, 2).reshape(B, T, self.num_heads * self.head_dim)  # (B, T, H * hd)
        x = x + attn.o_proj(out)
        return x + layer.mlp(layer.post_attention_layernorm(x))

    def final_norm(self, x: torch.Tensor) -> torch.Tensor:
        return self.text.norm(x)

    def lm_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.hf.lm_head(x)
