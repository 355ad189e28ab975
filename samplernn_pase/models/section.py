"""A model family's dataclass config, built from the `model` section of an experiment config.

Every family reads its section the same strict way: a key that is neither a
field of the dataclass, nor `type`, nor one of the settings its runner reads
(`runner_settings`) is a misspelt or stale setting, and stops with one line
naming it rather than being dropped without a word.

Where each rule of a config lives: the type, range or choices of one field
in the JSON schema (experiment/schema/model_<type>.json); a rule between
fields of the section in the family's `problems()`, which `__post_init__`
runs, so that no model is built from a config that breaks one; rules
between sections (the `data` hop and SampleRNN's ratios) in
experiment/config.py. `init` runs all three before it reads the corpus.
"""

from dataclasses import fields
from typing import ClassVar

from ..errors import UserError


class ConfigError(UserError, ValueError):
    """A `model` section that breaks a rule between its fields: one line, `model.<field>: why`.
    A UserError for the CLI (exit status 2), a ValueError for code that builds a config."""


class ModelSection:
    """Base of the models' dataclass configs: `from_dict` of a config's `model` section."""

    #: Settings of the `model` section that the family's runner reads, not its model.
    runner_settings: ClassVar[tuple[str, ...]] = ()
    #: `training.adam_betas` when the config leaves it null: Adam's own; the GAN families' (0.5, 0.9).
    default_adam_betas: ClassVar[tuple[float, float]] = (0.9, 0.999)

    @classmethod
    def from_dict(cls, section: dict, **derived):
        """The config from `section` plus values derived from the data (which take precedence)."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(section) - names - {"type", *cls.runner_settings})
        if unknown:
            raise UserError(f"{', '.join(f'model.{key}' for key in unknown)}: unknown setting"
                            f"{'s' * (len(unknown) > 1)} of {cls.__name__}")
        return cls(**{**{k: v for k, v in section.items() if k in names}, **derived})

    def problems(self) -> list[str]:
        """Every broken rule between fields, as `model.<field>: why` (empty: none)."""
        return []

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """ConfigError with the first of `problems()`; what `__post_init__` runs."""
        problems = self.problems()
        if problems:
            raise ConfigError(problems[0])
