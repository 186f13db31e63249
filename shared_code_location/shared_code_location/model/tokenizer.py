"""Character-level tokenizer with a deterministic vocabulary and a defined rule for unseen symbols.

Rules:
- The vocabulary is every distinct character of the training text, sorted by code point, after one reserved
  entry: id 0 is the unknown symbol `UNKNOWN_TOKEN` (U+FFFD, the Unicode replacement character).
- Encoding maps a character absent from the vocabulary to id 0 (or raises, with `strict=True`).
- Decoding maps id 0 back to U+FFFD, so `decode(encode(text)) == text` for every text made of known characters.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

UNKNOWN_TOKEN = "\ufffd"
UNKNOWN_ID = 0
VOCABULARY_FORMAT = "char-vocabulary/v1"


class UnknownSymbolError(ValueError):
    """Raised by strict encoding for a character the vocabulary does not hold."""


@dataclass(frozen=True)
class CharTokenizer:
    """Maps characters to ids and back. Build it with `fit` or `from_json`; persist it with `to_json`."""

    symbols: tuple[str, ...]
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.symbols or self.symbols[UNKNOWN_ID] != UNKNOWN_TOKEN:
            raise ValueError(f"a vocabulary starts with the unknown symbol {UNKNOWN_TOKEN!r} at id {UNKNOWN_ID}")
        if len(set(self.symbols)) != len(self.symbols) or any(len(s) != 1 for s in self.symbols):
            raise ValueError("a character vocabulary holds distinct single characters")
        object.__setattr__(self, "_index", {symbol: i for i, symbol in enumerate(self.symbols)})

    @classmethod
    def fit(cls, texts: str | Iterable[str]) -> CharTokenizer:
        """A tokenizer whose vocabulary is the distinct characters of `texts`, in code-point order."""
        seen: set[str] = set()
        for text in [texts] if isinstance(texts, str) else texts:
            seen.update(text)
        seen.discard(UNKNOWN_TOKEN)
        return cls((UNKNOWN_TOKEN, *sorted(seen)))

    @property
    def vocab_size(self) -> int:
        """Number of ids, the unknown id included."""
        return len(self.symbols)

    @property
    def id_dtype(self) -> np.dtype:
        """The smallest unsigned integer type that holds every id."""
        return np.dtype(np.uint16 if self.vocab_size <= 2**16 else np.uint32)

    def encode(self, text: str, *, strict: bool = False) -> np.ndarray:
        """Token ids of `text`; unknown characters become `UNKNOWN_ID`, or raise when `strict`."""
        index = self._index
        if strict:
            missing = sorted({ch for ch in text if ch not in index})
            if missing:
                raise UnknownSymbolError(f"characters not in the vocabulary: {''.join(missing)!r}")
        return np.fromiter((index.get(ch, UNKNOWN_ID) for ch in text), dtype=self.id_dtype, count=len(text))

    def decode(self, ids: Iterable[int] | np.ndarray) -> str:
        """The text of `ids`; raises ValueError for an id outside the vocabulary."""
        symbols = self.symbols
        try:
            return "".join(symbols[int(i)] for i in ids)
        except IndexError as error:
            raise ValueError(f"token id outside the vocabulary of {self.vocab_size}") from error

    def unknown_rate(self, text: str) -> float:
        """Fraction of the characters of `text` absent from the vocabulary."""
        if not text:
            return 0.0
        index = self._index
        return sum(1 for ch in text if ch not in index) / len(text)

    def to_json(self) -> dict[str, Any]:
        """A JSON-able description, the form stored as the `etl/vocabulary` asset and shipped with a release."""
        return {
            "format": VOCABULARY_FORMAT,
            "level": "char",
            "unknown_token": UNKNOWN_TOKEN,
            "unknown_id": UNKNOWN_ID,
            "vocab_size": self.vocab_size,
            "symbols": list(self.symbols),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CharTokenizer:
        """The inverse of `to_json`; names what is wrong with a malformed vocabulary."""
        if not isinstance(data, dict) or data.get("format") != VOCABULARY_FORMAT:
            raise ValueError(f"not a {VOCABULARY_FORMAT} vocabulary")
        symbols = tuple(data["symbols"])
        if len(symbols) != data.get("vocab_size"):
            raise ValueError("vocabulary size does not match its symbols")
        return cls(symbols)
