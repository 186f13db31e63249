"""Experiments declared in YAML: partitions of the model, and bad YAML refused with the file, experiment and field.

The bad-YAML cases run in a copy of this location (its venv linked), as a user would edit it: `dg check yaml` and
loading the definitions both refuse the file, and nothing is dropped silently.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from model_code_location.definitions import defs
from model_code_location.experiments import Experiment, ExperimentConfigError, validated_declarations
from model_code_location.presets import TrainingConfig
from shared_code_location.contract.asset_keys import TRAINED_MODEL
from shared_code_location.contract.experiments import DECLARED_METADATA_KEY, EXPERIMENTS, fingerprint

LOCATION = Path(__file__).resolve().parent.parent
EXPERIMENTS_YAML = LOCATION / "model_code_location" / "defs" / "experiments" / "defs.yaml"
SHIPPED = yaml.safe_load(EXPERIMENTS_YAML.read_text())["attributes"]["experiments"]


def test_each_declared_experiment_is_a_partition_of_the_model():
    node = defs.resolve_asset_graph().get(TRAINED_MODEL.key)
    assert node.partitions_def == EXPERIMENTS
    declared = node.metadata[DECLARED_METADATA_KEY].value
    assert list(declared) == [entry["name"] for entry in SHIPPED]
    sensor = defs.resolve_sensor_def("experiments_sensor")
    assert sensor.job_name == "training_job"


def test_an_experiment_trains_its_preset_with_its_overrides_and_run_config_on_top():
    declaration = Experiment(name="wide", preset="tiny", overrides={"n_embd": 96, "n_head": 3}).declaration()
    hp = TrainingConfig().resolved(declaration, environment=False)
    assert (hp["preset"], hp["n_embd"], hp["n_head"], hp["n_layer"]) == ("tiny", 96, 3, 2)
    assert TrainingConfig(max_iters=7).resolved(declaration, environment=False)["max_iters"] == 7
    # A preset in the run config replaces the experiment, overrides and all.
    replaced = TrainingConfig(preset="quick").resolved(declaration, environment=False)
    assert (replaced["preset"], replaced["n_embd"]) == ("quick", 160)
    # Changing the YAML entry changes its fingerprint, and only its own.
    other = Experiment(name="wide", preset="tiny", overrides={"n_embd": 96, "n_head": 4}).declaration()
    assert fingerprint(declaration) != fingerprint(other)


def test_duplicates_and_impossible_combinations_name_the_file_and_the_experiment(tmp_path):
    source = tmp_path / "defs.yaml"
    twice = [Experiment(name="a"), Experiment(name="b"), Experiment(name="a")]
    with pytest.raises(ExperimentConfigError, match=rf"{source}: experiment 'a': name: declared twice"):
        validated_declarations(twice, source)
    odd = [Experiment(name="ok"), Experiment(name="odd-heads", overrides={"n_embd": 100, "n_head": 3})]
    with pytest.raises(ExperimentConfigError, match=r"experiment 'odd-heads': overrides: n_embd \(100\) must be a"):
        validated_declarations(odd, source)


@pytest.fixture
def location_copy(tmp_path):
    """This location's files in a temporary folder, with its venv linked: edit its YAML freely."""
    copy = tmp_path / LOCATION.name
    shutil.copytree(LOCATION, copy, ignore=shutil.ignore_patterns(".venv", "__pycache__", "*.egg-info", "tests"))
    (copy / ".venv").symlink_to(LOCATION / ".venv")
    return copy


def _write(copy: Path, experiments: list[dict]) -> Path:
    path = copy / "model_code_location" / "defs" / "experiments" / "defs.yaml"
    document = yaml.safe_load(path.read_text())
    document["attributes"]["experiments"] = experiments
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def _load(copy: Path) -> subprocess.CompletedProcess:
    # The copy is first on sys.path, so its package (and YAML) is the one loaded.
    code = "from model_code_location.definitions import defs; print(len(defs.resolve_asset_graph().asset_nodes))"
    return subprocess.run([sys.executable, "-c", code], cwd=copy, capture_output=True, text=True)


def _dg_check_yaml(copy: Path) -> subprocess.CompletedProcess:
    dg = LOCATION / ".venv" / "bin" / "dg"
    return subprocess.run([str(dg), "check", "yaml"], cwd=copy, capture_output=True, text=True, timeout=300)


GOOD = {"name": "baseline", "preset": "tiny"}


@pytest.mark.parametrize(
    ("bad", "at_load"),
    [
        ({"name": "typo", "overrides": {"max_itres": 10}}, "overrides.max_itres"),
        ({"name": "wrong-type", "overrides": {"n_layer": "four"}}, "overrides.n_layer"),
        ({"name": "no-such-preset", "preset": "huge"}, "preset"),
        ({"name": "no-workers", "workers": 0}, "workers"),
        ({"name": "some-gpus", "gpus_per_worker": "one"}, "gpus_per_worker"),
        # Where an experiment trains is its own field, not an override (a forced preset would drop it).
        ({"name": "workers-override", "overrides": {"workers": 2}}, "overrides.workers"),
    ],
    ids=["unknown-field", "wrong-type", "unknown-preset", "no-workers", "wrong-type-gpus", "workers-as-override"],
)
def test_a_bad_experiment_is_refused_by_dg_check_yaml_and_at_load(location_copy, bad, at_load):
    path = _write(location_copy, [GOOD, bad])
    checked = _dg_check_yaml(location_copy)
    assert checked.returncode != 0
    assert f"{path}:" in checked.stdout + checked.stderr  # the file and the line
    loaded = _load(location_copy)
    assert loaded.returncode != 0
    # The file, the experiment (its place in the list: 1 is the second) and the field; not a silent drop.
    assert f"experiments.1.{at_load}" in loaded.stderr, loaded.stderr[-3000:]
    assert f"{path}:" in loaded.stderr


def test_workers_that_cannot_split_the_batch_are_refused_at_load(location_copy):
    path = _write(location_copy, [GOOD, {"name": "three", "preset": "tiny", "workers": 3}])
    loaded = _load(location_copy)
    assert loaded.returncode != 0
    assert f"{path}: experiment 'three': workers: batch_size (16) must be a multiple of workers (3)" in loaded.stderr


def test_an_experiment_declares_its_workers_and_keeps_its_fingerprint_without_them():
    two = Experiment(name="wide", preset="tiny", workers=2, cpus_per_worker=1).declaration()
    assert two["scaling"] == {"workers": 2, "cpus_per_worker": 1}
    hp = TrainingConfig().resolved(two, environment=False)
    assert (hp["workers"], hp["cpus_per_worker"], hp["gpus_per_worker"]) == (2, 1, 0)
    assert TrainingConfig(workers=1).resolved(two, environment=False)["workers"] == 1  # run config on top
    # An entry without workers declares what it declared before they existed: its partition is not retrained.
    assert "scaling" not in Experiment(name="wide", preset="tiny").declaration()
    assert fingerprint(two) != fingerprint(Experiment(name="wide", preset="tiny").declaration())


def test_a_duplicate_name_is_refused_at_load(location_copy):
    path = _write(location_copy, [GOOD, {"name": "other", "preset": "tiny"}, GOOD])
    loaded = _load(location_copy)
    assert loaded.returncode != 0
    assert f"{path}: experiment 'baseline': name: declared twice" in loaded.stderr


def test_the_shipped_experiments_pass_dg_check_yaml():
    checked = subprocess.run(
        [str(LOCATION / ".venv" / "bin" / "dg"), "check", "yaml"], cwd=LOCATION, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_run_whose_settings_differ_from_what_was_trained_retrains_and_says_what_differs(tmp_path, monkeypatch):
    """What `cli.py run` sees: each materialization records the hyperparameters it trained with, and a run that would
    train the experiment with others (a preset forced or no longer forced, a field set or no longer set) retrains
    it, naming what changed; one that would train the same does not. (`run --preset tiny`, then a plain `run`, said
    "up to date" and kept the smoke model.)"""
    import dagster as dg
    import numpy as np

    from model_code_location.ray_cluster import RAY_RESOURCE_KEY, RayCluster
    from model_code_location.trained_model import build_trained_model
    from shared_code_location import settings
    from shared_code_location.contract.asset_keys import TRAIN_TOKENS, VALIDATION_TOKENS, VOCABULARY
    from shared_code_location.contract.io_manager import PipelineIOManager
    from shared_code_location.contract.storage_formats import StorageFormat, encode
    from shared_code_location.contract.token_shards import store_array
    from shared_code_location.runtime.staleness import stale_assets

    monkeypatch.delenv(settings.TRAINING_PRESET.name, raising=False)
    text = (settings.project_root() / "example_input_files_resource" / "tinyshakespeare.txt").read_text()[:20_000]
    symbols = sorted(set(text))
    ids = np.array([symbols.index(c) + 1 for c in text], dtype=np.uint16)
    storage = tmp_path / "storage"
    etl = storage / "etl"
    etl.mkdir(parents=True)
    vocab_size = len(symbols) + 1
    (etl / "vocabulary.json").write_bytes(encode(StorageFormat.JSON, {"vocab_size": vocab_size}))
    for split, part in (("train", ids[:18_000]), ("validation", ids[18_000:])):
        manifest = store_array(storage, f"etl/shards/{split}-0.npy", part, vocab_size, split)
        (etl / f"{split}_tokens.json").write_bytes(encode(StorageFormat.TOKEN_SHARDS, manifest))
    # Its own settings: the quick preset, cut to a few steps so that the test trains in a second.
    declaration = Experiment(name="own", preset="quick", overrides={"max_iters": 4, "eval_tokens": 512}).declaration()
    model = build_trained_model({"own": declaration})
    resources = {"io_manager": PipelineIOManager(base_uri=str(tmp_path / "storage")), RAY_RESOURCE_KEY: RayCluster()}
    assets = [model, VOCABULARY.spec(), TRAIN_TOKENS.spec(), VALIDATION_TOKENS.spec()]
    defs = dg.Definitions(assets=assets, resources=resources)

    def config(**fields) -> dict:
        return {"ops": {"model__trained_model": {"config": fields}}} if fields else {}

    def stale(run_config: dict) -> dict[str, str]:
        return {str(target): why for target, why in stale_assets(defs, instance, run_config).items()}

    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(EXPERIMENTS.name, ["own"])
        for upstream in (VOCABULARY, TRAIN_TOKENS, VALIDATION_TOKENS):  # as the ETL location would have recorded
            instance.report_runless_asset_event(dg.AssetMaterialization(upstream.key))
        forced = config(preset="tiny", max_iters=4, eval_tokens=512)  # `run --preset tiny --set max_iters=4 ...`
        result = dg.materialize(
            assets, selection=[TRAINED_MODEL.key], partition_key="own", instance=instance, resources=resources,
            run_config=forced,
        )  # fmt: skip
        assert result.success
        assert stale(forced) == {}  # the same settings again: nothing to do
        # A plain run: the experiment's own preset and overrides are in force again.
        why = stale({})["model/trained_model[own]"]
        assert why.startswith("trained with other settings than this run's: preset tiny -> quick, batch_size 16 -> 24")
        assert why.endswith("more")  # n_embd, n_layer, ... are not all listed
        # The same preset forced by the environment instead of the run config: what was trained is in force.
        monkeypatch.setenv(settings.TRAINING_PRESET.name, "tiny")
        assert stale(config(max_iters=4, eval_tokens=512)) == {}
        # An override changed: only that field differs.
        assert stale(forced | config(preset="tiny", max_iters=5, eval_tokens=512)) == {
            "model/trained_model[own]": "trained with other settings than this run's: max_iters 4 -> 5"
        }


def test_the_shipped_gpu_experiment_is_skipped_by_its_own_run_on_a_machine_without_a_gpu(tmp_path, monkeypatch, capfd):
    # What the daemon's run of it does here: says why in one line, writes nothing, and succeeds.
    import dagster as dg

    from model_code_location.ray_cluster import RAY_RESOURCE_KEY, RayCluster
    from model_code_location.trained_model import build_trained_model
    from shared_code_location.contract.experiments import GPUS_METADATA_KEY
    from shared_code_location.contract.io_manager import PipelineIOManager
    from shared_code_location.model.token_windows import as_token_shards
    from shared_code_location.runtime.placement import cuda_devices

    if cuda_devices():
        pytest.skip("this machine has a GPU: the experiment would train")
    monkeypatch.delenv("ML_PIPELINE_RAY_ADDRESS", raising=False)
    shipped = next(entry for entry in SHIPPED if entry.get("gpus_per_worker"))
    declaration = Experiment(**shipped).declaration()
    model = build_trained_model({shipped["name"]: declaration})
    assert model.specs_by_key[model.key].metadata[GPUS_METADATA_KEY].value == {
        shipped["name"]: {"workers": 1, "gpus_per_worker": 1}
    }
    resources = {"io_manager": PipelineIOManager(base_uri=str(tmp_path)), RAY_RESOURCE_KEY: RayCluster()}
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(EXPERIMENTS.name, [shipped["name"]])
        with dg.build_asset_context(partition_key=shipped["name"], instance=instance, resources=resources) as context:
            ids = as_token_shards(np.arange(2000, dtype=np.uint16) % 50, 50)
            outputs = list(model(context, config=TrainingConfig(), vocabulary={"vocab_size": 50},
                                 train_tokens=ids, validation_tokens=ids))  # fmt: skip
    lines = capfd.readouterr().err.splitlines()  # the run's log, as Dagster's console shows it
    assert outputs == []  # nothing materialized
    assert any(
        f"experiment {shipped['name']} skipped: it trains on 1 CUDA GPU in the run's process" in line for line in lines
    ), lines
    assert not any(tmp_path.iterdir())  # nothing written
