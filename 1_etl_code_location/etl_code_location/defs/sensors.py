"""`input_files_sensor`: keeps one partition per input file, and ingests each file that is new or changed, once.

Each tick lists the folder (no file is read). Against the instance, not a cursor of its own, it works out what
`cli.py run` would: a new file adds its partition, a removed one deletes it, and a new or changed file (its size or
modification time differs from what its partition last read) gets one run of `ingest_file_job` for its partition,
keyed by the file's fingerprint so that a run is requested once per version of a file (a file that fails is not
retried until it changes). The ETL's automation then combines the files once none is running; a removal alone
requests the combine itself. The cursor only skips the instance's queries while the folder is unchanged.
"""

import hashlib
import json

import dagster as dg

from etl_code_location.defs import jobs  # the module, not its jobs: the defs folder would list them twice
from etl_code_location.defs.file_tokens import FILE_TOKENS_KEY
from shared_code_location.contract.corpus_files import CORPUS_FILES, folder_files, stale_files
from shared_code_location.contract.experiments import partition_sync_requests
from shared_code_location.contract.resources import InputFilesResource


@dg.sensor(
    jobs=[jobs.ingest_file_job, jobs.combine_job],
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="One partition per *.txt file of the input folder: adds, re-ingests or removes a file's partition "
    "when the file is added, changed or removed.",
)
def input_files_sensor(
    context: dg.SensorEvaluationContext, input_files: InputFilesResource
) -> dg.SensorResult | dg.SkipReason:
    """See the module docstring."""
    files = folder_files(input_files)
    state = json.dumps(files, sort_keys=True)
    if state == context.cursor:
        return dg.SkipReason(f"no change in {input_files.path}")
    added, removed = partition_sync_requests(context.instance, files, CORPUS_FILES)
    stale = stale_files(context.instance, FILE_TOKENS_KEY, files)
    runs = [
        dg.RunRequest(
            job_name=jobs.ingest_file_job.name,
            partition_key=name,
            run_key=f"{name}:{files[name]}",
            tags={"trigger": "input_files_sensor"},
        )
        for name in stale
    ]
    if removed and not stale:  # nothing will be ingested, after which the automation would combine: combine now
        digest = hashlib.sha256(state.encode()).hexdigest()[:16]
        runs.append(
            dg.RunRequest(job_name=jobs.combine_job.name, run_key=f"removed:{digest}", tags={"trigger": "removed"})
        )
    requests = []
    if added:
        requests.append(CORPUS_FILES.build_add_request(added))
    if removed:
        requests.append(CORPUS_FILES.build_delete_request(removed))
    if not (runs or requests):
        return dg.SensorResult(skip_reason=f"every file of {input_files.path} is ingested as it is", cursor=state)
    return dg.SensorResult(run_requests=runs, dynamic_partitions_requests=requests, cursor=state)
