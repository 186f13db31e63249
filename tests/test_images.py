"""Every image built by a real container engine (`cli.py images`, once per session: the `images` fixture), and what
each must hold: each location loads in its own image, PyTorch only where it is needed (and its CPU build, without
CUDA libraries), the server without torch or Dagster, a code-only change rebuilt from the dependency layer, and a
release written on the host served by the server's image, which runs as another user."""

import dataclasses
import json
import subprocess

import pytest

from conftest import ROOT
from containers import in_image
from pipeline_cli.derived_files import image_name
from pipeline_cli.images import build, cpu_torch_index, dependency_step_cached, run
from pipeline_cli.locations import LOCATIONS
from shared_code_location.runtime.net import free_port, http_ok, wait_until

TORCH = {env.name: (env.path / "requirements-cuda.lock").exists() for env in LOCATIONS}


@pytest.mark.parametrize("env", LOCATIONS, ids=lambda env: env.name)
def test_each_location_loads_in_its_own_image(images, env):
    tag = f"{image_name(env)}:latest"
    validated = in_image(tag, "dagster", "definitions", "validate", "-m", env.module)
    assert validated.returncode == 0, validated.stderr[-3000:]
    # PyTorch only in the locations that rebuild the model, as its CPU build: no CUDA build, no nvidia-* packages.
    probe = in_image(tag, "python", "-c", _PROBE)
    assert probe.returncode == 0, probe.stderr[-2000:]
    found = json.loads(probe.stdout)
    assert found["torch"] == ("cpu" if TORCH[env.name] else None), found
    assert found["nvidia"] == [], found
    assert found["dagster_cloud"] and found["s3fs"]
    assert found["user"] == 10001  # not root


_PROBE = """
import importlib.metadata as m, importlib.util as u, json, os
torch = None
if u.find_spec("torch"):
    import torch as t
    torch = "cuda" if t.version.cuda else "cpu"
names = [d.metadata["Name"] for d in m.distributions()]
print(json.dumps({"torch": torch, "nvidia": sorted(n for n in names if n.startswith("nvidia-")),
                  "dagster_cloud": "dagster-cloud" in names, "s3fs": "s3fs" in names, "user": os.getuid()}))
"""


def test_the_serving_image_holds_neither_torch_nor_dagster(images):
    probe = in_image("ml-pipeline-serving:latest", "python", "-c", "import importlib.util as u; "
                     "print([m for m in ('torch', 'dagster', 'onnxruntime', 's3fs') if u.find_spec(m)])")  # fmt: skip
    assert probe.stdout.split() == ["['onnxruntime',", "'s3fs']"], probe.stdout + probe.stderr


def test_the_serving_image_serves_a_release_written_on_the_host(images, tiny_pipeline):
    """A release the pipeline wrote (as this machine's user) is readable by the image's user 10001: no file of it
    is private, as a temporary file is (the PermissionError on latest.json)."""
    _, folder, result = tiny_pipeline
    assert result.returncode == 0, result.stderr
    port = free_port()
    name = f"serving-test-{port}"
    volume = f"{folder / 'releases'}:/data/releases:ro"
    run("run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8000", "-v", volume, "ml-pipeline-serving:latest")
    try:
        ready = wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/ready"), 90)
        assert ready, run("logs", name, check=False).stdout + run("logs", name, check=False).stderr
    finally:
        run("rm", "-f", name, check=False)


def test_a_code_only_change_rebuilds_from_the_dependency_layer(images, tmp_path):
    """The lock is installed before any code is copied: a change to code alone reuses that layer (PyTorch
    included) and rebuilds in seconds."""
    context = tmp_path / "context"
    listing = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True)
    for name in listing.stdout.splitlines():
        if (ROOT / name).is_file():
            (context / name).parent.mkdir(parents=True, exist_ok=True)
            (context / name).write_bytes((ROOT / name).read_bytes())
    module = context / "shared_code_location" / "shared_code_location" / "settings.py"
    module.write_text(module.read_text() + "\n# a code-only change\n")
    rebuilt = {}
    with cpu_torch_index() as index:
        for built in images:
            if built.image.dockerfile.endswith("/Dockerfile"):  # the location images
                changed = dataclasses.replace(built.image, tag=built.image.tag.replace(":latest", ":code-change"))
                rebuilt[changed.tag] = build(changed, index, context)
    try:
        for tag, built in rebuilt.items():
            assert dependency_step_cached(built.output), f"{tag} reinstalled its dependencies:\n{built.output[-3000:]}"
    finally:
        run("rmi", *rebuilt, check=False)
