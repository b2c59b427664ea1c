"""Loads a SmallCNN saved by mat into TRADES' PyTorch SmallCNN with
load_state_dict(strict=True) and compares its eval-mode logits with mat's."""

import sys

import torch
from safetensors.torch import load_file

from pytorch_reference import SmallCNN


def main(model_path: str, io_path: str) -> None:
    model = SmallCNN()
    model.load_state_dict(load_file(model_path), strict=True)
    model.eval()
    io = load_file(io_path)
    with torch.no_grad():
        logits = model(io["x"])
    diff = (logits - io["logits"]).abs().max().item()
    scale = io["logits"].abs().max().item()
    print(f"max |diff| {diff:.3g} (largest logit {scale:.3g})")
    assert diff <= 1e-4 * max(1.0, scale), "logits differ"
    print("logits match")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
