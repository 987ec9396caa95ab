"""Modality fusion: the named vectors of a task (text, image, audio) into one fused vector.

A small torch module with learnable parts, trained from experience later:

- an alignment per modality, a linear map from the modality's space into the fused space (the
  text space, where agent cards live). Text starts as the identity; image (CLIP) and audio
  (Whisper encoder features) start at zero, because no mapping from those spaces into the text
  space is known before training: an untrained projection would only add noise.
- attention over the modalities present: a learnable prior logit per modality plus a
  content-dependent term (a linear score of the aligned vector, zero at start).

The fused vector is the L2-normalised attention-weighted sum of the aligned vectors. When no
present modality reaches the fused space yet (an image-only task before training), the result is
``None`` and the caller matches in the modality's own space instead (CLIP: cards embedded by the
CLIP text tower). Fusion weights are saved and loaded as a plain state dict.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from aos_gateway.errors import ConfigError, ValidationError
from aos_gateway.perception.vectors import FloatArray

#: the default prior weight of each modality (softmax logits): text leads, speech features and
#: image follow once they are aligned by training.
DEFAULT_LOGITS: dict[str, float] = {"text": 1.0, "image": 0.0, "audio": 0.0}


def _module(dims: Mapping[str, int], out_dim: int, logits: Mapping[str, float]) -> Any:
    import torch
    from torch import nn

    class ModalityFusion(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.names = sorted(dims)
            self.align = nn.ModuleDict({m: nn.Linear(dims[m], out_dim, bias=False) for m in self.names})
            self.prior = nn.ParameterDict(
                {m: nn.Parameter(torch.tensor(float(logits.get(m, 0.0)))) for m in self.names}
            )
            self.content = nn.Linear(out_dim, 1, bias=False)
            with torch.no_grad():
                for m in self.names:
                    w: Any = self.align[m].weight
                    if m == "text" and dims[m] == out_dim:
                        w.copy_(torch.eye(out_dim))
                    else:
                        w.zero_()
                self.content.weight.zero_()

        def forward(self, vectors: dict[str, Any], present: Any) -> Any:
            """vectors: name -> (B, dim) tensors (zeros where absent); present: (B, M) bool."""
            aligned = torch.stack([self.align[m](vectors[m]) for m in self.names], dim=1)  # (B, M, D)
            prior = torch.stack([self.prior[m] for m in self.names])  # (M,)
            scores = prior.unsqueeze(0) + self.content(aligned).squeeze(-1)  # (B, M)
            scores = scores.masked_fill(~present, float("-inf"))
            weights = torch.softmax(scores, dim=1).nan_to_num(0.0)
            return (weights.unsqueeze(-1) * aligned).sum(dim=1)

    return ModalityFusion()


class Fusion:
    """Fuses named vectors; thread-safe; weights loadable from a file."""

    def __init__(
        self,
        dims: Mapping[str, int],
        out_dim: int,
        logits: Mapping[str, float] | None = None,
        weights_path: Path | None = None,
    ) -> None:
        if "text" not in dims:
            raise ConfigError("fusion needs the text space: it is the space agent cards live in")
        self.dims = dict(dims)
        self.out_dim = out_dim
        self._lock = threading.Lock()
        self._module = _module(self.dims, out_dim, {**DEFAULT_LOGITS, **(logits or {})})
        self._module.eval()
        self.trained = False
        if weights_path is not None:
            self.load(weights_path)

    def load(self, path: Path) -> None:
        import torch

        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            self._module.load_state_dict(state)
        except FileNotFoundError as exc:
            raise ConfigError(f"fusion weights not found: {path}") from exc
        except Exception as exc:
            raise ConfigError(f"cannot load fusion weights from {path}: {exc}") from exc
        self.trained = True

    def save(self, path: Path) -> None:
        import torch

        torch.save(self._module.state_dict(), path)

    def reaches_fused_space(self, modality: str) -> bool:
        """Whether this modality's alignment maps anything into the fused space (non-zero)."""
        import torch

        with torch.no_grad():
            return bool(self._module.align[modality].weight.abs().sum() > 0)

    def fuse(self, batch: list[dict[str, FloatArray]]) -> list[FloatArray | None]:
        """One fused unit vector per task (None when no present modality reaches the fused space)."""
        import torch

        if not batch:
            return []
        names = self._module.names
        for item in batch:
            for m, v in item.items():
                if m not in self.dims:
                    raise ValidationError(f"unknown modality {m!r} (fusion knows {', '.join(names)})")
                if v.shape != (self.dims[m],):
                    raise ValidationError(f"{m} vector has shape {v.shape}, fusion expects ({self.dims[m]},)")
        n = len(batch)
        vectors = {
            m: torch.from_numpy(
                np.stack([item.get(m, np.zeros(self.dims[m], dtype=np.float32)) for item in batch]).astype(np.float32)
            )
            for m in names
        }
        present = torch.tensor([[m in item for m in names] for item in batch], dtype=torch.bool).reshape(n, -1)
        with self._lock, torch.inference_mode():
            fused = self._module(vectors, present).numpy()
        out: list[FloatArray | None] = []
        for row in fused:
            norm = float(np.linalg.norm(row))
            out.append((row / norm).astype(np.float32) if norm > 1e-6 else None)
        return out
