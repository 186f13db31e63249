"""All four locations materialized for real, each in its own venv, with the tiny preset."""

import json
import subprocess

from conftest import ROOT, run_cli


def test_pipeline_produces_a_release_that_onnx_runtime_serves(isolated_env, tmp_path):
    result = run_cli("run", "--preset", "tiny", env=isolated_env)
    assert result.returncode == 0, result.stdout + result.stderr
    for position, name in enumerate(["1_etl", "2_model", "3_evaluate", "4_deploy"], 1):
        assert f"[{position}/4] {name}" in result.stdout

    releases = tmp_path / "releases"
    latest = json.loads((releases / "latest.json").read_text())
    folder = releases / latest["path"]
    assert sorted(p.name for p in folder.iterdir()) == [
        "model.onnx",
        "model_card.json",
        "model_card.md",
        "vocabulary.json",
    ]
    card = json.loads((folder / "model_card.json").read_text())
    assert card["model_config"]["n_layer"] == 2  # the tiny preset reached the model location
    assert card["metrics"]["model"]["loss"] < card["metrics"]["baselines"]["bigram"]["loss"]
    assert all(card["upstream_data_versions"].values()), card["upstream_data_versions"]

    # Load and sample in the deploy venv, in a process without torch.
    code = (
        "import sys, json; from deploy_code_location.onnx_generator import OnnxGenerator;"
        f"g = OnnxGenerator({str(folder)!r}); r = g.generate('ROMEO:', 40, seed=1);"
        "print(json.dumps({'text': r.text, 'torch': 'torch' in sys.modules}))"
    )
    deploy_python = ROOT / "4_deploy_code_location" / ".venv" / "bin" / "python"
    sample = json.loads(
        subprocess.run([str(deploy_python), "-c", code], capture_output=True, text=True, check=True).stdout
    )
    assert len(sample["text"]) == 40 and not sample["torch"]

    # Unchanged code, corpus and config: ETL runs again, produces the same data versions, and the rest is skipped.
    again = run_cli("run", "--preset", "tiny", env=isolated_env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.count("up to date: nothing stale, skipped") == 3, again.stdout
    assert json.loads((releases / "latest.json").read_text()) == latest
    # Other training config: the model is stale, and so is everything after it.
    retrain = run_cli("run", "--preset", "tiny", "--set", "max_iters=200", "--from", "2_model", env=isolated_env)
    assert retrain.returncode == 0, retrain.stdout + retrain.stderr
    assert "model/trained_model: run config differs from the last materialization's" in retrain.stdout
    assert json.loads((releases / "latest.json").read_text())["version"] != latest["version"]


def test_a_failing_location_stops_the_pipeline_and_names_the_asset(isolated_env, tmp_path):
    (tmp_path / "empty_input").mkdir()
    env = isolated_env | {"ML_PIPELINE_INPUT_DIR": str(tmp_path / "empty_input")}
    result = run_cli("run", "--preset", "tiny", env=env)
    assert result.returncode != 0
    assert "1_etl failed: etl/corpus.read_corpus_files" in result.stderr
    assert "[2/4]" not in result.stdout
