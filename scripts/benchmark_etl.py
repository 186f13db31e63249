"""The ETL at scale (figures, not pass/fail): `python scripts/benchmark_etl.py [--sizes 10,100,1000]`.

For each corpus size (MB) it writes a corpus of Tiny Shakespeare repeated (10 MB and 100 MB: one file; 1000 MB:
ten files of 100 MB), runs `cli.py run --only 1_etl` on it against a fresh instance and storage in a temporary
folder, and prints the wall time and the peak resident set of the largest process (the CLI and the location's
process are separate; the figure is the largest of them, as `getrusage(RUSAGE_CHILDREN)` reports it). Then, for
the largest size, what an incremental change costs: the same run again with nothing changed, and with one 10 MB
file added.

Needs about 3× the largest size in free disk space under the temporary folder (`TMPDIR`).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pipeline_cli.bootstrap import ROOT, enter_root_venv

enter_root_venv("see python scripts/cli.py --help")

from shared_code_location import settings  # noqa: E402

SOURCE = ROOT / "example_input_files_resource" / "tinyshakespeare.txt"
MB = 1_000_000
#: Largest single file: bigger corpora are this many MB per file.
FILE_MB = 100

# Runs a command and prints the peak resident set (kB) of its largest descendant: a separate process, so that the
# figures of one size do not carry over to the next.
_MEASURE = """
import resource, subprocess, sys
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, code.returncode, flush=True)
sys.stderr.write(code.stderr[-3000:] if code.returncode else "")
"""


def write_corpus(folder: Path, megabytes: int) -> None:
    """`megabytes` MB of Tiny Shakespeare repeated, in files of at most `FILE_MB` MB."""
    text = SOURCE.read_bytes()
    folder.mkdir(parents=True, exist_ok=True)
    left, index = megabytes * MB, 0
    while left > 0:
        size = min(left, FILE_MB * MB)
        copies, rest = divmod(size, len(text))
        end = text.rfind(b"\n", 0, rest) + 1  # whole lines only
        with open(folder / f"part-{index:03d}.txt", "wb") as file:
            for _ in range(copies):
                file.write(text)
            file.write(text[:end])
        left -= size
        index += 1


def etl_run(folder: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS of the largest process in MB) of `cli.py run --only 1_etl` on `folder`'s corpus."""
    env = os.environ | {
        settings.DAGSTER_HOME.name: str(folder / "home"),
        settings.STORAGE_URI.name: str(folder / "storage"),
        settings.OUTPUT_DIR.name: str(folder / "releases"),
        settings.INPUT_DIR.name: str(folder / "input"),
    }
    command = [
        sys.executable,
        "-c",
        _MEASURE,
        sys.executable,
        str(ROOT / "scripts" / "cli.py"),
        "run",
        "--only",
        "1_etl",
    ]
    started = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    rss_kb, code = (int(field) for field in result.stdout.split())
    if code:
        sys.exit(f"cli.py run --only 1_etl failed on {folder}:\n{result.stderr}")
    return wall, rss_kb / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10,100,1000", help="corpus sizes in MB, comma-separated")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folders (printed)")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    rows = []
    for size in sizes:
        folder = Path(tempfile.mkdtemp(prefix=f"etl-{size}mb-"))
        try:
            write_corpus(folder / "input", size)
            files = len(list((folder / "input").iterdir()))
            wall, rss = etl_run(folder)
            row = {"corpus_mb": size, "files": files, "seconds": round(wall, 1), "peak_rss_mb": round(rss)}
            if size == max(sizes):
                row["rerun_unchanged_seconds"] = round(etl_run(folder)[0], 1)
                write_corpus(folder / "input" / "added", 10)
                (folder / "input" / "added" / "part-000.txt").rename(folder / "input" / "added-10mb.txt")
                shutil.rmtree(folder / "input" / "added")
                added, added_rss = etl_run(folder)
                row |= {"one_10mb_file_added_seconds": round(added, 1), "one_file_added_peak_rss_mb": round(added_rss)}
            rows.append(row)
            print(json.dumps(row), flush=True)
        finally:
            if args.keep:
                print(f"kept {folder}")
            else:
                shutil.rmtree(folder, ignore_errors=True)
    print("\n| corpus | files | `cli.py run --only 1_etl` | peak RSS (largest process) | s per 100 MB |")
    print("|---|---|---|---|---|")
    for row in rows:
        per = 100 * row["seconds"] / row["corpus_mb"]
        print(f"| {row['corpus_mb']} MB | {row['files']} | {row['seconds']} s | {row['peak_rss_mb']} MB | {per:.1f} |")


if __name__ == "__main__":
    main()
