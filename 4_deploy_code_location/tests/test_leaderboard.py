"""The leaderboard: every evaluated experiment ranked, and only one whose blocking checks passed can win.

The evaluations come from a stand-in of the evaluate location's asset (same key, same partitions, same blocking
check) run for real on a Dagster instance; the leaderboard under test is the location's own asset.
"""

import dagster as dg
import pytest

from deploy_code_location.defs.leaderboard import leaderboard
from shared_code_location.contract.asset_keys import EVALUATION_REPORT, IO_MANAGER_KEY
from shared_code_location.contract.experiments import EXPERIMENTS
from shared_code_location.contract.io_manager import PipelineIOManager

#: (validation loss, test loss): "lowest" has the best validation loss but fails its gate.
RESULTS = {"lowest": (1.60, 3.0), "middle": (1.70, 1.72), "high": (1.80, 1.81)}


@dg.asset(**EVALUATION_REPORT.produced())
def evaluation_report(context: dg.AssetExecutionContext) -> dict:
    validation, test = RESULTS[context.partition_key]
    return {
        "model": {"loss": test, "perplexity": 2.718**test},
        "baselines": {"bigram": {"loss": 2.5}},
        "training_summary": {"validation_loss": validation, "tokens_per_second": 1000.0, "parameters": 10},
        "model_config": {},
        "samples": [],
    }


@dg.asset_check(asset=EVALUATION_REPORT.key, blocking=True, partitions_def=EXPERIMENTS)
def beats_bigram_baseline(evaluation_report: dict) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=evaluation_report["model"]["loss"] < evaluation_report["baselines"]["bigram"]["loss"]
    )


@pytest.fixture
def evaluated(tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(EXPERIMENTS.name, [*RESULTS, "not-evaluated-yet"])
    resources = {IO_MANAGER_KEY: PipelineIOManager(base_uri=str(tmp_path))}
    for name in RESULTS:
        result = dg.materialize(
            [evaluation_report, beats_bigram_baseline],
            partition_key=name,
            instance=instance,
            resources=resources,
            raise_on_error=False,
        )
        assert result.success == (name != "lowest")
    return instance, resources


def test_the_best_gated_experiment_wins_and_a_failed_gate_never_does(evaluated):
    instance, resources = evaluated
    result = dg.materialize([leaderboard, EVALUATION_REPORT.spec()], instance=instance, resources=resources)
    board = result.output_for_node("deploy__leaderboard")
    assert board["winner"] == "middle"
    assert [row["experiment"] for row in board["rows"]] == ["middle", "high", "lowest"]
    assert board["rows"][-1]["gate_note"] == "failed beats_bigram_baseline"
    assert "runner-up high" in board["why"] and "excluded: lowest (failed beats_bigram_baseline)" in board["why"]
    metadata = result.asset_materializations_for_node("deploy__leaderboard")[0].metadata
    assert "| **released** | middle |" in metadata["leaderboard"].value
    assert metadata["plot"].value.startswith("![leaderboard](data:image/png;base64,")

    # The data version says which model wins: a second run with the same winner keeps it.
    again = dg.materialize([leaderboard, EVALUATION_REPORT.spec()], instance=instance, resources=resources)
    versions = [
        r.asset_materialization.tags["dagster/data_version"]
        for r in instance.fetch_materializations(leaderboard.key, limit=2).records
    ]
    assert again.success and versions[0] == versions[1]


def test_no_gated_experiment_fails_and_names_each_one(tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(EXPERIMENTS.name, ["lowest"])
    resources = {IO_MANAGER_KEY: PipelineIOManager(base_uri=str(tmp_path))}
    dg.materialize([evaluation_report, beats_bigram_baseline], partition_key="lowest", instance=instance,
                   resources=resources, raise_on_error=False)  # fmt: skip
    result = dg.materialize(
        [leaderboard, EVALUATION_REPORT.spec()], instance=instance, resources=resources, raise_on_error=False
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    assert "no experiment passed its blocking checks" in str(failure.step_failure_data.error.message)
    assert "lowest: failed beats_bigram_baseline" in str(failure.step_failure_data.error.message)
