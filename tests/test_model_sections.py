"""Every family reads the `model` section of its config the same strict way (models/section.py):
each setting the shipped schema allows is a field of the family's dataclass config or one its
runner reads, every shipped config builds its model config, and a setting the family does not
know stops with one line naming it."""

import dataclasses
import json
from pathlib import Path

import pytest

from samplernn_pase.errors import UserError
from samplernn_pase.experiment.config import SCHEMA_DIR, read_config_file, validate_config
from samplernn_pase.models.acoustic import AcousticConfig
from samplernn_pase.models.cwgan_gp import CWGANGPConfig
from samplernn_pase.models.gpt import GPTConfig
from samplernn_pase.models.hifigan import HiFiGANConfig
from samplernn_pase.models.melnet import MelNetConfig
from samplernn_pase.models.pase import PASEConfig
from samplernn_pase.models.samplernn import SampleRNNConfig
from samplernn_pase.models.vqvae import VQVAEConfig

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"samplernn": SampleRNNConfig, "melnet": MelNetConfig, "pase": PASEConfig,
           "vqvae": VQVAEConfig, "cwgan_gp": CWGANGPConfig, "gpt_prior": GPTConfig,
           "acoustic": AcousticConfig, "hifigan": HiFiGANConfig}


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_every_schema_setting_is_read_by_the_model_or_its_runner(family):
    config = CONFIGS[family]
    schema = json.loads((SCHEMA_DIR / f"model_{family}.json").read_text())
    settings = set(schema["properties"]) - {"type"}
    fields = {f.name for f in dataclasses.fields(config)}
    assert settings - fields - set(config.runner_settings) == set()
    assert set(config.runner_settings) <= settings          # no stale runner setting either


@pytest.mark.parametrize("path", ["config.default.json", *sorted(p.relative_to(ROOT).as_posix()
                                                             for p in (ROOT / "configs").glob("*.json"))])
def test_every_shipped_config_builds_its_model_config(path):
    config = validate_config(read_config_file(ROOT / path), path)
    section = config["model"]
    model_config = CONFIGS[section["type"]].from_dict(section)       # __post_init__ checks it too
    scalars = {k: v for k, v in section.items() if isinstance(v, (bool, int, float, str))
               and k in {f.name for f in dataclasses.fields(model_config)}}
    for name, value in scalars.items():
        got = getattr(model_config, name)
        assert got == value or got == [value] * len(got), name     # or one value per tier


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_an_unknown_setting_is_one_line_naming_it(family):
    with pytest.raises(UserError, match=r"^model\.hiden_size: unknown setting of \w+Config$"):
        CONFIGS[family].from_dict({"type": family, "hiden_size": 3})
