"""A model family's dataclass config, built from the `model` section of an experiment config.

Every family reads its section the same strict way: a key that is neither a
field of the dataclass, nor `type`, nor one of the settings its runner reads
(`runner_settings`) is a misspelt or stale setting, and stops with one line
naming it rather than being dropped without a word.
"""

from dataclasses import fields
from typing import ClassVar

from ..errors import UserError


class ModelSection:
    """Base of the models' dataclass configs: `from_dict` of a config's `model` section."""

    #: Settings of the `model` section that the family's runner reads, not its model.
    runner_settings: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_dict(cls, section: dict, **derived):
        """The config from `section` plus values derived from the data (which take precedence)."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(section) - names - {"type", *cls.runner_settings})
        if unknown:
            raise UserError(f"{', '.join(f'model.{key}' for key in unknown)}: unknown setting"
                            f"{'s' * (len(unknown) > 1)} of {cls.__name__}")
        return cls(**{**{k: v for k, v in section.items() if k in names}, **derived})
