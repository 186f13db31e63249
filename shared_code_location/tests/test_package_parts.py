"""The shared package's parts: the contract loads without torch, the parts depend one way, no import cycle."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "shared_code_location"
#: Which part may import which (settings.py and private_dagster.py are leaves every part may use).
ALLOWED = {"contract": {"contract"}, "model": {"model", "contract"}, "runtime": {"runtime", "contract"}}


def _module(path: Path) -> str:
    return ".".join(("shared_code_location", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(
        ".__init__"
    )


def _imports(path: Path) -> set[str]:
    """The shared package's modules that `path` imports anywhere (module level or inside a function)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("shared_code_location"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("shared_code_location")}
    return found


def test_every_module_lives_in_a_part():
    loose = {p.name for p in PACKAGE.glob("*.py")} - {"__init__.py", "settings.py", "private_dagster.py"}
    assert not loose, f"put {sorted(loose)} in contract/, model/ or runtime/"


def test_parts_import_one_way_and_without_a_cycle():
    graph = {_module(path): _imports(path) for path in PACKAGE.rglob("*.py")}
    for module, imported in graph.items():
        part = module.split(".")[1] if "." in module else None
        for target in imported:
            target_part = target.split(".")[1] if "." in target else None
            if part in ALLOWED and target_part in ALLOWED:
                assert target_part in ALLOWED[part], f"{module} imports {target}: {part}/ must not use {target_part}/"
    visiting, done = set(), set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in visiting, f"import cycle: {' -> '.join((*path, module))}"
        if module in done:
            return
        visiting.add(module)
        for target in graph.get(module, ()):
            visit(target, (*path, module))
        visiting.discard(module)
        done.add(module)

    for module in graph:
        visit(module, ())


def test_the_contract_imports_without_torch():
    contract = sorted(_module(p) for p in (PACKAGE / "contract").glob("*.py"))
    code = f"import sys; [__import__(m) for m in {contract!r}]; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
