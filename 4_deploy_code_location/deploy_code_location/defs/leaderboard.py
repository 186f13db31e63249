"""`deploy/leaderboard`: every evaluated experiment side by side, and the one to release.

The winner is the experiment with the lowest validation loss among those whose blocking checks (the evaluate
location's gates) passed on the evaluation it reads: chosen on validation data, so that the test split stays an
honest estimate. An experiment whose gate failed, or that is not evaluated yet, is listed and never wins; it does
not hold the others back either.
"""

import hashlib
import json
import warnings
from typing import Any

import dagster as dg

from shared_code_location.contract.asset_keys import (
    DEPLOY_PREFIX,
    EVALUATION_REPORT,
    IO_MANAGER_KEY,
    SUMMARY_METADATA_KEY,
    TRAINED_MODEL,
    stored_as,
)
from shared_code_location.contract.storage_formats import StorageFormat
from shared_code_location.contract.versions import data_version, input_data_version, latest_materialization
from shared_code_location.runtime.automation import ON_ANY_PARTITION_CHANGE

LEADERBOARD_KEY = dg.AssetKey([DEPLOY_PREFIX, "leaderboard"])


def gate_results(instance: dg.DagsterInstance, experiment: str) -> dict[str, Any]:
    """The blocking checks that ran on the experiment's latest evaluation, and the data versions it recorded."""
    record = latest_materialization(instance, EVALUATION_REPORT.key, experiment)
    if record is None:
        return {"checks": {}, "passed": False, "why": "not evaluated"}
    checks = {}
    for entry in instance.all_logs(record.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
        evaluation = entry.dagster_event.event_specific_data
        if evaluation.asset_key == EVALUATION_REPORT.key and evaluation.blocking:
            checks[evaluation.check_name] = bool(evaluation.passed)
    failed = sorted(name for name, passed in checks.items() if not passed)
    why = f"failed {', '.join(failed)}" if failed else ("" if checks else "its blocking checks did not run")
    return {
        "checks": checks,
        "passed": bool(checks) and not failed,
        "why": why,
        "evaluation_data_version": data_version(record),
        "model_data_version": input_data_version(instance, record, TRAINED_MODEL.key),
    }


def rank(reports: dict[str, dict], gates: dict[str, dict]) -> list[dict[str, Any]]:
    """One row per experiment: gated ones first, each group by validation loss (lowest first)."""
    rows = []
    for name, report in reports.items():
        training = report.get("training_summary", {})
        rows.append(
            {
                "experiment": name,
                "validation_loss": float(training.get("validation_loss", float("nan"))),
                "test_loss": float(report["model"]["loss"]),
                "perplexity": float(report["model"]["perplexity"]),
                "tokens_per_second": float(training.get("tokens_per_second", 0.0)),
                "wall_seconds": float(training.get("wall_seconds", 0.0)),
                "parameters": int(training.get("parameters", 0)),
                "gates_passed": gates[name]["passed"],
                "gate_note": gates[name]["why"],
            }
        )
    return sorted(rows, key=lambda r: (not r["gates_passed"], r["validation_loss"], r["experiment"]))


def _table(rows: list[dict[str, Any]], winner: str | None) -> str:
    lines = [
        "| | experiment | validation loss | test loss | perplexity | tokens/s | training s | parameters | gates |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for place, r in enumerate(rows, 1):
        mark = "**released**" if r["experiment"] == winner else str(place)
        gates = "passed" if r["gates_passed"] else r["gate_note"]
        lines.append(
            f"| {mark} | {r['experiment']} | {r['validation_loss']:.4f} | {r['test_loss']:.4f} | "
            f"{r['perplexity']:.3f} | {r['tokens_per_second']:,.0f} | {r['wall_seconds']:.0f} | "
            f"{r['parameters']:,} | {gates} |"
        )
    return "\n".join(lines)


def _plot(rows: list[dict[str, Any]]) -> str:
    """Markdown with a PNG: validation loss, perplexity and tokens/s per experiment (the UI renders it)."""
    import base64
    import io

    import matplotlib

    matplotlib.use("Agg")  # no display: render to memory
    from matplotlib import pyplot as plt

    names = [r["experiment"] for r in rows]
    colors = ["tab:blue" if r["gates_passed"] else "tab:gray" for r in rows]
    figure, axes = plt.subplots(1, 3, figsize=(10, 3.2), dpi=100)
    for axis, field, label in zip(
        axes,
        ("validation_loss", "perplexity", "tokens_per_second"),
        ("validation loss (nats/char)", "test perplexity", "training tokens/s"),
        strict=True,
    ):
        axis.barh(names, [r[field] for r in rows], color=colors)
        axis.set(title=label)
        axis.invert_yaxis()
        axis.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return f"![leaderboard](data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode('ascii')})"


@dg.asset(
    key=LEADERBOARD_KEY,
    group_name="deploy",
    ins={"evaluation_reports": dg.AssetIn(key=EVALUATION_REPORT.key, metadata={"allow_missing_partitions": True})},
    io_manager_key=IO_MANAGER_KEY,
    metadata=stored_as(StorageFormat.JSON),
    code_version="1",
    automation_condition=ON_ANY_PARTITION_CHANGE,
    kinds={"json", "matplotlib"},
    owners=["team:ml"],
)
def leaderboard(context: dg.AssetExecutionContext, evaluation_reports: dict[str, dict]) -> dg.Output[dict]:
    """Every evaluated experiment ranked, with the winner and why; its data version changes only when the winner
    (or the winner's evaluation) does, so a better loser re-exports nothing."""
    gates = {name: gate_results(context.instance, name) for name in evaluation_reports}
    rows = rank(evaluation_reports, gates)
    gated = [r for r in rows if r["gates_passed"]]
    if not gated:
        raise dg.Failure(
            "no experiment passed its blocking checks; the last release stays: "
            + "; ".join(f"{r['experiment']}: {r['gate_note']}" for r in rows),
        )
    best = gated[0]
    winner = best["experiment"]
    why = f"lowest validation loss ({best['validation_loss']:.4f} nats/char) of {len(gated)} gated experiment(s)"
    if len(gated) > 1:
        why += f"; runner-up {gated[1]['experiment']} at {gated[1]['validation_loss']:.4f}"
    if excluded := [r for r in rows if not r["gates_passed"]]:
        why += "; excluded: " + ", ".join(f"{r['experiment']} ({r['gate_note']})" for r in excluded)
    value = {
        "winner": winner,
        "why": why,
        "rows": rows,
        "winner_report": evaluation_reports[winner],
        "winner_model_data_version": gates[winner]["model_data_version"],
    }
    identity = json.dumps([winner, gates[winner]["evaluation_data_version"]])
    with warnings.catch_warnings():
        # `data_version` is marked beta; Dagster is pinned exactly, and the tests cover what we rely on.
        warnings.simplefilter("ignore", dg.BetaWarning)
        return dg.Output(
            value,
            data_version=dg.DataVersion(hashlib.sha256(identity.encode()).hexdigest()),
            metadata={
                "winner": winner,
                "why": why,
                "leaderboard": dg.MetadataValue.md(_table(rows, winner)),
                "plot": dg.MetadataValue.md(_plot(rows)),
                SUMMARY_METADATA_KEY: f"released experiment: {winner} ({why})",
            },
        )
