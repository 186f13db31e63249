"""A fork changes its locations: `new-location` and `rename-location` in a copy of this checkout, loaded by Dagster.

One copy for the module (the venvs of the untouched locations are linked from this checkout, never written to):
bad names change nothing; a fifth location is scaffolded, passes its own test and loads beside the others in `dev`;
the ETL location is renamed consistently and still loads and passes its tests.
"""

import hashlib
import os
import re
import signal
import subprocess

import pytest

from conftest import ROOT, copy_checkout, dagster_dev, graphql, isolated, location_statuses, run_cli


@pytest.fixture(scope="module")
def fork(tmp_path_factory):
    """A copy of the checkout's files, with every venv linked from this checkout."""
    return copy_checkout(tmp_path_factory.mktemp("fork") / "project")


def snapshot(root) -> str:
    """A hash of every file outside venvs and bytecode caches: equal snapshots mean nothing changed."""
    digest = hashlib.sha256()
    skip = {".venv", "__pycache__"}  # Python writes bytecode for the CLI's own modules where it may (CI does)
    for path in sorted(p for p in root.rglob("*") if not skip & set(p.parts) and p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return digest.hexdigest()


def test_bad_names_are_refused_and_change_nothing(fork):
    before = snapshot(fork)
    for args, message in [
        (("new-location", "5monitoring"), "starts with a digit"),
        (("new-location", "class"), "reserved word"),
        (("new-location", "model"), "clashes with location 2_model"),
        (("new-location", "Monitoring"), "not a valid name"),
        (("rename-location", "model", "evaluate"), "clashes with location 3_evaluate"),
        (("rename-location", "model", "2model"), "starts with a digit"),
        (("rename-location", "nowhere", "somewhere"), "unknown location 'nowhere'"),
    ]:
        result = run_cli(*args, root=fork)
        assert result.returncode != 0 and message in result.stderr, (args, result.stderr)
    assert snapshot(fork) == before


def test_new_location_is_listed_everywhere_and_passes_its_own_test(fork):
    result = run_cli("new-location", "monitoring", root=fork)
    assert result.returncode == 0, result.stdout + result.stderr
    folder = fork / "5_monitoring_code_location"
    assert (folder / "monitoring_code_location" / "definitions.py").is_file()
    assert (folder / "requirements.lock").read_text().count("dagster==") == 1
    assert 'path = "5_monitoring_code_location"' in (fork / "dg.toml").read_text()
    for derived in ("workspace.yaml", "dagster_cloud.yaml"):
        assert "location_name: 5_monitoring" in (fork / derived).read_text()
    assert run_cli("locations", "--check", root=fork).returncode == 0
    assert run_cli("lint", root=fork).returncode == 0  # what it rendered passes ruff, as the rest does
    tested = run_cli("test", "5_monitoring", root=fork)
    assert tested.returncode == 0 and "1 passed, 0 failed" in tested.stdout, tested.stdout + tested.stderr
    assert "Warning" not in tested.stdout, tested.stdout  # the scaffold is on Dagster's current APIs


def skeleton(folder, package: str) -> set[str]:
    """The files every location has, named the same whatever the location: its layout."""
    names = {"pyproject.toml", "tests/test_definitions.py"}
    names |= {
        f"{package}/{name}" for name in ("__init__.py", "definitions.py", "defs/__init__.py", "defs/resources.py")
    }
    return {name.replace(package, "<package>") for name in names if (folder / name).is_file()}


def test_a_new_location_has_the_shape_of_the_shipped_ones(fork):
    from pipeline_cli.locations import load_locations

    locations = load_locations(fork)
    assert [env.name for env in locations][-1] == "5_monitoring", "run after the new-location test"
    new, shipped = locations[-1], locations[:-1]
    expected = skeleton(fork / new.folder, new.package)
    assert len(expected) == 6  # the whole skeleton
    entry_point = (fork / new.folder / new.package / "definitions.py").read_text()
    for env in shipped:
        assert skeleton(fork / env.folder, env.package) == expected, env.name
        # The same entry point: the defs/ folder, loaded by the shared package's load_location.
        assert "defs = load_location(__file__)" in (fork / env.folder / env.package / "definitions.py").read_text()
    assert "defs = load_location(__file__)" in entry_point
    # Like every location after the first, it declares what it reads from the contract in defs/upstream.py.
    assert all((fork / env.folder / env.package / "defs" / "upstream.py").is_file() for env in locations[1:])


def test_rename_location_renames_every_reference_and_still_loads(fork, tmp_path):
    result = run_cli("rename-location", "1_etl", "ingest", root=fork)
    assert result.returncode == 0, result.stdout + result.stderr
    folder = fork / "1_ingest_code_location"
    assert (folder / "ingest_code_location" / "definitions.py").is_file()
    assert not (fork / "1_etl_code_location").exists()
    leftovers = re.compile(r"(?<![\w-])(1_etl|etl_code_location|etl-code-location)(?![\w-])")
    for path in fork.rglob("*"):
        if path.is_file() and ".venv" not in path.parts and path.suffix in {".py", ".toml", ".yaml", ".md", ".lock"}:
            assert not leftovers.search(path.read_text()), path
    assert not (folder / ".venv").is_symlink()  # its own venv now; this checkout's was not touched
    assert (ROOT / "1_etl_code_location" / ".venv" / "bin" / "python").exists()
    home = tmp_path / "home"
    home.mkdir()
    command = [
        str(folder / ".venv" / "bin" / "dagster"),
        "definitions",
        "validate",
        "-m",
        "ingest_code_location.definitions",
    ]
    validated = subprocess.run(command, cwd=folder, env=os.environ | {"DAGSTER_HOME": str(home)}, capture_output=True)
    assert validated.returncode == 0, validated.stderr[-2000:]
    tested = run_cli("test", "1_ingest", root=fork)
    assert tested.returncode == 0, tested.stdout[-3000:] + tested.stderr


def test_dev_loads_the_new_and_the_renamed_location_beside_the_others_in_one_graph(fork, tmp_path):
    # Stopped with SIGTERM, as a service manager would (the other dev tests use Ctrl-C).
    with dagster_dev(isolated(tmp_path), root=fork, stop_with=signal.SIGTERM) as port:
        expected = ["1_ingest", "2_model", "3_evaluate", "4_deploy", "5_monitoring"]
        assert location_statuses(port) == {name: ("LOADED", "RepositoryLocation") for name in expected}
        nodes = graphql(
            port,
            "{ assetNodes { assetKey { path } isMaterializable repository { location { name } } "
            "dependencyKeys { path } } }",
        )["assetNodes"]
        owner = {
            tuple(n["assetKey"]["path"]): n["repository"]["location"]["name"] for n in nodes if n["isMaterializable"]
        }
        assert owner[("monitoring", "example")] == "5_monitoring"
        edges = {
            (owner[tuple(d["path"])], owner[tuple(n["assetKey"]["path"])])
            for n in nodes
            if n["isMaterializable"]
            for d in n["dependencyKeys"]
            if owner.get(tuple(d["path"])) not in (None, owner[tuple(n["assetKey"]["path"])])
        }
        assert {("1_ingest", "2_model"), ("2_model", "3_evaluate"), ("3_evaluate", "4_deploy")} <= edges
