"""The project's only uses of Dagster internals, each with why no public API does: the one place to look when
upgrading Dagster. `tests/test_public_apis.py` fails when a product file imports `dagster._` anywhere else, or names
one of these tags outside this module.

- The materialization tags `dagster/data_version`, `dagster/code_version`, `dagster/input_data_version/<key>` and
  `dagster/input_event_pointer/<key>`, read by `contract/versions.py` and `runtime/staleness.py` (what is stale,
  for `cli.py run`) and through them by the leaderboard and the release (which data versions they read). Dagster
  records a materialization's data version, code version and its inputs' versions as these tags and computes
  staleness from them in its private stale-status resolver; the public instance API returns the records, with no
  accessor for the values.
- `CheckRunHealthResult` and `WorkerStatus` (`dagster._core.launcher`), returned by `runtime/run_launcher.py`'s
  `MonitoredRunLauncher` (for `cli.py up`): what run monitoring asks a launcher about its run worker.
  `DefaultRunLauncher`, public, cannot tell whether the worker it started still lives.
- `INVALID_PARTITION_KEY_SUBSTRINGS` (`dagster._core.definitions.partitions.utils.base`), read by
  `contract/corpus_files.py`: the substrings a partition key may not hold. Each input file is a partition named
  after it; a file named with one of them is refused up front with its path, rather than by Dagster's error about
  the key, which names neither the file nor what to do.
- The service name `DagsterApi`, asked by `scripts/pipeline_cli/stack.py` over gRPC's standard health protocol,
  as `dagster api grpc-health-check` does: Dagster's own client for it is private, and prints every refused
  connection while a code server starts.
"""

from __future__ import annotations

from dagster._core.definitions.partitions.utils.base import INVALID_PARTITION_SUBSTRINGS
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus

#: A materialization's data version (`dg.DataVersion`), as Dagster records it.
DATA_VERSION_TAG = "dagster/data_version"
#: The code version of the asset that a materialization ran with.
CODE_VERSION_TAG = "dagster/code_version"
#: + an input's key: the data version of that input the materialization read (for a partitioned input, not the
#: partition's own: see `contract.versions.input_data_version`).
INPUT_DATA_VERSION_TAG_PREFIX = "dagster/input_data_version/"
#: + an input's key: the storage id of the input's materialization that the materialization read.
INPUT_EVENT_POINTER_TAG_PREFIX = "dagster/input_event_pointer/"
#: Substrings that no partition key may contain.
INVALID_PARTITION_KEY_SUBSTRINGS: tuple[str, ...] = tuple(INVALID_PARTITION_SUBSTRINGS)
#: The service a Dagster code server reports in gRPC's standard health protocol.
GRPC_HEALTH_SERVICE = "DagsterApi"

__all__ = [
    "CODE_VERSION_TAG",
    "DATA_VERSION_TAG",
    "GRPC_HEALTH_SERVICE",
    "INPUT_DATA_VERSION_TAG_PREFIX",
    "INPUT_EVENT_POINTER_TAG_PREFIX",
    "INVALID_PARTITION_KEY_SUBSTRINGS",
    "CheckRunHealthResult",
    "WorkerStatus",
]
