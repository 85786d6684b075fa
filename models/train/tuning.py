"""A backbone tuned to the catalog (`partsight train --tune`): the network's last blocks fine-tuned on its photos.

The blocks from `first_block` on and the head convolution are trained with a linear classifier on their pooled,
L2-normalised output (started from a linear probe on the frozen features), on each photo and its synthetic copies,
at a low learning rate with a cosine schedule. A quarter of each product's photos are held out: half of them stop
it early (the best epoch by top-1 on them), the other half judge it: the result is kept only when a linear probe on
the tuned features beats one on the frozen features on the judging photos by `margin`; otherwise the version is
trained on the frozen backbone, as without `--tune`. Where no product holds out two photos (five or fewer each),
nothing stops it: every epoch runs and the held-out photos only judge. Without two products, or two photos of one,
it does not tune at all. (Judged on the photos that chose the epoch, a first trial
promised 94% where 2,000 test photos gave 81%.)

The blocks before `first_block` stay frozen, so their output is computed once per photo and copy (float16, in host
memory) and an epoch runs only the tuned blocks, on the CPU or on a GPU (`device`). Batch norm keeps its ImageNet
statistics: a few hundred photos cannot estimate new ones. `budget_s` bounds the tuning's time, the frozen blocks'
pass included; it is looked at after each epoch (one always runs), and the best epoch so far is what it keeps.

What it cannot see: a few judging photos per product make a noisy verdict; and the leave-products-out folds that
calibrate the novelty score afterwards run on features the tuned blocks learned with every product, the hidden
ones included.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from models.answer.classifiers import logistic_tolerance
from models.errors import TrainingError

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class TuneOptions:
    first_block: int = 11  # EfficientNet-Lite0 has 16 blocks: 11-15 (14x14 and 7x7) and the head convolution tuned
    epochs: int = 10
    copies: int = 4  # synthetic copies of each photo it trains on (training's transforms, models.train.augment)
    learning_rate: float = 3e-4  # the tuned blocks'; the linear classifier's is ten times this
    batch_size: int = 32
    held_share: float = 0.25  # of each product's photos (products with one photo are all fitted on)
    patience: int = 3  # epochs without a better held-out figure before it stops
    budget_s: float | None = None  # stop after this many seconds of tuning (the best epoch so far is kept)
    margin: float = 0.01  # the tuned probe must beat the frozen one by this (held-out top-1) to be kept
    seed: int = 0
    device: str = "cpu"  # or "cuda": where the network runs (the activations wait in memory, float16)

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 2 or self.patience < 1 or self.copies < 0:
            raise TrainingError("tuning needs at least one epoch, a batch of two photos and a patience of one epoch")
        if not 0 < self.held_share < 1 or self.learning_rate <= 0:
            raise TrainingError("tuning's held-out share must be in (0, 1) and its learning rate above 0")
        if self.budget_s is not None and self.budget_s <= 0:
            raise TrainingError(f"tuning's budget must be above 0 seconds, got {self.budget_s}")


@dataclass(frozen=True)
class TuneResult:
    kept: bool  # it beat the frozen backbone by the margin: train on `state`
    state: dict[str, torch.Tensor]  # the whole tuned network's weights (its best epoch), kept or not; {} untuned
    record: dict[str, Any] = field(default_factory=dict)  # what the report says about it


def held_out(labels: np.ndarray, share: float, seed: int) -> np.ndarray:
    """(N,) bool: about `share` of each product's photos (at least one where it has two or more)."""
    rng = np.random.default_rng(seed)
    held = np.zeros(len(labels), dtype=bool)
    for product in np.unique(labels):
        rows = np.flatnonzero(labels == product)
        if len(rows) < 2:
            continue
        count = max(1, round(share * len(rows)))
        held[rng.choice(rows, size=min(count, len(rows) - 1), replace=False)] = True
    return held


def judging_half(products: np.ndarray) -> np.ndarray:
    """(N,) bool over held-out photos: every second one of each product judges (the first, third, ... stop)."""
    judging = np.zeros(len(products), dtype=bool)
    for product in np.unique(products):
        judging[np.flatnonzero(products == product)[1::2]] = True
    return judging


def _normalised(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(images)).float()
    x = (x - torch.tensor(mean)) / torch.tensor(std)
    return x.permute(0, 3, 1, 2).contiguous()


class _Split:
    """The network cut at `first_block`: a frozen trunk run once, and the tail that is tuned."""

    def __init__(self, network: Any, first_block: int, device: str) -> None:
        blocks = len(network._blocks)
        if not 0 < first_block < blocks:
            raise TrainingError(f"first_block must be within 1..{blocks - 1}, got {first_block}")
        self.network = network.to(device)
        self.first_block = first_block
        self.device = device

    def trunk(self, batch: torch.Tensor) -> torch.Tensor:
        net = self.network
        with torch.no_grad():
            x: torch.Tensor = net._swish(net._bn0(net._conv_stem(batch.to(self.device))))
            for block in net._blocks[: self.first_block]:
                x = block(x)
        return x.half().cpu()

    def tail(self, x: torch.Tensor) -> torch.Tensor:
        net = self.network
        x = x.to(self.device).float()
        for block in net._blocks[self.first_block :]:
            x = block(x)
        pooled: torch.Tensor = net._swish(net._bn1(net._conv_head(x))).mean(dim=(2, 3))
        return torch.nn.functional.normalize(pooled, dim=1)

    def tuned_parameters(self) -> list[torch.nn.Parameter]:
        net = self.network
        modules = [*net._blocks[self.first_block :], net._conv_head, net._bn1]
        return [parameter for module in modules for parameter in module.parameters()]

    def features(self, activations: torch.Tensor, batch: int = 64) -> np.ndarray:
        with torch.no_grad():
            parts = [self.tail(activations[i : i + batch]).cpu() for i in range(0, len(activations), batch)]
        return torch.cat(parts).numpy()

    def state(self) -> dict[str, torch.Tensor]:
        """The whole network's weights, copied to the CPU."""
        return {name: value.detach().cpu().clone() for name, value in self.network.state_dict().items()}


def _activations(
    split: _Split,
    inputs: Callable[[int], Sequence[np.ndarray]],
    fit_rows: np.ndarray,
    held_rows: np.ndarray,
    *,
    views: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The trunk's output (float16) for every view of the fitted photos (view 0: the photo itself), and for the
    held-out photos themselves; photos are made 32 at a time, so only their activations stay in memory."""
    fit: list[list[torch.Tensor]] = [[] for _ in range(views)]
    held: list[torch.Tensor] = []
    rows = [(int(row), True) for row in fit_rows] + [(int(row), False) for row in held_rows]
    for start in range(0, len(rows), 32):
        chunk = rows[start : start + 32]
        made = [(inputs(row), fitted) for row, fitted in chunk]
        for view in range(views):
            chosen = [item[min(view, len(item) - 1)] for item, fitted in made if fitted]
            if chosen:
                fit[view].append(split.trunk(_normalised(np.stack(chosen), mean, std)))
        originals = [item[0] for item, fitted in made if not fitted]
        if originals:
            held.append(split.trunk(_normalised(np.stack(originals), mean, std)))
    return [torch.cat(parts) for parts in fit], torch.cat(held)


def _probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> tuple[float, Any]:
    from sklearn.linear_model import LogisticRegression  # noqa: PLC0415

    probe = LogisticRegression(C=1.0, max_iter=2000, tol=logistic_tolerance(len(set(train_y)))).fit(train_x, train_y)
    return float((probe.predict(test_x) == test_y).mean()), probe


def _top1(split: _Split, classifier: torch.nn.Linear, activations: torch.Tensor, truth: np.ndarray) -> float:
    with torch.no_grad():
        x = torch.from_numpy(split.features(activations)).to(split.device)
        predicted = classifier(x).argmax(dim=1).cpu().numpy()
    return float((predicted == truth).mean())


def _classifier_from(probe: Any, products: int) -> torch.nn.Linear:
    """A linear classifier over every product, started from the probe's weights (a product the probe never saw
    starts at zero)."""
    classifier = torch.nn.Linear(int(probe.coef_.shape[1]), products)
    coef = np.zeros((products, probe.coef_.shape[1]), np.float32)
    bias = np.zeros(products, np.float32)
    present = probe.classes_
    if len(present) > 2:
        coef[present], bias[present] = probe.coef_, probe.intercept_
    else:  # a binary probe has one row: the second class against the first
        coef[present[1]], bias[present[1]] = probe.coef_[0], probe.intercept_[0]
    with torch.no_grad():
        classifier.weight.copy_(torch.from_numpy(coef))
        classifier.bias.copy_(torch.from_numpy(bias))
    return classifier


def _epochs(  # long: one loop, its batches, its held-out figure and its three ways to stop
    split: _Split,
    classifier: torch.nn.Linear,
    fitted: tuple[list[torch.Tensor], torch.Tensor],
    held: tuple[torch.Tensor, np.ndarray],
    options: TuneOptions,
    *,
    clock: Callable[[], float],
    started: float,
) -> tuple[dict[str, torch.Tensor], int, list[dict[str, Any]], str]:
    """Train the tail and the classifier; the best epoch's weights (by the classifier's held-out top-1), its
    number, every epoch's figures, and why it stopped (`epochs`, `patience` or `budget`)."""
    fit_views, y_fit = fitted
    held_acts, y_held = held
    views, count = len(fit_views), len(y_fit)
    optimizer = torch.optim.AdamW(
        [
            {"params": split.tuned_parameters(), "lr": options.learning_rate},
            {"params": classifier.parameters(), "lr": options.learning_rate * 10},
        ],
        weight_decay=1e-4,
    )
    steps = max(1, options.epochs * -(-count // options.batch_size))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    generator = torch.Generator().manual_seed(options.seed)
    best: tuple[float, int, dict[str, torch.Tensor] | None] = (-1.0, 0, None)
    curve: list[dict[str, Any]] = []
    for epoch in range(1, options.epochs + 1):
        epoch_started, total = clock(), 0.0
        order = torch.randperm(count, generator=generator)
        for start in range(0, count, options.batch_size):
            rows = order[start : start + options.batch_size]
            view = torch.randint(0, views, (len(rows),), generator=generator)
            x = torch.stack([fit_views[v][r] for v, r in zip(view.tolist(), rows.tolist(), strict=True)])
            target = y_fit[rows].to(split.device)
            loss = torch.nn.functional.cross_entropy(classifier(split.tail(x)), target, label_smoothing=0.1)
            optimizer.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            schedule.step()
            total += float(loss.detach()) * len(rows)
        score = _top1(split, classifier, held_acts, y_held) if len(y_held) else None
        curve.append(
            {
                "epoch": epoch,
                "loss": round(total / count, 4),
                "held_top1": None if score is None else round(score, 4),
                "seconds": round(clock() - epoch_started, 1),
            }
        )
        logger.info("tuning epoch %d: loss %.3f, stopping top-1 %s", epoch, total / count, score)
        if score is None or score > best[0]:  # without stopping photos, the last epoch
            best = (best[0] if score is None else score, epoch, split.state())
        if epoch - best[1] >= options.patience:
            return best[2] or {}, best[1], curve, "patience"
        if options.budget_s is not None and clock() - started >= options.budget_s and epoch < options.epochs:
            return best[2] or {}, best[1], curve, "budget"
    return best[2] or {}, best[1], curve, "epochs"


def tune(  # long: the trunk once, the probes, then the epochs with their early stop, each a few lines
    network: Any,
    inputs: Callable[[int], Sequence[np.ndarray]],
    labels: Sequence[str],
    *,
    views: int,
    mean: Sequence[float],
    std: Sequence[float],
    options: TuneOptions = TuneOptions(),
    clock: Callable[[], float] = time.monotonic,
) -> TuneResult:
    """Tune `network` (EfficientNet(-Lite), eval mode, on the CPU) to the photos: `inputs(i)` is photo i as a model
    input (S, S, 3) uint8, then up to `views - 1` synthetic copies (each photo is asked for once). The network itself
    is left as it was."""
    started = clock()
    names = np.asarray([str(label) for label in labels])
    products, y_all = np.unique(names, return_inverse=True)
    split = _Split(copy.deepcopy(network).eval(), options.first_block, options.device)
    held = held_out(names, options.held_share, options.seed)
    if len(products) < 2 or not held.any():
        why = "it needs two products, and two photos of one of them to hold one out"
        logger.warning("the backbone is not tuned: %s", why)
        return TuneResult(False, {}, {"kept": False, "why": why})
    torch.manual_seed(options.seed)
    fit_rows, held_rows = np.flatnonzero(~held), np.flatnonzero(held)
    fit_views, held_acts = _activations(split, inputs, fit_rows, held_rows, views=views, mean=mean, std=std)
    judging = judging_half(names[held_rows])
    if not judging.any():  # no product held out two photos: none stop it (every epoch runs), all judge
        judging = np.ones(len(held_rows), dtype=bool)
    stopping = ~judging
    y_fit, y_held = torch.from_numpy(y_all[fit_rows]).long(), y_all[held_rows]
    fit_x = split.features(fit_views[0])
    frozen, probe = _probe(fit_x, y_all[fit_rows], split.features(held_acts[judging]), y_held[judging])
    classifier = _classifier_from(probe, len(products)).to(options.device)
    best_state, best_epoch, curve, stopped = _epochs(
        split,
        classifier,
        (fit_views, y_fit),
        (held_acts[stopping], y_held[stopping]),
        options,
        clock=clock,
        started=started,
    )
    split.network.load_state_dict(best_state)
    fit_x = split.features(fit_views[0])
    tuned, _ = _probe(fit_x, y_all[fit_rows], split.features(held_acts[judging]), y_held[judging])
    kept = tuned >= frozen + options.margin
    record = {
        "kept": kept,
        "frozen_top1": round(frozen, 4),  # a linear probe's, on the judging photos
        "tuned_top1": round(tuned, 4),
        "margin": options.margin,
        "first_block": options.first_block,
        "best_epoch": best_epoch,
        "stopped": stopped,
        "photos": {
            "fit": len(fit_rows),
            "stopping": int(stopping.sum()),
            "judging": int(judging.sum()),
            "views": views,
        },
        "epochs": curve,
        "seconds": round(clock() - started, 1),
    }
    logger.info(
        "tuning: a linear probe's top-1 on the judging photos %.3f frozen, %.3f tuned (epoch %d): %s",
        frozen,
        tuned,
        best_epoch,
        "kept" if kept else "not kept, the frozen backbone is used",
    )
    return TuneResult(kept, best_state, record)
