"""The transformer's architecture and its rules, without torch: training config validates against it at load time,
and `transformer.py` builds the network from it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True)
class TransformerConfig:
    """Architecture hyperparameters; stored as JSON in the weights file's header."""

    vocab_size: int
    block_size: int = 64
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = False

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})")
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("dropout must be in [0, 1)")

    def to_json(self) -> dict[str, Any]:
        """The config as a JSON-able dict."""
        return asdict(self)


#: The architecture fields a training preset sets (the vocabulary size comes from the data).
ARCHITECTURE_FIELDS = tuple(f.name for f in fields(TransformerConfig) if f.name != "vocab_size")


def check_architecture(values: dict[str, Any]) -> None:
    """Raise `ValueError` naming the problem when the architecture fields in `values` make no valid model."""
    TransformerConfig(vocab_size=1, **{name: values[name] for name in ARCHITECTURE_FIELDS if name in values})
