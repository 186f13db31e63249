"""Declarative automation shared by the downstream locations: re-materialize when an upstream asset changes."""

import dagster as dg

A = dg.AutomationCondition

#: Run when a dependency was updated since this asset was last *requested* (not since it last *updated*): an
#: upstream change that lands while this asset's run is in flight stays pending and triggers one more run, where
#: `eager()` would forget it when the in-flight run completes. Never while a dependency is missing or running, and
#: only when every blocking check of the dependencies passed — `eager()` alone would still launch a downstream
#: asset in another location after an upstream blocking check failed.
ON_UPSTREAM_CHANGE = (
    (A.any_deps_updated() | A.missing()).since(A.newly_requested())
    & ~A.any_deps_missing()
    & ~A.any_deps_in_progress()
    & ~A.in_progress()
    & A.all_deps_blocking_checks_passed()
).with_label("on upstream change, checks passed")


def automation_sensor(location: str) -> dg.AutomationConditionSensorDefinition:
    """This location's automation sensor, running by default (Dagster's default one starts stopped)."""
    return dg.AutomationConditionSensorDefinition(
        f"{location}_automation",
        target=dg.AssetSelection.all(),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=15,
        description=f"Evaluates the automation conditions of {location}'s assets.",
    )
