"""Dagster's internals are used in one module only (shared_code_location/private_dagster.py, which says why for each):
an upgrade of Dagster breaks, if anything, that one place."""

import re
import subprocess

from conftest import ROOT

PRIVATE_MODULE = "shared_code_location/shared_code_location/private_dagster.py"
PRIVATE_IMPORT = re.compile(r"^\s*(from|import)\s+dagster[a-z_]*\._", re.MULTILINE)
PRIVATE_TAG = re.compile(r"[\"']dagster/(data_version|code_version|input_data_version|input_event_pointer)")


def product_files() -> list[str]:
    """Every tracked Python file that ships: all but tests."""
    listing = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "*.py"], cwd=ROOT, capture_output=True,
                             text=True, check=True)  # fmt: skip
    return [name for name in listing.stdout.split() if "/tests/" not in name and not name.startswith("tests/")]


def test_no_product_file_imports_dagster_internals_but_the_one_that_lists_them():
    offenders = [name for name in product_files() if PRIVATE_IMPORT.search((ROOT / name).read_text())]
    assert offenders == [PRIVATE_MODULE]


def test_dagsters_internal_tags_are_named_in_that_module_only():
    offenders = [name for name in product_files() if PRIVATE_TAG.search((ROOT / name).read_text())]
    assert offenders == [PRIVATE_MODULE]


def test_the_private_module_says_why_for_everything_it_holds():
    from shared_code_location import private_dagster

    text = (ROOT / PRIVATE_MODULE).read_text()
    doc = private_dagster.__doc__ or ""
    for name in private_dagster.__all__:
        value = getattr(private_dagster, name)
        said = value if isinstance(value, str) else name
        assert said in doc, f"{name} is not explained in the module docstring"
    assert PRIVATE_IMPORT.search(text)
