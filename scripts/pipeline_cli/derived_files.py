"""Files that list the locations, written from `locations.py` so that they can never disagree with dg.toml.

Workspaces, Dagster+ files, one Dockerfile per location, Docker Compose, Helm values and the deploy workflow:
`python scripts/cli.py locations --sync` rewrites them; `--check`, `lint` and a test fail when one is out of date.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import yaml

from pipeline_cli.bootstrap import ROOT, UV_VERSION
from pipeline_cli.locations import Environment

#: Where every image puts the repository's files.
IMAGE_ROOT = "/opt/dagster/app"
#: The gRPC port of every code server (its own container or pod, so they can share it).
GRPC_PORT = 4000
REGISTRY = "your-registry.example.com/dagster-ml-pipeline"
COMPOSE_DIR = "deploy/compose"
TEMPLATES = Path(__file__).parent / "templates"
_GENERATED = "Generated from dg.toml by `python scripts/cli.py locations --sync`; edit dg.toml, not this file."


def _comment(text: str, width: int = 114) -> str:
    return "".join(f"# {line}\n" for line in textwrap.wrap(f"{_GENERATED} {text}", width))


def _document(comment: str, data: dict) -> str:
    return _comment(comment) + yaml.safe_dump(data, sort_keys=False, width=120)


def image_name(env: Environment) -> str:
    """The image of a location: `ml-pipeline-2-model`."""
    return "ml-pipeline-" + env.name.replace("_", "-")


def service_name(env: Environment) -> str:
    """Its code server's host name in Compose and Kubernetes: `code-2-model`."""
    return "code-" + env.name.replace("_", "-")


def grpc_command(env: Environment) -> list[str]:
    """How a container serves the location: Dagster's gRPC code server."""
    return ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", str(GRPC_PORT), "-m", env.module,
            "--location-name", env.name]  # fmt: skip


def workspace_yaml(locations: tuple[Environment, ...]) -> str:
    """workspace.yaml: each location loaded from its own venv."""
    entries = [
        {
            "python_module": {
                "module_name": env.module,
                "location_name": env.name,
                "working_directory": env.folder,
                "executable_path": f"{env.folder}/.venv/bin/python",
            }
        }
        for env in locations
    ]
    comment = (
        "For Dagster's own tools: `dagster dev -w workspace.yaml`, `dagster-webserver -w workspace.yaml`; each "
        "location loads in its own venv. (`cli.py dev` starts the code servers itself, all at once, and writes its "
        "own workspace of gRPC servers under the instance folder.) Relative paths are resolved against this folder."
    )
    return _document(comment, {"load_from": entries})


def _k8s_context(env: Environment) -> dict:
    context: dict = {"env_secrets": ["ml-pipeline-env"]}
    if env.deploy.get("gpu"):
        context["run_k8s_config"] = {"container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}}}}
    return {"k8s": context}


def dagster_cloud_yaml(locations: tuple[Environment, ...], newer_name: bool = False) -> str:
    """dagster_cloud.yaml (Dagster+ hybrid): one image per location, each built from the repository root. With
    `newer_name`, the same document as build.yaml, the name Dagster+ now gives it."""
    entries = [
        {
            "location_name": env.name,
            "code_source": {"module_name": env.module},
            "build": {"directory": ".", "registry": f"{REGISTRY}/{image_name(env)}"},
            "working_directory": f"{IMAGE_ROOT}/{env.folder}",
            "container_context": _k8s_context(env),
        }
        for env in locations
    ]
    comment = (
        "Dagster+ hybrid, with `dagster-cloud ci` and the deploy workflow (.github/workflows/deploy.yml): one image "
        "per location, built from the repository root with that location's Dockerfile, so each image holds the "
        "shared package and only its own location's dependencies. Replace the registry."
    )
    if newer_name:
        comment = "build.yaml: what dagster_cloud.yaml says, under the name newer Dagster+ tooling reads. " + comment
    return _document(comment, {"locations": entries})


def dockerfile(env: Environment) -> str:
    """A location's image: uv, its lock installed before its code, a non-root user, its code server."""
    lock = f"{env.folder}/requirements.lock"
    header = _comment(
        f"The image of code location {env.name}. Build it from the repository root, so that the shared package is "
        f"in the context: docker build -f {env.folder}/Dockerfile -t {image_name(env)} ."
    )
    command = ", ".join(f'"{part}"' for part in grpc_command(env))
    return f"""{header}FROM python:3.11-slim
COPY --from=ghcr.io/astral-sh/uv:{UV_VERSION} /uv /usr/local/bin/uv
ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy \\
    DAGSTER_HOME=/opt/dagster/home ML_PIPELINE_PROJECT_ROOT={IMAGE_ROOT} ML_PIPELINE_DEPLOYMENT=production
WORKDIR {IMAGE_ROOT}
# The lock before the code: a code change reuses this layer (PyTorch included) instead of reinstalling it.
COPY {lock} {lock}
RUN --mount=type=cache,target=/root/.cache/uv uv venv "$VIRTUAL_ENV" && uv pip install -r {lock}
COPY dg.toml dg.toml
COPY shared_code_location/ shared_code_location/
COPY {env.folder}/ {env.folder}/
# Editable: a dg project loads its defs/ folder (YAML included) from the project folder, beside its pyproject.toml.
RUN --mount=type=cache,target=/root/.cache/uv uv pip install --no-deps ./shared_code_location --editable ./{env.folder}
RUN useradd --create-home --uid 10001 dagster && mkdir -p /opt/dagster/home && chown dagster /opt/dagster/home
USER 10001
EXPOSE {GRPC_PORT}
CMD [{command}]
"""


def compose_yaml(locations: tuple[Environment, ...]) -> str:
    """Docker Compose: PostgreSQL, one code server per location (its own image), webserver, daemon (each run in
    its location's image), serving; assets on a shared volume; secrets from deploy/compose/.env (not committed)."""
    dagster_env = {
        "DAGSTER_POSTGRES_HOST": "postgres",
        "DAGSTER_POSTGRES_DB": "${POSTGRES_DB:-dagster}",
        "DAGSTER_POSTGRES_USER": "${POSTGRES_USER:-dagster}",
        "DAGSTER_POSTGRES_PASSWORD": "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD in deploy/compose/.env}",
    }
    pipeline_env = {
        "ML_PIPELINE_DEPLOYMENT": "production",
        "ML_PIPELINE_STORAGE_URI": "/data/asset_storage",
        "ML_PIPELINE_INPUT_DIR": "/data/input",
        "ML_PIPELINE_OUTPUT_DIR": "/data/releases",
    }
    healthy_postgres = {"postgres": {"condition": "service_healthy"}}
    services: dict = {
        "postgres": {
            "image": "postgres:18",
            "environment": {
                "POSTGRES_DB": "${POSTGRES_DB:-dagster}",
                "POSTGRES_USER": "${POSTGRES_USER:-dagster}",
                "POSTGRES_PASSWORD": "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD in deploy/compose/.env}",
            },
            "volumes": ["postgres-data:/var/lib/postgresql"],
            "healthcheck": {
                "test": ["CMD-SHELL", "pg_isready -U $${POSTGRES_USER} -d $${POSTGRES_DB}"],
                "interval": "5s",
                "retries": 12,
            },
        }
    }
    for env in locations:
        services[service_name(env)] = {
            "build": {"context": "../..", "dockerfile": f"{env.folder}/Dockerfile"},
            "image": f"{image_name(env)}:latest",
            "environment": dagster_env | pipeline_env | {"DAGSTER_CURRENT_IMAGE": f"{image_name(env)}:latest"},
            "volumes": ["pipeline-data:/data"],
            "depends_on": healthy_postgres,
            "healthcheck": {
                "test": ["CMD", "dagster", "api", "grpc-health-check", "-p", str(GRPC_PORT)],
                "interval": "10s",
                "retries": 12,
            },
        }
    code_servers = {service_name(env): {"condition": "service_healthy"} for env in locations}
    dagster = {
        "build": {"context": "../..", "dockerfile": f"{COMPOSE_DIR}/dagster.Dockerfile"},
        "image": "ml-pipeline-dagster:latest",
        "environment": dagster_env,
        "depends_on": healthy_postgres | code_servers,
    }
    services["webserver"] = dagster | {
        "command": ["dagster-webserver", "-h", "0.0.0.0", "-p", "3000", "-w", "workspace.yaml"],
        "ports": ["127.0.0.1:3000:3000"],
    }
    services["daemon"] = dagster | {
        "command": ["dagster-daemon", "run", "-w", "workspace.yaml"],
        # The Docker run launcher starts each run as a container of its location's image.
        "volumes": ["/var/run/docker.sock:/var/run/docker.sock"],
    }
    services["serving"] = {
        "build": {"context": "../..", "dockerfile": "4_deploy_code_location/serving.Dockerfile"},
        "image": "ml-pipeline-serving:latest",
        "environment": {"ML_PIPELINE_OUTPUT_DIR": "/data/releases"},
        "volumes": ["pipeline-data:/data:ro"],
        "ports": ["127.0.0.1:8000:8000"],
    }
    data = {
        "name": "ml-pipeline",
        "services": services,
        "volumes": {"postgres-data": {}, "pipeline-data": {"name": "ml-pipeline-data"}},
        "networks": {"default": {"name": "ml-pipeline"}},
    }
    comment = (
        "The production topology on Docker: `cp deploy/compose/.env.example deploy/compose/.env`, set a password, "
        "then `docker compose -f deploy/compose/compose.yaml up --build`. UI on 127.0.0.1:3000, serving on 8000."
    )
    return _document(comment, data)


def compose_workspace_yaml(locations: tuple[Environment, ...]) -> str:
    """The webserver's and daemon's workspace in Compose: each location's code server by service name."""
    entries = [
        {"grpc_server": {"host": service_name(env), "port": GRPC_PORT, "location_name": env.name}} for env in locations
    ]
    return _document("Each location is its own code-server container.", {"load_from": entries})


def helm_values(locations: tuple[Environment, ...]) -> str:
    """Values for Dagster's Helm chart: one user deployment per location (its image), the Kubernetes run launcher,
    an external PostgreSQL, environment from secrets, a GPU for the runs of locations that ask for one."""
    deployments = []
    for env in locations:
        deployment = {
            "name": service_name(env),
            "image": {"repository": f"{REGISTRY}/{image_name(env)}", "tag": "latest", "pullPolicy": "Always"},
            "dagsterApiGrpcArgs": ["-m", env.module, "--location-name", env.name],
            "port": GRPC_PORT,
            "envSecrets": [{"name": "ml-pipeline-env"}],
            "includeConfigInLaunchedRuns": {"enabled": True},
        }
        if env.deploy.get("gpu"):
            deployment["annotations"] = {"ml-pipeline/runs": "gpu"}
        deployments.append(deployment)
    data = {
        "dagster-user-deployments": {"enabled": True, "deployments": deployments},
        "runLauncher": {
            "type": "K8sRunLauncher",
            "config": {"k8sRunLauncher": {"envSecrets": [{"name": "ml-pipeline-env"}]}},
        },
        "postgresql": {
            "enabled": False,
            "postgresqlHost": "your-postgres.example.com",
            "postgresqlUsername": "dagster",
            "postgresqlDatabase": "dagster",
            "postgresqlPassword": "set-with-generatePostgresqlPasswordSecret-false",
            "service": {"port": 5432},
        },
        "generatePostgresqlPasswordSecret": False,
        "dagsterWebserver": {"envSecrets": [{"name": "ml-pipeline-env"}]},
        "dagsterDaemon": {
            "runCoordinator": {
                "enabled": True,
                "type": "QueuedRunCoordinator",
                "config": {"queuedRunCoordinator": {"maxConcurrentRuns": 8}},
            },
            "runMonitoring": {"enabled": True},
            # Training runs carry dagster/max_retries; the chart's default of 0 retries would ignore it otherwise.
            "runRetries": {"enabled": True, "maxRetries": 0},
        },
    }
    comment = (
        "Values for Dagster's Helm chart (helm install dagster dagster/dagster -f deploy/kubernetes/values.yaml). "
        "Create the secret `ml-pipeline-env` (ML_PIPELINE_STORAGE_URI, ML_PIPELINE_INPUT_DIR, ML_PIPELINE_OUTPUT_DIR "
        "and object-storage credentials) and `dagster-postgresql-secret` (postgresql-password) first. GPU runs: "
        "the model location's jobs carry the `dagster-k8s/config` tag that asks for nvidia.com/gpu."
    )
    return _document(comment, data)


def deploy_workflow(locations: tuple[Environment, ...]) -> str:
    """The Dagster+ deploy workflow: a branch deployment per pull request, production on main, one image per
    location, only the locations whose files (or the shared package) changed rebuilt."""
    filters = "\n".join(f"            {env.name}: ['{env.folder}/**', 'shared_code_location/**']" for env in locations)
    names = ", ".join(f"'{env.name}'" for env in locations)
    return _comment(
        "Dagster+ hybrid deploy. Set the repository secrets DAGSTER_CLOUD_API_TOKEN, REGISTRY_USERNAME and "
        "REGISTRY_PASSWORD, and the variables DAGSTER_CLOUD_ORGANIZATION and REGISTRY."
    ) + (TEMPLATES / "deploy.yml").read_text().replace("@@FILTERS@@", filters).replace("@@LOCATIONS@@", names)


def derived_files(locations: tuple[Environment, ...]) -> dict[str, str]:
    """Every generated file: its path from the repository root, and its content."""
    files = {
        "workspace.yaml": workspace_yaml(locations),
        "dagster_cloud.yaml": dagster_cloud_yaml(locations),
        "build.yaml": dagster_cloud_yaml(locations, newer_name=True),
        f"{COMPOSE_DIR}/compose.yaml": compose_yaml(locations),
        f"{COMPOSE_DIR}/workspace.yaml": compose_workspace_yaml(locations),
        "deploy/kubernetes/values.yaml": helm_values(locations),
        ".github/workflows/deploy.yml": deploy_workflow(locations),
    }
    for env in locations:
        files[f"{env.folder}/Dockerfile"] = dockerfile(env)
        files[f"{env.folder}/container_context.yaml"] = _document(
            f"How Dagster+ runs {env.name} (dg reads it per project): environment from the secret, GPU if asked.",
            _k8s_context(env),
        )
    return files


def out_of_date(locations: tuple[Environment, ...], root=ROOT) -> list[str]:
    """The derived files whose content differs from what the locations give."""
    return [
        name
        for name, content in derived_files(locations).items()
        if not (root / name).exists() or (root / name).read_text(encoding="utf-8") != content
    ]


def write_all(locations: tuple[Environment, ...], root=ROOT) -> list[str]:
    """Rewrite every derived file that is out of date; the names of those rewritten."""
    from pipeline_cli.environments import atomic_write_text

    files = derived_files(locations)
    changed = out_of_date(locations, root)
    for name in changed:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(root / name, files[name])
    return changed
