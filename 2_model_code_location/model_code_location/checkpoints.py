"""Training checkpoints: the whole training state, written atomically every `checkpoint_interval` steps, so that a
run killed mid-training (a lost node, an out-of-memory kill, a killed run worker) resumes from the last checkpoint on
its retry instead of starting over: a killed hour-long GPU run loses minutes, not the hour.

A checkpoint is found by its key, the sha256 of the training code version, the hyperparameters that shape the
result and the token data: one from other data, code or config is never resumed. It is one safetensors file (model,
optimizer and best weights, random generator states) with the rest of the state as JSON in its header: no pickle.
It lives beside the pipeline's data, under the IO manager's storage root with its object-store settings, so a retry
on another machine finds it too.
Imports torch: import only inside the asset body.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from shared_code_location.storage import storage_errors
from shared_code_location.storage_formats import StorageFormat, TensorBundle, atomic_write_bytes, decode, encode

if TYPE_CHECKING:
    from upath import UPath

#: Settings that change how often something is written or logged, not what is learned: not part of the key.
_NOT_IN_KEY = frozenset({"checkpoint_interval", "log_interval", "device"})


def checkpoint_key(code_version: str, hp: dict[str, Any], *token_arrays: np.ndarray) -> str:
    """The sha256 of the training code version, the hyperparameters and the token data."""
    digest = hashlib.sha256(code_version.encode())
    digest.update(json.dumps({k: v for k, v in hp.items() if k not in _NOT_IN_KEY}, sort_keys=True).encode())
    for array in token_arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


@dataclass
class TrainingState:
    """Everything the loop needs to go on exactly where it stopped."""

    step: int  # steps completed
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    best: dict[str, torch.Tensor] | None
    best_loss: float
    best_step: int
    history: dict[str, list[float]]
    train_seconds: float
    running_loss: float
    running_steps: int
    generator_state: torch.Tensor
    torch_rng_state: torch.Tensor


class CheckpointStore:
    """The checkpoint of one training (one key) under `root`: the IO manager's storage root (`.root`), a folder or
    object storage, reached with the same settings."""

    def __init__(self, root: UPath, key: str):
        self.path = root / "checkpoints" / "model" / f"{key}.safetensors"
        self.key = key

    def save(self, state: TrainingState) -> None:
        """Write `state` atomically: a reader (the retry) sees the previous checkpoint or this one, never half."""
        tensors = {f"model.{k}": _array(v) for k, v in state.model.items()}
        tensors |= {f"best.{k}": _array(v) for k, v in (state.best or {}).items()}
        optimizer_state = {}
        for index, values in state.optimizer["state"].items():
            for name, value in values.items():
                tensors[f"optimizer.{index}.{name}"] = _array(value)
            optimizer_state[str(index)] = sorted(values)
        tensors["rng.generator"] = state.generator_state.numpy()
        tensors["rng.torch"] = state.torch_rng_state.numpy()
        metadata = {
            "key": self.key,
            "step": state.step,
            "best_loss": state.best_loss,
            "best_step": state.best_step,
            "has_best": state.best is not None,
            "history": state.history,
            "train_seconds": state.train_seconds,
            "running_loss": state.running_loss,
            "running_steps": state.running_steps,
            "optimizer_state": optimizer_state,
            "param_groups": state.optimizer["param_groups"],
            "dtypes": {k: str(v.dtype).removeprefix("torch.") for k, v in state.model.items()},
        }
        with storage_errors(self.path):
            atomic_write_bytes(self.path, encode(StorageFormat.SAFETENSORS, TensorBundle(tensors, metadata)))

    def load(self) -> TrainingState | None:
        """The saved state, or None when there is none (or it belongs to another key)."""
        with storage_errors(self.path):
            if not self.path.exists():
                return None
            bundle = decode(StorageFormat.SAFETENSORS, self.path.read_bytes())
        meta, arrays = bundle.metadata, bundle.tensors
        if meta.get("key") != self.key:
            return None

        def prefixed(prefix: str) -> dict[str, torch.Tensor]:
            return {k[len(prefix) :]: torch.from_numpy(np.array(v)) for k, v in arrays.items() if k.startswith(prefix)}

        optimizer = {
            "state": {
                int(index): {name: torch.from_numpy(np.array(arrays[f"optimizer.{index}.{name}"])) for name in names}
                for index, names in meta["optimizer_state"].items()
            },
            "param_groups": meta["param_groups"],
        }
        return TrainingState(
            step=meta["step"],
            model=prefixed("model."),
            optimizer=optimizer,
            best=prefixed("best.") if meta["has_best"] else None,
            best_loss=meta["best_loss"],
            best_step=meta["best_step"],
            history=meta["history"],
            train_seconds=meta["train_seconds"],
            running_loss=meta["running_loss"],
            running_steps=meta["running_steps"],
            generator_state=torch.from_numpy(np.array(arrays["rng.generator"])),
            torch_rng_state=torch.from_numpy(np.array(arrays["rng.torch"])),
        )

    def clear(self) -> None:
        """Remove the checkpoint once its training has finished."""
        with storage_errors(self.path):
            if self.path.exists():
                self.path.unlink()


def _array(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().to("cpu").numpy()
