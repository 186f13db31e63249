import subprocess
import sys

import dagster as dg

from {{ names.module }} import defs
from {{ names.package }}.defs.example import EXAMPLE_KEY, example
from shared_code_location.contract.asset_keys import {{ upstream }}
from shared_code_location.contract.io_manager import PipelineIOManager


def test_definitions_load_and_the_upstream_asset_comes_from_the_contract():
    # The location serves the example asset, in its group, downstream of the contract's key (resolving alone
    # could not fail: it raises for a key it does not know).
    [spec] = defs.resolve_assets_def(EXAMPLE_KEY).specs
    assert spec.group_name == "{{ stem }}"
    assert [dep.asset_key for dep in spec.deps] == [{{ upstream }}.key]
    assert {{ upstream }}.key in {spec.key for spec in defs.resolve_all_asset_specs()}


def test_the_example_asset_materializes_through_the_shared_io_manager(tmp_path):
    resources = {"io_manager": PipelineIOManager(base_uri=str(tmp_path))}
    result = dg.materialize([{{ upstream }}.spec(), example], resources=resources)
    assert result.success
    assert (tmp_path / "{{ stem }}" / "example.json").read_text().startswith("{")


#: Libraries a location imports inside the functions that use them, never when it loads.
HEAVY = {"torch", "onnxruntime", "ray"}


def test_importing_the_location_stays_light():
    code = f"import sys, {{ names.module }}; print(sorted({HEAVY} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "[]"
