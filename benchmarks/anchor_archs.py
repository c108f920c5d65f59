"""Standard vision architectures, shapes only (random weights), for the phone-latency anchors.

torchvision is not installed here, so each family is written out in a few lines. Only the layer
shapes matter: the cost model counts FLOPs and bytes per node of the exported ONNX graph. Each
builder follows the definition the published latency was measured on (named in `ARCHS`).
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
    def __init__(self, cin, mid, s):
        super().__init__()
        # the Caffe ResNet-50 (ncnn's resnet50.param) strides the first 1x1, not the 3x3
        self.body = nn.Sequential(_cbr(cin, mid, 1, s, act=nn.ReLU), _cbr(mid, mid, 3, act=nn.ReLU),
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


def resnet(depth: int = 50) -> nn.Module:
    reps = {18: [2, 2, 2, 2], 50: [3, 4, 6, 3]}[depth]
    layers: list[nn.Module] = [_cbr(3, 64, 7, 2, act=nn.ReLU), nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for i, (n, w) in enumerate(zip(reps, [64, 128, 256, 512])):
        for j in range(n):
            s = 2 if j == 0 and i > 0 else 1
            if depth == 50:
                layers.append(_Bottleneck(cin, w, s))
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


# name -> (builder, input size); the name is what published_latencies.json's "arch" refers to
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
    "squeezenet_1.1_227": (squeezenet_1_1, 227),
    "vit_b_32_384": (lambda: ViT(384, 32, 768, 12, 12, 3072), 384),
    "deit_tiny_224": (lambda: ViT(224, 16, 192, 12, 3, 768), 224),
}
