import dagster as dg

from etl_code_location.definitions import defs
from etl_code_location.defs.sensors import input_files_sensor
from shared_code_location.contract.resources import InputFilesResource


def evaluate(folder, cursor):
    # A context manager: the resource has a nested one (its object store), which Dagster opens inside it.
    resources = {"input_files": InputFilesResource(folder=str(folder))}
    with dg.build_sensor_context(cursor=cursor, resources=resources) as context:
        result = input_files_sensor.evaluate_tick(context)
    return result.run_requests, result.cursor


def test_fires_once_per_change_and_never_twice(tmp_path):
    (tmp_path / "a.txt").write_text("hello\n")
    runs, cursor = evaluate(tmp_path, None)
    assert len(runs) == 1 and runs[0].tags["changed_files"] == "a.txt"
    assert evaluate(tmp_path, cursor)[0] == []  # unchanged: nothing
    (tmp_path / "b.txt").write_text("more\n")
    (tmp_path / "notes.md").write_text("ignored\n")
    runs2, cursor2 = evaluate(tmp_path, cursor)
    assert len(runs2) == 1 and runs2[0].tags["changed_files"] == "b.txt" and runs2[0].run_key != runs[0].run_key
    (tmp_path / "a.txt").unlink()
    runs3, _ = evaluate(tmp_path, cursor2)
    assert len(runs3) == 1 and runs3[0].tags["changed_files"] == "a.txt"


def test_sensor_targets_the_etl_job_and_starts_stopped():
    assert input_files_sensor.job_name == "etl_job"
    assert input_files_sensor.default_status == dg.DefaultSensorStatus.STOPPED
    assert defs.resolve_sensor_def("input_files_sensor") is not None
