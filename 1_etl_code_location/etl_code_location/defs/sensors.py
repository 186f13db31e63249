"""`input_files_sensor`: launches the ETL when a corpus file is added, changed or removed."""

import hashlib
import json

import dagster as dg

from shared_code_location.contract.resources import InputFilesResource


def folder_state(input_files: InputFilesResource) -> dict[str, list[int]]:
    """{file name: [size, mtime in ns]} of every matching file (local or in object storage); empty if the folder
    is missing."""
    from shared_code_location.contract.storage import storage_errors

    folder = input_files.path
    with storage_errors(folder):
        if not folder.is_dir():
            return {}
        stats = {p.name: p.stat() for p in folder.glob(input_files.pattern)}
    return {name: [stat.st_size, int(stat.st_mtime * 1e9)] for name, stat in sorted(stats.items())}


@dg.sensor(
    job_name="etl_job",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Runs etl_job when a *.txt file of the input folder is added, changed or removed.",
)
def input_files_sensor(context: dg.SensorEvaluationContext, input_files: InputFilesResource):
    """The cursor holds the last folder state, so each change launches exactly one run."""
    state = folder_state(input_files)
    encoded = json.dumps(state, sort_keys=True)
    if encoded == (context.cursor or json.dumps({})):
        return dg.SkipReason(f"no change in {input_files.path}")
    previous = json.loads(context.cursor) if context.cursor else {}
    changed = sorted(name for name in state.keys() | previous.keys() if state.get(name) != previous.get(name))
    context.update_cursor(encoded)
    if not state:
        return dg.SkipReason(f"{input_files.path} holds no {input_files.pattern} file; nothing to ingest")
    return dg.RunRequest(
        run_key=hashlib.sha256(encoded.encode()).hexdigest()[:16],
        tags={"trigger": "input_files_sensor", "changed_files": ",".join(changed)[:200]},
    )
