"""A backbone tuned to the catalog (`partsight train --tune`): the network's last blocks fine-tuned on its photos.

The blocks from `first_block` on and the head convolution are trained with a linear classifier on their pooled,
L2-normalised output (started from a linear probe on the frozen features), on each photo and its synthetic copies,
at a low learning rate with a cosine schedule.

Cross-validated: each of `folds` (2) folds holds out its own quarter of each product's photos and is tuned apart,
from the frozen network. Half of a fold's held-out photos stop it early (its best epoch by `stop_on` on them), the
other half judge it: a linear probe on its tuned features against one on the frozen features, both fitted on the
fold's other photos. The tuning is kept only when the tuned probes, over every fold's judging photos, beat the
frozen ones by `margin`; otherwise the version is trained on the frozen backbone, as without `--tune`. A kept
tuning is then run once more on every photo, for the folds' median best epoch (its cosine schedule annealing over
those epochs), and that network ships. Where no
product holds out two photos in a fold (five or fewer each), nothing stops it: every epoch runs and the held-out
photos only judge. Without two products, or two photos of one, it does not tune at all. (Judged on the photos that
chose the epoch, a first trial promised 94% where 2,000 test photos gave 81%.)

The blocks before `first_block` stay frozen, so their output is computed once per photo and copy (float16, in host
memory) and an epoch runs only the tuned blocks, on the CPU or on a GPU (`device`). Batch norm keeps its ImageNet
statistics: a few hundred photos cannot estimate new ones. `budget_s` bounds the tuning's time, the frozen blocks'
pass included; it is looked at after each epoch (one always runs) and after each fold. Once it is passed, the
tuning ends: the verdict is the folds done so far, and the network returned is the first fold's best epoch (the run
on every photo starts only within the budget, and one the budget cuts short was never judged, so it is not shipped).
Where the first fold hid products (five products or more), its network never learned them: then a tuning the budget
ends before the run on every photo is not kept, and the version is trained on the frozen backbone.

Each fold also never learns `hide_share` of the products (its own, disjoint from the other folds'): the training
calibrates the novelty score on each fold's network with those products hidden, so they are as new to it as a
never-seen product is to the shipped network (calibrated on the shipped network, whose blocks learned every
product, the novelty score promised refusals that never-seen products did not get).

What it cannot see: a few judging photos per product make a noisy verdict (two folds double them).
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from models.answer.classifiers import logistic_tolerance
from models.errors import TrainingError

logger = logging.getLogger(__name__)


STOP_ON = ("top1", "loss")


@dataclass(frozen=True, slots=True, kw_only=True)
class TuneOptions:
    first_block: int = 11  # EfficientNet-Lite0 has 16 blocks: 11-15 (14x14 and 7x7) and the head convolution tuned
    epochs: int = 10
    copies: int = 4  # synthetic copies of each photo it trains on (training's transforms, models.train.augment)
    learning_rate: float = 3e-4  # the tuned blocks'; the linear classifier's is ten times this
    batch_size: int = 32
    held_share: float = 0.25  # of each product's photos, in each fold (products with one photo are all fitted on)
    hide_share: float = 0.2  # of the products, each fold never learns (the novelty score is calibrated on them)
    folds: int = 2  # held-out folds, each tuned apart: the verdict is theirs together, then one run on every photo
    patience: int = 3  # epochs without a better held-out figure before it stops
    budget_s: float | None = None  # stop after this many seconds of tuning (the best epoch so far is kept)
    margin: float = 0.01  # the tuned probe must beat the frozen one by this (held-out top-1) to be kept
    stop_on: str = "loss"  # what picks the best epoch on the stopping photos: "loss" (lower) or "top1" (higher)
    seed: int = 0
    device: str = "cpu"  # or "cuda": where the network runs (the activations wait in memory, float16)

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 2 or self.patience < 1 or self.copies < 0 or self.folds < 1:
            raise TrainingError(
                "tuning needs at least one epoch, a batch of two photos, a patience of one epoch and one fold"
            )
        if not 0 < self.held_share * self.folds < 1 or self.held_share <= 0 or self.learning_rate <= 0:
            raise TrainingError(
                "tuning's held-out share times its folds must be in (0, 1), and its learning rate above 0"
            )
        if not 0 <= self.hide_share * self.folds < 1:
            raise TrainingError("tuning's hidden share of products times its folds must be in [0, 1)")
        if self.budget_s is not None and self.budget_s <= 0:
            raise TrainingError(f"tuning's budget must be above 0 seconds, got {self.budget_s}")
        if self.stop_on not in STOP_ON:
            raise TrainingError(f"tuning stops on one of {', '.join(STOP_ON)}, got {self.stop_on!r}")


@dataclass(frozen=True)
class FoldNetwork:
    """A fold's tuned network and the products it never learned: never-seen products for it, as they will be for
    the shipped network."""

    hidden: tuple[str, ...]
    state: dict[str, torch.Tensor]
    held: np.ndarray  # the photos (indices into the labels tuned on) it never trained on, of the products it learned


@dataclass(frozen=True)
class TuneResult:
    kept: bool  # it beat the frozen backbone by the margin: train on `state`
    state: dict[str, torch.Tensor]  # the whole tuned network's weights (its best epoch), kept or not; {} untuned
    record: dict[str, Any] = field(default_factory=dict)  # what the report says about it
    folds: tuple[FoldNetwork, ...] = ()  # the folds that hid products, each with its best state


def hidden_products(products: int, share: float, folds: int, seed: int) -> list[np.ndarray]:
    """The product indices each fold never learns: disjoint groups of `share` of the products (rounded down), none
    while that leaves no product to hide or fewer than two to learn."""
    count = int(share * products)
    if count < 1 or products - count < 2:
        return [np.zeros(0, dtype=int) for _ in range(folds)]
    order = np.random.default_rng(seed + 1).permutation(products)
    return [np.sort(order[index * count : (index + 1) * count]) for index in range(folds)]


def held_out_folds(labels: np.ndarray, share: float, folds: int, seed: int) -> np.ndarray:
    """(N,) int: the fold that holds each photo out, -1 for a photo every fold fits on. Each product with two or
    more photos gives each fold about `share` of them (at least one, the folds' sets disjoint, while one is left
    to fit on); a fold a product's few photos cannot reach fits on all of them."""
    rng = np.random.default_rng(seed)
    fold = np.full(len(labels), -1, dtype=int)
    for product in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == product))
        if len(rows) < 2:
            continue
        count = min(max(1, round(share * len(rows))), len(rows) - 1)
        for index in range(folds):
            fold[rows[index * count : (index + 1) * count]] = index
    return fold


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
    count: int,
    *,
    views: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> list[torch.Tensor]:
    """The trunk's output (float16) for every view of every photo, by view (view 0: the photo itself, the one a
    held-out photo is judged on); photos are made 32 at a time, so only their activations stay in memory."""
    parts: list[list[torch.Tensor]] = [[] for _ in range(views)]
    for start in range(0, count, 32):
        made = [inputs(row) for row in range(start, min(count, start + 32))]
        for view in range(views):
            chosen = [item[min(view, len(item) - 1)] for item in made]
            parts[view].append(split.trunk(_normalised(np.stack(chosen), mean, std)))
    return [torch.cat(chunks) for chunks in parts]


def _fit_probe(x: np.ndarray, y: np.ndarray) -> Any:
    from sklearn.linear_model import LogisticRegression  # noqa: PLC0415

    return LogisticRegression(C=1.0, max_iter=2000, tol=logistic_tolerance(len(set(y)))).fit(x, y)


def _probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> tuple[float, Any]:
    probe = _fit_probe(train_x, train_y)
    return float((probe.predict(test_x) == test_y).mean()), probe


def _refusal_auroc(probe: Any, known_x: np.ndarray, unseen_x: np.ndarray) -> float | None:
    """AUROC of 1 - the probe's top probability as a score that refuses `unseen_x` (products it never learned)
    before `known_x` (new photos of those it did); None without both."""
    if not len(known_x) or not len(unseen_x):
        return None
    from sklearn.metrics import roc_auc_score  # noqa: PLC0415

    confidence = np.concatenate([probe.predict_proba(known_x).max(axis=1), probe.predict_proba(unseen_x).max(axis=1)])
    unseen = np.r_[np.zeros(len(known_x)), np.ones(len(unseen_x))]
    return round(float(roc_auc_score(unseen, -confidence)), 4)


def _held_figures(
    split: _Split, classifier: torch.nn.Linear, activations: torch.Tensor, truth: np.ndarray
) -> tuple[float, float]:
    """The classifier's top-1 and mean cross-entropy on held-out photos."""
    return _classifier_figures(classifier, split.features(activations), truth, split.device)


def _classifier_figures(
    classifier: torch.nn.Linear, features: np.ndarray, truth: np.ndarray, device: str
) -> tuple[float, float]:
    """The classifier's top-1 and mean cross-entropy on photos' tuned features."""
    with torch.no_grad():
        logits = classifier(torch.from_numpy(features).to(device)).cpu()
    target = torch.from_numpy(np.asarray(truth)).long()
    loss = float(torch.nn.functional.cross_entropy(logits, target))
    return float((logits.argmax(dim=1).numpy() == truth).mean()), loss


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


def _epochs(  # long: one loop, its batches, its held-out figures and its three ways to stop
    split: _Split,
    classifier: torch.nn.Linear,
    fitted: tuple[list[torch.Tensor], np.ndarray, torch.Tensor],
    held: tuple[torch.Tensor, np.ndarray],
    options: TuneOptions,
    *,
    clock: Callable[[], float],
    started: float,
    after_epoch: Callable[[], dict[str, Any]] | None = None,
) -> tuple[dict[str, torch.Tensor], int, list[dict[str, Any]], str]:
    """Train the tail and the classifier on the fitted rows of `fitted` (every photo's views, the rows, every
    photo's product); the best epoch's weights (by `options.stop_on` on the held-out photos; the last epoch
    without any), its number, every epoch's figures (with what `after_epoch` measures), and why it stopped
    (`epochs`, `patience` or `budget`)."""
    views_of, fit_rows, y_all = fitted
    held_acts, y_held = held
    views, count = len(views_of), len(fit_rows)
    rows_of = torch.from_numpy(fit_rows).long()
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
    best: tuple[float, int, dict[str, torch.Tensor] | None] = (-np.inf, 0, None)
    curve: list[dict[str, Any]] = []
    for epoch in range(1, options.epochs + 1):
        epoch_started, total = clock(), 0.0
        order = torch.randperm(count, generator=generator)
        for start in range(0, count, options.batch_size):
            rows = rows_of[order[start : start + options.batch_size]]
            view = torch.randint(0, views, (len(rows),), generator=generator)
            x = torch.stack([views_of[v][r] for v, r in zip(view.tolist(), rows.tolist(), strict=True)])
            target = y_all[rows].to(split.device)
            loss = torch.nn.functional.cross_entropy(classifier(split.tail(x)), target, label_smoothing=0.1)
            optimizer.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            schedule.step()
            total += float(loss.detach()) * len(rows)
        top1, held_loss = _held_figures(split, classifier, held_acts, y_held) if len(y_held) else (None, None)
        score = None if top1 is None or held_loss is None else (top1 if options.stop_on == "top1" else -held_loss)
        seconds = round(clock() - epoch_started, 1)  # the epoch's, not what after_epoch measures
        curve.append(
            {
                **(after_epoch() if after_epoch else {}),
                "epoch": epoch,
                "loss": round(total / count, 4),
                "held_top1": None if top1 is None else round(top1, 4),
                "held_loss": None if held_loss is None else round(held_loss, 4),
                "seconds": seconds,
            }
        )
        logger.info("tuning epoch %d: loss %.3f, stopping top-1 %s, loss %s", epoch, total / count, top1, held_loss)
        if score is None or score > best[0]:  # without stopping photos, the last epoch
            best = (best[0] if score is None else score, epoch, split.state())
        if epoch - best[1] >= options.patience:
            return best[2] or split.state(), best[1], curve, "patience"
        if options.budget_s is not None and clock() - started >= options.budget_s and epoch < options.epochs:
            return best[2] or split.state(), best[1], curve, "budget"
    return best[2] or split.state(), best[1], curve, "epochs"  # a loss that was never a number: the last epoch


def _on_every_photo(
    split: _Split,
    classifier: torch.nn.Linear,
    activations: list[torch.Tensor],
    y_all: np.ndarray,
    options: TuneOptions,
    *,
    clock: Callable[[], float],
    started: float,
    after_epoch: Callable[[], dict[str, Any]] | None = None,
) -> tuple[dict[str, torch.Tensor], int, list[dict[str, Any]], str]:
    """`_epochs` on every photo, with none held out: nothing stops it early (only the budget), and the state it
    returns is the last epoch's."""
    return _epochs(
        split,
        classifier,
        (activations, np.arange(len(y_all)), torch.from_numpy(y_all).long()),
        (activations[0][:0], y_all[:0]),
        options,
        clock=clock,
        started=started,
        after_epoch=after_epoch,
    )


@dataclass(frozen=True)
class _Photos:
    """What every fold tunes on: each photo's trunk output by view, its product, and its frozen features."""

    views: list[torch.Tensor]
    names: np.ndarray  # (N,) product names
    y: np.ndarray  # (N,) product indices
    frozen: np.ndarray  # (N, D) the frozen network's features of each photo itself
    products: int


def _fold(  # long: the frozen probe, the epochs, the tuned probe and the fold's record, in a row
    split: _Split,
    photos: _Photos,
    held_rows: np.ndarray,
    options: TuneOptions,
    *,
    hidden: np.ndarray,
    clock: Callable[[], float],
    started: float,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tune from the frozen network on every photo but `held_rows` and those of the `hidden` products (none of them
    held out: the fold neither learns nor judges them): half of the held-out photos stop it (two or more of a
    product's), the other half judge it against the frozen network, each by a linear probe fitted on the other
    photos. Its best state, and its record (`judged`: the judging photos, `frozen_right`, `tuned_right`)."""
    fit_rows = np.setdiff1d(np.flatnonzero(~np.isin(photos.y, hidden)), held_rows)
    judging = judging_half(photos.names[held_rows])
    if not judging.any():  # no product held out two photos: none stop it (every epoch runs), all judge
        judging = np.ones(len(held_rows), dtype=bool)
    stopping, y_held = ~judging, photos.y[held_rows]
    held_acts = photos.views[0][torch.from_numpy(held_rows)]
    frozen, probe = _probe(
        photos.frozen[fit_rows], photos.y[fit_rows], photos.frozen[held_rows][judging], y_held[judging]
    )
    classifier = _classifier_from(probe, photos.products).to(options.device)
    state, best_epoch, curve, stopped = _epochs(
        split,
        classifier,
        (photos.views, fit_rows, torch.from_numpy(photos.y).long()),
        (held_acts[torch.from_numpy(stopping)], y_held[stopping]),
        options,
        clock=clock,
        started=started,
    )
    split.network.load_state_dict(state)
    fit_x = split.features(photos.views[0][torch.from_numpy(fit_rows)])
    judged_x = split.features(held_acts[torch.from_numpy(judging)])
    tuned, tuned_probe = _probe(fit_x, photos.y[fit_rows], judged_x, y_held[judging])
    judged = int(judging.sum())
    hidden_rows = torch.from_numpy(np.flatnonzero(np.isin(photos.y, hidden)))
    open_set = None  # how well each probe's confidence tells the hidden products' photos from the held-out ones
    if len(hidden_rows):
        hidden_x = split.features(photos.views[0][hidden_rows])
        open_set = {
            "frozen": _refusal_auroc(probe, photos.frozen[held_rows], photos.frozen[hidden_rows.numpy()]),
            "tuned": _refusal_auroc(tuned_probe, split.features(held_acts), hidden_x),
        }
    record = {
        "frozen_top1": round(frozen, 4),
        "tuned_top1": round(tuned, 4),
        "judged": judged,
        "frozen_right": round(frozen * judged),
        "tuned_right": round(tuned * judged),
        "best_epoch": best_epoch,
        "stopped": stopped,
        "hidden_products": len(hidden),
        "open_set_auroc": open_set,
        "photos": {"fit": len(fit_rows), "stopping": int(stopping.sum()), "judging": judged},
        "epochs": curve,
    }
    return state, record


def _mean_auroc(folds: Sequence[dict[str, Any]]) -> dict[str, float] | None:
    """The folds' open-set AUROC (frozen and tuned probes), averaged over the folds that hid products; None
    without one. Recorded, not yet part of the verdict."""
    measured = [fold["open_set_auroc"] for fold in folds if fold.get("open_set_auroc")]
    if not measured or any(entry[kind] is None for entry in measured for kind in ("frozen", "tuned")):
        return None
    return {kind: round(float(np.mean([entry[kind] for entry in measured])), 4) for kind in ("frozen", "tuned")}


def tune(  # long: the trunk once, the folds, the verdict and the run on every photo, each a few lines
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
    fold_of = held_out_folds(names, options.held_share, options.folds, options.seed)
    if len(products) < 2 or (fold_of < 0).all():
        why = "it needs two products, and two photos of one of them to hold one out"
        logger.warning("the backbone is not tuned: %s", why)
        return TuneResult(False, {}, {"kept": False, "why": why})
    torch.manual_seed(options.seed)
    activations = _activations(split, inputs, len(names), views=views, mean=mean, std=std)
    photos = _Photos(activations, names, y_all, split.features(activations[0]), len(products))
    frozen_state = split.state()
    folds: list[dict[str, Any]] = []
    networks: list[FoldNetwork] = []
    first: dict[str, torch.Tensor] = {}  # the first fold's best state
    hidden = hidden_products(len(products), options.hide_share, options.folds, options.seed)

    def spent() -> bool:
        return options.budget_s is not None and clock() - started >= options.budget_s

    for fold in range(options.folds):
        held_rows = np.flatnonzero((fold_of == fold) & ~np.isin(y_all, hidden[fold]))
        if len(held_rows):  # a fold few photos could not reach holds none out
            split.network.load_state_dict(frozen_state)
            state, record = _fold(split, photos, held_rows, options, hidden=hidden[fold], clock=clock, started=started)
            first = first or state
            folds.append({"fold": fold, **record})
            if len(hidden[fold]):
                networks.append(FoldNetwork(tuple(str(p) for p in products[hidden[fold]]), state, held_rows))
            if spent():
                break
    judged = sum(fold["judged"] for fold in folds)
    frozen = sum(fold["frozen_right"] for fold in folds) / judged
    tuned = sum(fold["tuned_right"] for fold in folds) / judged
    kept = tuned >= frozen + options.margin
    # unless it is kept with time left, the first fold's tuning is returned (the bench shows what it gives)
    state, shipped, runs, cut, why = first, folds[0], list(folds), spent(), ""
    if kept and not cut:  # the tuning that ships: every photo, the folds' epochs (its schedule annealing over them)
        epochs = max(1, round(float(np.median([fold["best_epoch"] for fold in folds]))))
        split.network.load_state_dict(frozen_state)
        classifier = _classifier_from(_fit_probe(photos.frozen, y_all), len(products)).to(options.device)
        every, best, curve, stopped = _on_every_photo(
            split, classifier, activations, y_all, replace(options, epochs=epochs), clock=clock, started=started
        )
        runs.append({"fold": "all", "best_epoch": best, "stopped": stopped, "epochs": curve})
        cut = stopped == "budget"  # cut short, it was never judged: the first fold's tuning ships
        if not cut:
            state, shipped = every, runs[-1]
    if kept and cut and len(hidden[0]):  # the first fold's network never learned some products: it cannot ship
        kept = False
        why = (
            f"the budget ended it before the run on every photo; the first fold never learned {len(hidden[0])} products"
        )
        logger.warning("the backbone is not tuned: %s", why)
    record = {
        "kept": kept,
        **({"why": why} if why else {}),
        "frozen_top1": round(frozen, 4),  # a linear probe's, on every fold's judging photos
        "tuned_top1": round(tuned, 4),
        "margin": options.margin,
        "first_block": options.first_block,
        "stop_on": options.stop_on,
        "best_epoch": shipped["best_epoch"],  # of the state returned
        "stopped": "budget" if cut else shipped["stopped"],
        "tuned_on": "every photo" if shipped is not folds[0] else "the first fold",
        "photos": {
            "all": len(names),
            "stopping": sum(fold["photos"]["stopping"] for fold in folds),
            "judging": judged,
            "views": views,
        },
        "open_set_auroc": _mean_auroc(folds),
        "folds": [{key: value for key, value in fold.items() if key != "epochs"} for fold in folds],
        "epochs": [{"fold": run["fold"], **epoch} for run in runs for epoch in run["epochs"]],
        "seconds": round(clock() - started, 1),
    }
    logger.info(
        "tuning: a linear probe's top-1 on %d folds' judging photos %.3f frozen, %.3f tuned: %s",
        len(folds),
        frozen,
        tuned,
        "kept" if kept else "not kept, the frozen backbone is used",
    )
    return TuneResult(kept, state, record, tuple(networks))


def learning_curve(  # long: the trunk once, then the epochs, each scored on the test photos
    network: Any,
    inputs: Callable[[int], Sequence[np.ndarray]],
    labels: Sequence[str],
    test_inputs: Callable[[int], np.ndarray],
    test_labels: Sequence[str],
    *,
    views: int,
    mean: Sequence[float],
    std: Sequence[float],
    options: TuneOptions = TuneOptions(),
) -> tuple[list[dict[str, Any]], dict[str, torch.Tensor]]:
    """What tuning gives epoch by epoch (bench.tuning_curves): the tail tuned on every photo for `options.epochs`
    (its cosine schedule over them, no early stop, no budget), and before the first epoch (epoch 0: the frozen
    network) and after each, on test photos none of it trained on: the tuned classifier's top-1 and cross-entropy,
    and the top-1 of a linear probe (C=1) fitted on the tuned features of the photos tuned on. `test_inputs(i)` is
    test photo i as a model input. The curve, and the last epoch's weights (the whole network's); the network
    itself is left as it was."""
    names = np.asarray([str(label) for label in labels])
    products, y_all = np.unique(names, return_inverse=True)
    test_names = np.asarray([str(label) for label in test_labels])
    if len(products) < 2 or not len(test_names) or not np.isin(test_names, products).all():
        raise TrainingError("a learning curve needs two products, and test photos of those products only")
    test_y = np.searchsorted(products, test_names)
    split = _Split(copy.deepcopy(network).eval(), options.first_block, options.device)
    torch.manual_seed(options.seed)
    activations = _activations(split, inputs, len(names), views=views, mean=mean, std=std)
    test_acts = _activations(split, lambda row: [test_inputs(row)], len(test_y), views=1, mean=mean, std=std)[0]
    classifier = _classifier_from(_fit_probe(split.features(activations[0]), y_all), len(products)).to(options.device)

    def on_test() -> dict[str, Any]:
        test_x = split.features(test_acts)
        top1, loss = _classifier_figures(classifier, test_x, test_y, split.device)
        probe, _ = _probe(split.features(activations[0]), y_all, test_x, test_y)
        return {"test_top1": round(top1, 4), "test_loss": round(loss, 4), "probe_top1": round(probe, 4)}

    frozen = {"epoch": 0, **on_test()}
    last, _, curve, _ = _on_every_photo(
        split,
        classifier,
        activations,
        y_all,
        replace(options, budget_s=None),
        clock=time.monotonic,
        started=time.monotonic(),
        after_epoch=on_test,
    )
    return [frozen, *curve], last
