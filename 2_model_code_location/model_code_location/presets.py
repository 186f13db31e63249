"""Training hyperparameters: a `dg.Config` editable in the Launchpad, with named presets. No torch imported here.

The presets themselves are plain data in `hyperparameters.py`, which training reads without Dagster."""

import enum
from collections.abc import Mapping
from typing import Any

import dagster as dg
from pydantic import Field

from model_code_location.hyperparameters import (
    COMPILE_CHOICES,
    DEFAULT_PRESET,
    DEFAULT_SEED,
    DEVICES,
    PRESETS,
    SCALING_DEFAULTS,
    SCALING_FIELDS,
    ScalingError,
    resolve,
)
from shared_code_location import settings

__all__ = [
    "DEFAULT_PRESET",
    "DEFAULT_SEED",
    "PRESETS",
    "SCALING_DEFAULTS",
    "SCALING_FIELDS",
    "Compile",
    "Device",
    "Preset",
    "ScalingError",
    "TrainingConfig",
    "forced_preset",
]

#: The preset names as a choice in the Launchpad (and in `python -m shared_code_location.runtime.runs describe`).
Preset = enum.Enum("Preset", {name: name for name in PRESETS}, type=str)

#: Where training runs.
Device = enum.Enum("Device", {name: name for name in DEVICES}, type=str)

#: Whether training compiles the model (`compilation.py`). In YAML, quote "on" and "off" (YAML reads them as
#: booleans; the experiments file accepts either).
Compile = enum.Enum("Compile", {name: name for name in COMPILE_CHOICES}, type=str)


def forced_preset() -> str | None:
    """`$ML_PIPELINE_TRAINING_PRESET`, if set: a preset that replaces every experiment's own, as `--preset` does
    (a smoke-test deployment that trains `tiny` everywhere, say).

    Read when a run starts, not when the location loads: a bad value fails that run with this message instead of
    taking the whole location (and its sensors and schedules) down.
    """
    preset = settings.TRAINING_PRESET.get()
    if preset and preset not in PRESETS:
        raise ValueError(
            f"{settings.TRAINING_PRESET.name}={preset!r} is not a preset; choose one of {', '.join(PRESETS)}"
        )
    return preset


class TrainingConfig(dg.Config):
    """Run config of `model/trained_model`, on top of the run's experiment (its partition, declared in
    `defs/experiments/defs.yaml`). A `preset` here replaces the experiment (its preset and overrides); any other
    field set here overrides that one field. Empty: the experiment as declared."""

    preset: Preset | None = Field(  # type: ignore[valid-type]
        default=None,
        description=f"one of {', '.join(PRESETS)}; replaces the experiment's preset and overrides",
    )
    device: Device | None = Field(  # type: ignore[valid-type]
        default=None, description="auto: CUDA when present, else Apple's MPS, else the CPU"
    )
    seed: int | None = None
    n_layer: int | None = Field(default=None, ge=1)
    n_head: int | None = Field(default=None, ge=1)
    n_embd: int | None = Field(default=None, ge=1)
    block_size: int | None = Field(default=None, ge=2)
    dropout: float | None = Field(default=None, ge=0.0, lt=1.0)
    batch_size: int | None = Field(default=None, ge=1)
    max_iters: int | None = Field(default=None, ge=1)
    learning_rate: float | None = Field(default=None, gt=0.0)
    min_learning_rate: float | None = Field(default=None, ge=0.0)
    warmup_iters: int | None = Field(default=None, ge=0)
    weight_decay: float | None = Field(default=None, ge=0.0)
    grad_clip: float | None = Field(default=None, ge=0.0, description="0 disables clipping")
    eval_interval: int | None = Field(default=None, ge=1)
    eval_tokens: int | None = Field(default=None, ge=0, description="validation tokens per evaluation; 0: all")
    log_interval: int | None = Field(default=None, ge=1)
    checkpoint_interval: int | None = Field(default=None, ge=0, description="steps between checkpoints; 0: none")
    compile: Compile | None = Field(  # type: ignore[valid-type]
        default=None,
        description="torch.compile the transformer's block: on, off, or auto (where it pays: on a GPU, for a run "
        "long enough to earn back the warm-up)",
    )
    patience: int | None = Field(
        default=None, ge=0, description="evaluations without improvement before training stops; 0: never stops early"
    )
    min_delta: float | None = Field(
        default=None, ge=0.0, description="the smallest drop in validation loss that counts as an improvement"
    )
    workers: int | None = Field(
        default=None, ge=1, description="data-parallel workers; more than 1 trains on Ray (ML_PIPELINE_RAY_ADDRESS)"
    )
    cpus_per_worker: int | None = Field(default=None, ge=1, description="CPUs (torch threads) of each Ray worker")
    gpus_per_worker: int | None = Field(default=None, ge=0, description="GPUs of each Ray worker")

    def resolved(self, experiment: Mapping[str, Any] | None = None, environment: bool = True) -> dict[str, Any]:
        """The hyperparameters: the preset (this config's, else `$ML_PIPELINE_TRAINING_PRESET` unless
        `environment` is off, else the experiment's, else the default), then the experiment's overrides (unless a
        preset was forced), then this config's fields; plus device and seed. `experiment` is a declaration
        `{"preset": ..., "overrides": {...}}` as in the experiments YAML."""
        experiment = experiment or {}
        if forced := (self.preset.value if self.preset else (forced_preset() if environment else None)):
            preset, overrides = forced, {}
        else:
            preset, overrides = experiment.get("preset") or DEFAULT_PRESET, dict(experiment.get("overrides") or {})
        mine = {k: getattr(v, "value", v) for k, v in self.model_dump().items() if k != "preset" and v is not None}
        return resolve(preset, overrides | mine, dict(experiment.get("scaling") or {}))
