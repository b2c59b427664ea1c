"""PyTorch on the same GPU, for scripts/gpu-check: the WRN-34-10 TRADES
training step (TRADES' CIFAR-10 settings, as pipelines/train/cifar10/
trades.yaml: batch 128, eps 0.031 by 10 steps of 0.007 on the KL from
x + 0.001 N(0, 1), beta 6, SGD lr 0.1 momentum 0.9 weight decay 2e-4,
crop 4 and flip) and PGD-20 (eps 0.031, steps of 0.003) throughput at
batch 256, on CIFAR-sized random data. Medians of the timed steps after
one warm-up. Prints one JSON object."""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "crates/mat-core/benches"))
from pytorch_reference import WideResNet, pgd  # noqa: E402


def augment(x):
    """Random crop with 4 pixels of zero padding, and a horizontal flip."""
    n = x.shape[0]
    padded = F.pad(x, (4, 4, 4, 4))
    i = torch.randint(0, 9, (n,), device=x.device)
    j = torch.randint(0, 9, (n,), device=x.device)
    rows = (i[:, None] + torch.arange(32, device=x.device)[None, :])
    cols = (j[:, None] + torch.arange(32, device=x.device)[None, :])
    out = padded[torch.arange(n, device=x.device)[:, None, None, None],
                 torch.arange(3, device=x.device)[None, :, None, None],
                 rows[:, None, :, None], cols[:, None, None, :]]
    flip = torch.rand(n, device=x.device) < 0.5
    out[flip] = out[flip].flip(3)
    return out


def trades_step(model, opt, x, y, eps=0.031, step=0.007, steps=10, beta=6.0):
    x = augment(x)
    model.eval()
    with torch.no_grad():
        p_nat = F.softmax(model(x), dim=1)
    x_adv = x + 0.001 * torch.randn_like(x)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        kl = F.kl_div(F.log_softmax(model(x_adv), dim=1), p_nat, reduction="sum")
        (g,) = torch.autograd.grad(kl, x_adv)
        x_adv = x_adv.detach() + step * g.sign()
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)
    model.train()
    opt.zero_grad()
    logits = model(x)
    loss = F.cross_entropy(logits, y) + beta * F.kl_div(
        F.log_softmax(model(x_adv), dim=1), F.softmax(logits, dim=1), reduction="batchmean")
    loss.backward()
    opt.step()
    return loss.item()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--depth", type=int, default=34)
    ap.add_argument("--widen", type=int, default=10)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--device", default="cuda", help="cuda, or cpu to try the script without a GPU")
    a = ap.parse_args()
    dev = torch.device(a.device)
    cuda = dev.type == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize()
    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = True
    model = WideResNet(a.depth, a.widen).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=2e-4)
    x = torch.rand(a.batch, 3, 32, 32, device=dev)
    y = torch.randint(0, 10, (a.batch,), device=dev)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(a.steps + 1):
        sync()
        t = time.perf_counter()
        trades_step(model, opt, x, y)
        sync()
        if i > 0:
            times.append(time.perf_counter() - t)
    train_peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
    xb = torch.rand(2 * a.batch, 3, 32, 32, device=dev)
    yb = torch.randint(0, 10, (2 * a.batch,), device=dev)
    rates = []
    for i in range(min(a.steps, 5) + 1):
        sync()
        t = time.perf_counter()
        pgd(model, xb, yb, 0.031, 0.003, 20)
        sync()
        if i > 0:
            rates.append(2 * a.batch / (time.perf_counter() - t))
    print(json.dumps({
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name(0) if cuda else "cpu",
        "trades_step_s": statistics.median(times),
        "pgd20_images_per_s": statistics.median(rates),
        "train_peak_allocated_mb": train_peak,
    }))


if __name__ == "__main__":
    main()
