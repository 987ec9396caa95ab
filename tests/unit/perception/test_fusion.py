from __future__ import annotations

import numpy as np
import pytest

from aos_gateway.errors import ConfigError, ValidationError
from aos_gateway.perception.fusion import Fusion
from aos_gateway.perception.vectors import l2_normalize


def _unit(dim: int, seed: int) -> np.ndarray:
    return l2_normalize(np.random.default_rng(seed).normal(size=dim).astype(np.float32))


def test_untrained_fusion_is_the_text_vector_and_ignores_unaligned_modalities() -> None:
    f = Fusion({"text": 8, "image": 6, "audio": 4}, 8)
    t = _unit(8, 1)
    (only_text, text_image, image_only, text_audio) = f.fuse(
        [{"text": t}, {"text": t, "image": _unit(6, 2)}, {"image": _unit(6, 3)}, {"text": t, "audio": _unit(4, 4)}]
    )
    assert only_text is not None and np.allclose(only_text, t, atol=1e-6)
    assert text_image is not None and np.allclose(text_image, t, atol=1e-6)
    assert text_audio is not None and np.allclose(text_audio, t, atol=1e-6)
    assert image_only is None  # nothing maps an image into the text space before training
    assert not f.reaches_fused_space("image") and f.reaches_fused_space("text")


def test_trained_alignment_mixes_modalities_by_attention_and_round_trips(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import torch

    f = Fusion({"text": 4, "image": 4}, 4)
    with torch.no_grad():
        f._module.align["image"].weight.copy_(torch.eye(4))
        f._module.prior["image"].fill_(1.0)  # equal priors with text: the mean of both
    t = np.array([1, 0, 0, 0], dtype=np.float32)
    i = np.array([0, 1, 0, 0], dtype=np.float32)
    (mixed, image_only) = f.fuse([{"text": t, "image": i}, {"image": i}])
    assert mixed is not None and np.allclose(mixed, l2_normalize(t + i), atol=1e-6)
    assert image_only is not None and np.allclose(image_only, i, atol=1e-6)
    path = tmp_path / "fusion.pt"
    f.save(path)
    g = Fusion({"text": 4, "image": 4}, 4, weights_path=path)
    assert g.trained and np.allclose(g.fuse([{"text": t, "image": i}])[0], mixed)  # type: ignore[arg-type]


def test_fusion_errors_are_clear(tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = Fusion({"text": 4}, 4)
    with pytest.raises(ValidationError, match="unknown modality 'smell'"):
        f.fuse([{"smell": np.zeros(4, dtype=np.float32)}])
    with pytest.raises(ValidationError, match="shape"):
        f.fuse([{"text": np.zeros(5, dtype=np.float32)}])
    with pytest.raises(ConfigError, match="text space"):
        Fusion({"image": 4}, 4)
    with pytest.raises(ConfigError, match="not found"):
        Fusion({"text": 4}, 4, weights_path=tmp_path / "missing.pt")
    assert f.fuse([]) == []
