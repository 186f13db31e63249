"""Every location materialized for real, each in its own venv, with the tiny preset; and failures with their cause."""

import json
import re
import subprocess
from pathlib import Path

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
    set_experiments,
)


def test_pipeline_produces_a_release_that_onnx_runtime_serves(tiny_pipeline):
    env, folder, result = tiny_pipeline
    assert result.returncode == 0, result.stdout + result.stderr
    for position, name in enumerate(LOCATION_NAMES, 1):
        assert f"[{position}/{len(LOCATION_NAMES)}] {name}" in result.stdout
    # Each location said why it ran, and the assets' own summaries and progress came through.
    # One partition per input file, then the step that combines them.
    assert "files added: tinyshakespeare.txt" in result.stdout
    assert "etl/file_tokens[tinyshakespeare.txt]: never materialized" in result.stdout
    assert "etl/vocabulary: 66 symbols from 1 file(s)" in result.stdout
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
    # One line says what --preset did, once, before anything runs.
    preset_line = "--preset tiny: replaces each experiment's own preset and overrides"
    assert result.stdout.count(preset_line) == 1 and result.stdout.index(preset_line) < result.stdout.index("[1/")
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
    assert card["data"]["train_tokens"]["files"] == ["tinyshakespeare.txt"]  # what the manifests say it learned from
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

    # Unchanged code, corpus and config: nothing runs, the ETL included (its file did not change).
    again = run_cli("run", "--preset", "tiny", env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.count("up to date: nothing stale, skipped") == len(LOCATION_NAMES), again.stdout
    assert json.loads((releases / "latest.json").read_text()) == latest


def test_an_added_experiment_that_loses_trains_alone_and_releases_nothing_new(tiny_pipeline, tmp_path):
    # A fork adds an experiment that trains fewer steps than the others: it is trained and evaluated alone, the
    # leaderboard ranks it, and since the winner (and its model) stay, nothing is exported or released again.
    env, folder, _ = tiny_pipeline
    releases = folder / "releases"
    before = (sorted(p.name for p in (releases / "releases").iterdir()), (releases / "latest.json").read_text())
    fork = copy_checkout(tmp_path / "fork")
    shipped = yaml.safe_load(EXPERIMENTS_YAML.read_text())["attributes"]["experiments"]
    set_experiments(fork, [*shipped, {"name": "loser", "preset": "tiny"}])
    args = ("run", "--preset", "tiny", "--set", "max_iters=200", "--from", "2_model", "--experiment", "loser")
    result = run_cli(*args, env=env, root=fork)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "model/trained_model[loser]: never materialized" in result.stdout
    assert "evaluate/evaluation_report[loser]: never materialized" in result.stdout
    for other in EXPERIMENTS:
        assert f"[{other}]" not in result.stdout  # the other experiments are not touched
    assert "model/trained_model: step 200/200" in result.stdout
    assert "deploy/leaderboard: new data in evaluate/evaluation_report" in result.stdout
    assert "up to date after all, as what they read kept its data version: deploy/onnx_model, deploy/release" in (
        result.stdout
    )
    board = json.loads((folder / "storage" / "deploy" / "leaderboard.json").read_text())
    assert "loser" in [row["experiment"] for row in board["rows"]] and board["winner"] != "loser"
    # No new ONNX export, release folder, pointer move or history entry (there were, for the same model).
    assert (sorted(p.name for p in (releases / "releases").iterdir()), (releases / "latest.json").read_text()) == before

    unknown = run_cli("run", "--only", "2_model", "--experiment", "nope", env=env)
    assert unknown.returncode != 0
    assert "no experiment named 'nope'; the experiments are: " in unknown.stderr

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
        (lambda folder: (folder / "empty.txt").write_text(""), "etl/file_tokens[empty.txt]: {}.CorpusError: input "
         "file {folder}/empty.txt is empty"),
        (lambda folder: (folder / "binary.txt").write_bytes(bytes(range(256)) * 8), "binary.txt looks binary"),
        (lambda folder: (folder / "latin1.txt").write_bytes("café\n".encode("latin-1")),
         "latin1.txt is not valid UTF-8: byte 3 (line 1) is 0xe9"),
        (_coverage_failure, "blocking check vocabulary_covers_held_out_splits on etl/vocabulary did not pass "
         "(missing='Δ' ×200 (first: corpus.txt line 2,001, character 48,006); 'Λ' ×200"),
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
    # The steps Dagster did not run after the failure: one line, not one each.
    assert "Not executing" not in result.stdout
    assert result.stdout.count("not run, as a step they need failed: ") == 1, result.stdout
    # The log it names is where nothing moves it (docs/settings.md), and is there.
    log = Path(re.search(r"\(Dagster's log: (\S+)\)", result.stderr).group(1))
    assert log.parent == Path(isolated_env["ML_PIPELINE_DAGSTER_HOME"]) / "pipeline_logs" and log.is_file()


def test_a_yaml_mistake_stops_the_run_before_anything_runs_and_reads_as_dg_shows_it(isolated_env, tmp_path):
    # The fourth experiment misspells a field. Every location loads first: the ETL does not run, and the error is
    # dg's (file, line, entry and field, the lines around it), not the end of a traceback.
    fork = copy_checkout(tmp_path / "fork")
    entries = [{"name": name, "preset": "tiny"} for name in ("a", "b", "c")]
    set_experiments(fork, [*entries, {"name": "d", "preset": "tiny", "overides": {"max_iters": 10}}])
    result = run_cli("run", env=isolated_env, root=fork)
    assert result.returncode != 0
    assert "[1/" not in result.stdout, result.stdout
    path = fork / EXPERIMENTS_YAML.relative_to(ROOT)
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if "overides" in text)
    assert "error: 2_model: its definitions do not load, so nothing ran:" in result.stderr
    assert f"{path}:{line} - " in result.stderr and "attributes.experiments.3.overides" in result.stderr
    assert "'overides' was unexpected" in result.stderr and "Traceback" not in result.stderr, result.stderr


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
    # Ranked by the leaderboard (a release follows only if it won: the winner's model is what a release changes).
    board = json.loads((folder / "storage" / "deploy" / "leaderboard.json").read_text())
    ranked = {row["experiment"]: row for row in board["rows"]}
    assert sorted(ranked) == sorted([*CPU_EXPERIMENTS, "two-workers"])  # a GPU experiment is skipped on CPU
