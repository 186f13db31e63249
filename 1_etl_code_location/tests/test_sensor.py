"""The input sensor against a real instance: one partition per file, each change acted on once."""

import os

import dagster as dg
import pytest

from etl_code_location.definitions import defs
from etl_code_location.defs.file_tokens import FILE_TOKENS_KEY
from etl_code_location.defs.sensors import input_files_sensor
from shared_code_location.contract.asset_keys import IO_MANAGER_KEY
from shared_code_location.contract.corpus_files import CORPUS_FILES
from shared_code_location.contract.io_manager import PipelineIOManager
from shared_code_location.contract.resources import InputFilesResource


def tick(instance, folder, cursor):
    """One evaluation, and what the daemon does with it: the partition requests applied."""
    # A context manager: the resource has a nested one (its object store), which Dagster opens inside it.
    resources = {"input_files": InputFilesResource(folder=str(folder))}
    # With the instance's ref, as the daemon gives it: run requests for new partitions resolve against it.
    with dg.build_sensor_context(
        instance=instance, instance_ref=instance.get_ref(), cursor=cursor, resources=resources, definitions=defs
    ) as context:
        result = input_files_sensor.evaluate_tick(context)
    for request in result.dynamic_partitions_requests or []:
        if isinstance(request, dg.AddDynamicPartitionsRequest):
            instance.add_dynamic_partitions(CORPUS_FILES.name, list(request.partition_keys))
        else:
            for key in request.partition_keys:
                instance.delete_dynamic_partition(CORPUS_FILES.name, key)
    return result


def requested(result) -> list[tuple[str, str | None]]:
    return [(run.job_name, run.partition_key) for run in result.run_requests]


def ingest(instance, folder, storage, name):
    """What the requested run does: the file's partition materialized."""
    test_defs = dg.Definitions(
        assets=defs.assets,
        jobs=defs.jobs,
        resources={
            IO_MANAGER_KEY: PipelineIOManager(base_uri=str(storage)),
            "input_files": InputFilesResource(folder=str(folder)),
        },
    )
    job = test_defs.resolve_job_def("ingest_file_job")
    assert job.execute_in_process(instance=instance, partition_key=name).success


@pytest.fixture
def instance(tmp_path):
    (tmp_path / "home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
        yield instance


def test_each_file_change_is_acted_on_once(instance, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.txt").write_text("hello there\n" * 50)
    first = tick(instance, folder, None)
    assert instance.get_dynamic_partitions(CORPUS_FILES.name) == ["a.txt"]
    assert requested(first) == [("ingest_file_job", "a.txt")]
    assert tick(instance, folder, first.cursor).run_requests == []  # nothing changed: nothing twice
    # Restarted without a cursor before the run ended: the same run key, which the daemon launches only once.
    again = tick(instance, folder, None)
    assert [r.run_key for r in again.run_requests] == [r.run_key for r in first.run_requests]
    ingest(instance, folder, tmp_path / "store", "a.txt")
    assert tick(instance, folder, None).run_requests == []  # ingested: the instance says so, no cursor needed

    # One file added and one changed: a run for each, of its partition only.
    (folder / "b.txt").write_text("more text\n" * 50)
    (folder / "notes.md").write_text("ignored\n")
    (folder / "a.txt").write_text("hello again\n" * 60)
    os.utime(folder / "a.txt", ns=(1, 10**18))  # a different modification time, whatever the clock's resolution
    changed = tick(instance, folder, first.cursor)
    assert sorted(requested(changed)) == [("ingest_file_job", "a.txt"), ("ingest_file_job", "b.txt")]
    assert all(r.run_key not in {q.run_key for q in first.run_requests} for r in changed.run_requests)
    ingest(instance, folder, tmp_path / "store", "a.txt")
    ingest(instance, folder, tmp_path / "store", "b.txt")

    # A file removed: its partition deleted, and the files combined again without it.
    (folder / "a.txt").unlink()
    removed = tick(instance, folder, changed.cursor)
    assert instance.get_dynamic_partitions(CORPUS_FILES.name) == ["b.txt"]
    assert requested(removed) == [("combine_job", None)]
    assert tick(instance, folder, removed.cursor).run_requests == []


def test_the_sensor_targets_the_ingest_and_combine_jobs_and_starts_stopped():
    sensor = defs.resolve_sensor_def("input_files_sensor")
    assert {job.name for job in sensor.jobs} == {"ingest_file_job", "combine_job"}
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED
    assert defs.resolve_job_def("ingest_file_job").partitions_def == CORPUS_FILES
    assert defs.resolve_assets_def(FILE_TOKENS_KEY).backfill_policy == dg.BackfillPolicy.multi_run(1)
