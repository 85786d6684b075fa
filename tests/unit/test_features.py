"""The real backbone on real photos (scikit-learn's samples): device choice, traced graph, normalisation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_sample_images

from models.bundle import resolve
from models.errors import ArtifactError
from models.extract.backbones import BackboneError, FeatureBackbone, get_backbone, load_network
from models.extract.decode import resize_center_crop
from models.extract.features import FeatureExtractor, choose_device
from models.recognizer import Recognizer
from models.store.versions import file_sha256


def test_device_choice_falls_back_to_cpu_and_refuses_a_missing_gpu() -> None:
    assert choose_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        assert choose_device("auto").type == "cpu"
        with pytest.raises(BackboneError, match="CUDA is not available"):
            choose_device("cuda")
    with pytest.raises(BackboneError):
        choose_device("tpu")
    with pytest.raises(BackboneError, match="unknown backbone"):
        get_backbone("resnet-9000")


@pytest.fixture(scope="module")
def extractor() -> FeatureExtractor:
    return FeatureExtractor(get_backbone("efficientnet_lite0"), device="cpu")


def photos() -> np.ndarray:
    return np.stack([np.asarray(resize_center_crop(Image.fromarray(p), 224)) for p in load_sample_images().images])


def test_features_are_l2_normalised_and_the_traced_graph_matches_eager(extractor: FeatureExtractor) -> None:
    images = photos()
    features = extractor(images)
    assert features.shape == (2, 1280) and features.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, atol=1e-5)
    assert isinstance(extractor._forward, torch.jit.ScriptModule)  # the frozen graph, not the eager fallback
    spec = extractor.spec
    eager_net, _ = load_network(spec)
    batch = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    batch = (batch - torch.tensor(spec.mean).view(1, 3, 1, 1)) / torch.tensor(spec.std).view(1, 3, 1, 1)
    with torch.inference_mode():
        eager = torch.nn.functional.normalize(FeatureBackbone(eager_net)(batch), dim=1).numpy()
    np.testing.assert_allclose(features, eager, atol=1e-4)
    # the china and flower photos are different things: their features are far from identical
    assert float(features[0] @ features[1]) < 0.9


def test_a_model_trained_on_other_weights_is_refused(model_store: Path) -> None:
    version = resolve(model_store)
    copy = model_store.parent / "other-weights"
    shutil.copytree(version, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["backbone"]["weights_sha256"] = "0" * 64
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert file_sha256(copy / "head.npz") == manifest["files"]["head.npz"]["sha256"]
    with pytest.raises(ArtifactError, match="PARTSIGHT_BACKBONE_WEIGHTS"):
        Recognizer.load(copy, device="cpu", engine="torch")
    # the ONNX graph carries the trained weights inside it (its sha256 is in the manifest): it still serves
    assert Recognizer.load(copy, device="cpu").engine.name == "onnxruntime"


def test_the_half_precision_path_gives_the_same_features(extractor: FeatureExtractor) -> None:
    """The GPU path's precision handling, exercised on CPU (CI has no GPU)."""
    half = FeatureExtractor(get_backbone("efficientnet_lite0"), device="cpu", half=True)
    images = photos()
    low, full = half(images), extractor(images)
    assert low.dtype == np.float32 and half.half
    np.testing.assert_allclose(np.linalg.norm(low, axis=1), 1.0, atol=1e-3)
    assert float(np.min(np.sum(low * full, axis=1))) > 0.99  # cosine similarity to the float32 features
