"""Inference engines: what turns a frame's bytes into a feature vector, in two steps.

`prepare(data)` runs on the thread that handles the frame (decode on the CPU, or only a header check when
the engine decodes on the GPU); `features(items)` runs once per micro-batch. A batch returns one entry per
item, a feature vector or the ImageError of that item alone, so one bad frame never fails its batch.

- `onnxruntime`: the model directory's exported graph on ONNX Runtime, one intra-op thread per call;
  the CPU default (on a 2-core box 95-100 frames/s per thread against 35-60 for torch).
- `torch`: the backbone on torch (CPU, one thread, frozen graph; or CUDA), the fallback.
- `torch-cuda`: torch on a GPU in half precision with JPEG decoding on the GPU (models.extract.cuda_engine).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from models.errors import ImageError
from models.extract.decode import DecodeLimits, decode_image
from models.extract.onnx_export import onnx_session
from models.extract.recipe import recentre

logger = logging.getLogger(__name__)

ENGINE_CHOICES = ("auto", "onnxruntime", "torch")


class Engine(Protocol):
    name: str
    device: str
    input_size: int

    def prepare(self, data: bytes, limits: DecodeLimits) -> Any: ...

    def features(self, items: Sequence[Any]) -> list[np.ndarray | ImageError]: ...


class OnnxEngine:
    """The exported graph (uint8 images in, normalised features out) on ONNX Runtime's CPU provider.

    One session serves every lane: ONNX Runtime releases the GIL while it runs, so two threads calling
    it at once use two cores (measured: 96 -> 204 frames/s on a 2-core box).
    """

    name = "onnxruntime"
    device = "cpu"

    def __init__(self, path: Path, *, input_size: int, threads: int = 1) -> None:
        self.input_size = input_size
        self._session: Any = onnx_session(path, threads=threads)
        logger.info("ONNX Runtime engine on %s (%d intra-op thread(s))", path.name, threads)

    def prepare(self, data: bytes, limits: DecodeLimits) -> np.ndarray:
        return decode_image(data, size=self.input_size, limits=limits)

    def features(self, items: Sequence[Any]) -> list[np.ndarray | ImageError]:
        output = self._session.run(None, {"images": np.ascontiguousarray(np.stack(items), dtype=np.uint8)})[0]
        return list(np.asarray(output, dtype=np.float32))


class TorchEngine:
    """The backbone on torch, fed with frames decoded on the CPU."""

    name = "torch"

    def __init__(self, extractor: Any) -> None:
        self._extractor = extractor
        self.device = str(extractor.device)
        self.input_size = int(extractor.spec.input_size)

    def prepare(self, data: bytes, limits: DecodeLimits) -> np.ndarray:
        return decode_image(data, size=self.input_size, limits=limits)

    def features(self, items: Sequence[Any]) -> list[np.ndarray | ImageError]:
        return list(self._extractor(np.stack(items)))


class RecentredEngine:
    """An engine whose graph centres on another mean than the version's rows (a consolidation re-centred them:
    models.train.consolidation): each feature vector it gives is finished again on the rows' mean (recipe.recentre),
    one batch at a time, so the frame is compared in the rows' space."""

    def __init__(self, engine: Engine, *, graph_center: np.ndarray, center: np.ndarray) -> None:
        self._engine = engine
        self._graph_center = np.asarray(graph_center, dtype=np.float32)
        self._center = np.asarray(center, dtype=np.float32)
        self.name, self.device, self.input_size = engine.name, engine.device, engine.input_size

    def prepare(self, data: bytes, limits: DecodeLimits) -> Any:
        return self._engine.prepare(data, limits)

    def features(self, items: Sequence[Any]) -> list[np.ndarray | ImageError]:
        rows = self._engine.features(items)
        ok = [i for i, row in enumerate(rows) if not isinstance(row, ImageError)]
        if ok:
            recentred = recentre(np.stack([rows[i] for i in ok]), self._graph_center, self._center)  # type: ignore[misc]
            for i, row in zip(ok, recentred, strict=True):
                rows[i] = row
        return rows
