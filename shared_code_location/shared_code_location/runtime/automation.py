"""Declarative automation shared by the downstream locations: re-materialize when an upstream asset has new data."""

import dagster as dg

from shared_code_location import settings

A = dg.AutomationCondition

#: An input has new data: its data version changed since the last tick (a re-run that wrote the same bytes does
#: not count; see `versions.py`), unless the run that changed it also ran this asset; or it is about to run.
DEPS_HAVE_NEW_DATA = A.any_deps_match(
    (A.data_version_changed() & ~A.executed_with_root_target()) | A.will_be_requested()
).with_label("any_deps_have_new_data")

#: An input is behind its own inputs: one of them got new data after the input last updated, and the input is not
#: about to run in this tick. Without this, a release could pair a new model with the previous model's
#: evaluation (and its gate) in the window before the evaluate location picks the new model up.
_BEHIND = A.any_deps_match(A.data_version_changed()).since(A.newly_updated())
DEP_IS_BEHIND = A.any_deps_match(_BEHIND & ~A.will_be_requested()).with_label("an input is behind its own inputs")

#: An input got new data while this asset was running, since it was last requested: that run may have read the
#: old data, so the asset is due again once the run ends. `eager()` forgets such a change.
NEW_DATA_WHILE_RUNNING = (
    (A.any_deps_match(A.data_version_changed()) & A.in_progress()).since(A.newly_requested())
).with_label("new upstream data while running")


#: Missing since the last tick (a fresh instance, a new experiment or file): asked for once. Not `missing()`, which
#: stays true after a run that wrote nothing (an experiment skipped for want of a GPU, a failed one) and would launch
#: it again on every tick.
NEWLY_MISSING = A.missing().newly_true().with_label("newly missing")


def _on_change(deps_have_new_data: dg.AutomationCondition) -> dg.AutomationCondition:
    return (
        ((deps_have_new_data | NEWLY_MISSING).since(A.newly_requested() | A.newly_updated()) | NEW_DATA_WHILE_RUNNING)
        & ~A.any_deps_missing()
        & ~A.any_deps_in_progress()
        & ~DEP_IS_BEHIND
        & ~A.in_progress()
        & A.all_deps_blocking_checks_passed()
    )


#: Run when an input got new data since this asset was last requested or updated (by automation, the CLI or the UI:
#: an update that already read the new data settles it), or while it was running. Never while a dependency is
#: missing, running or behind, and only when every blocking check of the dependencies passed — `eager()` alone
#: would still launch a downstream asset in another location after an upstream blocking check failed.
ON_UPSTREAM_CHANGE = _on_change(DEPS_HAVE_NEW_DATA).with_label("on upstream change, checks passed")

#: As `ON_UPSTREAM_CHANGE`, but only once an input *has* new data, never in the same tick as the input's own run:
#: for an asset behind one that often re-runs without changing its data version (the leaderboard keeps its version
#: while the winner stays), so that such a re-run triggers nothing downstream.
ON_UPSTREAM_DATA_CHANGE = _on_change(
    A.any_deps_match(A.data_version_changed() & ~A.executed_with_root_target()).with_label("any_deps_got_new_data")
).with_label("on new upstream data, checks passed")

#: For an asset that reads every partition of its input and judges each one itself (the leaderboard): as
#: `ON_UPSTREAM_CHANGE`, but an experiment that is not evaluated yet or whose gate failed does not hold it back.
#: It waits for a partition that is behind only if that partition can run (an experiment skipped for want of a GPU,
#: or whose training failed, has no model to evaluate), and for partitions whose inputs are still being made (the
#: experiments still training), so that one ranking follows one change.
ON_ANY_PARTITION_CHANGE = (
    (DEPS_HAVE_NEW_DATA.since(A.newly_requested() | A.newly_updated()) | NEW_DATA_WHILE_RUNNING)
    & ~A.any_deps_in_progress()
    & ~A.any_deps_match(_BEHIND & ~A.any_deps_missing() & ~A.will_be_requested()).with_label(
        "an input that can run is behind its own inputs"
    )
    & ~A.any_deps_match(A.any_deps_in_progress()).with_label("an input's own inputs are being made")
    & ~A.in_progress()
).with_label("on new data in any partition")


#: For an asset that combines every partition of its input (the ETL's vocabulary and token manifests, over the input
#: files): as `ON_UPSTREAM_CHANGE` (so not while a file is missing, failed, or still running), and only once there is
#: something to combine: on a fresh instance, whose input has no partition yet, it launches nothing.
ON_FILES_CHANGE = (ON_UPSTREAM_CHANGE & A.any_deps_match(~A.missing())).with_label(
    "on upstream change, every file read, checks passed"
)


def automation_sensor(
    project_file: str, run_tags: dict[str, str] | None = None
) -> dg.AutomationConditionSensorDefinition:
    """The automation sensor of the location whose project holds `project_file` (pass `__file__`), named after
    it and running by default (Dagster's default one starts stopped); `run_tags` go on the runs it launches."""
    from shared_code_location.runtime.loader import location_name

    location = location_name(project_file)
    interval = settings.AUTOMATION_INTERVAL.get()
    if not (interval or "").isdigit() or int(interval) < 1:
        raise ValueError(f"{settings.AUTOMATION_INTERVAL.name}={interval!r} is not a whole number of seconds (>= 1)")
    return dg.AutomationConditionSensorDefinition(
        f"{location}_automation",
        run_tags=run_tags,
        target=dg.AssetSelection.all(),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=int(interval),
        description=f"Evaluates the automation conditions of {location}'s assets.",
    )
