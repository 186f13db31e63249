"""Staleness as `cli.py run` sees it: missing, code changed, new upstream data, upstream rebuilt, config changed."""

import warnings

import dagster as dg
import numpy as np

from shared_code_location.contract.storage_formats import StorageFormat, TensorBundle
from shared_code_location.contract.versions import content_version, versioned_output
from shared_code_location.runtime.staleness import stale_assets

SOURCE = {"text": "first"}


class Scale(dg.Config):
    factor: int = 1


def build(code_version: str = "1"):
    @dg.asset(key=["etl", "source"])
    def source() -> dg.Output[str]:
        return versioned_output(SOURCE["text"], StorageFormat.TEXT)

    @dg.asset(key=["etl", "derived"], ins={"source": dg.AssetIn(["etl", "source"])}, code_version=code_version)
    def derived(config: Scale, source: str) -> str:
        return source * config.factor

    @dg.asset(key=["etl", "leaf"], ins={"derived": dg.AssetIn(["etl", "derived"])}, code_version="1")
    def leaf(derived: str) -> int:
        return len(derived)

    return dg.Definitions(assets=[source, derived, leaf])


def keys(stale: dict) -> dict[str, str]:
    return {str(target): reason for target, reason in stale.items()}


def test_reasons_an_asset_is_stale():
    SOURCE["text"] = "first"
    instance = dg.DagsterInstance.ephemeral()
    defs = build()
    assert set(keys(stale_assets(defs, instance)).values()) == {"never materialized"}
    job = defs.resolve_implicit_global_asset_job_def()
    assert job.execute_in_process(instance=instance).success
    assert stale_assets(defs, instance) == {}

    # The same bytes again: a new materialization, the same data version, nothing downstream stale.
    assert job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey(["etl", "source"])]).success
    assert stale_assets(defs, instance) == {}

    SOURCE["text"] = "second"
    assert job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey(["etl", "source"])]).success
    assert keys(stale_assets(defs, instance)) == {
        "etl/derived": "new data in etl/source",
        "etl/leaf": "upstream etl/derived is rebuilt",
    }
    assert job.execute_in_process(instance=instance).success

    assert keys(stale_assets(build(code_version="2"), instance)) == {
        "etl/derived": "code version 1 -> 2",
        "etl/leaf": "upstream etl/derived is rebuilt",
    }
    config = {"ops": {"etl__derived": {"config": {"factor": 3}}}}
    assert (
        keys(stale_assets(defs, instance, config))["etl/derived"]
        == "run config differs from the last materialization's"
    )
    assert job.execute_in_process(instance=instance, run_config=config).success
    assert stale_assets(defs, instance, config) == {}


def test_weights_version_ignores_header_timings():
    tensors = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}
    a = TensorBundle(tensors, {"config": {"n": 1}, "training_summary": {"wall_seconds": 1.0}})
    b = TensorBundle(tensors, {"config": {"n": 1}, "training_summary": {"wall_seconds": 2.0}})
    c = TensorBundle({"w": tensors["w"] + 1}, {"config": {"n": 1}})
    fmt = StorageFormat.SAFETENSORS
    assert content_version(fmt, a) == content_version(fmt, b) != content_version(fmt, c)


def test_partitions_are_stale_one_by_one():
    """Each experiment (partition) has its own staleness: new, trained, or its declaration changed."""
    from shared_code_location.contract.experiments import (
        DECLARED_METADATA_KEY,
        EXPERIMENTS,
        FINGERPRINT_METADATA_KEY,
        sync_partitions,
    )

    def build(declared: dict[str, str]) -> dg.Definitions:
        @dg.asset(key=["model", "trained"], partitions_def=EXPERIMENTS, metadata={DECLARED_METADATA_KEY: declared})
        def trained(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
            fingerprint = declared[context.partition_key]
            return dg.MaterializeResult(metadata={FINGERPRINT_METADATA_KEY: fingerprint})

        @dg.asset(key=["deploy", "board"], deps=[trained])
        def board() -> None:
            return None

        return dg.Definitions(assets=[trained, board])

    instance = dg.DagsterInstance.ephemeral()
    declared = {"a": "1", "b": "1"}
    defs = build(declared)
    assert sync_partitions(instance, declared) == (["a", "b"], [])
    assert keys(stale_assets(defs, instance)) == {
        "model/trained[a]": "never materialized",
        "model/trained[b]": "never materialized",
        "deploy/board": "never materialized",
    }
    job = defs.resolve_implicit_global_asset_job_def()
    trained = [dg.AssetKey(["model", "trained"])]
    for name in declared:
        assert job.execute_in_process(instance=instance, partition_key=name, asset_selection=trained).success
    assert job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey(["deploy", "board"])]).success
    assert stale_assets(defs, instance) == {}

    # One declaration changes, one experiment is added, one removed: only those partitions are stale.
    declared = {"a": "2", "c": "1"}
    defs = build(declared)
    assert sync_partitions(instance, declared) == (["c"], ["b"])
    assert keys(stale_assets(defs, instance)) == {
        "model/trained[a]": "experiment a changed in its YAML since it was trained",
        "model/trained[c]": "never materialized",
        "deploy/board": "upstream model/trained is rebuilt",
    }
    assert keys(stale_assets(defs, instance, partitions={EXPERIMENTS.name: ["c"]})) == {
        "model/trained[c]": "never materialized",
        "deploy/board": "upstream model/trained is rebuilt",
    }


def test_a_rebuilt_upstream_that_keeps_its_data_version_leaves_its_children_up_to_date():
    """What `cli.py run` asks again once an upstream asset ran (`settled`): the leaderboard re-ran for a loser and
    kept its data version (its winner), so the export below it is not rebuilt; a new winner rebuilds it."""
    from shared_code_location.runtime.staleness import Target, waits_on_upstream

    results = {"winner": "a", "rows": 1}

    def build(code_version: str):
        @dg.asset(key=["deploy", "board"], code_version=code_version)
        def board() -> dg.Output[str]:  # versioned by its winner alone, as the leaderboard is
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", dg.BetaWarning)  # as the leaderboard does
                return dg.Output(f"{results}", data_version=dg.DataVersion(results["winner"]))

        @dg.asset(key=["deploy", "export"], ins={"board": dg.AssetIn(["deploy", "board"])}, code_version="1")
        def export(board: str) -> str:
            return board

        return dg.Definitions(assets=[board, export])

    instance = dg.DagsterInstance.ephemeral()
    board, export = Target(dg.AssetKey(["deploy", "board"])), Target(dg.AssetKey(["deploy", "export"]))
    assert build("1").resolve_implicit_global_asset_job_def().execute_in_process(instance=instance).success
    defs = build("2")  # the board must run again
    stale = stale_assets(defs, instance)
    assert keys(stale) == {"deploy/board": "code version 1 -> 2", "deploy/export": "upstream deploy/board is rebuilt"}
    assert waits_on_upstream(stale[export]) and not waits_on_upstream(stale[board])
    job = defs.resolve_implicit_global_asset_job_def()
    results["rows"] = 2  # a loser joins: the board's value changes, its winner does not
    assert job.execute_in_process(instance=instance, asset_selection=[board.key]).success
    assert stale_assets(defs, instance, settled={board}) == {}
    results["winner"] = "b"
    assert job.execute_in_process(instance=instance, asset_selection=[board.key]).success
    assert keys(stale_assets(defs, instance, settled={board})) == {"deploy/export": "new data in deploy/board"}


def test_an_evaluation_records_its_own_experiments_model_when_another_trained_after_it():
    """Dagster's input pointer for a partitioned input is the parent's latest materialization of any partition: the
    model an evaluation read (what the leaderboard and the release compare) must be its own experiment's, and an
    evaluation is not stale because another experiment trained after its own."""
    from shared_code_location.contract.versions import data_version, input_data_version, latest_materialization

    experiments = dg.StaticPartitionsDefinition(["a", "b"])

    @dg.asset(key=["model", "trained"], partitions_def=experiments)
    def trained(context: dg.AssetExecutionContext) -> dg.Output[str]:
        return versioned_output(f"weights of {context.partition_key}", StorageFormat.TEXT)

    @dg.asset(key=["evaluate", "report"], partitions_def=experiments, ins={"model": dg.AssetIn(["model", "trained"])})
    def report(model: str) -> int:
        return len(model)

    defs = dg.Definitions(assets=[trained, report])
    instance = dg.DagsterInstance.ephemeral()
    job = defs.resolve_implicit_global_asset_job_def()
    for selection in ([trained.key], [report.key]):  # both trained, then both evaluated
        for name in ("a", "b"):
            assert job.execute_in_process(instance=instance, partition_key=name, asset_selection=selection).success
    for name in ("a", "b"):
        record = latest_materialization(instance, report.key, name)
        own = data_version(latest_materialization(instance, trained.key, name))
        assert input_data_version(instance, record, trained.key) == own
    assert stale_assets(defs, instance) == {}
