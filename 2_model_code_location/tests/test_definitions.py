import dagster as dg

from model_code_location.definitions import defs
from shared_code_location.asset_keys import TRAIN_TOKENS, TRAINED_MODEL, VALIDATION_TOKENS, VOCABULARY


def test_model_location_declares_its_upstream_from_the_contract():
    graph = defs.resolve_asset_graph()
    assert graph.get(TRAINED_MODEL.key).parent_keys == {VOCABULARY.key, TRAIN_TOKENS.key, VALIDATION_TOKENS.key}
    assert not graph.get(TRAIN_TOKENS.key).is_materializable  # owned by 1_etl


def test_definitions_module_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, model_code_location.definitions; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_trained_model_is_versioned():
    assert defs.resolve_assets_def(TRAINED_MODEL.key).code_versions_by_key[TRAINED_MODEL.key]
    assert isinstance(dg.AssetKey(["model", "trained_model"]), dg.AssetKey)
