"""Distributed training, for real: `train()` as two DDP ranks (gloo), and `model/trained_model` training an
experiment of two workers on a real local Ray cluster through Dagster Pipes, with its faults: a worker killed with
-9 mid-training, an unreachable cluster, a cluster that dies mid-training, and the run's retry.

One Ray cluster (two CPUs, loopback) is shared by the module, as `ML_PIPELINE_RAY_ADDRESS` would point at an existing
one; the dying-cluster case uses the cluster a training starts for itself, the default. Tiny preset throughout.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import signal
import threading
import time
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import torch

from model_code_location.checkpoints import CheckpointStore
from model_code_location.experiments import Experiment
from model_code_location.presets import TrainingConfig
from model_code_location.ray_cluster import RAY_RESOURCE_KEY, LocalRayCluster, RayCluster, cluster_processes
from model_code_location.trained_model import build_trained_model
from model_code_location.training import train
from shared_code_location import settings
from shared_code_location.contract.asset_keys import TRAIN_TOKENS, TRAINED_MODEL, VALIDATION_TOKENS, VOCABULARY
from shared_code_location.contract.experiments import EXPERIMENTS
from shared_code_location.contract.io_manager import PipelineIOManager
from shared_code_location.contract.storage_formats import StorageFormat, decode, encode
from shared_code_location.contract.token_shards import TokenShards, store_array
from shared_code_location.runtime.net import free_port

CORPUS = settings.project_root() / "example_input_files_resource" / "tinyshakespeare.txt"
#: The distributed experiment: the tiny preset on two workers, long enough to be interrupted twice, logging often
#: (the steps a restart redoes are counted from the last step logged).
OVERRIDES = {"max_iters": 600, "log_interval": 10, "checkpoint_interval": 100}
TWO_WORKERS = Experiment(name="ddp", preset="tiny", workers=2, overrides=OVERRIDES).declaration()
ONE_WORKER = Experiment(name="ddp", preset="tiny", overrides=OVERRIDES).declaration()


def tokens() -> tuple[np.ndarray, np.ndarray, int]:
    """Real text: the first 220,000 characters of the corpus as ids, train and validation."""
    text = CORPUS.read_text(encoding="utf-8")[:220_000]
    symbols = sorted(set(text))
    ids = np.array([symbols.index(c) + 1 for c in text], dtype=np.uint16)
    return ids[:200_000], ids[200_000:], len(symbols) + 1


def hyperparameters(declaration: dict) -> dict:
    """The hyperparameters the asset trains `declaration` with (experiment 'ddp')."""
    return TrainingConfig().resolved(declaration, environment=False) | {"experiment": "ddp"}


@pytest.fixture(scope="module")
def storage(tmp_path_factory) -> Path:
    """Pipeline storage holding the ETL's outputs, as the IO manager would have written them."""
    root = tmp_path_factory.mktemp("storage")
    train_ids, validation_ids, vocab_size = tokens()
    etl = root / "etl"
    etl.mkdir()
    (etl / "vocabulary.json").write_bytes(encode(StorageFormat.JSON, {"vocab_size": vocab_size}))
    for split, ids in (("train", train_ids), ("validation", validation_ids)):
        manifest = store_array(root, f"etl/shards/{split}.npy", ids, vocab_size, split)
        (etl / f"{split}_tokens.json").write_bytes(encode(StorageFormat.TOKEN_SHARDS, manifest))
    return root


@pytest.fixture(scope="module")
def instance(tmp_path_factory):
    with dg.instance_for_test(temp_dir=str(tmp_path_factory.mktemp("home"))) as instance:
        instance.add_dynamic_partitions(EXPERIMENTS.name, ["ddp"])
        yield instance


@pytest.fixture(scope="module")
def ray_cluster():
    """One real Ray cluster on 127.0.0.1 (2 CPUs) for the module; after it, none of its processes is left."""
    cluster = LocalRayCluster(num_cpus=2).start()
    yield cluster
    gcs = cluster.gcs_address
    cluster.stop()
    assert cluster_processes(gcs) == []


def _spawned_rank(rank: int, world: int, port: int, hp: dict, out: str) -> None:
    """One rank of a two-process gloo group outside Ray; rank 0 saves the trained weights to `out`."""
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        train_ids, validation_ids, vocab_size = tokens()
        result = train(train_ids, validation_ids, vocab_size, hp, log=lambda _: None, device=torch.device("cpu"))
        if rank == 0:
            arrays = {name: t.numpy() for name, t in result.model.state_dict().items()}
            np.savez(out, **arrays, __validation__=np.array(result.history["validation_loss"]))
        else:
            assert result is None  # rank 0 speaks for the group
    finally:
        torch.distributed.destroy_process_group()


@pytest.fixture(scope="module")
def two_rank_reference(tmp_path_factory) -> dict[str, np.ndarray]:
    """The distributed experiment trained uninterrupted by two gloo ranks started here (no Ray): the weights any
    two-worker run of it must end with."""
    out = tmp_path_factory.mktemp("reference") / "weights.npz"
    hp = hyperparameters(TWO_WORKERS)
    torch.multiprocessing.spawn(_spawned_rank, args=(2, free_port(), hp, str(out)), nprocs=2)
    return dict(np.load(out))


def test_two_ranks_learn_what_one_process_learns(two_rank_reference):
    # Each rank trains on its half of the very batch one process would draw: the same model, up to the order of
    # floating-point sums.
    torch.set_num_threads(1)
    train_ids, validation_ids, vocab_size = tokens()
    hp = hyperparameters(ONE_WORKER) | {"device": "cpu"}
    alone = train(train_ids, validation_ids, vocab_size, hp, log=lambda _: None)
    together = two_rank_reference["__validation__"]
    assert len(together) == len(alone.history["validation_loss"])
    assert np.abs(together - np.array(alone.history["validation_loss"])).max() < 0.01
    assert together[-1] < together[0] - 1.5  # it learns


def test_the_batch_must_split_evenly_between_workers():
    odd = Experiment(name="odd", preset="tiny", workers=3).declaration()
    with pytest.raises(ValueError, match=r"batch_size \(16\) must be a multiple of workers \(3\)"):
        TrainingConfig().resolved(odd, environment=False)
    # A forced preset keeps the experiment's workers (it replaces what is learned, not where).
    assert TrainingConfig(preset="quick").resolved(TWO_WORKERS, environment=False)["workers"] == 2


class _LogWatch(logging.Handler):
    """The run's own log lines (training progress, through Pipes for Ray), as they are logged; calls
    `on_line(line)` for each."""

    def __init__(self, on_line=lambda line: None):
        super().__init__()
        self.lines: list[str] = []
        self.on_line = on_line

    def emit(self, record: logging.LogRecord) -> None:
        meta = getattr(record, "dagster_meta", None) or {}
        if meta.get("dagster_event") is None:
            line = meta.get("orig_message", record.getMessage())
            self.lines.append(line)
            self.on_line(line)


def materialize(instance, storage: Path, declaration: dict, cluster: RayCluster, watch: _LogWatch | None = None):
    """Materialize experiment 'ddp' of `model/trained_model`, declared as `declaration`, on `cluster`."""
    model = build_trained_model({"ddp": declaration})
    watch = watch or _LogWatch()
    handlers = instance.get_handlers
    instance.get_handlers = lambda: [*handlers(), watch]  # as `cli.py run` echoes the assets' progress
    try:
        return dg.materialize(
            [model, VOCABULARY.spec(), TRAIN_TOKENS.spec(), VALIDATION_TOKENS.spec()],
            selection=[TRAINED_MODEL.key],
            partition_key="ddp",
            instance=instance,
            resources={"io_manager": PipelineIOManager(base_uri=str(storage)), RAY_RESOURCE_KEY: cluster},
            raise_on_error=False,
        )
    finally:
        instance.get_handlers = handlers


def materialization(result) -> dict:
    return {
        k: v.value
        for k, v in result.asset_materializations_for_node(TRAINED_MODEL.key.to_python_identifier())[0].metadata.items()
    }


def failure(result) -> str:
    errors = [e.event_specific_data.error for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert errors, "the run did not fail"
    error = errors[0]
    while error.cause is not None and error.cls_name.startswith("Dagster"):
        error = error.cause
    return error.message.strip()  # "module.ErrorClass: message"


def model_file(storage: Path) -> Path:
    return storage / "model" / "trained_model" / "ddp.safetensors"


def digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def descendants() -> set[int]:
    """This process's live descendants."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            state, ppid = stat.read_text().rsplit(")", 1)[1].split()[:2]
            if state != "Z":
                children.setdefault(int(ppid), []).append(int(stat.parent.name))
    found, todo = set(), [os.getpid()]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def wait_until(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def test_one_worker_trains_in_the_run_and_an_unreachable_cluster_fails_at_once_leaving_the_model(instance, storage):
    # One worker: in the run's own process (no cluster is even looked for).
    one = materialize(instance, storage, ONE_WORKER, RayCluster(address=f"127.0.0.1:{free_port()}"))
    assert one.success
    assert materialization(one)["workers"] == 1 and "ray_job_id" not in materialization(one)
    good = digest(model_file(storage))
    # Two workers, on a cluster that is not there: a clear error naming the address, in seconds, nothing written.
    address = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    two = materialize(instance, storage, TWO_WORKERS, RayCluster(address=address))
    seconds = time.monotonic() - started
    print(f"unreachable cluster: the run failed {seconds:.1f} s after it started")
    message = failure(two)
    assert (
        f"RayClusterError: the Ray cluster at http://{address} (ML_PIPELINE_RAY_ADDRESS) cannot be reached" in message
    )
    assert "Connection refused" in message
    assert seconds < 30
    assert digest(model_file(storage)) == good  # the last good model untouched


@pytest.fixture(scope="module")
def interrupted(instance, storage):
    """The two-worker experiment on the cluster a training starts for itself (the default), whose head is killed
    with -9 once the first checkpoint (step 100) is written: (result, seconds from the kill to the failure, the
    cluster's processes and this process's children left a moment after, whether the stored model is untouched)."""
    checkpoints = storage / "checkpoints" / "model"
    before, good = descendants(), digest(model_file(storage))
    killed: dict = {}

    def kill_the_cluster() -> None:
        wait_until(lambda: any(not p.name.endswith((".inputs.safetensors", ".result.safetensors"))
                               for p in checkpoints.glob("*.safetensors")), 600)  # fmt: skip
        head = next(
            pid for pid in descendants() - before if b"ray.scripts.scripts" in Path(f"/proc/{pid}/cmdline").read_bytes()
        )
        environ = Path(f"/proc/{head}/environ").read_bytes().split(b"\0")
        killed["gcs"] = next(v for v in environ if v.startswith(b"RAY_ADDRESS=")).decode().split("=", 1)[1]
        os.killpg(head, signal.SIGKILL)  # `ray start`, the GCS, the raylet, the dashboard: the head is gone
        killed["at"] = time.monotonic()

    killer = threading.Thread(target=kill_the_cluster, daemon=True)
    killer.start()
    result = materialize(instance, storage, TWO_WORKERS, RayCluster())
    seconds = time.monotonic() - killed["at"]
    killer.join(timeout=1)
    wait_until(lambda: not cluster_processes(killed["gcs"]), 5)
    untouched = digest(model_file(storage)) == good
    return result, seconds, cluster_processes(killed["gcs"]), descendants() - before, untouched


def test_a_cluster_that_dies_fails_the_run_clearly_and_leaves_no_process(interrupted, storage):
    result, seconds, left, children, untouched = interrupted
    print(f"dying cluster: the run failed {seconds:.1f} s after the cluster was killed")
    message = failure(result)
    assert "RayClusterError: the local Ray cluster at http://127.0.0.1:" in message, message
    assert "failed while training experiment 'ddp': its processes exited" in message
    assert seconds < 60
    assert left == [] and children == set()  # no worker, driver or agent of it outlives the run
    assert untouched  # the last good model
    hp = hyperparameters(TWO_WORKERS)
    from upath import UPath

    from model_code_location.checkpoints import checkpoint_key
    from model_code_location.trained_model import TRAINING_CODE_VERSION

    train_ids, validation_ids = (TokenShards.open(storage, f"etl/{s}_tokens.json") for s in ("train", "validation"))
    store = CheckpointStore(UPath(storage), checkpoint_key(TRAINING_CODE_VERSION, hp, train_ids, validation_ids))
    assert store.path.exists()  # what the retry resumes from


def test_the_retry_resumes_from_the_checkpoint_and_a_worker_killed_with_sigkill_is_restarted(
    interrupted, instance, storage, ray_cluster, two_rank_reference
):
    # The run's retry, on an existing cluster. Mid-way, one of its two workers is killed with -9: Ray Train starts
    # the worker group again, which resumes from the last checkpoint.
    killed: dict = {}

    def on_line(line: str) -> None:
        if line.startswith("step 250/") and not killed:
            worker = next(
                pid
                for pid in ray_cluster.processes()
                if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::RayTrainWorker")
            )
            os.kill(worker, signal.SIGKILL)
            killed["pid"] = worker

    watch = _LogWatch(on_line)
    result = materialize(instance, storage, TWO_WORKERS, RayCluster(address=ray_cluster.address), watch)
    assert result.success, failure(result)
    assert killed, "no worker was killed"
    lines = watch.lines
    # The training's own lines came back through Pipes, as a one-process run logs them.
    assert any(line.startswith("training 104,") and "× 2 workers" in line for line in lines), lines
    assert "resumed from the checkpoint at step 100" in "\n".join(lines)  # the retry: from the dead cluster's
    assert any(line.startswith("worker group 2 started") for line in lines)
    resumed = [line for line in lines if line.startswith("resumed from the checkpoint at step")]
    assert len(resumed) == 2, resumed  # the retry, then the restarted group
    assert any(line.startswith("step 600/600: train loss") for line in lines)
    metadata = materialization(result)
    print(f"worker killed with -9: {resumed[-1]}; steps redone: {metadata['steps_redone']}")
    assert metadata["worker_group_restarts"] == 1
    assert 0 <= metadata["steps_redone"] < OVERRIDES["checkpoint_interval"] + 60
    assert metadata["workers"] == 2 and metadata["ray_address"] == ray_cluster.address
    assert metadata["ray_job_id"].startswith("pipes-")
    # The same metadata as a one-process run (loss curve, figures, config), plus what Ray adds.
    in_process = {"validation_loss", "train_loss", "tokens_per_second", "parameters", "best_step", "wall_seconds",
                  "device", "workers", "summary", "preset", "experiment", "experiment_fingerprint",
                  "hyperparameters", "loss_curve"}  # fmt: skip
    assert in_process <= set(metadata)
    assert metadata["loss_curve"].startswith("![experiment ddp](data:image/png;base64,")
    assert "2 workers on Ray" in metadata["summary"]
    # Interrupted twice, it ends exactly where an uninterrupted two-rank run ends.
    stored = decode(StorageFormat.SAFETENSORS, model_file(storage).read_bytes())
    for name, array in stored.tensors.items():
        assert np.array_equal(array, two_rank_reference[name]), name
    assert np.allclose(stored.metadata["history"]["validation_loss"], two_rank_reference["__validation__"])
    # Nothing of the training is left beside the data.
    assert sorted(p.name for p in (storage / "checkpoints" / "model").iterdir()) == []
