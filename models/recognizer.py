"""A served model: the verified model directory plus the backbone it was trained on, ready for batches."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.artifact import ModelBundle, load_model
from models.backbones import file_sha256, get_backbone
from models.errors import ArtifactError
from models.features import FeatureExtractor
from models.head import Decision

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recognizer:
    bundle: ModelBundle
    extractor: FeatureExtractor

    @classmethod
    def load(
        cls, model_dir: Path, *, weights: Path | None = None, device: str = "auto", cpu_threads: int | None = 1
    ) -> Recognizer:
        """Verify the directory, then build the backbone it names and check its weights are the trained ones."""
        bundle = load_model(model_dir)
        record = bundle.backbone
        spec = get_backbone(str(record["name"]))
        extractor = FeatureExtractor(spec, weights=weights, device=device, cpu_threads=cpu_threads)
        expected = record.get("weights_sha256")
        if expected and file_sha256(extractor.weights_path) != expected:
            raise ArtifactError(
                f"{bundle.path}: trained on {spec.name} weights {expected[:12]}..., "
                f"but {extractor.weights_path} differs; point PARTSIGHT_BACKBONE_WEIGHTS at the trained weights"
            )
        if bundle.head.feature_dim != spec.feature_dim:
            raise ArtifactError(
                f"{bundle.path}: head expects {bundle.head.feature_dim}-d features, "
                f"{spec.name} gives {spec.feature_dim}"
            )
        logger.info("serving model %s version %s", bundle.name, bundle.version)
        return cls(bundle=bundle, extractor=extractor)

    @property
    def input_size(self) -> int:
        return self.extractor.spec.input_size

    def features(self, images: np.ndarray) -> np.ndarray:
        return self.extractor(images)

    def classify(self, features: np.ndarray) -> list[Decision]:
        head = self.bundle.head
        return [head.decide(row) for row in head.probabilities(features)]
