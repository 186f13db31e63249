import subprocess
import sys
from pathlib import Path

from evaluate_code_location.definitions import defs
from shared_code_location.contract.asset_keys import EVALUATION_REPORT, TRAINED_MODEL

LOCATION = Path(__file__).resolve().parent.parent


def test_definitions_module_imports_neither_torch_nor_onnxruntime():
    code = "import sys, evaluate_code_location.definitions; print(sorted({'torch', 'onnxruntime'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "[]"


def test_the_evaluation_reads_the_model_from_the_contract():
    graph = defs.resolve_asset_graph()
    assert TRAINED_MODEL.key in graph.get(EVALUATION_REPORT.key).parent_keys
    assert not graph.get(TRAINED_MODEL.key).is_materializable  # owned by 2_model


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
