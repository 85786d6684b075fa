"""The pickle-free classifiers against scikit-learn, and the category-first head they make up."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, LinearSVC

from models.answer.classifiers import (
    KINDS,
    PCA_COMPONENTS,
    Candidate,
    Classifier,
    candidates,
    fit_candidate,
    fit_temperature,
    in_row_span,
    logistic_tolerance,
    sigmoid,
    softmax,
    starting_weights,
)
from models.answer.head import CATEGORY_FIRST, UNKNOWN, ProductHead
from models.bundle import load_model, write_model
from models.errors import InvalidModel
from models.train.head_fitting import fit_model


def blobs(classes: int, rows: int = 90, dim: int = 24, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim))
    labels = np.arange(rows) % classes
    features = (centres[labels] * 0.6 + rng.normal(size=(rows, dim))).astype(np.float32)
    return features, np.array([f"c{i}" for i in labels])


def reference(candidate: Candidate, seed: int = 0, classes: int = 2):  # type: ignore[no-untyped-def]
    value = candidate.parameter
    estimator = {
        "logistic": lambda: LogisticRegression(C=value, max_iter=3000, tol=logistic_tolerance(classes)),
        "linear_svm": lambda: LinearSVC(C=value, max_iter=20000, random_state=seed),
        "rbf_svm": lambda: SVC(C=value, kernel="rbf", gamma="scale"),
        "knn": lambda: KNeighborsClassifier(n_neighbors=int(value), weights="distance"),
        "mlp": lambda: MLPClassifier(hidden_layer_sizes=(256,), alpha=value, max_iter=400, random_state=seed),
    }[candidate.kind]()
    steps = {
        "none": [],
        "standardize": [StandardScaler()],
        "pca": [PCA(n_components=PCA_COMPONENTS, random_state=seed), StandardScaler()],
    }[candidate.preprocessing]
    return make_pipeline(*steps, estimator)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("classes", [2, 4])
@pytest.mark.parametrize("kind", [kind for kind in KINDS if kind != "prototype"])  # no scikit-learn twin
def test_every_kind_answers_like_scikit_learn(kind: str, classes: int) -> None:
    features, labels = blobs(classes, rows=200, dim=160)
    train, test = slice(0, len(labels) - 30), slice(len(labels) - 30, None)
    for preprocessing in ("none", "standardize", "pca"):
        candidate = Candidate(kind, {"knn": 5.0, "mlp": 1e-3}.get(kind, 3.0), preprocessing)
        ours = fit_candidate(candidate, features[train], labels[train])
        theirs = reference(candidate, classes=classes).fit(features[train].astype(np.float64), labels[train])
        assert ours.classes == tuple(theirs.classes_)
        if kind in ("linear_svm", "rbf_svm"):
            expected = theirs.decision_function(features[test])
            if expected.ndim == 1:
                expected = np.stack([-expected, expected], axis=1)
            np.testing.assert_allclose(
                ours.decision(features[test]), expected, rtol=2e-3, atol=1e-3, err_msg=candidate.label
            )
            probabilities = ours.probabilities(features[test])
            np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)
        else:
            np.testing.assert_allclose(
                ours.probabilities(features[test]),
                theirs.predict_proba(features[test]),
                rtol=2e-3,
                atol=1e-3,
                err_msg=candidate.label,
            )


@pytest.mark.parametrize("kind", ["logistic", "linear_svm"])
@pytest.mark.parametrize("preprocessing", ["none", "standardize"])
def test_fewer_rows_than_features_are_fitted_in_their_span_to_the_same_model(kind: str, preprocessing: str) -> None:
    # 60 photos of 4 products in 400 dimensions: fitted on the rows' coordinates in the space they span, the model
    # answers as scikit-learn's fitted on the features themselves to its optimum
    features, labels = blobs(4, rows=90, dim=400, seed=5)
    train, test = slice(0, 60), slice(60, None)
    candidate = Candidate(kind, 3.0, preprocessing)
    assert in_row_span(features[train].astype(np.float64)) is not None  # the span is taken here
    ours = fit_candidate(candidate, features[train], labels[train])
    theirs = reference(candidate, classes=4)
    theirs.steps[-1][1].set_params(max_iter=200_000, tol=1e-10)  # scikit-learn's optimum, not a tolerance's stop
    theirs.fit(features[train].astype(np.float64), labels[train])
    if kind == "logistic":
        np.testing.assert_allclose(ours.probabilities(features[test]), theirs.predict_proba(features[test]), atol=2e-3)
    else:
        np.testing.assert_allclose(ours.decision(features[test]), theirs.decision_function(features[test]), atol=2e-3)
    weights = ours.arrays["coef"]
    assert weights.shape == (4, 400)


@pytest.mark.parametrize("repeated", [False, True])
def test_the_span_is_the_rows_own_and_left_alone_when_rows_are_many(repeated: bool) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 200))
    if repeated:  # the same photo twice: the Gram matrix is singular, and the QR decomposition takes over
        x[7] = x[3]
    span = in_row_span(x)
    assert span is not None and (span.basis is not None) == repeated
    basis = span.weights(np.eye(30)).T  # weights of one on each coordinate: the basis vectors
    np.testing.assert_allclose(basis.T @ basis, np.eye(30), atol=1e-10)  # orthonormal
    np.testing.assert_allclose(span.coordinates @ basis.T, x, atol=1e-10)  # the rows, exactly
    weights = rng.normal(size=(4, 30))
    np.testing.assert_allclose(x @ span.weights(weights).T, span.coordinates @ weights.T, atol=1e-9)  # same scores
    assert in_row_span(rng.normal(size=(160, 200))) is None  # 160 of 200: too few columns saved to pay
    on_features = rng.normal(size=(4, 200))  # and back: weights on the features as weights on the coordinates
    np.testing.assert_allclose(span.coordinates @ span.onto(on_features).T, x @ on_features.T, atol=1e-9)
    np.testing.assert_allclose(span.onto(span.weights(weights)), weights, atol=1e-9)


def test_starting_weights_answer_as_the_start_among_the_classes_they_share() -> None:
    features, labels = blobs(3, rows=120, dim=40, seed=2)
    start = fit_candidate(Candidate("logistic", 3.0), features, labels)
    coef, intercept = starting_weights(start, ("c0", "c1", "c2", "c9"))  # c9: a class the start does not have
    scores = features @ coef.T + intercept
    np.testing.assert_allclose(softmax(scores[:, :3]), start.probabilities(features), atol=1e-5)
    assert not coef[3].any() and intercept[3] == 0
    binary = fit_candidate(Candidate("logistic", 3.0), features[labels != "c2"], labels[labels != "c2"])
    coef, intercept = starting_weights(binary, ("c0", "c1"))  # scikit-learn's one row: the sigmoid's weights
    z = features @ coef.T + intercept
    np.testing.assert_allclose(sigmoid(z[:, 0]), binary.probabilities(features)[:, 1], atol=1e-5)
    coef, _ = starting_weights(start, ("c1", "c2"))  # two of a softmax's classes: the difference of their rows
    np.testing.assert_allclose(coef[0], start.arrays["coef"][2] - start.arrays["coef"][1], atol=1e-6)


@pytest.mark.parametrize(("rows", "dim"), [(200, 40), (60, 400)])  # on the features; in the rows' span
@pytest.mark.parametrize("classes", [2, 4])
def test_a_logistic_regression_started_from_an_earlier_fit_reaches_the_same_model(
    rows: int, dim: int, classes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    features, labels = blobs(classes, rows=rows + 40, dim=dim, seed=7)
    train, test = slice(0, rows), slice(rows, None)
    earlier = fit_candidate(Candidate("logistic", 3.0), features[train][: rows - 10], labels[train][: rows - 10])
    cold = fit_candidate(Candidate("logistic", 10.0), features[train], labels[train])
    began: list[tuple[bool, float]] = []
    fit = LogisticRegression.fit

    def spied(self, x, y, *args, **kwargs):  # type: ignore[no-untyped-def]
        began.append((self.warm_start, float(np.abs(getattr(self, "coef_", np.zeros(1))).sum())))
        return fit(self, x, y, *args, **kwargs)

    monkeypatch.setattr(LogisticRegression, "fit", spied)
    warm = fit_candidate(Candidate("logistic", 10.0), features[train], labels[train], start=earlier)
    assert began[-1][0] and began[-1][1] > 0  # lbfgs began at the earlier weights, not at zeros
    optimum = reference(Candidate("logistic", 10.0), classes=classes)
    optimum.steps[-1][1].set_params(max_iter=100_000, tol=1e-12)  # where lbfgs's tolerance lets both stop short
    answers = optimum.fit(features[train].astype(np.float64), labels[train]).predict_proba(features[test])
    cold_error = np.abs(cold.probabilities(features[test]) - answers).max()  # up to 0.05 on these blobs
    assert np.abs(warm.probabilities(features[test]) - answers).max() <= cold_error + 5e-3
    scaled = fit_candidate(Candidate("logistic", 10.0, "standardize"), features[train], labels[train], start=earlier)
    assert not began[-1][0]  # another preprocessing: the earlier weights are on other inputs, and left out
    assert scaled.params["steps"] == ["standardize"]
    again = fit_candidate(Candidate("logistic", 30.0, "standardize"), features[train], labels[train], start=scaled)
    assert began[-1][0] and again.params["steps"] == ["standardize"]  # the same rows scaled the same: used
    fewer = fit_candidate(Candidate("logistic", 3.0, "standardize"), features[:50], labels[:50])
    fit_candidate(Candidate("logistic", 10.0, "standardize"), features[train], labels[train], start=fewer)
    assert not began[-1][0]  # scaled on other rows: other inputs
    few = fit_candidate(Candidate("logistic", 3.0, "pca"), features[:50], labels[:50])  # 49 components
    wide = fit_candidate(Candidate("logistic", 10.0, "pca"), features[train], labels[train], start=few)
    assert not began[-1][0] and wide.arrays["coef"].shape[1] == min(PCA_COMPONENTS, rows - 1, dim)


def test_a_logistic_regression_over_many_products_learns_where_the_default_tolerance_kept_zero_weights() -> None:
    # 800 products of 2 centred photos each in 2,048 dimensions, none far from the others in any one dimension:
    # each class's gradient at the start is below scikit-learn's default tolerance, which kept every weight at zero
    # and every product at 1/800. More rows than 3/4 of the features: fitted on the features themselves, not in
    # their span (whose coordinates would give lbfgs other gradient components to stop on)
    rng = np.random.default_rng(3)
    centres = rng.choice([-1.0, 1.0], size=(800, 2048))
    labels = np.repeat(np.arange(800), 2)
    features = centres[labels] + 0.3 * rng.normal(size=(len(labels), 2048))
    features -= features.mean(axis=0)
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    names = np.array([f"p{i:03d}" for i in labels])
    assert in_row_span(features) is None
    default = LogisticRegression(C=10.0, max_iter=3000).fit(features, names)
    assert default.n_iter_[0] == 0 and not default.coef_.any()  # what the default does here
    ours = fit_candidate(Candidate("logistic", 10.0), features.astype(np.float32), names.tolist())
    probabilities = ours.probabilities(features.astype(np.float32))
    assert (np.asarray(ours.classes)[probabilities.argmax(axis=1)] == names).mean() > 0.95
    assert probabilities.max(axis=1).min() > 10 / 800


@pytest.mark.parametrize("preprocessing", ["none", "standardize"])
def test_prototypes_score_the_cosine_to_each_products_mean_or_nearest_centre(preprocessing: str) -> None:
    features, labels = blobs(3, rows=120, dim=16)
    means = fit_candidate(Candidate("prototype", 1.0, preprocessing), features[:90], labels[:90])
    x = means.transform(features[90:])
    train = means.transform(features[:90])
    expected = []
    for name in means.classes:
        centre = (train / np.linalg.norm(train, axis=1, keepdims=True))[labels[:90] == name].mean(axis=0)
        expected.append((x / np.linalg.norm(x, axis=1, keepdims=True)) @ (centre / np.linalg.norm(centre)))
    np.testing.assert_allclose(means.decision(features[90:]), np.stack(expected, axis=1), atol=1e-5)
    assert (
        np.asarray(means.classes)[means.probabilities(features[90:]).argmax(axis=1)] == labels[90:]
    ).mean() > 0.7  # chance: 1/3
    several = fit_candidate(Candidate("prototype", 4.0, preprocessing), features[:90], labels[:90])
    assert len(several.arrays["centres"]) == 12 and np.bincount(several.arrays["labels"]).tolist() == [4, 4, 4]
    centres = several.arrays["centres"]
    nearest = (several.transform(features[90:]) / np.linalg.norm(x, axis=1, keepdims=True)) @ centres.T
    best = np.stack([nearest[:, several.arrays["labels"] == c].max(axis=1) for c in range(3)], axis=1)
    np.testing.assert_allclose(several.decision(features[90:]), best, atol=1e-5)


def test_the_search_lists_every_kind_and_preprocessing() -> None:
    search = candidates()
    assert {c.kind for c in search} == set(KINDS) and {c.preprocessing for c in search} == {
        "none",
        "standardize",
        "pca",
    }
    assert Candidate("rbf_svm", 10.0, "pca").label == "rbf_svm(C=10) + pca"
    with pytest.raises(InvalidModel, match="unknown classifier"):
        Candidate("forest", 1.0)


def test_temperature_sharpens_confident_right_answers_and_softens_wrong_ones() -> None:
    scores = np.array([[1.0, -1.0]] * 9 + [[-1.0, 1.0]])  # margin 2, right 9 times in 10
    truth = np.zeros(10, dtype=int)
    temperature = fit_temperature(scores, truth)
    assert softmax(scores * temperature)[0, 0] == pytest.approx(0.9, abs=0.02)
    assert fit_temperature(scores[:9], truth[:9]) > temperature  # never wrong: as sharp as the grid allows


def hierarchy_data(seed: int = 0) -> tuple[np.ndarray, list[str], dict[str, str], dict[str, np.ndarray]]:
    """Two categories far apart; inside 'tops' two products close together, 'bags' holds one product."""
    rng = np.random.default_rng(seed)
    categories_of = {"shirt": "tops", "tshirt": "tops", "tote": "bags"}
    centres = {"shirt": np.array([4.0, 0.2, 0]), "tshirt": np.array([4.0, -0.2, 0]), "tote": np.array([0, 0, 4.0])}
    products = [p for p in categories_of for _ in range(40)]
    features = np.stack([centres[p] + rng.normal(0, 0.35, 3) for p in products]).astype(np.float32)
    return features, products, categories_of, centres


def test_category_first_head_multiplies_its_levels_and_survives_a_round_trip(tmp_path: Path) -> None:
    features, products, categories_of, centres = hierarchy_data()
    search = [Candidate("logistic", 10.0), Candidate("rbf_svm", 3.0, "standardize"), Candidate("knn", 5.0)]
    fitted = fit_model(features, products, categories_of, search=search, structure=CATEGORY_FIRST)
    head, report = fitted.head, fitted.report
    assert head.structure == CATEGORY_FIRST and set(head.classifiers) == {None, "tops"}  # 'bags' has one product
    assert set(report["classifiers"]) == {"(categories)", "tops"}
    probe = features[:5]
    joint = head.probabilities(probe)
    top = head.classifiers[None].probabilities(probe)
    inner = head.classifiers["tops"].probabilities(probe)
    tops = list(head.classifiers[None].classes).index("tops")
    bags = list(head.classifiers[None].classes).index("bags")
    for product in ("shirt", "tshirt"):
        column = head.products.index(product)
        np.testing.assert_allclose(
            joint[:, column], top[:, tops] * inner[:, head.classifiers["tops"].classes.index(product)]
        )
    np.testing.assert_allclose(joint[:, head.products.index("tote")], top[:, bags])
    np.testing.assert_allclose(joint.sum(axis=1), 1.0, atol=1e-6)

    catalog = {p: {"product": p, "name": p, "category": c} for p, c in categories_of.items()}
    version = write_model(tmp_path, name="h", head=head, catalog=catalog, backbone={"name": "efficientnet_lite0"})
    loaded = load_model(version).head
    assert loaded.structure == CATEGORY_FIRST
    np.testing.assert_allclose(loaded.probabilities(features), head.probabilities(features), atol=1e-6)

    between = (centres["shirt"] + centres["tshirt"]) / 2  # surely a top, no telling which
    decision = head.decide(head.probabilities(between[None, :].astype(np.float32))[0])
    assert (decision.status, decision.product, decision.category) == (UNKNOWN, None, "tops")
    sure = head.decide(head.probabilities(centres["tote"][None, :].astype(np.float32))[0])
    assert (sure.product, sure.category) == ("tote", "bags")


def test_the_search_picks_what_cross_validation_prefers() -> None:
    """Rings: no linear boundary separates them, an RBF SVM or kNN does."""
    rng = np.random.default_rng(3)
    angles = rng.uniform(0, 2 * np.pi, 160)
    radius = np.repeat([1.0, 3.0], 80) + rng.normal(0, 0.15, 160)
    features = np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=1).astype(np.float32)
    products = ["inner"] * 80 + ["outer"] * 80
    search = [Candidate("logistic", 10.0), Candidate("rbf_svm", 10.0)]
    fitted = fit_model(features, products, {"inner": "c", "outer": "c"}, search=search)
    head, report = fitted.head, fitted.report
    entry = report["classifiers"]["(products)"]
    assert entry["chosen"] == "rbf_svm(C=10)" and entry["candidates"]["logistic(C=10)"] < 0.75 < entry["cv_macro_f1"]
    assert head.classifiers[None].kind == "rbf_svm"


def test_a_head_whose_classifiers_do_not_cover_its_products_is_refused() -> None:
    features, products, categories_of, _ = hierarchy_data()
    head = fit_model(
        features, products, categories_of, search=[Candidate("logistic", 10.0)], structure=CATEGORY_FIRST
    ).head
    with pytest.raises(InvalidModel, match="category 'tops' needs a classifier"):
        ProductHead(head.products, head.categories, {None: head.classifiers[None]}, structure=CATEGORY_FIRST)


def test_classifier_and_preprocessing_names_from_the_command_line() -> None:
    from models.answer.classifiers import PREPROCESSING, parse_names
    from models.errors import DatasetError

    assert parse_names("all", KINDS, "classifier") == KINDS
    assert parse_names(" rbf_svm, knn ,rbf_svm", KINDS, "classifier") == ("rbf_svm", "knn")
    assert parse_names("none", PREPROCESSING, "preprocessing") == ("none",)
    with pytest.raises(DatasetError, match="unknown classifier forest; known: logistic"):
        parse_names("logistic,forest", KINDS, "classifier")
    with pytest.raises(DatasetError, match="unknown preprocessing"):
        parse_names(" , ", PREPROCESSING, "preprocessing")


def test_a_head_whose_arrays_are_incomplete_is_refused_at_load(tmp_path: Path) -> None:
    """Arrays missing from head.npz (with a manifest made to match) fail loading, not every frame after it."""
    import json

    from models.errors import ArtifactError
    from models.store.versions import file_sha256

    features, products, categories_of, _ = hierarchy_data()
    head = fit_model(features, products, categories_of, search=[Candidate("rbf_svm", 3.0)]).head
    catalog = {p: {"product": p, "name": p, "category": c} for p, c in categories_of.items()}
    version = write_model(tmp_path, name="h", head=head, catalog=catalog, backbone={"name": "efficientnet_lite0"})
    with np.load(version / "head.npz") as stored:
        arrays = {name: stored[name] for name in stored.files if not name.endswith("_n_support")}
    np.savez(version / "head.npz", **arrays)
    manifest = json.loads((version / "manifest.json").read_text())
    manifest["files"]["head.npz"]["sha256"] = file_sha256(version / "head.npz")
    (version / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="cannot be applied"):
        load_model(version)


def test_the_binary_sigmoid_does_not_overflow_on_large_decisions() -> None:
    """A binary MLP's single output far from zero: exp(-z) of a large negative z would overflow."""
    identity = {"w0": np.ones((1, 1), dtype=np.float32), "b0": np.zeros(1, dtype=np.float32)}
    classifier = Classifier("mlp", ("no", "yes"), identity, {"layers": 1, "input_dim": 1, "steps": []})
    decisions = np.array([[-1e4], [-100.0], [-1.0], [0.0], [1.0], [100.0], [1e4]], dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        positive = classifier.probabilities(decisions)[:, 1]
        wide = sigmoid(np.array([-1e308, -800.0, 800.0, 1e308]))
    expected = 1 / (1 + np.exp(-np.array([-1.0, 0.0, 1.0])))
    np.testing.assert_allclose(positive, [0.0, 0.0, *expected, 1.0, 1.0], atol=1e-7)
    np.testing.assert_array_equal(wide, [0.0, 0.0, 1.0, 1.0])
