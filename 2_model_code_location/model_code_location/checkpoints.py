"""Training checkpoints: the whole training state, written atomically every `checkpoint_interval` steps, so that a
run killed mid-training (a lost node, an out-of-memory kill, a killed run worker) resumes from the last checkpoint on
its retry instead of starting over: a killed hour-long GPU run loses minutes, not the hour.

A checkpoint is found by its key, the sha256 of the training code version, the hyperparameters that shape the
result and the token data: one from other data, code or config is never resumed. It is one safetensors file (model,
optimizer and best weights, random generator states) with the rest of the state as JSON in its header: no pickle.
It lives beside the pipeline's data, under the IO manager's storage root with its object-store settings, so a retry
on another machine finds it too, and so do the workers of a Ray cluster (see `ray_training.py`): the same checkpoint
serves Dagster's retry of a run and Ray Train's restart of a worker group. Beside it, a distributed training keeps
its inputs (the manifests of the token shards it trains on) and its result (the best weights) until the asset has them.
Imports torch: import only inside the asset body.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from shared_code_location import settings
from shared_code_location.contract.storage import storage_errors, storage_path
from shared_code_location.contract.storage_formats import (
    StorageFormat,
    TensorBundle,
    atomic_write_bytes,
    decode,
    encode,
)
from shared_code_location.contract.token_shards import TokenShards
from shared_code_location.model.transformer import plain_state_dict

if TYPE_CHECKING:
    from upath import UPath

#: The header entry that says which training (key) a distributed training's inputs or result belong to.
_KEY_TAG = "checkpoint_key"
#: Settings that change how often something is written or logged, or where it runs, not what is learned: not part
#: of the key. The number of workers is: it changes the order of floating-point sums, so a resumed run would not
#: repeat an uninterrupted one.
#: Whether the block is compiled is not either: compiled and eager steps train the same model (up to rounding, as
#: on another device), so a retry that turned compiling off resumes the checkpoint.
_NOT_IN_KEY = frozenset(
    {"checkpoint_interval", "log_interval", "device", "cpus_per_worker", "gpus_per_worker", "compile"}
)


def checkpoint_key(code_version: str, hp: dict[str, Any], *token_data: TokenShards | np.ndarray) -> str:
    """The sha256 of the training code version, the hyperparameters and the token data (the shards' checksums and
    id maps, which change whenever a token would; an array's bytes)."""
    digest = hashlib.sha256(code_version.encode())
    digest.update(json.dumps({k: v for k, v in hp.items() if k not in _NOT_IN_KEY}, sort_keys=True).encode())
    for tokens in token_data:
        if isinstance(tokens, TokenShards):
            digest.update(tokens.fingerprint.encode())
        else:
            digest.update(np.ascontiguousarray(tokens).tobytes())
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
    torch_rng_states: list[torch.Tensor]  # torch's CPU random state of each rank (one, in one process)
    evaluations_without_improvement: int = 0  # early stopping's count (`patience`)


class CheckpointStore:
    """The checkpoint of one training (one key) under `root`: the IO manager's storage root (`.root`), a folder or
    object storage, reached with the same settings."""

    def __init__(self, root: UPath, key: str):
        self.root = root
        folder = root / "checkpoints" / "model"
        self.path = folder / f"{key}.safetensors"
        #: A distributed training's inputs (token manifests or arrays, vocabulary size) and its result (the weights).
        self.inputs_path = folder / f"{key}.inputs.safetensors"
        self.result_path = folder / f"{key}.result.safetensors"
        self.key = key

    def save(self, state: TrainingState) -> None:
        """Write `state` atomically: a reader (the retry) sees the previous checkpoint or this one, never half."""
        # The plain names, however the model was compiled or wrapped: a checkpoint resumes into any of them.
        tensors = {f"model.{k}": _array(v) for k, v in plain_state_dict(state.model).items()}
        tensors |= {f"best.{k}": _array(v) for k, v in plain_state_dict(state.best or {}).items()}
        optimizer_state = {}
        for index, values in state.optimizer["state"].items():
            for name, value in values.items():
                tensors[f"optimizer.{index}.{name}"] = _array(value)
            optimizer_state[str(index)] = sorted(values)
        tensors["rng.generator"] = state.generator_state.numpy()
        for rank, rng_state in enumerate(state.torch_rng_states):
            tensors["rng.torch" + (f".{rank}" if rank else "")] = rng_state.numpy()
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
            "evaluations_without_improvement": state.evaluations_without_improvement,
            "optimizer_state": optimizer_state,
            "param_groups": state.optimizer["param_groups"],
            "dtypes": {k: str(v.dtype).removeprefix("torch.") for k, v in plain_state_dict(state.model).items()},
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
            found = {k[len(prefix) :]: torch.from_numpy(np.array(v)) for k, v in arrays.items() if k.startswith(prefix)}
            return plain_state_dict(found)

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
            evaluations_without_improvement=meta.get("evaluations_without_improvement", 0),
            generator_state=torch.from_numpy(np.array(arrays["rng.generator"])),
            torch_rng_states=[
                torch.from_numpy(np.array(arrays["rng.torch" + (f".{rank}" if rank else "")]))
                for rank in range(1 + sum(name.startswith("rng.torch.") for name in arrays))
            ],
        )

    def clear(self) -> None:
        """Remove the checkpoint once its training has finished."""
        _remove(self.path)

    def save_inputs(
        self, train_ids: TokenShards | np.ndarray, validation_ids: TokenShards | np.ndarray, vocab_size: int
    ) -> None:
        """Write what a training on other machines reads: shards in the pipeline's storage as their manifests (the
        workers read the same shards, each memory-mapping them or caching them locally), arrays as arrays; and the
        vocabulary size."""
        tensors, manifests = {}, {}
        for name, tokens in (("train", train_ids), ("validation", validation_ids)):
            if isinstance(tokens, TokenShards) and tokens.root is not None:
                manifests[name] = {"manifest": tokens.manifest, "root": str(tokens.root)}
            elif isinstance(tokens, TokenShards):
                tensors[name] = np.concatenate([tokens.read(i) for i in range(len(tokens.shards))])
            else:
                tensors[name] = np.asarray(tokens)
        bundle = TensorBundle(tensors, {_KEY_TAG: self.key, "vocab_size": vocab_size, "manifests": manifests})
        with storage_errors(self.inputs_path):
            atomic_write_bytes(self.inputs_path, encode(StorageFormat.SAFETENSORS, bundle))

    def load_inputs(self) -> tuple[TokenShards | np.ndarray, TokenShards | np.ndarray, int]:
        """(train tokens, validation tokens, vocabulary size) as `save_inputs` wrote them."""
        bundle = self._read(self.inputs_path, "inputs")
        manifests = bundle.metadata.get("manifests", {})

        def tokens(name: str) -> TokenShards | np.ndarray:
            if name in manifests:  # the shards' storage, with this process's object-store settings
                return TokenShards(manifests[name]["manifest"], root=storage_path(manifests[name]["root"]))
            return np.asarray(bundle.tensors[name])

        return tokens("train"), tokens("validation"), bundle.metadata["vocab_size"]

    def save_result(self, bundle: TensorBundle) -> None:
        """Write the trained model (`to_tensor_bundle`), tagged with this key."""
        tagged = TensorBundle(bundle.tensors, {**bundle.metadata, _KEY_TAG: self.key})
        with storage_errors(self.result_path):
            atomic_write_bytes(self.result_path, encode(StorageFormat.SAFETENSORS, tagged))

    def load_result(self) -> TensorBundle | None:
        """The trained model `save_result` wrote, without its tag; None if there is none yet."""
        with storage_errors(self.result_path):
            if not self.result_path.exists():
                return None
        bundle = self._read(self.result_path, "result")
        metadata = {k: v for k, v in bundle.metadata.items() if k != _KEY_TAG}
        return TensorBundle(bundle.tensors, metadata)

    def clear_exchange(self) -> None:
        """Remove the inputs and the result of a distributed training, once the asset has its output."""
        _remove(self.inputs_path)
        _remove(self.result_path)

    def _read(self, path: UPath, what: str) -> TensorBundle:
        with storage_errors(path):
            if not path.exists():
                raise FileNotFoundError(
                    f"no training {what} at {path}: the Ray cluster and the Dagster run must reach the same storage "
                    f"({settings.STORAGE_URI.name}: object storage, or a folder mounted at the same path on both)"
                )
            bundle = decode(StorageFormat.SAFETENSORS, path.read_bytes())
        found = bundle.metadata.get(_KEY_TAG)
        if found != self.key:
            raise ValueError(f"{path} belongs to training {found}, not {self.key}")
        return bundle


def _remove(path: UPath) -> None:
    with storage_errors(path):
        if path.exists():
            path.unlink()


def _array(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().to("cpu").numpy()
