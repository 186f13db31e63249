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
    """The transformer's test loss is below the bigram baseline's: otherwise it learned nothing worth shipping.
    When it fails, it names the experiment and what to change."""
    model_loss = evaluation_report["model"]["loss"]
    bigram_loss = evaluation_report["baselines"]["bigram"]["loss"]
    passed = bool(model_loss < bigram_loss)
    experiment = evaluation_report.get("experiment", "?")
    return dg.AssetCheckResult(
        passed=passed,
        description=None if passed else baseline_advice(experiment, evaluation_report, model_loss, bigram_loss),
        metadata={
            "experiment": experiment,
            "model_loss": model_loss,
            "bigram_loss": bigram_loss,
            "margin": bigram_loss - model_loss,
        },
    )


def baseline_advice(experiment: str, report: dict, model_loss: float, bigram_loss: float) -> str:
    """Why experiment `experiment` fails the baseline gate, and what to change: more steps or a bigger preset."""
    trained = report.get("hyperparameters") or {}
    how = (
        f" ({trained['preset']} preset, {trained['max_iters']} steps)"
        if {"preset", "max_iters"} <= set(trained)
        else ""
    )
    steps = f" (now {trained['max_iters']})" if "max_iters" in trained else ""
    return (
        f"experiment {experiment}{how} predicts the test split no better than a bigram table ({model_loss:.4f} vs "
        f"{bigram_loss:.4f} nats/char): train it longer, with a larger max_iters{steps} in its overrides in "
        "defs/experiments/defs.yaml, or on the quick preset (`preset: quick` there, or `cli.py run --preset quick`)."
        " A corpus smaller or less regular than Tiny Shakespeare needs more steps than the tiny preset gives."
    )
