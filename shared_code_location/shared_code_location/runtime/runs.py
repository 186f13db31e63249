"""What a code location tells the CLI, and how the CLI runs it: `python -m shared_code_location.runtime.runs`.

The CLI knows nothing about what a location contains. It runs this module in the location's own venv:

- `describe MODULE` prints the location's run-config knobs: for every op of a materializable asset that takes
  config, its fields and, where a field is a choice (a `Literal`, such as a preset), the allowed values.
- `run MODULE --options JSON --report FILE` maps the user's options (`{"preset": ..., "set": {field: value}}`) to
  run config for the ops whose config has those fields, works out which assets are stale (`versions.py`), runs
  them against the instance in `$DAGSTER_HOME` as `dagster asset materialize` would, and writes a report built from
  Dagster's run and check events: what ran, what failed and why (the exception the asset raised, the check that did
  not pass and what it saw), and each asset's one-line `summary` metadata.

Dagster's own log goes to stderr; stdout carries only this module's progress lines.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Mapping
from typing import Any

import dagster as dg

from shared_code_location.contract.asset_keys import SUMMARY_METADATA_KEY
from shared_code_location.contract.experiments import EXPERIMENTS, declared_experiments, sync_partitions
from shared_code_location.runtime.placement import unrunnable
from shared_code_location.runtime.staleness import Target, op_defs, stale_assets


def _field_choices(config_type: Any) -> list[str] | None:
    """The allowed values of an enum config field (also when it is optional), else None."""
    inner = getattr(config_type, "inner_type", config_type)  # Noneable wraps the enum
    values = getattr(inner, "enum_values", None)
    return [value.config_value for value in values] if values else None


def config_fields(defs: dg.Definitions) -> dict[str, dict[str, dict[str, Any]]]:
    """`{op name: {field: {"choices": [...] or None}}}` for the ops of `defs`' assets that take config."""
    graph = defs.resolve_asset_graph()
    knobs: dict[str, dict[str, dict[str, Any]]] = {}
    for key in graph.materializable_asset_keys:
        for op in op_defs(defs, key):
            schema = op.config_schema
            if schema is None or not hasattr(schema.config_type, "fields"):
                continue
            knobs[op.name] = {
                name: {"choices": _field_choices(field.config_type)}
                for name, field in schema.config_type.fields.items()
            }
    return knobs


def run_config_for(defs: dg.Definitions, options: Mapping[str, Any]) -> dict[str, Any]:
    """Run config that gives `options["preset"]` and every `options["set"]` field to each op that has that field.

    Raises `ValueError` naming the choices when a preset or a field value is not one the op allows.
    """
    wanted = dict(options.get("set") or {})
    if options.get("preset"):
        wanted["preset"] = options["preset"]
    ops: dict[str, Any] = {}
    for op_name, fields in config_fields(defs).items():
        config = {name: value for name, value in wanted.items() if name in fields}
        for name, value in config.items():
            choices = fields[name]["choices"]
            if choices is not None and value not in choices:
                raise ValueError(f"{op_name}: {name}={value!r} is not one of {', '.join(choices)}")
        if config:
            ops[op_name] = {"config": config}
    return {"ops": ops} if ops else {}


def _error_cause(error: Any) -> str:
    """The message of the first error in the chain that is not Dagster's wrapper around user code."""
    while error.cause is not None and error.cls_name and error.cls_name.startswith("Dagster"):
        error = error.cause
    return error.message.strip()


def run_report(result: dg.ExecuteJobResult) -> dict[str, Any]:
    """What ran, what failed and why, from the run's events."""
    failures: list[dict[str, Any]] = []
    failed_checks: set[str] = set()
    materialized: list[dict[str, Any]] = []
    for event in result.all_events:
        if event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            evaluation = event.event_specific_data
            if not evaluation.passed:
                failed_checks.add(evaluation.asset_key.to_user_string())
                failures.append(
                    {
                        "check": evaluation.check_name,
                        "asset": evaluation.asset_key.to_user_string(),
                        "blocking": bool(evaluation.blocking),
                        "description": evaluation.description,
                        "metadata": {k: _metadata_text(v) for k, v in (evaluation.metadata or {}).items()},
                    }
                )
        elif event.event_type == dg.DagsterEventType.STEP_FAILURE:
            error = event.step_failure_data.error
            if error is not None and error.cls_name == "DagsterAssetCheckFailedError" and failed_checks:
                continue  # the failed blocking check above says more
            failures.append({"step": event.step_key, "error": _error_cause(error) if error else "unknown error"})
        elif event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
            materialization = event.event_specific_data.materialization
            summary = materialization.metadata.get(SUMMARY_METADATA_KEY)
            materialized.append(
                {
                    "asset": materialization.asset_key.to_user_string(),
                    "summary": _metadata_text(summary) if summary is not None else None,
                }
            )
        elif event.event_type == dg.DagsterEventType.RUN_FAILURE and not failures:
            failures.append({"run": result.run_id, "error": event.message or "run failed"})
    return {"run_id": result.run_id, "success": result.success, "failures": failures, "materialized": materialized}


def _metadata_text(value: Any) -> str:
    raw = getattr(value, "value", value)
    text = raw if isinstance(raw, str) else json.dumps(raw, default=str)
    return text if len(text) <= 300 else text[:297] + "..."


#: The job a CLI run executes: the location's stale assets (the unpartitioned ones, or one experiment's partition).
CLI_JOB_NAME = "cli_run"


def materialize(
    defs: dg.Definitions,
    keys: list[dg.AssetKey],
    run_config: Mapping[str, Any],
    instance: dg.DagsterInstance,
    partition: str | None = None,
) -> dg.ExecuteInProcessResult:
    """Run `keys` of `defs` (one `partition` of them when given) against `instance`, in this process, through
    Dagster's public API: a job of those assets and their checks, with the location's resources and executor, its
    log on the console (stderr) and the assets' own lines echoed as progress (stdout)."""
    run_defs = dg.Definitions(
        assets=defs.assets,
        asset_checks=defs.asset_checks,
        resources=defs.resources,
        executor=defs.executor,
        jobs=[dg.define_asset_job(CLI_JOB_NAME, selection=keys)],
        loggers={"console": dg.colored_console_logger, "progress": _progress_logger},
    )
    loggers = {"loggers": {"console": {}, "progress": {}}}  # a job's loggers run only when its config names them
    return run_defs.resolve_job_def(CLI_JOB_NAME).execute_in_process(
        run_config=dict(run_config) | loggers, instance=instance, partition_key=partition, raise_on_error=False
    )


def _progress(line: str) -> None:
    print(line, flush=True)


class _UserLogEcho(logging.Handler):
    """Echoes the assets' own `context.log.info` lines (training progress) as progress lines."""

    def emit(self, record: logging.LogRecord) -> None:
        meta = getattr(record, "dagster_meta", None) or {}
        if meta.get("dagster_event") is None and record.levelno >= logging.INFO and meta.get("step_key"):
            _progress(f"{meta['step_key'].replace('__', '/')}: {meta.get('orig_message', record.getMessage())}"[:200])


@dg.logger(description="The assets' own log lines (training progress) as the CLI's progress lines, on stdout.")
def _progress_logger(_context: dg.InitLoggerContext) -> logging.Logger:
    logger = logging.Logger("ml_pipeline.progress", level=logging.INFO)
    logger.addHandler(_UserLogEcho())
    return logger


def run(module: str, options: Mapping[str, Any], force: bool) -> dict[str, Any]:
    """Plan and run one location; the report the CLI prints. `options["experiment"]` restricts partitioned
    assets to that experiment's partition."""
    defs = importlib.import_module(module).defs
    try:
        run_config = run_config_for(defs, options)
    except ValueError as error:
        return {"success": False, "failures": [{"error": str(error)}], "stale": {}}
    experiment = options.get("experiment")
    with dg.DagsterInstance.get() as instance:
        if declared := declared_experiments(defs):
            added, removed = sync_partitions(instance, declared)
            for verb, names in (("added", added), ("removed", removed)):
                if names:
                    _progress(f"experiments {verb}: {', '.join(names)}")
        graph = defs.resolve_asset_graph()
        partitioned = any(graph.get(key).partitions_def is not None for key in graph.materializable_asset_keys)
        known = instance.get_dynamic_partitions(EXPERIMENTS.name)
        if experiment and partitioned and experiment not in known:
            error = f"no experiment named {experiment!r}; the experiments are: {', '.join(known) or 'none yet'}"
            return {"success": False, "failures": [{"error": error}], "stale": {}}
        partitions = [experiment] if experiment else None
        if force:
            stale = {
                Target(key, p): "forced"
                for key in graph.toposorted_asset_keys
                if key in graph.materializable_asset_keys
                for p in _partitions_of(graph.get(key).partitions_def, instance, partitions)
            }
        else:
            stale = stale_assets(defs, instance, run_config, partitions)
        # What this machine cannot run (a GPU experiment on a CPU-only machine) is skipped with one line.
        for target, why in unrunnable(defs, instance, stale, run_config).items():
            _progress(f"{target}: skipped, {why}")
            del stale[target]
        report: dict[str, Any] = {"stale": {str(target): why for target, why in stale.items()}}
        for target, why in report["stale"].items():
            _progress(f"{target}: {why}")
        if not stale:
            return report | {"success": True, "failures": [], "materialized": []}
        # One run for the unpartitioned assets, then one per partition (a run materializes one partition).
        batches: dict[str | None, list[dg.AssetKey]] = {}
        for target in stale:
            batches.setdefault(target.partition, []).append(target.key)
        reports = []
        for partition in sorted(batches, key=lambda p: (p is not None, p or "")):
            if partition is not None:
                _progress(f"experiment {partition}")
            reports.append(run_report(materialize(defs, batches[partition], run_config, instance, partition)))
        return report | {
            "run_id": ", ".join(r["run_id"] for r in reports),
            "success": all(r["success"] for r in reports),
            "failures": [failure for r in reports for failure in r["failures"]],
            "materialized": [entry for r in reports for entry in r["materialized"]],
        }


def _partitions_of(
    partitions_def: dg.PartitionsDefinition | None, instance: dg.DagsterInstance, only: list[str] | None
) -> list[str | None]:
    if partitions_def is None:
        return [None]
    keys = partitions_def.get_partition_keys(dynamic_partitions_store=instance)
    return [key for key in keys if only is None or key in only]


def main() -> None:
    """`describe` or `run` one location's `Definitions`; see the module docstring."""
    parser = argparse.ArgumentParser(description="What a code location tells the CLI, and runs for it.")
    commands = parser.add_subparsers(dest="command", required=True)
    describe_parser = commands.add_parser("describe", help="print the location's run-config fields as JSON")
    describe_parser.add_argument("module")
    run_parser = commands.add_parser("run", help="run the stale assets; write a JSON report")
    run_parser.add_argument("module")
    run_parser.add_argument(
        "--options", default="{}", help='JSON: {"preset": NAME, "set": {FIELD: VALUE}, "experiment": NAME}'
    )
    run_parser.add_argument("--force", action="store_true", help="run every asset, stale or not")
    run_parser.add_argument("--report", required=True, help="file to write the JSON report to")
    args = parser.parse_args()
    if args.command == "describe":
        json.dump(config_fields(importlib.import_module(args.module).defs), sys.stdout)
        print()
        return
    report = run(args.module, json.loads(args.options), args.force)
    with open(args.report, "w", encoding="utf-8") as file:
        json.dump(report, file)
    sys.exit(0 if report["success"] else 1)


if __name__ == "__main__":
    main()
