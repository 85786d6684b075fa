from __future__ import annotations

from pathlib import Path

import numpy as np

from models.extract.feature_cache import FeatureCache


def test_features_round_trip_under_a_key_of_namespace_variant_and_bytes(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path, "efficientnet_lite0:abc:224")
    key = cache.key(b"photo bytes")
    assert cache.get(key) is None and cache.misses == 1
    vector = np.arange(8, dtype=np.float32)
    cache.put(key, vector)
    assert np.array_equal(cache.get(key), vector) and cache.hits == 1
    assert (
        len(
            {
                key,
                cache.key(b"photo bytes", "synthetic:rotate:0.5:0:-:0"),
                cache.key(b"other photo"),
                FeatureCache(tmp_path, "efficientnet_lite0:def:224").key(b"photo bytes"),  # other weights
            }
        )
        == 4
    )
    assert list(tmp_path.rglob("*.tmp")) == []  # written atomically


def test_a_damaged_or_pickled_entry_is_recomputed_not_loaded(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path, "ns")
    damaged, pickled = cache.key(b"a"), cache.key(b"b")
    cache.put(damaged, np.ones(4, dtype=np.float32))
    path = next(tmp_path.rglob(f"{damaged}.npy"))
    path.write_bytes(path.read_bytes()[:20])
    assert cache.get(damaged) is None
    target = tmp_path / pickled[:2] / f"{pickled}.npy"
    target.parent.mkdir(parents=True, exist_ok=True)
    np.save(target, np.array([{"evil": "payload"}], dtype=object), allow_pickle=True)
    assert cache.get(pickled) is None  # allow_pickle=False refuses it
