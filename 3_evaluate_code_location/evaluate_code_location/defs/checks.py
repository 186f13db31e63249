"""Checks that gate deployment, one evaluation per experiment (partition): blocking, so an experiment that fails one
is never released (the leaderboard in 4_deploy skips it)."""

import math

import dagster as dg

from shared_code_location.contract.asset_keys import EVALUATION_REPORT


def _all_metrics(report: dict) -> dict[str, float]:
    values = {f"model_{k}": v for k, v in report["model"].items()}
    for name, metrics in report["baselines"].items():
        values.update({f"{name}_{k}": v for k, v in metrics.items()})
    return values


@dg.asset_check(asset=EVALUATION_REPORT.key, blocking=True, partitions_def=EVALUATION_REPORT.partitions_def)
def metrics_are_finite(evaluation_report: dict) -> dg.AssetCheckResult:
    """Every metric of the model and the baselines is a finite number (no NaN or infinity)."""
    bad = {k: str(v) for k, v in _all_metrics(evaluation_report).items() if not math.isfinite(float(v))}
    return dg.AssetCheckResult(passed=not bad, metadata={"non_finite": dg.MetadataValue.json(bad)})


@dg.asset_check(asset=EVALUATION_REPORT.key, blocking=True, partitions_def=EVALUATION_REPORT.partitions_def)
def beats_bigram_baseline(evaluation_report: dict) -> dg.AssetCheckResult:
    """The transformer's test loss is below the bigram baseline's: otherwise it learned nothing worth shipping."""
    model_loss = evaluation_report["model"]["loss"]
    bigram_loss = evaluation_report["baselines"]["bigram"]["loss"]
    return dg.AssetCheckResult(
        passed=bool(model_loss < bigram_loss),
        metadata={"model_loss": model_loss, "bigram_loss": bigram_loss, "margin": bigram_loss - model_loss},
    )
