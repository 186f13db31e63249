"""What `cli.py setup` installs: exactly each lock, with the PyTorch build the machine needs (no CUDA libraries on a
machine without an NVIDIA GPU); and the locks saying exactly what each build installs."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, copy_checkout, run_cli
from pipeline_cli.environments import LOCK_FILES, machine_torch_variant
from pipeline_cli.locations import ENVIRONMENTS, LOCATIONS

_INSTALLED = (
    "import importlib.metadata as m, json; "
    "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))"
)


def normalized(name: str) -> str:
    """A distribution's name as package indexes compare them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.mark.parametrize("env", ENVIRONMENTS, ids=lambda env: env.name)
def test_each_venv_holds_its_lock_with_the_machines_pytorch_build(env):
    listed = subprocess.run([str(env.python), "-c", _INSTALLED], capture_output=True, text=True, check=True).stdout
    installed = {normalized(name): version for name, version in json.loads(listed).items()}
    variant = machine_torch_variant()
    lock = env.path / (LOCK_FILES["cuda"] if variant == "cuda" and (env.path / LOCK_FILES["cuda"]).exists() else
                       LOCK_FILES["cpu"])  # fmt: skip
    pinned = re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)$", lock.read_text(), re.MULTILINE)
    for name, version in pinned:
        assert installed.get(normalized(name)) == version, (env.name, name)
    if variant == "cpu":
        assert not [name for name in installed if name.startswith("nvidia-")], env.name
        if "torch" in installed:
            assert installed["torch"].endswith("+cpu")


@pytest.mark.parametrize(
    "env", [e for e in LOCATIONS if (e.path / LOCK_FILES["cuda"]).exists()], ids=lambda env: env.name
)
def test_the_locks_say_what_each_pytorch_build_installs(env):
    cpu = (env.path / LOCK_FILES["cpu"]).read_text()
    cuda = (env.path / LOCK_FILES["cuda"]).read_text()
    assert re.search(r"^torch==\S+\+cpu$", cpu, re.MULTILINE) and "nvidia-" not in cpu
    assert re.search(r"^torch==[^+\s]+$", cuda, re.MULTILINE) and re.search(r"^nvidia-\S+==", cuda, re.MULTILINE)
    # The same version of every package but the PyTorch build and its CUDA libraries.
    versions = [dict(re.findall(r"^(\S+)==(\S+)$", text, re.MULTILINE)) for text in (cpu, cuda)]
    shared = versions[0].keys() & versions[1].keys() - {"torch"}
    assert all(versions[0][name] == versions[1][name] for name in shared)


def test_setup_help_on_a_fresh_clone_installs_nothing(tmp_path):
    """`setup --help` before the root environment exists prints the command's help from the bare Python, and builds
    nothing (it used to create .venv first, a minute of downloads for a help text)."""
    needed = ["scripts", "pins.txt", "dg.toml", "shared_code_location/pyproject.toml"]  # what bootstrapping reads
    listing = subprocess.run(["git", "ls-files", *needed], cwd=ROOT, capture_output=True, text=True, check=True)
    for name in listing.stdout.splitlines():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, tmp_path / name)
    bare_python = Path(sys.base_prefix) / "bin" / "python3"  # the machine's Python, not this venv's
    for flag in ("--help", "-h"):
        result = subprocess.run([str(bare_python), "scripts/cli.py", "setup", flag], cwd=tmp_path,
                                capture_output=True, text=True, timeout=60)  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("Usage: cli.py setup [OPTIONS]") and "--force" in result.stdout
        assert "Reinstall every environment" in result.stdout and "bootstrapping" not in result.stdout
    assert not (tmp_path / ".venv").exists()


def test_cli_test_fails_a_suite_that_collects_no_test_unless_k_selected_none(tmp_path):
    """pytest exits 5 when it collects nothing: `cli.py test` passes that only when `-k` selected nothing of the
    suite; a suite whose tests are gone fails (it used to pass, and CI with it)."""
    fork = copy_checkout(tmp_path / "fork")
    tests = fork / "shared_code_location" / "tests"
    for path in tests.glob("test_*.py"):
        path.unlink()
    empty = run_cli("test", "shared", root=fork)
    assert empty.returncode == 1 and "shared      FAILED" in empty.stdout, empty.stdout
    selected_none = run_cli("test", "shared", "-k", "no_such_test", root=fork)
    assert selected_none.returncode == 0 and "shared      passed" in selected_none.stdout, selected_none.stdout
