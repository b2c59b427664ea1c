"""PyTorch CPU reference for `just bench`: the same SmallCNN (TRADES'
definition), VGG, WRN-16-4, data, batch sizes and thread count as the Rust
side.

It serves the bench: one JSON object per line on stdin names a workload and
a run (`{"workload": "train", "run": 0}`), and it answers each with one JSON
line on stdout (`{"seconds": ...}`), so that the bench can alternate mat and
PyTorch run by run and machine drift hits both. The first line it writes
gives its versions."""

import argparse
import gzip
import json
import statistics
import sys
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        act = nn.ReLU(True)
        self.feature_extractor = nn.Sequential(OrderedDict([
            ("conv1", nn.Conv2d(1, 32, 3)), ("relu1", act),
            ("conv2", nn.Conv2d(32, 32, 3)), ("relu2", act),
            ("maxpool1", nn.MaxPool2d(2, 2)),
            ("conv3", nn.Conv2d(32, 64, 3)), ("relu3", act),
            ("conv4", nn.Conv2d(64, 64, 3)), ("relu4", act),
            ("maxpool2", nn.MaxPool2d(2, 2)),
        ]))
        self.classifier = nn.Sequential(OrderedDict([
            ("fc1", nn.Linear(1024, 200)), ("relu1", act), ("drop", nn.Dropout(0.5)),
            ("fc2", nn.Linear(200, 200)), ("relu2", act),
            ("fc3", nn.Linear(200, 10)),
        ]))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
                nn.init.constant_(m.bias, 0)
        nn.init.constant_(self.classifier.fc3.weight, 0)
        nn.init.constant_(self.classifier.fc3.bias, 0)

    def forward(self, x):
        return self.classifier(self.feature_extractor(x).view(-1, 1024))


class BasicBlock(nn.Module):
    """TRADES' pre-activation block (crates/mat-core/src/models/wide_resnet.rs)."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = None if cin == cout else nn.Conv2d(cin, cout, 1, stride, 0, bias=False)

    def forward(self, x):
        o = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(o))))
        return (x if self.shortcut is None else self.shortcut(o)) + out


class WideResNet(nn.Module):
    def __init__(self, depth=16, widen=4, num_classes=10):
        super().__init__()
        n = (depth - 4) // 6
        ch = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(3, ch[0], 3, 1, 1, bias=False)
        layers = []
        for g, stride in [(1, 1), (2, 2), (3, 2)]:
            for b in range(n):
                layers.append(BasicBlock(ch[g - 1] if b == 0 else ch[g], ch[g], stride if b == 0 else 1))
        self.blocks = nn.Sequential(*layers)
        self.bn1 = nn.BatchNorm2d(ch[3])
        self.fc = nn.Linear(ch[3], num_classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.blocks(self.conv1(x))))
        return self.fc(F.avg_pool2d(out, 8).flatten(1))


class VGG(nn.Module):
    """mat's `vgg-mnist` (crates/mat-core/src/models/vgg.rs): three blocks
    of two 3x3 convolutions (padding 1) with ReLU and a 2x2 max-pool, widths
    32, 64, 128, then fc 1152 -> 256, ReLU, dropout 0.5, fc 256 -> 10."""

    def __init__(self):
        super().__init__()
        layers, cin = [], 1
        for w in (32, 64, 128):
            layers += [nn.Conv2d(cin, w, 3, padding=1), nn.ReLU(True),
                       nn.Conv2d(w, w, 3, padding=1), nn.ReLU(True), nn.MaxPool2d(2, 2)]
            cin = w
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Linear(1152, 256), nn.ReLU(True), nn.Dropout(0.5),
                                        nn.Linear(256, 10))

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


def wrn_steps(steps, seed):
    torch.manual_seed(seed)
    model = WideResNet()
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=2e-4)
    x = torch.rand(128, 3, 32, 32)
    y = torch.randint(0, 10, (128,))

    def step():
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()

    step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return time.perf_counter() - t


def read_idx(path: Path) -> np.ndarray:
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def train_epoch(model, x, y, batch, seed, limit=None):
    """One epoch of SGD over `x` (the first `limit` shuffled images if given)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(x), generator=g)[:limit]
    for i in range(0, len(order), batch):
        idx = order[i:i + batch]
        opt.zero_grad()
        loss = F.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        opt.step()


def pgd(model, x, y, eps, step, steps):
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x_adv = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y)
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = x_adv.detach() + step * grad.sign()
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)
    for p in model.parameters():
        p.requires_grad_(True)
    return x_adv


def smallcnn_from(weights):
    """A SmallCNN with mat's weights, read from the safetensors file `weights`."""
    from safetensors.torch import load_file

    model = SmallCNN()
    model.load_state_dict(load_file(weights), strict=True)
    return model


def gemm_gflops():
    a = np.random.rand(1024, 1024).astype(np.float32)
    b = np.random.rand(1024, 1024).astype(np.float32)
    a @ b
    g = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(10):
            a @ b
        g.append(2 * 1024 ** 3 * 10 / (time.perf_counter() - t) / 1e9)
    return statistics.median(g)


class Reference:
    def __init__(self, data):
        d = Path(data)
        self.x = torch.from_numpy(read_idx(d / "train-images-idx3-ubyte").astype(np.float32) / 255.0).unsqueeze(1)
        self.y = torch.from_numpy(read_idx(d / "train-labels-idx1-ubyte").astype(np.int64))
        self.xt = torch.from_numpy(read_idx(d / "t10k-images-idx3-ubyte").astype(np.float32) / 255.0).unsqueeze(1)
        self.yt = torch.from_numpy(read_idx(d / "t10k-labels-idx1-ubyte").astype(np.int64))
        self.model = None

    def train(self, run, **_):
        """One epoch of natural SmallCNN training; `pgd` without weights attacks the result."""
        self.model = SmallCNN()
        t = time.perf_counter()
        train_epoch(self.model, self.x, self.y, 128, run)
        return {"seconds": time.perf_counter() - t}

    def vgg(self, run, images, **_):
        torch.manual_seed(run)
        model = VGG()
        t = time.perf_counter()
        train_epoch(model, self.x, self.y, 128, run, limit=images)
        return {"seconds": time.perf_counter() - t}

    def pgd(self, run, images, weights=None, **_):
        """PGD-40 on the first `images` test images: of mat's weights where
        `weights` names them (a fresh process has no trained model of its
        own), else of the last model trained here."""
        model = self.model if weights is None else smallcnn_from(weights)
        torch.manual_seed(run)
        xp, yp = self.xt[:images], self.yt[:images]
        t = time.perf_counter()
        for i in range(0, images, 256):
            pgd(model, xp[i:i + 256], yp[i:i + 256], 0.3, 0.01, 40)
        return {"seconds": time.perf_counter() - t}

    def wrn(self, run, steps, **_):
        return {"seconds": wrn_steps(steps, run)}

    def autoattack(self, run, images, weights, steps, queries, **_):
        """AutoAttack's standard version from torchattacks' members on mat's
        weights and the first `images` test images, as mat's side attacks
        them: APGD-CE, APGD-T and FAB-T with `steps` steps (AutoAttack's 100;
        torchattacks' own `AutoAttack(version="standard")` leaves its
        members at their default of 10, a tenth of the gradient work), then
        Square with `queries` queries, each on the points still robust."""
        import torchattacks

        net = smallcnn_from(weights)
        net.eval()
        xa, ya = self.xt[:images], self.yt[:images]
        common = dict(norm="Linf", eps=0.3, n_restarts=1)
        atk = torchattacks.MultiAttack([
            torchattacks.APGD(net, steps=steps, loss="ce", seed=run, **common),
            torchattacks.APGDT(net, steps=steps, n_classes=10, seed=run, **common),
            torchattacks.FAB(net, steps=steps, multi_targeted=True, n_classes=10, seed=run, **common),
            torchattacks.Square(net, n_queries=queries, seed=run, **common),
        ])
        t = time.perf_counter()
        adv = atk(xa, ya)
        seconds = time.perf_counter() - t
        with torch.no_grad():
            robust = (net(adv).argmax(1) == ya).float().mean().item()
        return {"seconds": seconds, "robust": robust}

    def gemm(self, **_):
        return {"gflops": gemm_gflops()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help="folder with the four MNIST IDX files")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ref = Reference(args.data)
    print(json.dumps({"torch": torch.__version__, "numpy": np.__version__,
                      "threads": torch.get_num_threads()}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        try:
            answer = getattr(ref, req.pop("workload"))(**req)
        except Exception as e:  # not installed, or an API change: say so
            answer = {"error": f"{type(e).__name__}: {e}"}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
