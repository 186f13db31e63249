"""Train / validation / test as contiguous blocks of each file, so nothing leaks across, cut at line starts."""

from collections.abc import Callable

import dagster as dg
from pydantic import model_validator


class SplitConfig(dg.Config):
    """Fractions of each input file, in order: train first, then validation, then test (the rest)."""

    train_fraction: float = 0.9
    validation_fraction: float = 0.05

    @model_validator(mode="after")
    def _fractions_leave_a_test_split(self) -> "SplitConfig":
        if not (0 < self.train_fraction < 1 and 0 < self.validation_fraction < 1):
            raise ValueError("train_fraction and validation_fraction must each be between 0 and 1")
        if self.train_fraction + self.validation_fraction >= 1:
            raise ValueError(
                f"train_fraction + validation_fraction = {self.train_fraction + self.validation_fraction:g} "
                "leaves nothing for the test split; keep their sum below 1"
            )
        return self


def split_boundaries(
    length: int, train_fraction: float, validation_fraction: float, line_start_from: Callable[[int], int]
) -> tuple[int, int]:
    """Character offsets ending train and validation in a text of `length` characters, each moved forward to the
    next line start (`line_start_from(offset)`: the first offset at or after `offset` that starts a line, or
    `length`) so that no line is cut."""
    train_end = line_start_from(int(length * train_fraction))
    validation_end = max(train_end, line_start_from(int(length * (train_fraction + validation_fraction))))
    return train_end, validation_end


def text_line_start(text: str) -> Callable[[int], int]:
    """`line_start_from` for a text in memory."""

    def line_start_from(offset: int) -> int:
        newline = text.find("\n", offset)
        return len(text) if newline == -1 else newline + 1

    return line_start_from
