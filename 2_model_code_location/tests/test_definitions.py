import os
import subprocess
import sys
from pathlib import Path

import pytest

from model_code_location.definitions import defs
from model_code_location.presets import TrainingConfig
from shared_code_location import settings
from shared_code_location.contract.asset_keys import TRAIN_TOKENS, TRAINED_MODEL, VALIDATION_TOKENS, VOCABULARY

LOCATION = Path(__file__).resolve().parent.parent


def test_model_location_declares_its_upstream_from_the_contract():
    graph = defs.resolve_asset_graph()
    assert graph.get(TRAINED_MODEL.key).parent_keys == {VOCABULARY.key, TRAIN_TOKENS.key, VALIDATION_TOKENS.key}
    assert not graph.get(TRAIN_TOKENS.key).is_materializable  # owned by 1_etl


def test_definitions_module_does_not_import_torch():
    code = "import sys, model_code_location.definitions; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_the_location_owns_the_contract_key_of_the_trained_model_and_versions_it():
    graph = defs.resolve_asset_graph()
    assert TRAINED_MODEL.key in graph.materializable_asset_keys
    assert graph.get(TRAINED_MODEL.key).code_version


def test_a_bad_preset_variable_fails_the_run_not_the_location(monkeypatch):
    # The location still loads (sensors, schedules and the UI stay up) ...
    env = os.environ | {settings.TRAINING_PRESET.name: "nope"}
    code = "import model_code_location.definitions as d; print(len(d.defs.resolve_asset_graph().asset_nodes))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert loaded.returncode == 0, loaded.stderr
    # ... and a run that needs the default preset fails with a message that names the variable and the choices.
    monkeypatch.setenv(settings.TRAINING_PRESET.name, "nope")
    with pytest.raises(ValueError, match=r"ML_PIPELINE_TRAINING_PRESET='nope' is not a preset; choose one of quick"):
        TrainingConfig().resolved()
    assert TrainingConfig(preset="tiny").resolved()["preset"] == "tiny"  # an explicit preset needs no variable


def test_every_asset_has_kinds_and_links_to_its_source():
    graph = defs.resolve_asset_graph()
    assert graph.materializable_asset_keys
    for key in graph.materializable_asset_keys:
        node = graph.get(key)
        assert node.kinds, f"{key.to_user_string()} has no kinds"
        references = node.metadata["dagster/code_references"].code_references
        assert references, f"{key.to_user_string()} links to no source"
        # Each link is a file of this location, at a line in it (a component's YAML, or the module defining it).
        for ref in references:
            path = Path(ref.file_path)
            assert path.suffix in (".py", ".yaml") and path.is_relative_to(LOCATION) and path.is_file(), ref
            assert 1 <= ref.line_number <= len(path.read_text().splitlines()), ref
