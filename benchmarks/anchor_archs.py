"""Standard architectures, shapes only (random weights), for the phone-latency anchors.

torchvision, torchaudio and torchsr are not installed here, so each vision / audio family is written
out in a few lines; the transformers (MobileBERT, Whisper-tiny's encoder, Moonshine-tiny's encoder)
come from the installed transformers' configuration classes, whose defaults are those checkpoints'
shapes. Only the layer shapes matter: the cost model counts FLOPs and bytes per node of the exported
ONNX graph. Each builder follows the definition the published latency was measured on (named in
`ARCHS`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn


def _div(v: float, divisor: int = 8) -> int:
    """TF/timm `make_divisible`: round to a multiple of `divisor`, never more than 10% down."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def _cbr(cin: int, cout: int, k: int, s: int = 1, groups: int = 1, act: type[nn.Module] | None = nn.ReLU6):
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class _Head(nn.Module):
    def __init__(self, cin: int, classes: int = 1000):
        super().__init__()
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        return self.fc(x.mean((2, 3)))  # (B, C, H, W) -> (B, C) -> (B, classes)


# ------------------------------------------------------------------ MobileNet V1
def mobilenet_v1(alpha: float = 1.0) -> nn.Module:
    """Howard et al. 2017, Table 1; channels int(c * alpha) as in TF-slim's depth()."""
    c = lambda n: max(int(n * alpha), 8)  # noqa: E731
    plan = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
    layers, cin = [_cbr(3, c(32), 3, 2, act=nn.ReLU6)], c(32)
    for cout, s in plan:
        layers += [_cbr(cin, cin, 3, s, groups=cin), _cbr(cin, c(cout), 1)]
        cin = c(cout)
    return nn.Sequential(*layers, _Head(cin))


# ------------------------------------------------------------------ MobileNet V2
class _InvRes(nn.Module):
    def __init__(self, cin, cout, k, s, expand: int = 6, act=nn.ReLU6, se: int = 0, se_gate=nn.Sigmoid,
                 mid: int | None = None):
        super().__init__()
        mid = mid or cin * expand  # expansion width: given outright (V3) or as a ratio of the input
        self.res = s == 1 and cin == cout
        layers: list[nn.Module] = [] if mid == cin else [_cbr(cin, mid, 1, act=act)]
        layers.append(_cbr(mid, mid, k, s, groups=mid, act=act))
        if se:
            layers.append(_SE(mid, se, act=nn.ReLU if act is not nn.SiLU else nn.SiLU, gate=se_gate))
        layers.append(_cbr(mid, cout, 1, act=None))
        self.body = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.body(x) if self.res else self.body(x)


class _SE(nn.Module):
    def __init__(self, c, reduced, act=nn.ReLU, gate=nn.Sigmoid):
        super().__init__()
        self.fc1, self.act, self.fc2, self.gate = nn.Conv2d(c, reduced, 1), act(), nn.Conv2d(reduced, c, 1), gate()

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)  # (B, C, 1, 1)
        return x * self.gate(self.fc2(self.act(self.fc1(s))))


def mobilenet_v2(alpha: float = 1.0) -> nn.Module:
    """Sandler et al. 2018, Table 2; the last 1x1 conv keeps 1280 channels for alpha <= 1 (TF-slim)."""
    plan = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
    cin = _div(32 * alpha)
    layers: list[nn.Module] = [_cbr(3, cin, 3, 2)]
    for t, c, n, s in plan:
        for i in range(n):
            layers.append(_InvRes(cin, _div(c * alpha), 3, s if i == 0 else 1, t))
            cin = _div(c * alpha)
    last = _div(1280 * max(alpha, 1.0))
    return nn.Sequential(*layers, _cbr(cin, last, 1), _Head(last))


# ------------------------------------------------------------------ MobileNet V3
_V3_LARGE = [  # k, expansion, out, SE, activation (RE/HS), stride -- Howard et al. 2019, Table 1
    (3, 16, 16, 0, "RE", 1), (3, 64, 24, 0, "RE", 2), (3, 72, 24, 0, "RE", 1), (5, 72, 40, 1, "RE", 2),
    (5, 120, 40, 1, "RE", 1), (5, 120, 40, 1, "RE", 1), (3, 240, 80, 0, "HS", 2), (3, 200, 80, 0, "HS", 1),
    (3, 184, 80, 0, "HS", 1), (3, 184, 80, 0, "HS", 1), (3, 480, 112, 1, "HS", 1), (3, 672, 112, 1, "HS", 1),
    (5, 672, 160, 1, "HS", 2), (5, 960, 160, 1, "HS", 1), (5, 960, 160, 1, "HS", 1)]
_V3_SMALL = [  # Table 2
    (3, 16, 16, 1, "RE", 2), (3, 72, 24, 0, "RE", 2), (3, 88, 24, 0, "RE", 1), (5, 96, 40, 1, "HS", 2),
    (5, 240, 40, 1, "HS", 1), (5, 240, 40, 1, "HS", 1), (5, 120, 48, 1, "HS", 1), (5, 144, 48, 1, "HS", 1),
    (5, 288, 96, 1, "HS", 2), (5, 576, 96, 1, "HS", 1), (5, 576, 96, 1, "HS", 1)]


def mobilenet_v3(variant: str = "large", alpha: float = 1.0) -> nn.Module:
    """MobileNetV3-Large/Small; SE width make_divisible(expansion / 4); the 1280/1024 head is not
    scaled below alpha 1 (TF-slim)."""
    plan, head = (_V3_LARGE, 1280) if variant == "large" else (_V3_SMALL, 1024)
    cin = _div(16 * alpha)
    layers: list[nn.Module] = [_cbr(3, cin, 3, 2, act=nn.Hardswish)]
    for k, exp, out, se, a, s in plan:
        mid, cout = _div(exp * alpha), _div(out * alpha)
        act = nn.ReLU if a == "RE" else nn.Hardswish
        layers.append(_InvRes(cin, cout, k, s, act=act, mid=mid, se=_div(mid / 4) if se else 0, se_gate=nn.Hardsigmoid))
        cin = cout
    last = _div(plan[-1][1] * alpha)
    layers.append(_cbr(cin, last, 1, act=nn.Hardswish))

    class _V3Head(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.act, self.fc2 = nn.Linear(last, head), nn.Hardswish(), nn.Linear(head, 1000)

        def forward(self, x):
            return self.fc2(self.act(self.fc1(x.mean((2, 3)))))

    return nn.Sequential(*layers, _V3Head())


# ------------------------------------------------------------------ EfficientNet (B0 and Lite)
_EFF_BLOCKS = [(3, 1, 16, 1, 1), (3, 2, 24, 6, 2), (5, 2, 40, 6, 2), (3, 3, 80, 6, 2), (5, 3, 112, 6, 1),
               (5, 4, 192, 6, 2), (3, 1, 320, 6, 1)]  # k, repeats, out, expansion, stride (Tan & Le 2019)


def efficientnet(width: float = 1.0, depth: float = 1.0, lite: bool = False) -> nn.Module:
    """EfficientNet-B0 (SE 0.25 of the block input, swish) or EfficientNet-Lite (no SE, ReLU6, stem,
    head and first/last stage repeats fixed while scaling, as in tensorflow/tpu's lite builder)."""
    act = nn.ReLU6 if lite else nn.SiLU
    rf = lambda f: _div(f * width)  # noqa: E731
    stem = 32 if lite else rf(32)
    layers: list[nn.Module] = [_cbr(3, stem, 3, 2, act=act)]
    cin = stem
    for i, (k, n, out, e, s) in enumerate(_EFF_BLOCKS):
        reps = n if lite and i in (0, len(_EFF_BLOCKS) - 1) else int(math.ceil(depth * n))
        for j in range(reps):
            se = 0 if lite else max(1, int(cin * 0.25))
            layers.append(_InvRes(cin, rf(out), k, s if j == 0 else 1, e, act=act, se=se))
            cin = rf(out)
    head = 1280 if lite else rf(1280)
    return nn.Sequential(*layers, _cbr(cin, head, 1, act=act), _Head(head))


# ------------------------------------------------------------------ ResNet (Caffe definition)
class _Bottleneck(nn.Module):
    def __init__(self, cin, mid, s, caffe: bool = True):
        super().__init__()
        # the Caffe ResNet-50 (ncnn's resnet50.param) strides the first 1x1; torchvision's ("v1.5") the 3x3
        s1, s3 = (s, 1) if caffe else (1, s)
        self.body = nn.Sequential(_cbr(cin, mid, 1, s1, act=nn.ReLU), _cbr(mid, mid, 3, s3, act=nn.ReLU),
                                  _cbr(mid, mid * 4, 1, act=None))
        self.short = _cbr(cin, mid * 4, 1, s, act=None) if s != 1 or cin != mid * 4 else nn.Identity()

    def forward(self, x):
        return torch.relu(self.body(x) + self.short(x))


class _Basic(nn.Module):
    def __init__(self, cin, cout, s):
        super().__init__()
        self.body = nn.Sequential(_cbr(cin, cout, 3, s, act=nn.ReLU), _cbr(cout, cout, 3, act=None))
        self.short = _cbr(cin, cout, 1, s, act=None) if s != 1 or cin != cout else nn.Identity()

    def forward(self, x):
        return torch.relu(self.body(x) + self.short(x))


def resnet(depth: int = 50, caffe: bool = True) -> nn.Module:
    """ResNet-18 / -50; `caffe` picks where a downsampling bottleneck strides (the 1x1, else the 3x3
    as torchvision's resnet50, which ExecuTorch's examples/models/resnet exports)."""
    reps = {18: [2, 2, 2, 2], 50: [3, 4, 6, 3]}[depth]
    layers: list[nn.Module] = [_cbr(3, 64, 7, 2, act=nn.ReLU), nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for i, (n, w) in enumerate(zip(reps, [64, 128, 256, 512])):
        for j in range(n):
            s = 2 if j == 0 and i > 0 else 1
            if depth == 50:
                layers.append(_Bottleneck(cin, w, s, caffe))
                cin = w * 4
            else:
                layers.append(_Basic(cin, w, s))
                cin = w
    return nn.Sequential(*layers, _Head(cin))


# ------------------------------------------------------------------ SqueezeNet 1.1
class _Fire(nn.Module):
    def __init__(self, cin, sq, ex):
        super().__init__()
        self.sq = nn.Sequential(nn.Conv2d(cin, sq, 1), nn.ReLU())
        self.e1 = nn.Sequential(nn.Conv2d(sq, ex, 1), nn.ReLU())
        self.e3 = nn.Sequential(nn.Conv2d(sq, ex, 3, padding=1), nn.ReLU())

    def forward(self, x):
        s = self.sq(x)
        return torch.cat([self.e1(s), self.e3(s)], 1)


def squeezenet_1_1() -> nn.Module:
    pool = lambda: nn.MaxPool2d(3, 2, ceil_mode=True)  # noqa: E731
    return nn.Sequential(nn.Conv2d(3, 64, 3, 2), nn.ReLU(), pool(), _Fire(64, 16, 64), _Fire(128, 16, 64), pool(),
                         _Fire(128, 32, 128), _Fire(256, 32, 128), pool(), _Fire(256, 48, 192), _Fire(384, 48, 192),
                         _Fire(384, 64, 256), _Fire(512, 64, 256), nn.Conv2d(512, 1000, 1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten())


# ------------------------------------------------------------------ ViT
class _Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp: int):
        super().__init__()
        self.heads = heads
        self.ln1, self.qkv, self.proj = nn.LayerNorm(dim, eps=1e-6), nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.ln2, self.fc1, self.fc2 = nn.LayerNorm(dim, eps=1e-6), nn.Linear(dim, mlp), nn.Linear(mlp, dim)

    def forward(self, x):
        b, t, d = x.shape
        qkv = self.qkv(self.ln1(x)).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B, nh, T, hs)
        att = torch.softmax(q @ k.transpose(-2, -1) * (d // self.heads) ** -0.5, dim=-1)  # (B, nh, T, T)
        x = x + self.proj((att @ v).transpose(1, 2).reshape(b, t, d))
        return x + self.fc2(nn.functional.gelu(self.fc1(self.ln2(x))))


class ViT(nn.Module):
    def __init__(self, image: int = 224, patch: int = 16, dim: int = 192, depth: int = 12, heads: int = 3,
                 mlp: int = 768, classes: int = 1000):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, patch, patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.zeros(1, (image // patch) ** 2 + 1, dim))
        self.blocks = nn.Sequential(*[_Block(dim, heads, mlp) for _ in range(depth)])
        self.norm, self.head = nn.LayerNorm(dim, eps=1e-6), nn.Linear(dim, classes)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)  # (B, T, dim)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1) + self.pos
        return self.head(self.norm(self.blocks(x))[:, 0])


# ------------------------------------------------------------------ Wav2Letter (torchaudio)
def wav2letter(num_classes: int = 4096) -> nn.Module:
    """torchaudio.models.Wav2Letter(num_classes, input_type="waveform", num_features=1): a strided
    waveform convolution, then the acoustic model (Collobert et al. 2016), log-softmax over classes."""
    def conv(cin, cout, k, s=1, p=0):
        return [nn.Conv1d(cin, cout, k, s, p), nn.ReLU()]

    layers = conv(1, 250, 250, 160, 45) + conv(250, 250, 48, 2, 23)
    for _ in range(7):
        layers += conv(250, 250, 7, 1, 3)
    layers += conv(250, 2000, 32, 1, 16) + conv(2000, 2000, 1) + conv(2000, num_classes, 1)

    class _W2L(nn.Module):
        def __init__(self):
            super().__init__()
            self.acoustic_model = nn.Sequential(*layers)

        def forward(self, x):  # (B, 1, samples) -> (B, classes, frames)
            return torch.log_softmax(self.acoustic_model(x), dim=1)

    return _W2L()


# ------------------------------------------------------------------ EDSR (torchsr edsr_r16f64)
class _ResBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.ReLU(), nn.Conv2d(c, c, 3, padding=1))

    def forward(self, x):
        return x + self.body(x)


def edsr(blocks: int = 16, feats: int = 64, scale: int = 2) -> nn.Module:
    """torchsr.models.edsr_r16f64(scale): mean shift, head conv, 16 residual blocks (no batch norm),
    body conv + skip, sub-pixel upsampler (conv to feats * scale^2, PixelShuffle), tail conv."""
    class _EDSR(nn.Module):
        def __init__(self):
            super().__init__()
            self.sub_mean, self.add_mean = nn.Conv2d(3, 3, 1), nn.Conv2d(3, 3, 1)
            self.head = nn.Conv2d(3, feats, 3, padding=1)
            self.body = nn.Sequential(*[_ResBlock(feats) for _ in range(blocks)], nn.Conv2d(feats, feats, 3, padding=1))
            self.tail = nn.Sequential(nn.Conv2d(feats, feats * scale * scale, 3, padding=1), nn.PixelShuffle(scale),
                                      nn.Conv2d(feats, 3, 3, padding=1))

        def forward(self, x):
            x = self.head(self.sub_mean(x))
            return self.add_mean(self.tail(x + self.body(x)))

    return _EDSR()


# ------------------------------------------------------------------ CRAFT (text detector)
def craft() -> nn.Module:
    """CRAFT (Baek et al. 2019; clovaai/CRAFT-pytorch, the detector EasyOCR ships): VGG16-BN to conv5
    plus a dilated fc6/fc7 slice, a U-Net of four upconv blocks, a 5-conv head to 2 score maps (at
    half the input resolution)."""
    import torch.nn.functional as F

    def cbr(cin, cout, k=3, p=1, d=1):
        return [nn.Conv2d(cin, cout, k, padding=p, dilation=d), nn.BatchNorm2d(cout), nn.ReLU()]

    def vgg(plan, cin):
        layers = []
        for v in plan:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += cbr(cin, v)
                cin = v
        return nn.Sequential(*layers)

    class _Up(nn.Module):
        def __init__(self, cin, mid, cout):
            super().__init__()
            self.conv = nn.Sequential(nn.Conv2d(cin + mid, mid, 1), nn.BatchNorm2d(mid), nn.ReLU(),
                                      nn.Conv2d(mid, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())

        def forward(self, x):
            return self.conv(x)

    class _CRAFT(nn.Module):
        def __init__(self):
            super().__init__()
            self.s1 = vgg([64, 64, "M", 128, 128], 3)                           # /2, 128
            self.s2 = vgg(["M", 256, 256, 256], 128)                            # /4, 256 (conv3_1-3)
            self.s3 = vgg(["M", 512, 512, 512], 256)                            # /8, 512 (conv4_1-3)
            self.s4 = vgg(["M", 512, 512], 512)                                 # /16, 512 (no conv5_3)
            self.s5 = nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(512, 1024, 3, padding=6, dilation=6),
                                    nn.Conv2d(1024, 1024, 1))                   # /16, 1024
            self.up1, self.up2 = _Up(1024, 512, 256), _Up(512, 256, 128)
            self.up3, self.up4 = _Up(256, 128, 64), _Up(128, 64, 32)
            self.cls = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1),
                                     nn.ReLU(), nn.Conv2d(32, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 1),
                                     nn.ReLU(), nn.Conv2d(16, 2, 1))

        def forward(self, x):
            f1 = self.s1(x)
            f2 = self.s2(f1)
            f3 = self.s3(f2)
            f4 = self.s4(f3)
            y = self.up1(torch.cat([self.s5(f4), f4], 1))
            y = F.interpolate(y, size=f3.shape[2:], mode="bilinear", align_corners=False)
            y = self.up2(torch.cat([y, f3], 1))
            y = F.interpolate(y, size=f2.shape[2:], mode="bilinear", align_corners=False)
            y = self.up3(torch.cat([y, f2], 1))
            y = F.interpolate(y, size=f1.shape[2:], mode="bilinear", align_corners=False)
            return self.cls(self.up4(torch.cat([y, f1], 1)))

    return _CRAFT()


# ------------------------------------------------------------------ transformers checkpoints' shapes
class _LastHidden(nn.Module):
    """A transformers module returning its last hidden state only (one ONNX output)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x):
        return self.module(x, return_dict=False)[0]


def mobilebert() -> nn.Module:
    """transformers.MobileBertModel with MobileBertConfig's defaults (google/mobilebert-uncased: 24
    layers, hidden 512, bottleneck 128, 4 stacked FFNs), as ExecuTorch's examples/models/mobilebert."""
    from transformers import MobileBertConfig, MobileBertModel

    return _LastHidden(MobileBertModel(MobileBertConfig(attn_implementation="eager"), add_pooling_layer=True))


def whisper_tiny_encoder() -> nn.Module:
    """Whisper-tiny's encoder (openai/whisper-tiny: d_model 384, 4 layers, 6 heads, FFN 1536, 80 mel
    bins, 30 s = 3000 frames -> 1500 positions)."""
    from transformers import WhisperConfig, WhisperModel

    config = WhisperConfig(d_model=384, encoder_layers=4, encoder_attention_heads=6, encoder_ffn_dim=1536,
                           decoder_layers=4, decoder_attention_heads=6, decoder_ffn_dim=1536, num_mel_bins=80,
                           attn_implementation="eager")
    return _LastHidden(WhisperModel(config).get_encoder())


def moonshine_tiny_encoder() -> nn.Module:
    """Moonshine-tiny's encoder with its convolutional front end on raw 16 kHz audio (MoonshineConfig's
    defaults are UsefulSensors/moonshine-tiny: hidden 288, 6 encoder layers, 8 heads)."""
    from transformers import MoonshineConfig, MoonshineModel
    from transformers.models.moonshine import modeling_moonshine as mm

    def rotary(q, k, cos, sin, unsqueeze_dim=1):
        """mm.apply_rotary_pos_emb with repeat_interleave written as expand + flatten, which the
        TorchScript ONNX exporter handles (the same elementwise work)."""
        def interleave(t):
            t = t.unsqueeze(unsqueeze_dim)[..., : t.shape[-1] // 2]
            return t.unsqueeze(-1).expand(*t.shape, 2).flatten(-2)

        cos, sin = interleave(cos), interleave(sin)
        d = cos.shape[-1]
        q_embed = torch.cat([q[..., :d] * cos + mm.rotate_half(q[..., :d]) * sin, q[..., d:]], dim=-1)
        k_embed = torch.cat([k[..., :d] * cos + mm.rotate_half(k[..., :d]) * sin, k[..., d:]], dim=-1)
        return q_embed, k_embed

    mm.apply_rotary_pos_emb = rotary
    return _LastHidden(MoonshineModel(MoonshineConfig(attn_implementation="eager")).get_encoder())


# name -> (builder, input): an int is a square RGB image's side (batch 1); a string names the input of a
# non-image architecture, whose example tensors INPUTS gives. The name is what published_latencies.json's
# "arch" refers to, and its "input" equals the second element.
ARCHS: dict[str, tuple[Callable[[], nn.Module], int]] = {
    **{f"mobilenet_v1_{a}_{r}": (lambda a=a: mobilenet_v1(float(a)), r)
       for a in ("1.0", "0.75", "0.5", "0.25") for r in (128, 160, 192, 224)},
    "mobilenet_v2_1.0_224": (lambda: mobilenet_v2(1.0), 224),
    "mobilenet_v3_large_1.0_224": (lambda: mobilenet_v3("large", 1.0), 224),
    "mobilenet_v3_large_0.75_224": (lambda: mobilenet_v3("large", 0.75), 224),
    "mobilenet_v3_small_1.0_224": (lambda: mobilenet_v3("small", 1.0), 224),
    "mobilenet_v3_small_0.75_224": (lambda: mobilenet_v3("small", 0.75), 224),
    "efficientnet_b0_224": (lambda: efficientnet(1.0, 1.0), 224),
    "efficientnet_lite0_224": (lambda: efficientnet(1.0, 1.0, lite=True), 224),
    "efficientnet_lite1_240": (lambda: efficientnet(1.0, 1.1, lite=True), 240),
    "efficientnet_lite2_260": (lambda: efficientnet(1.1, 1.2, lite=True), 260),
    "efficientnet_lite3_280": (lambda: efficientnet(1.2, 1.4, lite=True), 280),
    "efficientnet_lite4_300": (lambda: efficientnet(1.4, 1.8, lite=True), 300),
    "resnet18_224": (lambda: resnet(18), 224),
    "resnet50_caffe_224": (lambda: resnet(50), 224),
    "resnet50_224": (lambda: resnet(50, caffe=False), 224),
    "squeezenet_1.1_227": (squeezenet_1_1, 227),
    "vit_b_32_384": (lambda: ViT(384, 32, 768, 12, 12, 3072), 384),
    "deit_tiny_224": (lambda: ViT(224, 16, 192, 12, 3, 768), 224),
    "vit_b_16_224": (lambda: ViT(224, 16, 768, 12, 12, 3072), 224),
    "efficientnet_lite2_224": (lambda: efficientnet(1.1, 1.2, lite=True), 224),
    "edsr_r16f64_x2_224": (edsr, 224),
    "craft_800": (craft, 800),
    "wav2letter_10x700": (wav2letter, "waveform 10x1x700"),
    "mobilebert_8": (mobilebert, "input_ids 1x8"),
    "whisper_tiny_encoder_30s": (whisper_tiny_encoder, "log-mel 1x80x3000"),
    **{f"moonshine_tiny_encoder_{t}s": (moonshine_tiny_encoder, f"audio 1x{16000 * t}") for t in (5, 10, 30)},
}

# example inputs of the non-image architectures (batch as the source ran it)
INPUTS: dict[str, Callable[[], tuple[torch.Tensor, ...]]] = {
    "wav2letter_10x700": lambda: (torch.randn(10, 1, 700),),
    "mobilebert_8": lambda: (torch.randint(0, 30522, (1, 8)),),
    "whisper_tiny_encoder_30s": lambda: (torch.randn(1, 80, 3000),),
    **{f"moonshine_tiny_encoder_{t}s": (lambda t=t: (torch.randn(1, 16000 * t),)) for t in (5, 10, 30)},
}


def example_inputs(arch: str) -> tuple[torch.Tensor, ...]:
    """The tensors `arch` is exported with: INPUTS', else one (1, 3, side, side) image."""
    if arch in INPUTS:
        return INPUTS[arch]()
    side = ARCHS[arch][1]
    return (torch.randn(1, 3, side, side),)
