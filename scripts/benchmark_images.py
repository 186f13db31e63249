"""Every image's size, cold build time and rebuild time after a code-only change, on the machine's container engine.

    python scripts/benchmark_images.py [--torch cpu|cuda] [--keep-cache]

Cold: the project's images and the engine's build cache (the uv download cache the Dockerfiles mount included) are
removed first, unless --keep-cache; the base images (python:3.11-slim, uv's) stay. The code-only change is a comment
appended to a module of the shared package, in a copy of the build context: every location image copies the shared
package after installing its lock, so the rebuild must reuse the dependency layer. Prints a Markdown table and the
figures as JSON. A benchmark, not a test: run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pipeline_cli.bootstrap import ROOT
from pipeline_cli.images import build, cpu_torch_index, engine, image_size, project_images, run


def clear_build_cache() -> None:
    """The engine's build cache: layers of the project's images, and the cache mounts (uv's downloads)."""
    if engine() == "docker":
        run("builder", "prune", "-af", check=False)
        return
    run("image", "prune", "-f", check=False)
    for folder in glob.glob("/var/tmp/buildah-cache*"):  # Podman's RUN --mount=type=cache folders
        shutil.rmtree(folder, ignore_errors=True)


def code_only_change(destination: Path) -> Path:
    """A copy of the build context (git's files) with one comment added to a shared module."""
    listing = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True)
    for name in listing.stdout.splitlines():
        if (ROOT / name).is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, destination / name)
    module = destination / "shared_code_location" / "shared_code_location" / "settings.py"
    module.write_text(module.read_text() + "\n# a code-only change\n")
    return destination


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch", choices=["cpu", "cuda"], default="cpu", help="PyTorch build of the torch images")
    parser.add_argument("--keep-cache", action="store_true", help="do not clear the build cache first (warm build)")
    args = parser.parse_args()
    images = project_images(args.torch)
    if not args.keep_cache:
        run("rmi", "-f", *(image.tag for image in images), check=False)
        clear_build_cache()
    figures = []
    with cpu_torch_index() as index, tempfile.TemporaryDirectory() as folder:
        first = [build(image, index) for image in images]
        context = code_only_change(Path(folder))
        for built in first:
            retag = dataclasses.replace(built.image, tag=built.image.tag.replace(":latest", ":code-change"))
            again = build(retag, index, context)
            figures.append(
                {
                    "image": built.image.tag,
                    "size_mb": round(image_size(built.image.tag) / 1e6),
                    "build_seconds": round(built.seconds, 1),
                    "code_only_rebuild_seconds": round(again.seconds, 1),
                }
            )
            run("rmi", retag.tag, check=False)
    print(f"engine: {engine()}, PyTorch build: {args.torch}, {'warm' if args.keep_cache else 'cold'} build cache\n")
    print("| image | size (MB) | build (s) | code-only rebuild (s) |")
    print("|---|---|---|---|")
    for row in figures:
        print(f"| {row['image']} | {row['size_mb']:,} | {row['build_seconds']} | {row['code_only_rebuild_seconds']} |")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
