"""Deployment files, checked without a Docker engine or a cluster: one image per location (its build context
assembled as Docker would, its install steps replayed into a fresh environment, the location loaded from there),
Dockerfile lint, Compose against the Compose Specification and its instance and workspace in Dagster, the Helm
values, Dagster+ and the GitHub workflows."""

import os
import shutil
import subprocess
import sys

import pytest
import yaml

from conftest import LOCATION_NAMES, ROOT, run_cli
from docker_context import build_context, replay
from pipeline_cli.bootstrap import pip_index_flags
from pipeline_cli.derived_files import COMPOSE_DIR, image_name
from pipeline_cli.locations import LOCATIONS
from shared_code_location.net import free_port, http_ok, wait_until

BIN = ROOT / ".venv" / "bin"
DOCKERFILES = sorted(
    p.relative_to(ROOT).as_posix() for p in [*ROOT.glob("*/Dockerfile"), *ROOT.glob("**/*.Dockerfile")]
    if ".venv" not in p.parts
)  # fmt: skip


@pytest.fixture(scope="module")
def context(tmp_path_factory):
    """The build context every image gets (they all build from the repository root)."""
    folder = tmp_path_factory.mktemp("context")
    return folder, set(build_context(ROOT, folder))


def test_the_build_context_holds_the_code_and_no_local_state(context):
    _, sent = context
    assert "shared_code_location/shared_code_location/io_manager.py" in sent  # the classic mono-repo failure
    for env in LOCATIONS:
        assert f"{env.folder}/requirements.lock" in sent and f"{env.folder}/{env.package}/definitions.py" in sent
    leaked = [p for p in sent if p.startswith((".git/", "example_", ".github/")) or "/tests/" in p or ".venv" in p]
    assert leaked == [] and "example_output_resources/latest.json" not in sent


@pytest.mark.parametrize("env", LOCATIONS, ids=lambda env: env.name)
def test_each_location_image_installs_from_its_own_lock_and_loads(env, context, tmp_path):
    folder, _ = context
    image = replay(ROOT / env.folder / "Dockerfile", folder, tmp_path / "image", pip_index_flags())
    python = image.venv / "bin" / "python"
    has_torch = subprocess.run([str(python), "-c", "import torch"], capture_output=True).returncode == 0
    assert has_torch == ("torch==" in (ROOT / env.folder / "requirements.lock").read_text())
    if env.name == LOCATION_NAMES[0]:
        assert not has_torch  # ETL ships no PyTorch
    home = tmp_path / "home"
    home.mkdir()
    environment = os.environ | image.env | {"DAGSTER_HOME": str(home), "ML_PIPELINE_PROJECT_ROOT": str(image.workdir)}
    environment["PATH"] = f"{image.venv / 'bin'}:{os.environ['PATH']}"
    validated = subprocess.run(
        [str(image.venv / "bin" / "dagster"), "definitions", "validate", "-m", env.module],
        cwd=image.workdir,
        env=environment,
        capture_output=True,
        text=True,
    )
    assert validated.returncode == 0, validated.stderr[-3000:]
    assert subprocess.run([str(python), "-c", "import dagster_cloud"], capture_output=True).returncode == 0


def test_the_serving_image_serves_without_torch_or_dagster(context, tmp_path, tiny_pipeline):
    folder, _ = context
    image = replay(
        ROOT / "4_deploy_code_location" / "serving.Dockerfile", folder, tmp_path / "image", pip_index_flags()
    )
    python = str(image.venv / "bin" / "python")
    for module in ("torch", "dagster"):
        assert subprocess.run([python, "-c", f"import {module}"], capture_output=True).returncode != 0, module
    _, pipeline_folder, result = tiny_pipeline
    assert result.returncode == 0, result.stderr
    port = free_port()
    command = [python, "-m", "deploy_code_location.serving", "--port", str(port)]
    server = subprocess.Popen(
        [*command, "--output-dir", str(pipeline_folder / "releases")],
        cwd=image.workdir,
        env=os.environ | image.env | {"ML_PIPELINE_PROJECT_ROOT": str(image.workdir)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        ready = wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/ready"), 60, alive=lambda: server.poll() is None)
        assert ready, server.stderr.read().decode()[-3000:] if server.poll() is not None else "not ready"
    finally:
        server.terminate()
        server.wait(timeout=20)


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_dockerfiles_pass_hadolint(dockerfile):
    result = subprocess.run([str(BIN / "hadolint"), "--failure-threshold", "info", dockerfile], cwd=ROOT,
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def _check_jsonschema(schema: str, *files: str) -> None:
    result = subprocess.run([str(BIN / "check-jsonschema"), "--builtin-schema", schema, *files], cwd=ROOT,
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_follows_the_compose_specification_and_runs_each_location_from_its_image():
    _check_jsonschema("vendor.compose-spec", f"{COMPOSE_DIR}/compose.yaml")
    services = yaml.safe_load((ROOT / COMPOSE_DIR / "compose.yaml").read_text())["services"]
    for env in LOCATIONS:
        service = next(
            s for s in services.values() if s.get("build", {}).get("dockerfile") == f"{env.folder}/Dockerfile"
        )
        assert service["image"] == f"{image_name(env)}:latest"
        assert service["environment"]["DAGSTER_CURRENT_IMAGE"] == service["image"]  # runs launch in this image
    assert "POSTGRES_PASSWORD:?" in services["postgres"]["environment"]["POSTGRES_PASSWORD"]  # from .env, required
    assert ".env" in (ROOT / ".gitignore").read_text()


def test_compose_instance_and_workspace_are_valid_dagster_config(monkeypatch):
    from dagster._config import process_config
    from dagster._core.instance.config import dagster_instance_config
    from dagster._core.workspace.config_schema import ensure_workspace_config
    from dagster_docker import DockerRunLauncher
    from dagster_postgres import DagsterPostgresStorage

    for name in ("HOST", "USER", "PASSWORD", "DB"):
        monkeypatch.setenv(f"DAGSTER_POSTGRES_{name}", "x")
    config, _ = dagster_instance_config(str(ROOT / COMPOSE_DIR))
    assert process_config(DockerRunLauncher.config_type(), config["run_launcher"]["config"]).success
    assert process_config(DagsterPostgresStorage.config_type(), config["storage"]["postgres"]).success
    workspace = yaml.safe_load((ROOT / COMPOSE_DIR / "workspace.yaml").read_text())
    ensure_workspace_config(workspace, str(ROOT / COMPOSE_DIR / "workspace.yaml"))
    assert [e["grpc_server"]["location_name"] for e in workspace["load_from"]] == LOCATION_NAMES


def test_github_workflows_follow_the_workflow_schema():
    _check_jsonschema("vendor.github-workflows", ".github/workflows/ci.yml", ".github/workflows/deploy.yml")
    deploy = (ROOT / ".github" / "workflows" / "deploy.yml").read_text()
    for env in LOCATIONS:  # a change to a location (or the shared package) rebuilds that location only
        assert f"{env.name}: ['{env.folder}/**', 'shared_code_location/**']" in deploy


def test_dagster_plus_builds_one_image_per_location():
    locations = yaml.safe_load((ROOT / "dagster_cloud.yaml").read_text())["locations"]
    registries = [entry["build"]["registry"] for entry in locations]
    assert len(set(registries)) == len(LOCATIONS) and all(entry["build"]["directory"] == "." for entry in locations)
    gpu = [e["location_name"] for e in locations if "run_k8s_config" in e["container_context"]["k8s"]]
    assert gpu == [env.name for env in LOCATIONS if env.deploy.get("gpu")] and gpu


def test_helm_values_have_one_user_deployment_per_location():
    values = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "values.yaml").read_text())
    deployments = values["dagster-user-deployments"]["deployments"]
    assert [d["dagsterApiGrpcArgs"][-1] for d in deployments] == LOCATION_NAMES
    assert values["runLauncher"]["type"] == "K8sRunLauncher" and values["postgresql"]["enabled"] is False


HELM_SCHEMA = "deploy/kubernetes/values.schema.json"


def test_helm_values_follow_the_charts_values_schema(tmp_path):
    """The chart's rules for every key we set (see the schema's $comment for where they come from)."""
    result = subprocess.run([str(BIN / "check-jsonschema"), "--schemafile", HELM_SCHEMA,
                             "deploy/kubernetes/values.yaml"], cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    # The schema can fail: a misspelt key and a port given as a string are both caught, and named.
    values = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "values.yaml").read_text())
    values["dagster-user-deployments"]["deployments"][0]["port"] = "4000"
    values["runLauncher"]["config"]["k8sRunLauncher"]["envSecret"] = [{"name": "typo"}]
    bad = tmp_path / "values.yaml"
    bad.write_text(yaml.safe_dump(values))
    result = subprocess.run([str(BIN / "check-jsonschema"), "--schemafile", str(ROOT / HELM_SCHEMA), str(bad)],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 1
    assert "'4000' is not of type 'integer'" in result.stdout and "'envSecret' was unexpected" in result.stdout


def test_the_serving_lock_pins_what_the_deploy_lock_pins():
    def pins(path):
        return dict(
            line.split("==") for line in path.read_text().splitlines() if "==" in line and not line.startswith("#")
        )

    serving = pins(ROOT / "4_deploy_code_location" / "requirements-serving.in")
    deploy = pins(ROOT / "4_deploy_code_location" / "requirements.lock")
    assert {name: deploy.get(name) for name in serving} == serving
    assert sys.version_info >= (3, 11)


def test_a_location_moves_to_its_own_repository(tmp_path):
    """docs/split-a-location.md, step by step, for 3_evaluate."""
    repo = tmp_path / "evaluate-repo"
    listing = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True)
    keep = ("3_evaluate_code_location/", "shared_code_location/", "scripts/")
    singles = {"ruff.toml", ".dockerignore", "example_persistent_home/dagster.yaml"}
    for name in listing.stdout.splitlines():
        if (name.startswith(keep) or name in singles) and (ROOT / name).is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, repo / name)
    (repo / "dg.toml").write_text(
        'directory_type = "workspace"\n\n[workspace]\n\n[[workspace.projects]]\npath = "3_evaluate_code_location"\n'
    )
    (repo / ".venv").symlink_to(ROOT / ".venv")  # the root environment (click, uv, Dagster) is the same
    for args in (["setup"], ["locations", "--sync"], ["locations", "--check"], ["test", "3_evaluate"]):
        result = run_cli(*args, root=repo)
        assert result.returncode == 0, (args, result.stdout[-2000:] + result.stderr[-2000:])
    assert (repo / "3_evaluate_code_location" / "Dockerfile").is_file() and (repo / "workspace.yaml").is_file()
    location = repo / "3_evaluate_code_location"
    home = tmp_path / "home"
    home.mkdir()
    validated = subprocess.run(
        [
            str(location / ".venv" / "bin" / "dagster"),
            "definitions",
            "validate",
            "-m",
            "evaluate_code_location.definitions",
        ],
        cwd=location,
        env=os.environ | {"DAGSTER_HOME": str(home)},
        capture_output=True,
        text=True,
    )
    assert validated.returncode == 0, validated.stderr[-3000:]
