"""The CPU engines on real photos: the exported ONNX graph against torch, engine choice, per-frame errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from models.bundle import resolve
from models.errors import ArtifactError, BackboneError, ImageError
from models.extract.backbones import get_backbone, load_network
from models.extract.decode import DecodeLimits, decode_image
from models.extract.onnx_export import EXPORT_TOLERANCE, ONNX_FILE, export_backbone
from models.recognizer import Recognizer


def real_photos(camera_photos: list[tuple[Path, str]], size: int = 224) -> np.ndarray:
    return np.stack([decode_image(path.read_bytes(), size=size) for path, _ in camera_photos])


def test_training_exports_the_graph_with_its_sha256_and_its_measured_difference(model_store: Path) -> None:
    version = resolve(model_store)
    manifest = json.loads((version / "manifest.json").read_text())
    record = manifest["engines"]["onnxruntime"]
    assert record["file"] == ONNX_FILE and record["opset"] == 17
    assert 0 <= record["max_abs_difference"] <= EXPORT_TOLERANCE and record["checked_on"] == 8
    assert manifest["files"][ONNX_FILE]["bytes"] == (version / ONNX_FILE).stat().st_size > 1_000_000


def test_onnx_features_equal_torch_features_and_the_answers_do_not_change(
    model_store: Path, camera_photos: list[tuple[Path, str]]
) -> None:
    onnx = Recognizer.load(model_store, device="cpu")
    eager = Recognizer.load(model_store, device="cpu", engine="torch")
    assert (onnx.engine.name, eager.engine.name) == ("onnxruntime", "torch")
    images = real_photos(camera_photos)  # photos the model was not trained on
    from_onnx, from_torch = onnx.features(images), eager.features(images)
    np.testing.assert_allclose(from_onnx, from_torch, atol=1e-4)
    assert [d.product for d in onnx.classify(from_onnx)] == [d.product for d in eager.classify(from_torch)]
    assert [d.status for d in onnx.classify(from_onnx)] == [d.status for d in eager.classify(from_torch)]


def test_the_export_is_checked_and_a_diverging_graph_is_refused(
    tmp_path: Path, camera_photos: list[tuple[Path, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = get_backbone("efficientnet_lite0")
    network, _ = load_network(spec)
    before = {name: value.clone() for name, value in network.state_dict().items()}
    photos = real_photos(camera_photos[:4])
    difference = export_backbone(spec, network, tmp_path / "a.onnx", photos)
    assert difference < EXPORT_TOLERANCE
    # the network handed in is left as it was (the exporter works on a copy)
    assert all(torch.equal(before[name], value) for name, value in network.state_dict().items())

    import models.extract.onnx_export as onnx_export

    monkeypatch.setattr(onnx_export, "EXPORT_TOLERANCE", 0.0)  # any difference at all now counts as diverging
    with pytest.raises(BackboneError, match="differs from torch"):
        onnx_export.export_backbone(spec, network, tmp_path / "b.onnx", photos)
    assert not (tmp_path / "b.onnx").exists()


def test_engine_choice(model_store: Path, tmp_path: Path) -> None:
    with pytest.raises(BackboneError, match="engine must be"):
        Recognizer.load(model_store, engine="tensorrt")
    if not torch.cuda.is_available():
        with pytest.raises(BackboneError, match="CUDA is not available"):
            Recognizer.load(model_store, device="cuda")
    # a directory trained before graphs were exported: auto falls back to torch, onnxruntime refuses
    old = tmp_path / "old"
    shutil.copytree(resolve(model_store), old)
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["engines"], manifest["files"][ONNX_FILE]
    (old / ONNX_FILE).unlink()
    (old / "manifest.json").write_text(json.dumps(manifest))
    assert Recognizer.load(old, device="cpu").engine.name == "torch"
    with pytest.raises(ArtifactError, match="no ONNX graph"):
        Recognizer.load(old, device="cpu", engine="onnxruntime")


def test_a_tampered_graph_is_refused(model_store: Path, tmp_path: Path) -> None:
    copy = tmp_path / "tampered"
    shutil.copytree(resolve(model_store), copy)
    data = bytearray((copy / ONNX_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / ONNX_FILE).write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=f"{ONNX_FILE} has sha256"):
        Recognizer.load(copy, device="cpu")


def test_prepare_decodes_and_names_the_error_of_a_bad_frame(recognizer: Recognizer) -> None:
    engine = recognizer.engine
    with pytest.raises(ImageError) as caught:
        engine.prepare(b"GIF89a....", DecodeLimits())
    assert caught.value.code == "unsupported_format"
    black = np.zeros((3, 224, 224, 3), dtype=np.uint8)
    rows = engine.features(list(black))
    dim = recognizer.bundle.recipe.dim
    assert len(rows) == 3 and all(isinstance(r, np.ndarray) and r.shape == (dim,) for r in rows)


def test_a_recentred_engine_finishes_each_good_row_on_the_rows_mean_and_passes_a_bad_frames_error_on() -> None:
    from models.extract.engines import RecentredEngine
    from models.extract.recipe import finish

    rng = np.random.default_rng(3)
    uncentred = rng.normal(size=(3, 8)) + 1.0
    uncentred /= np.linalg.norm(uncentred, axis=1, keepdims=True)  # a recipe's vector before centring: unit length
    graph_mean, rows_mean = uncentred[:2].mean(axis=0), uncentred.mean(axis=0)
    graph_rows = finish(uncentred, graph_mean)
    bad = ImageError("image_undecodable", "not an image")

    class Graph:
        name, device, input_size = "onnxruntime", "cpu", 224

        def prepare(self, data: bytes, limits: DecodeLimits) -> bytes:
            return data

        def features(self, items: list[bytes]) -> list[np.ndarray | ImageError]:
            return [bad if item == b"bad" else graph_rows[int(item)] for item in items]

    engine = RecentredEngine(Graph(), graph_center=graph_mean, center=rows_mean)
    assert (engine.name, engine.device, engine.input_size) == ("onnxruntime", "cpu", 224)
    out = engine.features([engine.prepare(b"0", DecodeLimits()), b"bad", b"2"])
    assert out[1] is bad
    expected = finish(uncentred, rows_mean)
    np.testing.assert_allclose(np.stack([out[0], out[2]]), expected[[0, 2]], atol=1e-6)  # type: ignore[list-item]
    assert engine.features([b"bad"]) == [bad]
