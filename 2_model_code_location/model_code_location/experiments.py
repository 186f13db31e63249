"""The `Experiments` component: training runs declared in YAML (`defs/experiments/defs.yaml`), no Python.

Each experiment is a name, a preset and overrides of any `TrainingConfig` field; each is a partition of
`model/trained_model`. The YAML is checked twice against the same models: by `dg check yaml` (an unknown field, a
wrong type or an unknown preset, with the line) and when the location loads (the same, plus duplicate names and
combinations no single field can check), each error naming the file, the experiment and the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import dagster as dg
import pydantic
from pydantic import Field

from model_code_location.presets import PRESETS, SCALING_FIELDS, ScalingError, TrainingConfig


def _compile_from_yaml(value: Any) -> Any:
    """YAML reads an unquoted `compile: on` or `off` as a boolean: take it as the word it was."""
    return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value


#: What an experiment may override: every `TrainingConfig` field but `preset` and the scaling (`workers`, ...),
#: which are the experiment's own fields, with its type and bounds.
ExperimentOverrides = pydantic.create_model(
    "ExperimentOverrides",
    __base__=dg.Model,
    __doc__="Hyperparameters that differ from the experiment's preset; any field of `TrainingConfig`.",
    __validators__={"compile_words": pydantic.field_validator("compile", mode="before")(_compile_from_yaml)},
    **{
        name: (field.annotation, field)
        for name, field in TrainingConfig.model_fields.items()
        if name != "preset" and name not in SCALING_FIELDS
    },
)


class ExperimentConfigError(ValueError):
    """An experiments YAML that cannot be used, with the file, the experiment and the field it is about."""


class Experiment(dg.Model):
    """One training configuration, trained and evaluated as its own partition."""

    name: str = Field(
        pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$",
        description="the partition key: lower-case letters, digits, '-' and '_'",
    )
    description: str = ""
    preset: Literal[tuple(PRESETS)] | None = Field(  # type: ignore[valid-type]
        default=None, description="the preset the overrides start from; empty: the location's default preset"
    )
    overrides: ExperimentOverrides = Field(default_factory=ExperimentOverrides)  # type: ignore[valid-type]
    # Where it trains. Not overrides: a preset forced for a smoke run (`--preset tiny`) keeps them.
    workers: int | None = Field(
        default=None,
        ge=1,
        description="data-parallel workers (default 1: in the run's own process); more than 1 trains on Ray",
    )
    cpus_per_worker: int | None = Field(default=None, ge=1, description="CPUs (torch threads) of each worker; 1")
    gpus_per_worker: int | None = Field(default=None, ge=0, description="GPUs of each worker; default 0")

    def declaration(self) -> dict[str, Any]:
        """What the experiment trains with, as `TrainingConfig.resolved` takes it: preset, set overrides and, if
        any is set, the scaling (left out otherwise, so an entry without one keeps its fingerprint)."""
        declaration = {"preset": self.preset, "overrides": self.overrides.model_dump(mode="json", exclude_none=True)}
        scaling = {name: getattr(self, name) for name in SCALING_FIELDS if getattr(self, name) is not None}
        return declaration | ({"scaling": scaling} if scaling else {})


class ExperimentsAttributes(dg.Model):
    """The `attributes:` of the experiments YAML."""

    experiments: list[Experiment] = Field(min_length=1)


class Experiments(dg.Component):
    """Experiments as partitions of `model/trained_model`, and the sensor that keeps the partitions (and the runs
    they need) in step with this YAML.

    Plain typed attributes (not `Resolvable`, whose every field also takes a template string): so `dg check yaml`
    refuses a wrong type or an unknown preset, not only an unknown field.
    """

    def __init__(self, experiments: list[Experiment]):
        self.experiments = experiments

    @classmethod
    def get_model_cls(cls) -> type[ExperimentsAttributes]:
        return ExperimentsAttributes

    @classmethod
    def load(cls, attributes: ExperimentsAttributes | None, context: dg.ComponentLoadContext) -> Experiments:
        return cls(experiments=attributes.experiments if attributes else [])

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        from model_code_location.trained_model import build_trained_model, experiments_sensor

        declarations = validated_declarations(self.experiments, context.path / "defs.yaml")
        model = build_trained_model(declarations)
        return dg.Definitions(assets=[model], sensors=[experiments_sensor(model)])


def effective_hyperparameters(
    experiment: str, declaration: Mapping[str, Any] | None, config: Mapping[str, Any]
) -> dict[str, Any]:
    """What `model/trained_model` trains `experiment` with: its `declaration` (preset, overrides, scaling) under the
    run's `config` (a `TrainingConfig` as run config) and a preset forced by `$ML_PIPELINE_TRAINING_PRESET`. The asset
    records it (`hyperparameters`); `cli.py run` asks it again (the asset's settings resolver) and retrains the
    experiment when the answer differs from what it was trained with."""
    return TrainingConfig(**config).resolved(declaration) | {"experiment": experiment}


def validated_declarations(experiments: list[Experiment], source: Path) -> dict[str, dict[str, Any]]:
    """`{name: declaration}`; raises `ExperimentConfigError` naming `source`, the experiment and the field for a
    duplicate name or a combination of fields that cannot train (which a field's own type cannot catch)."""
    declarations: dict[str, dict[str, Any]] = {}
    for experiment in experiments:
        if experiment.name in declarations:
            raise ExperimentConfigError(f"{source}: experiment {experiment.name!r}: name: declared twice")
        declaration = experiment.declaration()
        try:
            TrainingConfig().resolved(declaration, environment=False)
        except ValueError as error:
            field = "workers" if isinstance(error, ScalingError) else "overrides"
            raise ExperimentConfigError(f"{source}: experiment {experiment.name!r}: {field}: {error}") from error
        declarations[experiment.name] = declaration
    return declarations
