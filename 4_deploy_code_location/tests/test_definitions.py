import subprocess
import sys


def test_definitions_module_imports_neither_torch_nor_onnxruntime():
    code = "import sys, deploy_code_location.definitions; print(sorted({'torch', 'onnxruntime'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "[]"
