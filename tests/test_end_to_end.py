"""Every location materialized for real, each in its own venv, with the tiny preset; and failures with their cause."""

import json
import subprocess

import pytest
import yaml

from conftest import (
    CPU_EXPERIMENTS,
    EXPERIMENTS,
    EXPERIMENTS_YAML,
    GPU_EXPERIMENTS,
    LOCATION_NAMES,
    ROOT,
    copy_checkout,
    run_cli,
)


def test_pipeline_produces_a_release_that_onnx_runtime_serves(tiny_pipeline):
    env, folder, result = tiny_pipeline
    assert result.returncode == 0, result.stdout + result.stderr
    for position, name in enumerate(LOCATION_NAMES, 1):
        assert f"[{position}/{len(LOCATION_NAMES)}] {name}" in result.stdout
    # Each location said why it ran, and the assets' own summaries and progress came through.
    assert "etl/corpus: reads from outside Dagster (input_folder)" in result.stdout
    # Each experiment of defs/experiments/defs.yaml is its own partition (all tiny here: --preset replaces them).
    for experiment in CPU_EXPERIMENTS:
        assert f"model/trained_model[{experiment}]: never materialized" in result.stdout
        assert f"evaluate/evaluation_report[{experiment}]: never materialized" in result.stdout
    # The GPU experiment, on this CPU-only machine: one line where it would train, one where it would be evaluated.
    for experiment in GPU_EXPERIMENTS:
        assert (
            f"model/trained_model[{experiment}]: skipped, experiment {experiment} trains on 1 CUDA GPU in the "
            "run's process (gpus_per_worker: 1) and this machine has none"
        ) in result.stdout, result.stdout
        assert (
            f"evaluate/evaluation_report[{experiment}]: skipped, its input model/trained_model[{experiment}] was "
            "never materialized"
        ) in result.stdout
    assert "model/trained_model: step 300/300" in result.stdout
    assert "deploy/leaderboard: released experiment: " in result.stdout
    releases = folder / "releases"
    latest = json.loads((releases / "latest.json").read_text())
    release_folder = releases / latest["path"]
    assert f"deploy/latest_release: latest release: {release_folder}" in result.stdout
    assert sorted(p.name for p in release_folder.iterdir()) == [
        "chat_template.jinja",
        "model.onnx",
        "model_card.json",
        "model_card.md",
        "vocabulary.json",
    ]
    card = json.loads((release_folder / "model_card.json").read_text())
    assert card["model_config"]["n_layer"] == 2  # the tiny preset reached the model location
    assert card["experiment"]["name"] in EXPERIMENTS and "lowest validation loss" in card["experiment"]["why"]
    assert sorted(row["experiment"] for row in card["experiment"]["leaderboard"]) == sorted(CPU_EXPERIMENTS)
    assert card["metrics"]["model"]["loss"] < card["metrics"]["baselines"]["bigram"]["loss"]
    assert all(card["upstream_data_versions"].values()), card["upstream_data_versions"]
    assert card["checks"]["onnx_parity"]["passed"] and card["chat"]["stop"] == ["\n\n"]

    # Load and sample in the deploy venv, in a process without torch.
    code = (
        "import sys, json; from deploy_code_location.onnx_generator import OnnxGenerator;"
        f"g = OnnxGenerator({str(release_folder)!r}); r = g.generate('ROMEO:', 40, seed=1);"
        "print(json.dumps({'text': r.text, 'torch': 'torch' in sys.modules}))"
    )
    deploy_python = ROOT / "4_deploy_code_location" / ".venv" / "bin" / "python"
    sample = json.loads(
        subprocess.run([str(deploy_python), "-c", code], capture_output=True, text=True, check=True).stdout
    )
    assert len(sample["text"]) == 40 and not sample["torch"]

    # Unchanged code, corpus and config: ETL runs again, produces the same data versions, and the rest is skipped.
    again = run_cli("run", "--preset", "tiny", env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.count("up to date: nothing stale, skipped") == len(LOCATION_NAMES) - 1, again.stdout
    assert json.loads((releases / "latest.json").read_text()) == latest


def test_other_config_retrains_one_experiment_and_a_bad_preset_variable_fails_the_run(tiny_pipeline):
    env, _, _ = tiny_pipeline
    first, other = EXPERIMENTS[0], EXPERIMENTS[1]
    args = ("run", "--preset", "tiny", "--set", "max_iters=200", "--from", "2_model", "--experiment", other)
    retrain = run_cli(*args, env=env)
    assert retrain.returncode == 0, retrain.stdout + retrain.stderr
    assert f"model/trained_model[{other}]: run config differs from the last materialization's" in retrain.stdout
    assert f"evaluate/evaluation_report[{other}]: new data in model/trained_model" in retrain.stdout
    assert f"[{first}]" not in retrain.stdout  # the other experiment is not touched
    assert "model/trained_model: step 200/200" in retrain.stdout
    assert "deploy/leaderboard: new data in evaluate/evaluation_report" in retrain.stdout

    unknown = run_cli("run", "--only", "2_model", "--experiment", "nope", env=env)
    assert unknown.returncode != 0
    assert f"no experiment named 'nope'; the experiments are: {', '.join(EXPERIMENTS)}" in unknown.stderr

    bad = run_cli("run", "--only", "2_model", "--force", env=env | {"ML_PIPELINE_TRAINING_PRESET": "nope"})
    assert bad.returncode != 0
    assert "2_model failed:" in bad.stderr
    assert "ML_PIPELINE_TRAINING_PRESET='nope' is not a preset; choose one of quick, gpu, tiny" in bad.stderr


def _coverage_failure(folder):
    # The held-out end of the corpus uses characters the train split never saw.
    (folder / "corpus.txt").write_text("the cat sat on the mat.\n" * 2000 + "ΩΨΦ ΞΛΔ\n" * 200, encoding="utf-8")


@pytest.mark.parametrize(
    ("make_input", "cause"),
    [
        (lambda folder: (folder / "empty.txt").write_text(""), "etl/corpus.read_corpus_files: {}.CorpusError: input "
         "file {folder}/empty.txt is empty"),
        (lambda folder: (folder / "binary.txt").write_bytes(bytes(range(256)) * 8), "binary.txt looks binary"),
        (lambda folder: (folder / "latin1.txt").write_bytes("café\n".encode("latin-1")),
         "latin1.txt is not valid UTF-8: byte 3 (line 1) is 0xe9"),
        (_coverage_failure, "blocking check vocabulary_covers_held_out_splits on etl/vocabulary did not pass "
         "(validation_oov_rate="),
    ],
    ids=["empty", "binary", "not-utf8", "failed-check"],
)  # fmt: skip
def test_a_failure_prints_its_cause_and_stops_the_pipeline(make_input, cause, isolated_env, tmp_path):
    inputs = tmp_path / "input"
    inputs.mkdir()
    make_input(inputs)
    result = run_cli("run", "--preset", "tiny", env=isolated_env | {"ML_PIPELINE_INPUT_DIR": str(inputs)})
    assert result.returncode != 0
    assert "1_etl failed:" in result.stderr
    assert cause.format("etl_code_location.defs.ingest", folder=inputs) in result.stderr, result.stderr
    assert "[2/" not in result.stdout


def test_options_that_fit_no_location_are_refused_before_anything_runs(isolated_env):
    for args, message in [
        (("--preset", "huge"), "--preset: 'huge' is not one of quick, gpu, tiny"),
        (("--set", "max_itres=3"), "--set max_itres: no asset of 1_etl, 2_model, 3_evaluate, 4_deploy takes"),
        (("--set", "no_equals_sign"), "--set expects key=value"),
        (("--only", "5_nowhere"), "unknown location '5_nowhere'; choose one of 1_etl, 2_model"),
    ]:
        result = run_cli("run", *args, env=isolated_env)
        assert result.returncode != 0 and message in result.stderr, result.stderr
        assert "[1/" not in result.stdout


def test_an_experiment_of_two_workers_trains_on_ray_in_cli_run_and_is_ranked_beside_the_others(tiny_pipeline, tmp_path):
    # A fork whose YAML adds an experiment of two workers, run against the same instance and storage: `cli.py run`
    # trains it alone, on the Ray cluster the run starts for itself, and the leaderboard ranks it with the rest.
    # `--experiment` names it: another test of the shared pipeline may have retrained one experiment with other
    # config, which a plain `run --preset tiny` would rightly retrain again.
    env, folder, _ = tiny_pipeline
    fork = copy_checkout(tmp_path / "fork")
    path = fork / EXPERIMENTS_YAML.relative_to(ROOT)
    document = yaml.safe_load(path.read_text())
    document["attributes"]["experiments"].append({"name": "two-workers", "preset": "tiny", "workers": 2})
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    result = run_cli("run", "--preset", "tiny", "--from", "2_model", "--experiment", "two-workers", env=env, root=fork)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "model/trained_model[two-workers]: never materialized" in result.stdout
    for other in EXPERIMENTS:
        assert f"model/trained_model[{other}]" not in result.stdout  # nothing else retrains
    assert "model/trained_model: starting a local Ray cluster on 127.0.0.1" in result.stdout
    assert "model/trained_model: training " in result.stdout and "× 2 workers" in result.stdout  # through Pipes
    assert "two-workers: validation loss" in result.stdout and "on 2 workers on Ray" in result.stdout
    latest = json.loads((folder / "releases" / "latest.json").read_text())
    card = json.loads((folder / "releases" / latest["path"] / "model_card.json").read_text())
    ranked = {row["experiment"]: row for row in card["experiment"]["leaderboard"]}
    assert sorted(ranked) == sorted([*EXPERIMENTS, "two-workers"])
