"""What a CPU-only machine cannot run: a GPU experiment (skipped with one line), and what reads its partition."""

import dagster as dg
import pytest

from shared_code_location import settings
from shared_code_location.contract.experiments import EXPERIMENTS, GPUS_METADATA_KEY
from shared_code_location.runtime.placement import cuda_devices, gpu_shortfall, unrunnable
from shared_code_location.runtime.staleness import Target

pytestmark = pytest.mark.skipif(cuda_devices() > 0, reason="these cases are of a machine without a CUDA GPU")

MODEL = dg.AssetKey(["model", "trained_model"])
REPORT = dg.AssetKey(["evaluate", "report"])


def test_a_gpu_experiment_needs_this_machines_gpus_unless_a_ray_cluster_provides_them(monkeypatch):
    monkeypatch.delenv(settings.RAY_ADDRESS.name, raising=False)
    assert gpu_shortfall(workers=1, gpus_per_worker=0) is None
    assert gpu_shortfall(workers=1, gpus_per_worker=1) == (
        "trains on 1 CUDA GPU in the run's process (gpus_per_worker: 1) and this machine has none"
    )
    assert gpu_shortfall(workers=2, gpus_per_worker=1) == (
        "trains on 2 CUDA GPUs on 2 Ray workers of this machine (gpus_per_worker: 1) and this machine has none"
    )
    monkeypatch.setenv(settings.RAY_ADDRESS.name, "http://ray-head:8265")
    assert gpu_shortfall(workers=2, gpus_per_worker=1) is None  # the cluster's GPUs: Ray waits for them
    assert gpu_shortfall(workers=1, gpus_per_worker=1) is not None  # one worker trains here, cluster or not


def test_cli_run_skips_a_gpu_experiment_and_what_reads_it_and_runs_the_rest(monkeypatch):
    monkeypatch.delenv(settings.RAY_ADDRESS.name, raising=False)
    gpus = {"gpu": {"workers": 1, "gpus_per_worker": 1}}

    @dg.asset(key=MODEL, partitions_def=EXPERIMENTS, metadata={GPUS_METADATA_KEY: dg.MetadataValue.json(gpus)})
    def model() -> None: ...

    @dg.asset(key=REPORT, partitions_def=EXPERIMENTS, deps=[MODEL])
    def report() -> None: ...

    here = dg.Definitions(assets=[model, report])
    targets = [Target(MODEL, "gpu"), Target(MODEL, "quick"), Target(REPORT, "gpu"), Target(REPORT, "quick")]
    with dg.instance_for_test() as instance:
        assert unrunnable(here, instance, targets) == {
            Target(MODEL, "gpu"): "experiment gpu trains on 1 CUDA GPU in the run's process (gpus_per_worker: 1) "
            "and this machine has none",
            Target(REPORT, "gpu"): "its input model/trained_model[gpu] is skipped",
        }
        # The run's config can train it here anyway: on the CPU, without a GPU.
        config = {"ops": {"model__trained_model": {"config": {"gpus_per_worker": 0}}}}
        assert unrunnable(here, instance, targets[:2], config) == {}

        # In another location (the model is only a spec there): waits for the partition the model location skipped.
        elsewhere = dg.Definitions(assets=[dg.AssetSpec(MODEL, partitions_def=EXPERIMENTS), report])
        instance.add_dynamic_partitions(EXPERIMENTS.name, ["gpu", "quick"])
        instance.report_runless_asset_event(dg.AssetMaterialization(MODEL, partition="quick"))
        assert unrunnable(elsewhere, instance, [Target(REPORT, "gpu"), Target(REPORT, "quick")]) == {
            Target(REPORT, "gpu"): "its input model/trained_model[gpu] was never materialized"
        }
