"""The project's command line, one module per concern; `scripts/cli.py` is its entry point.

- `bootstrap`: the root environment (.venv with click, uv and Dagster's webserver); pip settings handed to uv.
- `locations`: the code locations, read from the `dg` workspace (dg.toml) and each project's pyproject.toml.
- `derived_files`: workspace.yaml and dagster_cloud.yaml, written from the locations and checked against them.
- `environments`: one venv per location with uv, fingerprinted; lock files.
- `instance`: the Dagster instance folder and the environment every Dagster process gets.
- `processes`: starting process groups and stopping all of them on Ctrl-C, SIGINT or SIGTERM.
- `pipeline`: `run`, which asks each location what is stale and reports what failed, from Dagster's events.
- `scaffold`: `new-location` and `rename-location`.
- `commands`: the click commands, thin wrappers over the modules above.

The CLI never imports a location's code: it runs each location as processes in its own venv.
"""
