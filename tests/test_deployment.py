"""Deployment files, checked as files (test_images.py and test_compose.py build and run them for real): the build
context, Dockerfile lint, Compose against the Compose Specification and its instance and workspace in Dagster, the
Helm values and the Kubernetes secret against the settings, Dagster+ and the GitHub workflows, the templates they
are rendered from."""

import os
import shutil
import subprocess

import pytest
import yaml

from conftest import LOCATION_NAMES, ROOT, run_cli
from docker_context import build_context
from pipeline_cli.derived_files import API_KEYS_SETTING, COMPOSE_DIR, image_name
from pipeline_cli.locations import LOCATIONS
from shared_code_location import settings

BIN = ROOT / ".venv" / "bin"
DOCKERFILES = sorted(
    p.relative_to(ROOT).as_posix() for p in [*ROOT.glob("*/Dockerfile"), *ROOT.glob("**/*.Dockerfile")]
    if ".venv" not in p.parts and "templates" not in p.parts  # templates are linted as what they render
)  # fmt: skip


@pytest.fixture(scope="module")
def context(tmp_path_factory):
    """The build context every image gets (they all build from the repository root)."""
    folder = tmp_path_factory.mktemp("context")
    return folder, set(build_context(ROOT, folder))


def test_the_build_context_holds_the_code_and_no_local_state(context):
    _, sent = context
    assert "shared_code_location/shared_code_location/contract/io_manager.py" in sent  # the classic mono-repo failure
    for env in LOCATIONS:
        assert f"{env.folder}/requirements.lock" in sent and f"{env.folder}/{env.package}/definitions.py" in sent
    local_state = (".git/", ".github/", "example_persistent_home/", "example_output_resources/")
    leaked = [p for p in sent if p.startswith(local_state) or "/tests/" in p or ".venv" in p]
    assert leaked == []
    assert "example_input_files_resource/tinyshakespeare.txt" in sent  # the corpus the ETL image carries


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
    # The model server: its API keys from .env (required: it never runs open), ready while a release is loaded.
    serving = services["serving"]
    assert f"{API_KEYS_SETTING}:?" in serving["environment"][API_KEYS_SETTING]
    assert f"{API_KEYS_SETTING}=" in (ROOT / COMPOSE_DIR / ".env.example").read_text()
    assert "/ready'" in " ".join(serving["healthcheck"]["test"]) and serving["read_only"] is True
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


def test_every_process_of_a_deployment_gets_every_production_setting():
    """Object storage is how pods and containers on different machines share data: each of them gets the storage,
    folder and object-store settings: Compose's containers and the runs it launches, and on Kubernetes and
    Dagster+ every pod, from the secret whose keys secret.example.yaml lists."""
    names = {s.name for s in settings.PRODUCTION_SETTINGS}
    assert {"ML_PIPELINE_STORAGE_URI", "ML_PIPELINE_S3_ENDPOINT_URL", "ML_PIPELINE_S3_SECRET_ACCESS_KEY"} <= names
    compose = yaml.safe_load((ROOT / COMPOSE_DIR / "compose.yaml").read_text())
    for service in [*(f"code-{n.replace('_', '-')}" for n in LOCATION_NAMES), "daemon", "serving"]:
        assert names <= set(compose["services"][service]["environment"]), service
    instance = yaml.safe_load((ROOT / COMPOSE_DIR / "dagster.yaml").read_text())
    assert names <= set(instance["run_launcher"]["config"]["env_vars"])  # the runs' containers
    secret = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "secret.example.yaml").read_text())
    # And the model server's API keys, for deploy/kubernetes/serving/ (test_kubernetes_serving.py).
    assert set(secret["stringData"]) == names | {API_KEYS_SETTING} and secret["metadata"]["name"] == "ml-pipeline-env"
    values = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "values.yaml").read_text())
    pods = [*values["dagster-user-deployments"]["deployments"], values["runLauncher"]["config"]["k8sRunLauncher"],
            values["dagsterWebserver"], values["dagsterDaemon"]]  # fmt: skip
    assert all({"name": "ml-pipeline-env"} in pod["envSecrets"] for pod in pods)
    assert all(d["includeConfigInLaunchedRuns"]["enabled"] for d in values["dagster-user-deployments"]["deployments"])
    for env in LOCATIONS:  # Dagster+: each location's runs and code servers
        context = yaml.safe_load((env.path / "container_context.yaml").read_text())
        assert context["k8s"]["env_secrets"] == ["ml-pipeline-env"]


def test_generated_files_name_their_template_and_are_marked_generated():
    from pipeline_cli.derived_files import derived_files

    files = derived_files(LOCATIONS)
    attributes = (ROOT / ".gitattributes").read_text()
    for name, content in files.items():
        header = " ".join(line.removeprefix("# ") for line in content.splitlines()[:3])  # wrapped when long
        assert header.startswith("Generated by `python scripts/cli.py locations --sync` from "), name
        if name != ".gitattributes":
            assert f"/{name} linguist-generated=true" in attributes
            template = header.split(" from ", 1)[1].split(" and dg.toml", 1)[0]
            assert (ROOT / template).is_file(), (name, template)


def test_github_workflows_follow_the_workflow_schema():
    _check_jsonschema("vendor.github-workflows", ".github/workflows/ci.yml", ".github/workflows/deploy.yml")
    deploy = (ROOT / ".github" / "workflows" / "deploy.yml").read_text()
    for env in LOCATIONS:  # a change to a location (or the shared package) rebuilds that location only
        assert f"{env.name}: ['{env.folder}/**', 'shared_code_location/**']" in deploy


def test_ci_on_github_fails_when_the_container_tests_cannot_run():
    """GitHub's runners have Docker: CI there makes the image and Compose tests required, as .ci/run does, so that
    they cannot all skip and still pass (tests/containers.py)."""
    ci = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    steps = [step for job in ci["jobs"].values() for step in job["steps"]]
    tests = [step for step in steps if "cli.py test" in step.get("run", "")]
    assert tests and all(step.get("env", {}).get("CI_REQUIRE_CONTAINER_TESTS") == "1" for step in tests), tests
    assert "export CI_REQUIRE_CONTAINER_TESTS=1" in (ROOT / ".ci" / "run").read_text()


def test_the_webserver_and_daemon_upload_no_logs_in_compose_or_kubernetes():
    """Dagster's webserver and daemon upload $DAGSTER_HOME/logs/ unless DAGSTER_DISABLE_TELEMETRY is set, whatever
    dagster.yaml says (docs/settings.md; tests/test_private_logs.py shows it on the real webserver)."""
    dockerfile = (ROOT / COMPOSE_DIR / "dagster.Dockerfile").read_text()
    assert "DAGSTER_DISABLE_TELEMETRY=1" in dockerfile.split("\nCMD", 1)[0]
    compose = yaml.safe_load((ROOT / COMPOSE_DIR / "compose.yaml").read_text())["services"]
    assert {compose[name]["build"]["dockerfile"] for name in ("webserver", "daemon")} == {
        "deploy/compose/dagster.Dockerfile"
    }
    assert yaml.safe_load((ROOT / COMPOSE_DIR / "dagster.yaml").read_text())["telemetry"] == {"enabled": False}
    values = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "values.yaml").read_text())
    assert values["telemetry"] == {"enabled": False}
    for service in ("dagsterWebserver", "dagsterDaemon"):
        assert values[service]["env"]["DAGSTER_DISABLE_TELEMETRY"] == "1", service


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

    location = ROOT / "4_deploy_code_location"
    wanted, serving = pins(location / "requirements-serving.in"), pins(location / "requirements-serving.lock")
    deploy = pins(location / "requirements.lock")
    assert {name: serving.get(name) for name in wanted} == wanted  # the serving image installs what it asks for
    # ... at the versions the deploy location's tests ran with: every package the two locks share, dependencies too.
    shared = serving.keys() & deploy.keys()
    assert len(shared) > len(wanted)
    assert {name: serving[name] for name in shared} == {name: deploy[name] for name in shared}


def test_a_location_moves_to_its_own_repository(tmp_path):
    """docs/split-a-location.md, step by step, for 3_evaluate."""
    repo = tmp_path / "evaluate-repo"
    listing = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True)
    keep = ("3_evaluate_code_location/", "shared_code_location/", "scripts/", "deploy/templates/")
    singles = {"ruff.toml", "pins.txt", ".dockerignore", "example_persistent_home/dagster.yaml"}
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
