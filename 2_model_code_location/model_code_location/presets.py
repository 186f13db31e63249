"""Training hyperparameters: a `dg.Config` editable in the Launchpad, with named presets. No torch imported here."""

import enum
from collections.abc import Mapping
from typing import Any

import dagster as dg
from pydantic import Field

from shared_code_location import settings
from shared_code_location.model.config import check_architecture

#: What every preset shares unless it says otherwise.
_COMMON: dict[str, Any] = dict(
    dropout=0.0,
    min_learning_rate=1e-4,
    warmup_iters=100,
    weight_decay=0.1,
    grad_clip=1.0,
    eval_interval=250,
    log_interval=100,
    # A run killed mid-training resumes from the last checkpoint on its retry (see checkpoints.py).
    checkpoint_interval=250,
)

#: Each preset is a complete set of hyperparameters; any field set in `TrainingConfig` overrides it.
PRESETS: dict[str, dict[str, Any]] = {
    # About a minute of training on two CPU cores (docs/figures.md has the measured loss and time). Found with the
    # experiments (defs/experiments/defs.yaml and the leaderboard): against nanoGPT's CPU recipe with 3x its learning
    # rate (the previous-quick experiment), twice the batch with one layer fewer and a wider embedding learns more
    # per second of CPU.
    "quick": _COMMON
    | dict(n_layer=3, n_head=4, n_embd=160, block_size=64, batch_size=24, max_iters=1150, learning_rate=3e-3)
    | dict(eval_tokens=32768),
    # nanoGPT's Shakespeare recipe for a GPU. It overfits after ~2500 iterations: the best checkpoint is kept.
    "gpu": _COMMON
    | dict(n_layer=6, n_head=6, n_embd=384, block_size=256, batch_size=64, max_iters=5000, learning_rate=1e-3)
    | dict(dropout=0.2, eval_tokens=0),
    # Seconds on a CPU, for tests and smoke runs: past the bigram baseline on Tiny Shakespeare, not on every corpus.
    "tiny": _COMMON
    | dict(n_layer=2, n_head=2, n_embd=64, block_size=32, batch_size=16, max_iters=300, learning_rate=4e-3)
    | dict(min_learning_rate=4e-4, warmup_iters=20, weight_decay=0.0, eval_interval=100, eval_tokens=8192)
    | dict(log_interval=50, checkpoint_interval=100),
}


#: The preset names as a choice in the Launchpad (and in `python -m shared_code_location.runtime.runs describe`).
Preset = enum.Enum("Preset", {name: name for name in PRESETS}, type=str)

#: Where training runs.
Device = enum.Enum("Device", {name: name for name in ("auto", "cpu", "cuda")}, type=str)

#: The preset of an experiment that names none.
DEFAULT_PRESET = "quick"

#: How an experiment runs unless it says otherwise: in the run's own process. More than one worker trains
#: data-parallel on Ray (see `ray_training.py`), each worker with these CPUs (its torch threads) and GPUs.
SCALING_DEFAULTS: dict[str, int] = {"workers": 1, "cpus_per_worker": 1, "gpus_per_worker": 0}
#: The scaling fields: where and on how many workers training runs, not what it learns. A preset never sets them,
#: so `--preset` or `$ML_PIPELINE_TRAINING_PRESET` keeps an experiment's workers.
SCALING_FIELDS = tuple(SCALING_DEFAULTS)


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


class ScalingError(ValueError):
    """Workers, CPUs or GPUs per worker that cannot train the experiment's hyperparameters."""


class TrainingConfig(dg.Config):
    """Run config of `model/trained_model`, on top of the run's experiment (its partition, declared in
    `defs/experiments/defs.yaml`). A `preset` here replaces the experiment (its preset and overrides); any other
    field set here overrides that one field. Empty: the experiment as declared."""

    preset: Preset | None = Field(  # type: ignore[valid-type]
        default=None,
        description=f"one of {', '.join(PRESETS)}; replaces the experiment's preset and overrides",
    )
    device: Device | None = Field(default=None, description="auto: CUDA when present, else CPU")  # type: ignore[valid-type]
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
        if preset not in PRESETS:
            raise ValueError(f"preset {preset!r} is not one of {', '.join(PRESETS)}")
        mine = {k: getattr(v, "value", v) for k, v in self.model_dump().items() if k != "preset" and v is not None}
        values = dict(PRESETS[preset]) | {"device": "auto", "seed": DEFAULT_SEED} | SCALING_DEFAULTS
        values |= dict(experiment.get("scaling") or {}) | overrides | mine
        values["preset"] = preset
        check_architecture(values)  # the model's own rules (n_embd a multiple of n_head, ...), before training
        if values["min_learning_rate"] > values["learning_rate"]:
            raise ValueError("min_learning_rate must not exceed learning_rate")
        if values["batch_size"] % values["workers"]:
            raise ScalingError(
                f"batch_size ({values['batch_size']}) must be a multiple of workers ({values['workers']}): each "
                "worker trains on an equal share of every batch"
            )
        if values["workers"] > 1 and values["gpus_per_worker"] and values["device"] == "cpu":
            raise ScalingError("device 'cpu' with gpus_per_worker > 0: the workers' GPUs would sit idle")
        if values["workers"] > 1 and not values["gpus_per_worker"] and values["device"] == "cuda":
            raise ScalingError("device 'cuda' with more than one worker needs gpus_per_worker >= 1")
        return values


#: The seed of runs that set none.
DEFAULT_SEED = 1337
