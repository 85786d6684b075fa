"""Pickle-free classifiers: fitted scikit-learn pipelines turned into plain arrays, and the numpy that applies them.

A `Classifier` is an optional preprocessing chain (standardisation, PCA) and one estimator: logistic
regression, linear SVM, RBF SVM, k-nearest neighbours, an MLP, or prototypes (each product's mean enrolled
feature, or a few k-means centres of it, scored by cosine: the gallery's own scorer). It keeps only arrays
and a few scalars, so it is saved in an `.npz` read with `allow_pickle=False` and a JSON record, and
applied without scikit-learn (workers never import it). SVM and prototype decision values become
probabilities through a softmax whose temperature is fitted on out-of-fold decisions during training.

`Candidate` names one configuration the trainer may choose (kind, its parameter, preprocessing);
`fit_candidate` fits it with scikit-learn and returns the `Classifier`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.answer.dot import dot_rows
from models.errors import DatasetError, InvalidModel, TrainingError

KINDS = ("logistic", "linear_svm", "rbf_svm", "knn", "mlp", "prototype")
TEMPERED_KINDS = frozenset({"linear_svm", "rbf_svm", "prototype"})  # decision values -> softmax(t * decision)
PREPROCESSING = ("none", "standardize", "pca")
PCA_COMPONENTS = 128
# The parameter each kind is tuned over: C for the linear models and the RBF SVM, k for kNN, the L2 penalty
# alpha for the MLP. Features are L2-normalised, so useful C values are large.
PARAMETERS: Mapping[str, tuple[float, ...]] = {
    "logistic": (3.0, 10.0, 30.0, 100.0),
    "linear_svm": (0.3, 1.0, 3.0),
    "rbf_svm": (3.0, 10.0, 30.0),
    "knn": (3.0, 7.0, 15.0),  # not 1: a single neighbour's answer has no confidence to calibrate "unknown" on
    "mlp": (1e-4, 1e-2),
    "prototype": (1.0, 4.0),  # centres per product: its mean, or k-means
}
MLP_HIDDEN = 256
LOGISTIC_TOLERANCE = 1e-4  # scikit-learn's default, for two classes (see _fit_logistic)
TEMPERATURES = np.geomspace(0.1, 100.0, 61)


@dataclass(frozen=True, slots=True)
class Candidate:
    kind: str
    parameter: float
    preprocessing: str = "none"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InvalidModel(f"unknown classifier {self.kind!r}; choose from {', '.join(KINDS)}")
        if self.preprocessing not in PREPROCESSING:
            raise InvalidModel(f"unknown preprocessing {self.preprocessing!r}; choose from {', '.join(PREPROCESSING)}")

    @property
    def label(self) -> str:
        name = {"knn": "k", "mlp": "alpha", "prototype": "centres"}.get(self.kind, "C")
        value = int(self.parameter) if self.kind in ("knn", "prototype") else self.parameter
        suffix = "" if self.preprocessing == "none" else f" + {self.preprocessing}"
        return f"{self.kind}({name}={value:g}){suffix}"


def parse_names(text: str, known: Sequence[str], what: str) -> tuple[str, ...]:
    """'all' or comma-separated names from `known`; DatasetError names an unknown one."""
    text = text.strip().lower()
    if text == "all":
        return tuple(known)
    names = tuple(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise DatasetError(f"unknown {what} {', '.join(unknown) or repr(text)}; known: {', '.join(known)}")
    return names


def candidates(kinds: Sequence[str] = KINDS, preprocessing: Sequence[str] = PREPROCESSING) -> list[Candidate]:
    """Every configuration of the given kinds and preprocessing choices (an MLP only on standardised inputs:
    on raw features it trains five times slower to the same answers)."""
    return [
        Candidate(kind, value, pre)
        for kind in kinds
        for value in PARAMETERS[kind]
        for pre in preprocessing
        if not (kind == "mlp" and pre == "none" and len(preprocessing) > 1)
    ]


@dataclass(frozen=True)
class Classifier:
    kind: str
    classes: tuple[str, ...]
    arrays: dict[str, np.ndarray]
    params: dict[str, Any] = field(default_factory=dict)  # JSON scalars: gamma, k, temperature, steps...

    @property
    def input_dim(self) -> int:
        return int(self.params["input_dim"])

    def transform(self, features: np.ndarray) -> np.ndarray:
        x = np.asarray(features, dtype=np.float32)
        for index, step in enumerate(self.params.get("steps", [])):
            mean = self.arrays[f"pre{index}_mean"]
            if step == "standardize":
                x = (x - mean) / self.arrays[f"pre{index}_scale"]
            elif step == "pca":
                x = dot_rows(x - mean, self.arrays[f"pre{index}_components"])
            else:  # a stored record's steps
                raise InvalidModel(f"unknown preprocessing step {step!r}")
        return x

    def decision(self, features: np.ndarray) -> np.ndarray:
        """(N, classes) scores, larger for likelier classes (probabilities for logistic, kNN and MLP)."""
        x = self.transform(features)
        a = self.arrays
        if self.kind in ("logistic", "linear_svm"):
            scores = dot_rows(x, a["coef"]) + a["intercept"]
            return np.hstack([-scores, scores]) if scores.shape[1] == 1 else scores
        if self.kind == "rbf_svm":
            return _rbf_ovr_decision(x, a, float(self.params["gamma"]), len(self.classes))
        if self.kind == "knn":
            return _knn_votes(x, a["train"], a["labels"], int(self.params["k"]), len(self.classes))
        if self.kind == "mlp":
            return _mlp_forward(x, a, int(self.params["layers"]))
        if self.kind == "prototype":
            return _prototype_scores(x, a["centres"], a["labels"], len(self.classes))
        raise ValueError(f"unknown classifier kind {self.kind!r}")  # a bug: from_record checks stored kinds

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        scores = self.decision(features)
        if self.kind in ("knn", "mlp"):
            return scores
        return softmax(scores * float(self.params.get("temperature", 1.0)))

    def with_temperature(self, temperature: float) -> Classifier:
        return Classifier(self.kind, self.classes, self.arrays, {**self.params, "temperature": float(temperature)})

    def record(self) -> dict[str, Any]:
        """The JSON half of a saved classifier; `arrays` is the other half."""
        return {"kind": self.kind, "classes": list(self.classes), "params": dict(self.params)}

    @classmethod
    def from_record(cls, record: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> Classifier:
        """A classifier from its stored record and arrays; InvalidModel when the record is not one."""
        try:
            kind = str(record["kind"])
            classes = tuple(str(c) for c in record["classes"])
            params = dict(record.get("params", {}))
            int(params["input_dim"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InvalidModel(f"a classifier record without its kind, classes or input size: {exc!r}") from exc
        if kind not in KINDS:
            raise InvalidModel(f"unknown classifier kind {kind!r}")
        return cls(kind, classes, dict(arrays), params)


def softmax(scores: np.ndarray) -> np.ndarray:
    shifted = scores - scores.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    result: np.ndarray = exp / exp.sum(axis=1, keepdims=True)
    return result


def sigmoid(z: np.ndarray) -> np.ndarray:
    """The logistic function 1 / (1 + exp(-z)), without overflow: it takes exp only of -|z|."""
    small = np.exp(-np.abs(z))
    result: np.ndarray = np.where(z >= 0, 1.0 / (1.0 + small), small / (1.0 + small))
    return result


def fit_temperature(scores: np.ndarray, truth: np.ndarray) -> float:
    """The softmax temperature that minimises the log loss of out-of-fold decision scores."""
    rows = np.arange(len(truth))
    losses = [-np.log(softmax(scores * t)[rows, truth] + 1e-12).mean() for t in TEMPERATURES]
    return float(TEMPERATURES[int(np.argmin(losses))])


def _rbf_ovr_decision(x: np.ndarray, a: Mapping[str, np.ndarray], gamma: float, n_classes: int) -> np.ndarray:
    """libsvm's one-vs-one decisions, folded into one score per class the way scikit-learn's SVC does."""
    support = a["support"]
    squared = (x * x).sum(1)[:, None] + (support * support).sum(1)[None, :] - 2.0 * dot_rows(x, support)
    kernel = np.exp(-gamma * np.maximum(squared, 0.0))
    dual, intercept, counts = a["dual_coef"], a["intercept"], a["n_support"]
    if n_classes == 2:
        decision = kernel @ dual[0] + intercept[0]
        return np.stack([-decision, decision], axis=1)
    starts = np.concatenate([[0], np.cumsum(counts)])
    votes = np.zeros((len(x), n_classes))
    confidence = np.zeros((len(x), n_classes))
    pair = 0
    for i in range(n_classes):
        for j in range(i + 1, n_classes):
            si, sj = slice(starts[i], starts[i + 1]), slice(starts[j], starts[j + 1])
            value = kernel[:, si] @ dual[j - 1, si] + kernel[:, sj] @ dual[i, sj] + intercept[pair]
            votes[:, i] += value > 0
            votes[:, j] += value <= 0
            confidence[:, i] += value
            confidence[:, j] -= value
            pair += 1
    result: np.ndarray = votes + confidence / (3 * (np.abs(confidence) + 1))
    return result


def _knn_votes(x: np.ndarray, train: np.ndarray, labels: np.ndarray, k: int, n_classes: int) -> np.ndarray:
    """Distance-weighted votes of the k nearest training rows (an exact match takes the whole vote)."""
    squared = (x * x).sum(1)[:, None] + (train * train).sum(1)[None, :] - 2.0 * dot_rows(x, train)
    k = min(k, len(train))
    nearest = np.argpartition(squared, k - 1, axis=1)[:, :k]
    distance = np.sqrt(np.maximum(np.take_along_axis(squared, nearest, axis=1), 0.0))
    exact = distance < 1e-6
    weights = np.where(exact.any(axis=1, keepdims=True), exact.astype(np.float64), 1.0 / np.maximum(distance, 1e-6))
    votes = np.zeros((len(x), n_classes))
    np.add.at(votes, (np.repeat(np.arange(len(x)), k), labels[nearest].reshape(-1)), weights.reshape(-1))
    result: np.ndarray = votes / votes.sum(axis=1, keepdims=True)
    return result


def _prototype_scores(x: np.ndarray, centres: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """(N, classes): the cosine of each row to its class's nearest centre (centres are L2-normalised)."""
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    similar = dot_rows(x / np.maximum(norm, 1e-12), centres)
    scores = np.full((len(x), n_classes), -1.0, dtype=np.float32)
    for label in range(n_classes):
        mine = labels == label
        if mine.any():
            scores[:, label] = similar[:, mine].max(axis=1)
    return scores


def _fit_prototypes(x: np.ndarray, y: np.ndarray, classes: Sequence[str], per_class: int, seed: int) -> dict[str, Any]:
    from sklearn.cluster import KMeans  # noqa: PLC0415  # training only: a worker never imports scikit-learn

    rows = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    centres, labels = [], []
    for index, name in enumerate(classes):
        mine = rows[y == name]
        count = min(per_class, len(mine))
        found = (
            mine.mean(axis=0, keepdims=True)
            if count <= 1
            else (KMeans(n_clusters=count, n_init=3, random_state=seed).fit(mine).cluster_centers_)
        )
        centres.append(found / np.maximum(np.linalg.norm(found, axis=1, keepdims=True), 1e-12))
        labels.extend([index] * len(found))
    return {"centres": np.concatenate(centres).astype(np.float32), "labels": np.asarray(labels, dtype=np.int64)}


def _mlp_forward(x: np.ndarray, a: Mapping[str, np.ndarray], layers: int) -> np.ndarray:
    for index in range(layers):
        x = x @ a[f"w{index}"] + a[f"b{index}"]
        if index < layers - 1:
            x = np.maximum(x, 0.0)
    if x.shape[1] == 1:  # binary: one logistic output for the second class
        positive = sigmoid(x[:, 0])
        return np.stack([1.0 - positive, positive], axis=1)
    return softmax(x)


def fit_candidate(
    candidate: Candidate,
    features: np.ndarray,
    labels: Sequence[str],
    *,
    seed: int = 0,
    start: Classifier | None = None,
) -> Classifier:
    """Fit `candidate` with scikit-learn on labelled features and keep only its arrays; TrainingError for rows
    of a single class. `start`: a logistic regression fitted before on rows like these, that lbfgs starts from
    instead of zeros (`starting_weights`) where its inputs are these (same_inputs; ignored otherwise): the same
    model to the solver's tolerance, in fewer iterations."""
    x = np.asarray(features, dtype=np.float64)  # fitted in float64 like a scikit-learn pipeline; kept as float32
    y = np.asarray(labels)
    classes = tuple(str(c) for c in np.unique(y))
    if len(classes) < 2:
        raise TrainingError("a classifier needs at least two classes")
    x, arrays, steps = _fit_preprocessing(candidate.preprocessing, x, seed)
    params: dict[str, Any] = {"steps": steps, "input_dim": int(features.shape[1])}
    if candidate.kind == "logistic" and start is not None and same_inputs(start, steps, arrays, x.shape[1]):
        fitted, extra = _fit_logistic(x, y, classes, candidate.parameter, seed, start=start)
    else:
        fitted, extra = _ESTIMATORS[candidate.kind](x, y, classes, candidate.parameter, seed)
    arrays.update(fitted)
    params.update(extra)
    return Classifier(candidate.kind, classes, arrays, params)


# scikit-learn is imported inside the fitting functions below: only training fits, and a worker applies the
# fitted arrays with numpy alone, never importing scikit-learn


def _fit_preprocessing(
    preprocessing: str, x: np.ndarray, seed: int
) -> tuple[np.ndarray, dict[str, np.ndarray], list[str]]:
    """The inputs after the preprocessing chain, its arrays (`pre<i>_*`) and its steps."""
    from sklearn.decomposition import PCA  # noqa: PLC0415  # training only (see above)
    from sklearn.preprocessing import StandardScaler  # noqa: PLC0415  # training only (see above)

    arrays: dict[str, np.ndarray] = {}
    steps: list[str] = []
    if preprocessing == "pca":
        components = min(PCA_COMPONENTS, x.shape[0] - 1, x.shape[1])
        pca = PCA(n_components=components, random_state=seed).fit(x)
        arrays["pre0_mean"] = pca.mean_.astype(np.float32)
        arrays["pre0_components"] = pca.components_.astype(np.float32)
        steps.append("pca")
        x = pca.transform(x)
    if preprocessing in ("standardize", "pca"):
        scaler = StandardScaler().fit(x)
        index = len(steps)
        arrays[f"pre{index}_mean"] = scaler.mean_.astype(np.float32)
        arrays[f"pre{index}_scale"] = scaler.scale_.astype(np.float32)
        steps.append("standardize")
        x = scaler.transform(x)
    return x, arrays, steps


Fitted = tuple[dict[str, np.ndarray], dict[str, Any]]  # an estimator's arrays and its JSON parameters


def logistic_tolerance(classes: int) -> float:
    """lbfgs's tolerance for a logistic regression over `classes` classes. The loss is a mean over rows, so at the
    start each class's gradient is about 1/classes of a feature's mean: scikit-learn's default (1e-4) stopped lbfgs
    before its first step at 1,000 products and kept all-zero weights (every product at 0.001). It shrinks with
    the classes, to stop where the default does at two."""
    return LOGISTIC_TOLERANCE * min(1.0, 2 / max(classes, 1))


def _fit_logistic(  # noqa: PLR0917
    x: np.ndarray, y: np.ndarray, classes: tuple[str, ...], value: float, seed: int, start: Classifier | None = None
) -> Fitted:
    from sklearn.linear_model import LogisticRegression  # noqa: PLC0415  # training only (see above)

    spanned = in_row_span(x)
    fitted_on = x if spanned is None else spanned.coordinates
    model = LogisticRegression(
        C=value, max_iter=3000, tol=logistic_tolerance(len(classes)), warm_start=start is not None
    )
    if start is not None:  # scikit-learn's warm start: lbfgs begins at the model's coef_ and intercept_
        coef, model.intercept_ = starting_weights(start, classes)
        model.coef_ = coef if spanned is None else spanned.onto(coef)
    model.fit(fitted_on, y)
    weights = model.coef_ if spanned is None else spanned.weights(model.coef_)
    coef, intercept = weights.astype(np.float32), np.atleast_1d(model.intercept_).astype(np.float32)
    if coef.shape[0] == 1:  # sigmoid(z) == softmax([-z/2, z/2])
        coef, intercept = (coef / 2).astype(np.float32), (intercept / 2).astype(np.float32)
    return {"coef": coef, "intercept": intercept}, {}


def same_inputs(start: Classifier, steps: Sequence[str], arrays: Mapping[str, np.ndarray], width: int) -> bool:
    """Whether `start` is a logistic regression whose weights apply to the inputs of this fit: the same
    preprocessing with the same arrays (none, or a fold's again as the next C refits it), `width` columns. A
    preprocessing fitted anew on other rows (a consolidation's standardisation or PCA) gives other inputs, and a PCA
    on fewer rows fewer of them: its weights would start lbfgs anywhere, or not fit at all."""
    if start.kind != "logistic" or list(start.params.get("steps", [])) != list(steps):
        return False
    names = {name for name in start.arrays if name.startswith("pre")}
    if names != set(arrays) or any(not np.array_equal(start.arrays[name], arrays[name]) for name in names):
        return False
    return int(start.arrays["coef"].shape[1]) == width


def starting_weights(start: Classifier, classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's (coef_, intercept_) for a logistic regression over `classes` that answers as `start` does
    among the classes they share: each class's row of `start`'s softmax (a binary one's stored halves: -w, +w),
    zeros for a class it does not have; for two classes, the second row less the first (a sigmoid's weights)."""
    coef, intercept = start.arrays["coef"].astype(np.float64), start.arrays["intercept"].astype(np.float64)
    if coef.shape[0] == 1:  # stored as softmax([-z/2, z/2]) (see _fit_logistic)
        coef, intercept = np.vstack([-coef, coef]), np.concatenate([-intercept, intercept])
    row_of = {name: index for index, name in enumerate(start.classes)}
    rows = np.zeros((len(classes), coef.shape[1]))
    biases = np.zeros(len(classes))
    for index, name in enumerate(classes):
        if name in row_of:
            rows[index], biases[index] = coef[row_of[name]], intercept[row_of[name]]
    if len(classes) == 2:
        return rows[1:] - rows[:1], biases[1:] - biases[:1]
    return rows, biases


@dataclass(frozen=True)
class RowSpan:
    """Rows' coordinates in the space they span (rows x rows, `coordinates`), and the way back: `weights(coef)` maps
    weights on the coordinates (k x rows) to weights on the features (k x columns). Held as the rows and their
    Gram matrix's Cholesky factor `lower` (coordinates = lower, the basis = rows.T @ inv(lower).T), or, where that
    factor is not well conditioned, as an orthonormal `basis` from a QR decomposition."""

    coordinates: np.ndarray
    rows: np.ndarray | None = None
    basis: np.ndarray | None = None

    def weights(self, coef: np.ndarray) -> np.ndarray:
        if self.basis is not None:
            result: np.ndarray = coef @ self.basis.T
            return result
        from scipy.linalg import solve_triangular  # noqa: PLC0415  # training only (see above)

        assert self.rows is not None  # one of the two, by construction
        on_rows = solve_triangular(self.coordinates, np.atleast_2d(coef).T, lower=True, trans="T").T
        result = on_rows @ self.rows
        return result

    def onto(self, weights: np.ndarray) -> np.ndarray:
        """Weights on the features (k x columns) as weights on the coordinates that score the rows the same (the
        part of them outside the rows' span scores nothing): the inverse of `weights` on that span."""
        if self.basis is not None:
            result: np.ndarray = weights @ self.basis
            return result
        from scipy.linalg import solve_triangular  # noqa: PLC0415  # training only (see above)

        assert self.rows is not None  # one of the two, by construction
        scores = self.rows @ np.atleast_2d(weights).T  # rows x k: coordinates @ onto.T, lower triangular
        result = solve_triangular(self.coordinates, scores, lower=True).T
        return result


CHOLESKY_CONDITION = 1e-5  # a Gram factor whose smallest diagonal is a smaller share of its largest: QR instead


def in_row_span(x: np.ndarray) -> RowSpan | None:
    """`x`'s rows in the space they span (RowSpan), when there are clearly fewer rows than columns; else None. An
    L2-penalised linear model's optimal weights lie in that span (a part of them outside it leaves every row's
    score as it is and only adds to the penalty), so fitting on the coordinates and mapping the weights back gives
    the same model, to the solver's tolerance, for a fraction of the arithmetic: liblinear's dual sees the rows only
    through their dot products (the same steps), lbfgs is rotation-invariant (the same steps; its stopping test, a
    largest gradient component, is not). A quick enrolment's refinement over 25 look-alikes (500 photos, 1,904
    features): 0.15 s instead of 0.40 s, the same probabilities to 1e-13. The coordinates come from the rows' Gram
    matrix (its Cholesky factor is the QR decomposition's triangle, up to signs): 9 ms instead of 56 ms there."""
    rows, columns = x.shape
    if rows * 4 > columns * 3:
        return None
    x = np.asarray(x, dtype=np.float64)
    try:
        lower = np.linalg.cholesky(x @ x.T)
    except np.linalg.LinAlgError:  # rows that repeat, or nearly: not positive definite
        lower = None
    if lower is not None and np.diagonal(lower).min() > CHOLESKY_CONDITION * np.diagonal(lower).max():
        return RowSpan(lower, rows=x)
    basis, triangle = np.linalg.qr(x.T)  # x.T = basis @ triangle, so x = triangle.T @ basis.T
    return RowSpan(triangle.T, basis=basis)


def _fit_linear_svm(x: np.ndarray, y: np.ndarray, classes: tuple[str, ...], value: float, seed: int) -> Fitted:
    from sklearn.svm import LinearSVC  # noqa: PLC0415  # training only (see above)

    spanned = in_row_span(x)
    # dual as scikit-learn picks it for fewer rows than columns: on the rows' square coordinates it would not
    model = LinearSVC(C=value, max_iter=20000, random_state=seed, dual=spanned is not None or "auto")
    model.fit(x if spanned is None else spanned.coordinates, y)
    weights = model.coef_ if spanned is None else spanned.weights(model.coef_)
    coef, intercept = weights.astype(np.float32), np.atleast_1d(model.intercept_).astype(np.float32)
    return {"coef": coef, "intercept": intercept}, {}


def _fit_rbf_svm(x: np.ndarray, y: np.ndarray, classes: tuple[str, ...], value: float, seed: int) -> Fitted:
    from sklearn.svm import SVC  # noqa: PLC0415  # training only (see above)

    model = SVC(C=value, kernel="rbf", gamma="scale", decision_function_shape="ovo").fit(x, y)
    arrays = {
        "support": model.support_vectors_.astype(np.float32),
        "dual_coef": model.dual_coef_.astype(np.float32),
        "intercept": model.intercept_.astype(np.float32),
        "n_support": model.n_support_.astype(np.int64),
    }
    return arrays, {"gamma": float(model._gamma)}


def _fit_knn(x: np.ndarray, y: np.ndarray, classes: tuple[str, ...], value: float, seed: int) -> Fitted:
    labels = np.searchsorted(np.asarray(classes), y).astype(np.int64)
    return {"train": x.astype(np.float32), "labels": labels}, {"k": int(value)}


def _fit_prototype(x: np.ndarray, y: np.ndarray, classes: tuple[str, ...], value: float, seed: int) -> Fitted:
    return _fit_prototypes(x, y, classes, int(value), seed), {}


def _fit_mlp(x: np.ndarray, y: np.ndarray, classes: tuple[str, ...], value: float, seed: int) -> Fitted:
    from sklearn.neural_network import MLPClassifier  # noqa: PLC0415  # training only (see above)

    model = MLPClassifier(hidden_layer_sizes=(MLP_HIDDEN,), alpha=value, max_iter=400, random_state=seed).fit(x, y)
    arrays: dict[str, np.ndarray] = {}
    for index, (w, b) in enumerate(zip(model.coefs_, model.intercepts_, strict=True)):
        arrays[f"w{index}"], arrays[f"b{index}"] = w.astype(np.float32), b.astype(np.float32)
    return arrays, {"layers": len(model.coefs_)}


_ESTIMATORS: Mapping[str, Callable[[np.ndarray, np.ndarray, tuple[str, ...], float, int], Fitted]] = {
    "logistic": _fit_logistic,
    "linear_svm": _fit_linear_svm,
    "rbf_svm": _fit_rbf_svm,
    "knn": _fit_knn,
    "mlp": _fit_mlp,
    "prototype": _fit_prototype,
}
