import os
import subprocess
import sys

import pytest

from shared_code_location.contract.resources import InputFilesResource, OutputFolderResource
from shared_code_location.settings import project_root


def test_folders_resolve_the_same_from_any_working_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("ML_PIPELINE_PROJECT_ROOT", raising=False)
    code = "from shared_code_location.contract.resources import InputFilesResource as R; print(R().path)"
    outputs = {
        subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, check=True).stdout
        for cwd in (tmp_path, project_root(), "/")
    }
    assert outputs == {f"{project_root() / 'example_input_files_resource'}\n"}


def test_input_files_lists_only_matching_files_sorted(tmp_path):
    for name in ("b.txt", "a.txt", "notes.md", "c.txt.bak", "10.txt"):
        (tmp_path / name).write_text(name)
    (tmp_path / "folder.txt").mkdir()  # a folder whose name matches is not a file
    files = InputFilesResource(folder=str(tmp_path)).list_files()
    assert [f.name for f in files] == ["10.txt", "a.txt", "b.txt"]  # by name, not in the order written
    shipped = InputFilesResource().list_files()
    assert [f.name for f in shipped] == ["tinyshakespeare.txt"]  # PROVENANCE.md is not corpus


def test_missing_or_empty_input_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        InputFilesResource(folder=str(tmp_path / "nope")).list_files()
    with pytest.raises(FileNotFoundError, match=r"no file matching '\*\.txt'"):
        InputFilesResource(folder=str(tmp_path)).list_files()


def test_output_folder_is_created_and_env_overridable(tmp_path, monkeypatch):
    monkeypatch.setenv("ML_PIPELINE_OUTPUT_DIR", str(tmp_path / "out"))
    assert OutputFolderResource().path == tmp_path / "out"
    assert (tmp_path / "out").is_dir()
    assert os.path.isabs(OutputFolderResource(folder="relative").path)
