"""The project's command line: `python scripts/cli.py --help` (the commands live in scripts/pipeline_cli/).

Runs with nothing but Python 3.11+: before `setup` has built the root environment (.venv, which holds click and
uv), only `setup` works, and it bootstraps that environment first, then re-runs itself inside it.
"""

from pipeline_cli.bootstrap import enter_root_venv

enter_root_venv("setup, dev, up, run, serve, images, test, lint, lock, clean, locations, new-location, rename-location")

from pipeline_cli.commands import cli  # noqa: E402 -- needs click, which only .venv has

if __name__ == "__main__":
    cli()
