"""Files that list the locations, rendered from the templates in deploy/templates/ so that they can never disagree
with dg.toml: workspaces, Dagster+ files, one Dockerfile per location, the Compose topology and its images, Helm
values and the Kubernetes secret's keys, the deploy workflow.

Each template has the shape of the file it produces (a Dockerfile template is a Dockerfile, with a few Jinja2
tags): to change an image or the Compose topology, edit its template, then `python scripts/cli.py locations
--sync`. Every generated file starts with a header naming its template, and .gitattributes (generated too) marks
them, so GitHub folds them in diffs; `--check`, `lint` and a test fail when one is out of date.
"""

from __future__ import annotations

import json
import re
import textwrap
import tomllib
from dataclasses import dataclass
from pathlib import Path

from pipeline_cli.bootstrap import ROOT, UV_VERSION
from pipeline_cli.locations import SHARED, Environment
from shared_code_location import settings

TEMPLATES = ROOT / "deploy" / "templates"
#: Where every image puts the repository's files.
IMAGE_ROOT = "/opt/dagster/app"
#: The gRPC port of every code server (its own container or pod, so they can share it).
GRPC_PORT = 4000
#: Where the images are pushed: replace it in a fork (then `cli.py locations --sync`).
REGISTRY = "your-registry.example.com/dagster-ml-pipeline"
#: The Kubernetes secret with the production settings, read by every pod.
SECRET = "ml-pipeline-env"
COMPOSE_DIR = "deploy/compose"
#: The model server's image, its port, and its name on Kubernetes (Deployment, Service, autoscaler, budget).
SERVING_IMAGE = "ml-pipeline-serving"
SERVING_PORT = 8000
#: The Kubernetes manifests of the model server, rendered from deploy/templates/kubernetes-serving/ (same names).
KUBERNETES_SERVING_DIR = "deploy/kubernetes/serving"
KUBERNETES_SERVING_FILES = ("deployment.yaml", "service.yaml", "autoscaler.yaml", "disruption-budget.yaml")
#: The model server's API keys (comma-separated): in the Kubernetes secret for the serving Deployment, and in
#: Compose's .env for the serving container. Not a production setting: the pipeline's processes have no use for it.
SERVING_API_KEYS = settings.Setting(
    "ML_PIPELINE_API_KEYS",
    None,
    "The model server's API keys, comma-separated (several, so that one can be replaced without downtime): every "
    "model route needs `Authorization: Bearer <key>`. Read by deploy/kubernetes/serving/ only.",
    production_example="change-me-to-a-long-random-key",
)
API_KEYS_SETTING = SERVING_API_KEYS.name


@dataclass(frozen=True)
class LocationView:
    """A location as the templates see it."""

    name: str
    folder: str
    package: str
    module: str
    image: str  # its image: ml-pipeline-2-model
    service: str  # its code server's host name in Compose and Kubernetes: code-2-model
    gpu: bool  # its runs ask for a GPU where the platform has them
    torch: str | None  # the PyTorch build its image installs by default (cpu, cuda), None without torch
    corpus: bool  # its image carries the example corpus (the location that ingests it)
    grpc_command: tuple[str, ...]  # how its container serves it


def image_name(env: Environment) -> str:
    """The image of a location: `ml-pipeline-2-model`."""
    return "ml-pipeline-" + env.name.replace("_", "-")


def view(env: Environment) -> LocationView:
    """What the templates know of `env`."""
    gpu = bool(env.deploy.get("gpu"))
    has_torch = (env.path / "requirements-cuda.lock").exists()
    command = ("dagster", "code-server", "start", "-h", "0.0.0.0", "-p", str(GRPC_PORT), "-m", env.module,
               "--location-name", env.name)  # fmt: skip
    return LocationView(
        name=env.name,
        folder=env.folder,
        package=env.package,
        module=env.module,
        image=image_name(env),
        service="code-" + env.name.replace("_", "-"),
        gpu=gpu,
        torch=("cuda" if gpu else "cpu") if has_torch else None,
        corpus=bool(env.deploy.get("corpus")),
        grpc_command=command,
    )


def serving_location(locations: tuple[Environment, ...]) -> Environment | None:
    """The location with a `serving` package (the HTTP API's image is built from it), if any."""
    return next((env for env in locations if (env.path / env.package / "serving" / "__main__.py").is_file()), None)


def pins() -> dict[str, str]:
    """`{distribution: requirement}` of every exact pin of the shared package and the root environment."""
    shared = tomllib.loads((SHARED.path / "pyproject.toml").read_text())["project"]
    requirements = [*shared["dependencies"], *(p for extra in shared["optional-dependencies"].values() for p in extra)]
    requirements += re.findall(r"^(\S+==\S+)", (ROOT / "scripts" / "requirements.in").read_text(), re.MULTILINE)
    return {re.split(r"[=<>!~\[ ]", pin, maxsplit=1)[0]: pin for pin in requirements}


def _header(source: str, width: int = 116) -> str:
    text = f"Generated by `python scripts/cli.py locations --sync` from {source}: edit those, not this file."
    return "".join(f"# {line}\n" for line in textwrap.wrap(text, width, break_on_hyphens=False))  # paths whole


def render(template: str, **context: object) -> str:
    """`template` rendered with `context` and the project's constants, under its generated-file header."""
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    environment.filters["tojson"] = json.dumps  # Jinja2's own escapes <, > and & for HTML
    constants = {
        "uv_version": UV_VERSION,
        "image_root": IMAGE_ROOT,
        "grpc_port": GRPC_PORT,
        "registry": REGISTRY,
        "secret": SECRET,
        "serving_image": SERVING_IMAGE,
        "serving_port": SERVING_PORT,
        "api_keys": API_KEYS_SETTING,
        "pins": pins(),
        "production_settings": settings.PRODUCTION_SETTINGS,
    }
    body = environment.get_template(template).render(constants | context)
    return _header(f"deploy/templates/{template} and dg.toml") + body


def derived_files(locations: tuple[Environment, ...]) -> dict[str, str]:
    """Every generated file: its path from the repository root, and its content."""
    views = [view(env) for env in locations]
    common = {"locations": views, "secret_keys": [s.name for s in settings.PRODUCTION_SETTINGS]}
    files = {
        "workspace.yaml": render("workspace.yaml", **common),
        "dagster_cloud.yaml": render("dagster_cloud.yaml", **common, newer_name=False),
        "build.yaml": render("dagster_cloud.yaml", **common, newer_name=True),
        f"{COMPOSE_DIR}/workspace.yaml": render("compose-workspace.yaml", **common),
        f"{COMPOSE_DIR}/dagster.Dockerfile": render("dagster.Dockerfile"),
        f"{COMPOSE_DIR}/object-store.Dockerfile": render("object-store.Dockerfile"),
        "deploy/kubernetes/values.yaml": render("values.yaml", **common),
        ".github/workflows/deploy.yml": render("deploy.yml", **common),
    }
    serving = serving_location(locations)
    serving_secrets = [SERVING_API_KEYS] if serving is not None else []
    files["deploy/kubernetes/secret.example.yaml"] = render("secret.example.yaml", serving_settings=serving_secrets)
    ray = next((view(env) for env in locations if env.deploy.get("ray")), None)  # the location that trains on Ray
    files[f"{COMPOSE_DIR}/compose.yaml"] = render("compose.yaml", **common, serving=serving and view(serving), ray=ray)
    if serving is not None:
        files[f"{serving.folder}/serving.Dockerfile"] = render("serving.Dockerfile", location=view(serving))
        for name in KUBERNETES_SERVING_FILES:
            files[f"{KUBERNETES_SERVING_DIR}/{name}"] = render(f"kubernetes-serving/{name}", package=serving.package)
    for location in views:
        files[f"{location.folder}/Dockerfile"] = render("location.Dockerfile", location=location)
        files[f"{location.folder}/container_context.yaml"] = render("container_context.yaml", location=location)
    # GitHub folds generated files in diffs and leaves them out of language statistics.
    marks = "".join(f"/{name} linguist-generated=true\n" for name in sorted(files))
    files[".gitattributes"] = _header("deploy/templates/ (the files it generates)") + marks
    return files


def out_of_date(locations: tuple[Environment, ...], root: Path = ROOT) -> list[str]:
    """The derived files whose content differs from what the locations give."""
    return [
        name
        for name, content in derived_files(locations).items()
        if not (root / name).exists() or (root / name).read_text(encoding="utf-8") != content
    ]


def write_all(locations: tuple[Environment, ...], root: Path = ROOT) -> list[str]:
    """Rewrite every derived file that is out of date; the names of those rewritten."""
    from pipeline_cli.environments import atomic_write_text

    files = derived_files(locations)
    changed = out_of_date(locations, root)
    for name in changed:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(root / name, files[name])
    return changed
