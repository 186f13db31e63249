"""The shared automation condition, evaluated by Dagster's own automation engine (no daemon needed)."""

import dagster as dg
import pytest

from shared_code_location.contract.storage_formats import StorageFormat
from shared_code_location.contract.versions import versioned_output
from shared_code_location.runtime.automation import ON_UPSTREAM_CHANGE, automation_sensor


def build(check_passes: bool):
    @dg.asset
    def upstream() -> int:
        return 1

    @dg.asset_check(asset=upstream, blocking=True)
    def upstream_ok() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=check_passes)

    @dg.asset(deps=[upstream], automation_condition=ON_UPSTREAM_CHANGE)
    def downstream() -> None:
        return None

    return upstream, upstream_ok, downstream


def requested(defs, instance, cursor=None):
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
    keys = {"upstream", "downstream"}
    return {k for k in keys if result.get_num_requested(dg.AssetKey(k))}, result.cursor


def test_downstream_runs_after_an_upstream_change_and_not_again_until_the_next():
    upstream, check, downstream = build(check_passes=True)
    instance = dg.DagsterInstance.ephemeral()
    defs = [upstream, check, downstream]
    keys, cursor = requested(defs, instance)
    assert keys == set()  # upstream missing: nothing to do yet
    assert dg.materialize([upstream, check], instance=instance).success
    keys, cursor = requested(defs, instance, cursor)
    assert keys == {"downstream"}
    keys, cursor = requested(defs, instance, cursor)
    assert keys == set()  # requested once per change


def test_a_failed_blocking_check_upstream_stops_the_downstream():
    upstream, check, downstream = build(check_passes=False)
    instance = dg.DagsterInstance.ephemeral()
    defs = [upstream, check, downstream]
    _, cursor = requested(defs, instance)
    dg.materialize([upstream, check], instance=instance, raise_on_error=False)
    keys, _ = requested(defs, instance, cursor)
    assert keys == set()


def test_plain_eager_would_not_have_stopped_it():
    """Why the condition adds all_deps_blocking_checks_passed: eager() alone requests the downstream."""
    upstream, check, _ = build(check_passes=False)

    @dg.asset(deps=[upstream], automation_condition=dg.AutomationCondition.eager())
    def downstream() -> None:
        return None

    instance = dg.DagsterInstance.ephemeral()
    _, cursor = requested([upstream, check, downstream], instance)
    dg.materialize([upstream, check], instance=instance, raise_on_error=False)
    assert requested([upstream, check, downstream], instance, cursor)[0] == {"downstream"}


def test_automation_sensor_is_named_after_its_location_and_runs_by_default(tmp_path):
    project = tmp_path / "9_example_code_location"
    (project / "example_code_location" / "defs").mkdir(parents=True)
    (project / "pyproject.toml").write_text('[tool.dg.project]\ncode_location_name = "9_example"\n')
    module = project / "example_code_location" / "defs" / "resources.py"
    module.write_text("")
    sensor = automation_sensor(str(module))
    assert sensor.name == "9_example_automation" and sensor.default_status == dg.DefaultSensorStatus.RUNNING
    with pytest.raises(LookupError, match="code_location_name"):
        automation_sensor(str(tmp_path / "nowhere.py"))
    assert sensor.minimum_interval_seconds == 15  # ML_PIPELINE_AUTOMATION_INTERVAL's default


@pytest.mark.parametrize("value", ["5", "soon", "0"])
def test_the_automation_interval_is_a_setting_and_a_bad_one_is_named(tmp_path, monkeypatch, value):
    project = tmp_path / "9_example_code_location"
    project.mkdir()
    (project / "pyproject.toml").write_text('[tool.dg.project]\ncode_location_name = "9_example"\n')
    monkeypatch.setenv("ML_PIPELINE_AUTOMATION_INTERVAL", value)
    if value == "5":
        assert automation_sensor(str(project / "defs.py")).minimum_interval_seconds == 5
    else:
        with pytest.raises(ValueError, match=f"ML_PIPELINE_AUTOMATION_INTERVAL='{value}' is not a whole number"):
            automation_sensor(str(project / "defs.py"))


def _text_pipeline(text: dict, gate=None):
    """upstream (content-versioned text) → downstream (automated); `gate` can hold the downstream run open."""

    @dg.asset
    def upstream() -> dg.Output[str]:
        return versioned_output(text["value"], StorageFormat.TEXT)

    @dg.asset(deps=[upstream], automation_condition=ON_UPSTREAM_CHANGE)
    def downstream() -> None:
        if gate is not None:
            gate["started"].set()
            assert gate["release"].wait(timeout=60)

    return upstream, downstream


def test_only_new_upstream_data_triggers_the_downstream():
    """A re-run that writes the same bytes keeps its data version (versions.content_version): nothing downstream
    runs. New bytes do trigger it."""
    text = {"value": "to be or not to be"}
    upstream, downstream = _text_pipeline(text)
    instance = dg.DagsterInstance.ephemeral()
    defs = [upstream, downstream]
    assert dg.materialize(defs, instance=instance).success
    _, cursor = requested(defs, instance)
    assert dg.materialize([upstream], instance=instance).success  # same text again
    keys, cursor = requested(defs, instance, cursor)
    assert keys == set()
    text["value"] = "that is the question"
    assert dg.materialize([upstream], instance=instance).success
    keys, cursor = requested(defs, instance, cursor)
    assert keys == {"downstream"}


def test_a_release_waits_until_the_new_model_is_evaluated():
    """Deploy's sensor sees a new model before the evaluate location has evaluated it: the export may start, the
    release must wait for the new evaluation (and its gate)."""
    weights = {"value": "v1"}

    @dg.asset
    def model() -> dg.Output[str]:
        return versioned_output(weights["value"], StorageFormat.TEXT)

    @dg.asset(deps=[model], automation_condition=ON_UPSTREAM_CHANGE)
    def report() -> None:
        return None

    @dg.asset(deps=[model], automation_condition=ON_UPSTREAM_CHANGE)
    def onnx() -> None:
        return None

    @dg.asset(deps=[onnx, report], automation_condition=ON_UPSTREAM_CHANGE)
    def release() -> None:
        return None

    instance = dg.DagsterInstance.ephemeral()
    defs = [model, report, onnx, release]
    deploy = dg.AssetSelection.assets(onnx, release)  # what the deploy location's sensor evaluates

    def deploy_requests(cursor):
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=deploy, cursor=cursor)
        return {k for k in ("onnx", "release") if result.get_num_requested(dg.AssetKey(k))}, result.cursor

    assert dg.materialize(defs, instance=instance).success
    _, cursor = deploy_requests(None)
    weights["value"] = "v2"
    assert dg.materialize([model], instance=instance).success
    requested_now, cursor = deploy_requests(cursor)
    assert requested_now == {"onnx"}
    assert dg.materialize([onnx], instance=instance, selection=[onnx]).success
    requested_now, cursor = deploy_requests(cursor)
    assert requested_now == set()  # the report still describes v1
    assert dg.materialize([report], instance=instance, selection=[report]).success
    requested_now, cursor = deploy_requests(cursor)
    assert requested_now == {"release"}


def test_an_update_made_outside_automation_settles_the_change():
    """A downstream materialized by hand (CLI, UI) after the upstream change has read the new data: no re-run."""
    text = {"value": "one"}
    upstream, downstream = _text_pipeline(text)
    instance = dg.DagsterInstance.ephemeral()
    defs = [upstream, downstream]
    assert dg.materialize(defs, instance=instance).success
    _, cursor = requested(defs, instance)
    text["value"] = "two"
    assert dg.materialize(defs, instance=instance).success  # e.g. `cli.py run`, both assets
    keys, cursor = requested(defs, instance, cursor)
    assert keys == set()
    text["value"] = "three"
    assert dg.materialize([upstream], instance=instance).success
    keys, _ = requested(defs, instance, cursor)
    assert keys == {"downstream"}


def test_new_data_that_lands_while_the_downstream_runs_triggers_one_more_run():
    import threading

    text = {"value": "one"}
    gate = {"started": threading.Event(), "release": threading.Event()}
    upstream, downstream = _text_pipeline(text, gate)
    instance = dg.DagsterInstance.ephemeral()
    defs = [upstream, downstream]
    gate["release"].set()
    assert dg.materialize(defs, instance=instance).success
    gate["release"].clear()
    _, cursor = requested(defs, instance)

    text["value"] = "two"
    assert dg.materialize([upstream], instance=instance).success
    keys, cursor = requested(defs, instance, cursor)
    assert keys == {"downstream"}
    # The requested run starts and reads "two"; "three" lands while it runs.
    gate["started"].clear()
    run = threading.Thread(target=lambda: dg.materialize(defs, instance=instance, selection=[downstream]))
    run.start()
    assert gate["started"].wait(timeout=60)
    keys, cursor = requested(defs, instance, cursor)
    assert keys == set()  # in progress
    text["value"] = "three"
    assert dg.materialize([upstream], instance=instance).success
    keys, cursor = requested(defs, instance, cursor)
    assert keys == set()  # still in progress
    gate["release"].set()
    run.join(timeout=60)
    keys, cursor = requested(defs, instance, cursor)
    assert keys == {"downstream"}  # eager() would have forgotten "three"


def test_the_combine_step_waits_for_files_and_runs_once_they_are_all_in():
    # The ETL's vocabulary and manifests read every file's partition: on a fresh instance (no file yet) nothing runs
    # (ON_UPSTREAM_CHANGE alone would request a combine of nothing); once a file is ingested, they do.
    from shared_code_location.contract.corpus_files import CORPUS_FILES
    from shared_code_location.runtime.automation import ON_FILES_CHANGE

    @dg.asset(partitions_def=CORPUS_FILES)
    def upstream() -> int:
        return 1

    @dg.asset(deps=[upstream], automation_condition=ON_FILES_CHANGE)
    def downstream() -> None:
        return None

    instance = dg.DagsterInstance.ephemeral()
    defs = [upstream, downstream]
    keys, cursor = requested(defs, instance)
    assert keys == set()
    instance.add_dynamic_partitions(CORPUS_FILES.name, ["a.txt", "b.txt"])
    assert dg.materialize([upstream], instance=instance, partition_key="a.txt").success
    keys, cursor = requested(defs, instance, cursor)
    assert keys == set()  # b.txt not ingested yet
    assert dg.materialize([upstream], instance=instance, partition_key="b.txt").success
    keys, cursor = requested(defs, instance, cursor)
    assert keys == {"downstream"}


def test_the_leaderboard_waits_for_experiments_in_training_but_not_for_one_this_machine_skips():
    # The shipped `gpu` experiment on a machine without a GPU: its training runs, logs the skip and writes nothing.
    # Automation must not launch it again on every tick, nor let its missing evaluation hold the board back; it
    # must wait for an experiment still training, so that one change makes one ranking.
    import threading

    from shared_code_location.runtime.automation import ON_ANY_PARTITION_CHANGE

    experiments = dg.StaticPartitionsDefinition(["cpu", "gpu", "slow"])
    slow_started, slow_may_finish = threading.Event(), threading.Event()

    @dg.asset
    def tokens() -> int:
        return 1

    @dg.asset(deps=[tokens], partitions_def=experiments, automation_condition=ON_UPSTREAM_CHANGE, output_required=False)
    def trained(context: dg.AssetExecutionContext):
        if context.partition_key == "slow":
            slow_started.set()
            assert slow_may_finish.wait(timeout=60)
        if context.partition_key != "gpu":
            yield dg.Output(None)  # the gpu partition yields nothing, as trained_model's skip does

    @dg.asset(deps=[trained, tokens], partitions_def=experiments, automation_condition=ON_UPSTREAM_CHANGE)
    def report() -> None:
        return None

    @dg.asset(deps=[report], automation_condition=ON_ANY_PARTITION_CHANGE)
    def board() -> None:
        return None

    instance = dg.DagsterInstance.ephemeral()
    defs, cursors = [tokens, trained, report, board], {}

    def tick() -> set[str]:
        """One tick of each location's sensor (model, evaluate, deploy: each evaluates its own assets)."""
        asked = set()
        for asset in (trained, report, board):
            result = dg.evaluate_automation_conditions(
                defs=defs, instance=instance, asset_selection=dg.AssetSelection.assets(asset),
                cursor=cursors.get(asset.key),
            )  # fmt: skip
            cursors[asset.key] = result.cursor
            if asset.partitions_def:
                asked |= {f"{asset.key.path[0]}[{key}]" for key in result.get_requested_partitions(asset.key)}
            elif result.get_num_requested(asset.key):
                asked.add(asset.key.path[0])
        return asked

    def run(asset, partition: str) -> None:
        assert dg.materialize([asset], instance=instance, partition_key=partition, selection=[asset]).success

    assert tick() == set()
    assert dg.materialize([tokens], instance=instance).success
    assert tick() == {"trained[cpu]", "trained[gpu]", "trained[slow]"}
    slow = threading.Thread(target=run, args=(trained, "slow"))
    slow.start()
    assert slow_started.wait(timeout=60)
    run(trained, "cpu")
    run(trained, "gpu")
    assert tick() == {"report[cpu]"}  # and not trained[gpu] again
    run(report, "cpu")
    assert tick() == set()  # slow is still training
    slow_may_finish.set()
    slow.join(timeout=60)
    assert tick() == {"report[slow]"}
    run(report, "slow")
    assert tick() == {"board"}  # report[gpu] cannot run: the board does not wait for it
    assert tick() == set()
