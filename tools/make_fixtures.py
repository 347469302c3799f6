#!/usr/bin/env python3
"""Reference outputs for the PyTorch parity tests (tests/pytorch_parity.rs).

Every parameter and batch-norm buffer of each model is filled from a formula
of the tensor's name and element index that the Rust test computes too, so no
weights are committed: only each model's tensor manifest (name, shape), its
logits for a formula-made batch of two images, and feature-map checksums.

    python3 -m venv .venv && .venv/bin/pip install torch torchvision numpy
    .venv/bin/python tools/make_fixtures.py   # writes tests/fixtures/parity.json

The formula (keep in step with `formula` in tests/pytorch_parity.rs):
    h    = FNV-1a-32(name)
    u(i) = fmix32((i + h * 0x9E3779B1) mod 2^32) / 2^32          in [0, 1)
    conv weight [O, I, k, k]:  (u - 0.5) * sqrt(24 / (I k k))   (Kaiming std)
    fc weight [K, C]:          (u - 0.5) * sqrt(12 / C)
    batch-norm weight:          0.1 + 0.3 u   (small, so deep stacks stay bounded)
    any bias, running_mean:     0.2 (u - 0.5)
    running_var:                0.5 + u
    num_batches_tracked:        0
    input (name "input"):       2 u - 1
computed in float64 and rounded to float32.
"""
import json
import math
import pathlib

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

MASK = 0xFFFFFFFF


def fnv1a(name: str) -> int:
    h = 0x811C9DC5
    for b in name.encode():
        h = ((h ^ b) * 0x01000193) & MASK
    return h


def uniform(name: str, count: int) -> np.ndarray:
    x = (np.arange(count, dtype=np.uint64) + np.uint64((fnv1a(name) * 0x9E3779B1) & MASK)) & np.uint64(MASK)
    x ^= x >> np.uint64(16)
    x = (x * np.uint64(0x85EBCA6B)) & np.uint64(MASK)
    x ^= x >> np.uint64(13)
    x = (x * np.uint64(0xC2B2AE35)) & np.uint64(MASK)
    x ^= x >> np.uint64(16)
    return x.astype(np.float64) / 2.0**32


def formula(name: str, shape) -> np.ndarray:
    count = math.prod(shape)
    u = uniform(name, count)
    if name.endswith("running_var"):
        v = 0.5 + u
    elif name.endswith("running_mean") or name.endswith("bias"):
        v = 0.2 * (u - 0.5)
    elif len(shape) == 4:
        v = (u - 0.5) * math.sqrt(24.0 / (shape[1] * shape[2] * shape[3]))
    elif len(shape) == 2:
        v = (u - 0.5) * math.sqrt(12.0 / shape[1])
    else:  # batch-norm weight
        v = 0.1 + 0.3 * u
    return v.astype(np.float32).reshape(shape)


def fill(model: nn.Module) -> list:
    manifest = []
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                t.zero_()
            else:
                t.copy_(torch.from_numpy(formula(name, tuple(t.shape))))
            manifest.append([name, list(t.shape)])
    return manifest


# ---- what torchvision lacks, built from the papers' descriptions ----


class CifarBlock(nn.Module):
    """The paper's CIFAR-10 basic block with option A (zero-padded) shortcuts."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.stride, self.pad = stride, cout - cin

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        shortcut = x[:, :, :: self.stride, :: self.stride]
        shortcut = F.pad(shortcut, (0, 0, 0, 0, 0, self.pad))
        return F.relu(y + shortcut)


class CifarResNet(nn.Module):
    def __init__(self, n, widths=(16, 32, 64), classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        cin = widths[0]
        for i, w in enumerate(widths):
            blocks = [CifarBlock(cin if j == 0 else w, w, 2 if (i > 0 and j == 0) else 1) for j in range(n)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            cin = w
        self.fc = nn.Linear(widths[-1], classes)

    def features(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        return self.layer3(self.layer2(self.layer1(x)))

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


class PreActBlock(nn.Module):
    """ResNet v2's basic block: BN-ReLU-conv twice, projection from the pre-activation."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.downsample = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False)) if stride != 1 or cin != cout else None
        )

    def forward(self, x):
        pre = F.relu(self.bn1(x))
        shortcut = self.downsample(pre) if self.downsample is not None else x
        y = self.conv1(pre)
        y = self.conv2(F.relu(self.bn2(y)))
        return y + shortcut


class PreActResNet18(nn.Module):
    def __init__(self, classes=1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = 64
        for i, w in enumerate((64, 128, 256, 512)):
            stride = 1 if i == 0 else 2
            setattr(self, f"layer{i + 1}", nn.Sequential(PreActBlock(cin, w, stride), PreActBlock(w, w, 1)))
            cin = w
        self.post_bn = nn.BatchNorm2d(512)
        self.fc = nn.Linear(512, classes)

    def features(self, x):
        x = self.maxpool(self.conv1(x))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return F.relu(self.post_bn(x))

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


def resnet50_v1():
    """torchvision's resnet50 with the stride on each stage's first 1x1 (the paper's v1)."""
    model = torchvision.models.resnet50()
    for layer in (model.layer2, model.layer3, model.layer4):
        layer[0].conv1.stride, layer[0].conv2.stride = (2, 2), (1, 1)
    return model


def torchvision_features(model, x):
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    return model.layer4(model.layer3(model.layer2(model.layer1(x))))


MODELS = {
    "resnet18": (torchvision.models.resnet18, 224),
    "resnet34": (torchvision.models.resnet34, 224),
    "resnet50": (torchvision.models.resnet50, 224),
    "resnet101": (torchvision.models.resnet101, 224),
    "resnet152": (torchvision.models.resnet152, 224),
    "resnext50_32x4d": (torchvision.models.resnext50_32x4d, 224),
    "wide_resnet50_2": (torchvision.models.wide_resnet50_2, 224),
    "resnet50_v1": (resnet50_v1, 224),
    "cifar_resnet20": (lambda: CifarResNet(3), 32),
    "preact_resnet18": (PreActResNet18, 224),
}


def main():
    torch.manual_seed(0)
    out = {}
    for key, (build, side) in MODELS.items():
        model = build().eval()
        manifest = fill(model)
        x = torch.from_numpy(2.0 * uniform("input", 2 * 3 * side * side).astype(np.float32) - 1.0).reshape(2, 3, side, side)
        with torch.no_grad():
            logits = model(x).double()
            feats = (model.features(x) if hasattr(model, "features") else torchvision_features(model, x)).double()
        out[key] = {
            "input": [2, 3, side, side],
            "tensors": manifest,
            "logits": [[float(f"{v:.9g}") for v in row] for row in logits.tolist()],
            "feature_sums": [float(f"{v:.12g}") for v in feats.sum((1, 2, 3)).tolist()],
            "feature_abs_sums": [float(f"{v:.12g}") for v in feats.abs().sum((1, 2, 3)).tolist()],
        }
        print(f"{key}: {len(manifest)} tensors, max |logit| {logits.abs().max().item():.4g}")
    path = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "parity.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, separators=(",", ":")) + "\n")
    print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
