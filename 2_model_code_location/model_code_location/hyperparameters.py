"""The training presets as plain data, and how an experiment's hyperparameters resolve from them.

No Dagster, no pydantic, no torch: `train()` takes the plain dict `hyperparameters()` returns, so training (and its
benchmark) runs on a machine that has only PyTorch and NumPy. `presets.TrainingConfig` (the Launchpad's config) and
the experiments YAML resolve through `resolve()` here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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
    # Eager: compiling costs a CPU about 40 s before the first step, more than a CPU preset trains (compilation.py).
    compile="off",
    # No early stopping: every step runs, and the best evaluation's weights are kept.
    patience=0,
    min_delta=0.0,
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
    # nanoGPT's Shakespeare model for one data-centre GPU (H100/H200 class), tuned for time to a validation loss
    # of 1.40: a batch of 256 windows fills the GPU (64 left it 91 % idle), lr 2e-3 decays over 1,000 steps, the
    # whole validation split is evaluated every 50 steps (milliseconds each) and training stops once 4 evaluations
    # in a row improve on the best by less than 0.002; compile where it pays (compilation.py). docs/figures.md has
    # the measured figures.
    "gpu": _COMMON
    | dict(n_layer=6, n_head=6, n_embd=384, block_size=256, batch_size=256, max_iters=1000, learning_rate=2e-3)
    | dict(dropout=0.2, min_learning_rate=2e-4, warmup_iters=50, eval_tokens=0, eval_interval=50, log_interval=50)
    | dict(compile="auto", patience=4, min_delta=0.002),
    # Seconds on a CPU, for tests and smoke runs: past the bigram baseline on Tiny Shakespeare, not on every corpus.
    "tiny": _COMMON
    | dict(n_layer=2, n_head=2, n_embd=64, block_size=32, batch_size=16, max_iters=300, learning_rate=4e-3)
    | dict(min_learning_rate=4e-4, warmup_iters=20, weight_decay=0.0, eval_interval=100, eval_tokens=8192)
    | dict(log_interval=50, checkpoint_interval=100),
}

#: The preset of an experiment that names none.
DEFAULT_PRESET = "quick"
#: The seed of runs that set none.
DEFAULT_SEED = 1337
#: Where training runs: `auto` is CUDA, else Apple's MPS, else the CPU (`transformer.pick_device`).
DEVICES = ("auto", "cpu", "cuda", "mps")
#: `compile`: `on` compiles the transformer's block, `off` trains eager, `auto` compiles where it pays.
COMPILE_CHOICES = ("auto", "on", "off")

#: How an experiment runs unless it says otherwise: in the run's own process. More than one worker trains
#: data-parallel on Ray (see `ray_training.py`), each worker with these CPUs (its torch threads) and GPUs. One worker
#: with a GPU trains in the run's own process, on that machine's GPU.
SCALING_DEFAULTS: dict[str, int] = {"workers": 1, "cpus_per_worker": 1, "gpus_per_worker": 0}
#: The scaling fields: where and on how many workers training runs, not what it learns. A preset never sets them,
#: so `--preset` or `$ML_PIPELINE_TRAINING_PRESET` keeps an experiment's workers.
SCALING_FIELDS = tuple(SCALING_DEFAULTS)


class ScalingError(ValueError):
    """Workers, CPUs or GPUs per worker that cannot train the experiment's hyperparameters."""


def resolve(preset: str, overrides: Mapping[str, Any] = (), scaling: Mapping[str, Any] = ()) -> dict[str, Any]:
    """The hyperparameters of `preset` with `overrides` (any field) and `scaling` (workers, ...) on top, plus the
    device and seed defaults; checked (`check`). Raises `ValueError` naming the problem."""
    if preset not in PRESETS:
        raise ValueError(f"preset {preset!r} is not one of {', '.join(PRESETS)}")
    values = dict(PRESETS[preset]) | {"device": "auto", "seed": DEFAULT_SEED} | SCALING_DEFAULTS
    values |= dict(scaling) | dict(overrides)
    values["preset"] = preset
    check(values)
    return values


def hyperparameters(preset: str = DEFAULT_PRESET, **overrides: Any) -> dict[str, Any]:
    """`resolve(preset, overrides)`: what `train()` takes, without Dagster (a benchmark, a notebook)."""
    return resolve(preset, overrides)


def check(values: Mapping[str, Any]) -> None:
    """Raise `ValueError` (`ScalingError` for the workers) for hyperparameters that cannot train together."""
    check_architecture(dict(values))  # the model's own rules (n_embd a multiple of n_head, ...), before training
    if values["min_learning_rate"] > values["learning_rate"]:
        raise ValueError("min_learning_rate must not exceed learning_rate")
    if values["device"] not in DEVICES:
        raise ValueError(f"device {values['device']!r} is not one of {', '.join(DEVICES)}")
    if values["compile"] not in COMPILE_CHOICES:
        raise ValueError(f"compile {values['compile']!r} is not one of {', '.join(COMPILE_CHOICES)}")
    if values["patience"] < 0 or values["min_delta"] < 0:
        raise ValueError("patience and min_delta must not be negative (patience 0: no early stopping)")
    if values["batch_size"] % values["workers"]:
        raise ScalingError(
            f"batch_size ({values['batch_size']}) must be a multiple of workers ({values['workers']}): each "
            "worker trains on an equal share of every batch"
        )
    if values["gpus_per_worker"] and values["device"] not in ("auto", "cuda"):
        raise ScalingError(f"device {values['device']!r} with gpus_per_worker > 0: the GPUs would sit idle")
    if values["workers"] > 1 and not values["gpus_per_worker"] and values["device"] == "cuda":
        raise ScalingError("device 'cuda' with more than one worker needs gpus_per_worker >= 1")
