"""Loads a model saved by mat into the reference PyTorch module with
load_state_dict(strict=True) and compares its eval-mode logits with mat's.

usage: torch_check.py ARCH MODEL.safetensors IO.safetensors
ARCH: small-cnn (TRADES' SmallCNN) or wrn-DEPTH-WIDEN (TRADES' WideResNet).
"""

import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file

from pytorch_reference import SmallCNN


class TradesBasicBlock(nn.Module):
    """TRADES' wideresnet.py BasicBlock, parameter names included."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.equal = cin == cout
        self.convShortcut = None if self.equal else nn.Conv2d(cin, cout, 1, stride, 0, bias=False)

    def forward(self, x):
        o = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(o))))
        return (x if self.equal else self.convShortcut(o)) + out


class NetworkBlock(nn.Module):
    def __init__(self, n, cin, cout, stride):
        super().__init__()
        self.layer = nn.Sequential(
            *[TradesBasicBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1) for i in range(n)]
        )

    def forward(self, x):
        return self.layer(x)


class TradesWideResNet(nn.Module):
    def __init__(self, depth, widen, num_classes=10):
        super().__init__()
        n = (depth - 4) // 6
        ch = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(3, ch[0], 3, 1, 1, bias=False)
        self.block1 = NetworkBlock(n, ch[0], ch[1], 1)
        self.sub_block1 = NetworkBlock(n, ch[0], ch[1], 1)  # built, never called (as in TRADES)
        self.block2 = NetworkBlock(n, ch[1], ch[2], 2)
        self.block3 = NetworkBlock(n, ch[2], ch[3], 2)
        self.bn1 = nn.BatchNorm2d(ch[3])
        self.fc = nn.Linear(ch[3], num_classes)

    def forward(self, x):
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = F.relu(self.bn1(out))
        return self.fc(F.avg_pool2d(out, 8).flatten(1))


def build(arch: str) -> nn.Module:
    if arch == "small-cnn":
        return SmallCNN()
    if arch.startswith("wrn-"):
        depth, widen = (int(v) for v in arch[4:].split("-"))
        return TradesWideResNet(depth, widen)
    raise SystemExit(f"unknown arch {arch}")


def main(arch: str, model_path: str, io_path: str) -> None:
    model = build(arch)
    model.load_state_dict(load_file(model_path), strict=True)
    model.eval()
    io = load_file(io_path)
    with torch.no_grad():
        logits = model(io["x"])
    diff = (logits - io["logits"]).abs().max().item()
    scale = io["logits"].abs().max().item()
    print(f"{arch}: max |diff| {diff:.3g} (largest logit {scale:.3g})")
    assert diff <= 1e-4 * max(1.0, scale), "logits differ"
    print("logits match")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
