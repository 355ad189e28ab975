"""One check of a config, run by `init` before any corpus work (experiment/config.py
validate_config): every rule between fields of every family, and between sections, refuses a
config that breaks it through the real command, with exit status 2, one line on stderr naming
the field, no experiment folder left behind and nothing built in the (empty) data folder."""

import json
from pathlib import Path

import pytest
import torch

from samplernn_pase.cli import main
from samplernn_pase.errors import UserError
from samplernn_pase.experiment.config import (apply_overrides, read_config_file, upgrade_snapshot,
                                                validate_config)
from samplernn_pase.experiment.folder import Experiment
from samplernn_pase.training.optim import build_optimizer

ROOT = Path(__file__).resolve().parents[1]
BASES = {"samplernn": "config.default.json", "melnet": "configs/melnet.json", "pase": "configs/pase.json",
         "vqvae": "configs/vqvae.json", "gpt_prior": "configs/gpt_prior.json",
         "cwgan_gp": "configs/cwgan_gp.json", "acoustic": "configs/acoustic.json",
         "hifigan": "configs/hifigan.json"}

# (family, the field the error names (in `model` unless a section is named), changes to the
# family's shipped config, "data." or "training." naming another section than `model`). Each
# breaks one rule and keeps the others.
CASES = [
    # SampleRNN (config.default.json: ratios [20, 4], acoustic, lpc_order 16, harmonic source)
    ("samplernn", "lpc_order", {"conditioning": "linguistic"}),          # the example
    ("samplernn", "lpc_order", {"conditioning": "linguistic_lf0"}),
    ("samplernn", "lpc_order", {"ratios": [5, 4], "lpc_order": 20, "data.hop_length": 20}),
    ("samplernn", "harmonic_source", {"conditioning": "linguistic", "lpc_order": 0}),
    ("samplernn", "rnn_layers", {"rnn_layers": [1, 1, 1]}),
    ("samplernn", "rnn_hidden_size", {"rnn_hidden_size": [64]}),
    ("samplernn", "ratios", {"ratios": [10, 4]}),                          # 40 != data.hop_length 80
    ("samplernn", "pase_experiment", {"conds_speaker_type": "pase", "pase_experiment": "absent"}),
    # MelNet (configs/melnet.json: 4 tiers, 64 mels, chunk_frames 64)
    ("melnet", "layers", {"layers": [4, 2, 2]}),
    ("melnet", "n_mels", {"n_mels": 2}),                                  # 2 frequency splits: 4
    ("melnet", "chunk_frames", {"chunk_frames": 65}),                     # 1 time split: even
    ("melnet", "chunk_frames", {"chunk_frames": 0}),                      # the schema's minimum
    ("melnet", "win_length", {"win_length": 2048}),                       # n_fft 1024
    ("melnet", "training.tier", {"training.tier": 5}),                    # 4 tiers
    ("samplernn", "training.tier", {"training.tier": 1}),                 # MelNet's setting
    # PASE (configs/pase.json: 16 kHz, strides [10, 2, 1, 2, 1, 2, 2] = 160 samples)
    ("pase", "conv_strides", {"conv_strides": [10, 2, 1, 2, 1, 2, 1]}),
    ("pase", "conv_channels", {"conv_channels": [32, 64, 64]}),
    ("pase", "conv_kernels", {"conv_kernels": [20, 11, 11, 11, 11, 11, 1]}),
    ("pase", "worker_weights", {"worker_weights": {name: 0.0 for name in
                                                   ("waveform", "lps", "mfcc", "prosody", "lim", "gim")}}),
    ("pase", "win_length", {"win_length": 600}),                          # n_fft 512
    ("pase", "sample_rate", {"sample_rate": 8000, "conv_strides": [10, 2, 1, 2, 1, 2, 1]}),
    ("pase", "sinc_kernel", {"sinc_kernel": 250}),                        # the schema: odd
    # VQ-VAE (configs/vqvae.json: 64 mels, crops of 128, 16 x 16 downsampling over 5 levels)
    ("vqvae", "downsample_time", {"downsample_time": 12}),
    ("vqvae", "channel_multipliers", {"channel_multipliers": [1, 2, 4]}),
    ("vqvae", "n_mels", {"n_mels": 72}),
    ("vqvae", "crop_frames", {"crop_frames": 136}),
    ("vqvae", "disc_layers", {"n_mels": 32, "downsample_freq": 16, "disc_layers": 4}),   # 32 < 3 * 16
    ("vqvae", "win_length", {"win_length": 2048}),
    # GPT prior (configs/gpt_prior.json, on the VQ-VAE experiment "vqvae" made below: 4 code rows)
    ("gpt_prior", "n_embd", {"n_embd": 130}),                             # n_head 4
    ("gpt_prior", "block_size", {"block_size": 7}),                       # < 2 columns of 4 codes
    ("gpt_prior", "vqvae_experiment", {"vqvae_experiment": "absent"}),
    ("gpt_prior", "vqvae_experiment", {"data.sample_rate": 22050}),      # the VQ-VAE's mels: 16 kHz
    ("gpt_prior", "vqvae_experiment", {"vqvae_epoch": 7}),                # it has epoch 1 only
    # CWGAN-GP (configs/cwgan_gp.json: 64 mels, crops of 64 frames, 3 scales)
    ("cwgan_gp", "n_mels", {"n_mels": 60}),
    ("cwgan_gp", "frames", {"frames": 60}),
    ("cwgan_gp", "frames", {"generator": "strips", "strips": 16}),        # 64 frames, 8 * 16 needed
    ("cwgan_gp", "win_length", {"win_length": 2048}),
    # Acoustic model (configs/acoustic.json, on the SampleRNN vocoder experiment "demo" made below)
    ("acoustic", "vocoder_experiment", {"vocoder_experiment": "absent"}),
    ("acoustic", "vocoder_experiment", {"vocoder_epoch": 7}),             # it has epoch 1 only
    ("acoustic", "pase_experiment", {"conds_speaker_type": "pase", "pase_experiment": "absent"}),
    ("acoustic", "speaker_statistics", {"speaker_statistics": True}),        # a learned table has no seed
    ("acoustic", "speaker_output", {"conds_speaker_type": "pase", "pase_experiment": "absent",
                                    "speaker_output": True}),               # a layer per table speaker
    # HiFi-GAN (configs/hifigan.json: rates 5, 4, 4, 2 for hop 160)
    ("hifigan", "upsample_rates", {"upsample_rates": [8, 4, 4]}),
    ("hifigan", "upsample_kernel_sizes", {"upsample_kernel_sizes": [10, 8, 8, 4]}),
    ("hifigan", "win_length", {"win_length": 2048}),
    # A mel family's vocoder (the HiFi-GAN experiment "hifigan" made below): its analysis must be theirs
    ("melnet", "vocoder_experiment", {"vocoder_experiment": "hifigan", "fmax": 7600.0}),
    ("melnet", "vocoder_experiment", {"vocoder_experiment": "hifigan", "data.sample_rate": 22050}),
    ("vqvae", "vocoder_experiment", {"vocoder_experiment": "hifigan", "n_mels": 80}),
    ("vqvae", "vocoder_experiment", {"vocoder_experiment": "hifigan", "win_length": 1024}),
    ("vqvae", "vocoder_experiment", {"vocoder_experiment": "vqvae"}),          # not a HiFi-GAN
    ("melnet", "vocoder_experiment", {"vocoder_experiment": "hifigan", "vocoder_epoch": 7}),
]


def family_config(family: str, changes: dict | None = None) -> dict:
    config = read_config_file(ROOT / BASES[family])
    for key, value in (changes or {}).items():
        section, _, name = key.rpartition(".")
        config[section or "model"][name] = value
    return config


@pytest.fixture
def workspace(tmp_path):
    """An empty data folder, and an experiments folder holding the VQ-VAE experiment the GPT
    prior config names and the SampleRNN vocoder the acoustic config names: its validated config snapshot and the name of one epoch checkpoint, all
    that `init` reads of it before the corpus (the weights are read when the codes are made)."""
    (tmp_path / "data").mkdir()
    vqvae = tmp_path / "experiments" / "vqvae"
    (vqvae / "checkpoints").mkdir(parents=True)
    snapshot = validate_config(family_config("vqvae"))
    (vqvae / "config.json").write_text(json.dumps(snapshot))
    (vqvae / "checkpoints" / "1.checkpoint.pt").write_bytes(b"")
    vocoder = tmp_path / "experiments" / "demo"        # the acoustic config's SampleRNN vocoder
    (vocoder / "checkpoints").mkdir(parents=True)
    (vocoder / "config.json").write_text(json.dumps(validate_config(family_config("samplernn"))))
    (vocoder / "checkpoints" / "1.checkpoint.pt").write_bytes(b"")
    hifigan = tmp_path / "experiments" / "hifigan"     # the mel families' vocoder
    (hifigan / "checkpoints").mkdir(parents=True)
    (hifigan / "config.json").write_text(json.dumps(validate_config(family_config("hifigan"))))
    (hifigan / "checkpoints" / "1.checkpoint.pt").write_bytes(b"")
    return tmp_path


def init(workspace: Path, config: dict) -> int:
    path = workspace / "broken.json"
    path.write_text(json.dumps(config))
    return main(["--experiment-name", "x", "--experiments-path", str(workspace / "experiments"),
                 "--data-path", str(workspace / "data"), "init", "--config-path", str(path)])


@pytest.mark.parametrize("family", sorted(BASES))
def test_each_shipped_config_passes_the_check(family, workspace):
    """The cases below fail by their change alone: the configs they change pass the whole check."""
    validate_config(family_config(family), experiments_path=workspace / "experiments")


@pytest.mark.parametrize("family, field, changes", CASES,
                         ids=[f"{f}-{n}-{i}" for i, (f, n, _) in enumerate(CASES)])
def test_init_refuses_a_config_that_breaks_a_rule_before_any_corpus_work(family, field, changes,
                                                                          workspace, capsys):
    status = init(workspace, family_config(family, changes))
    lines = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    field = field if "." in field else f"model.{field}"
    assert len(lines) == 1 and f"broken.json: {field}: " in lines[0], lines
    assert sorted(p.name for p in (workspace / "experiments").iterdir()) == ["demo", "hifigan", "vqvae"]   # no x, no staging
    assert list((workspace / "data").iterdir()) == []                     # no demo corpus synthesized


def test_a_vocoder_of_another_mel_analysis_is_refused_in_one_line(workspace, capsys):
    config = family_config("vqvae", {"vocoder_experiment": "hifigan", "hop_length": 200, "fmax": None})
    assert init(workspace, config) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {workspace / 'broken.json'}: model.vocoder_experiment: hifigan's mel analysis differs "
        "from this model's (hop_length 160 there, 200 here)"]       # fmax null: 8000 Hz, the same
    validate_config(family_config("melnet", {"vocoder_experiment": "hifigan"}),
                    experiments_path=workspace / "experiments")     # the same analysis: accepted


def test_set_parses_json_values_and_falls_back_to_a_string():
    config = {"model": {"type": "samplernn", "ratios": [20, 4]}, "data": {"corpora": [{"path": "a"}]}}
    got = apply_overrides(config, ["training.batch_size=32", "training.learning_rate=5e-4",
                                   "model.harmonic_source=false", "model.ratios=[10, 8]",
                                   "model.conditioning=acoustic", 'model.type="samplernn"',
                                   "data.corpora.0.path=VCTK-Corpus", "test.period=null",
                                   "training.scheduler.type=step", "seed=7"])
    assert got == {"model": {"type": "samplernn", "ratios": [10, 8], "harmonic_source": False,
                             "conditioning": "acoustic"},
                   "data": {"corpora": [{"path": "VCTK-Corpus"}]},
                   "training": {"batch_size": 32, "learning_rate": 0.0005, "scheduler": {"type": "step"}},
                   "test": {"period": None}, "seed": 7}
    assert config["model"]["ratios"] == [20, 4]           # the file's config is left as read
    for bad, says in [("training.batch_size", "expected KEY=VALUE"), ("model..x=1", "expected KEY=VALUE"),
                      ("model.ratios.2=1", "model.ratios is a list of 2"),
                      ("model.ratios.0.x=1", "model.ratios.0 is 20, not an object")]:
        with pytest.raises(UserError, match=f"^--set {bad.split('=')[0]}.*{says}"):
            apply_overrides(config, [bad])


@pytest.mark.parametrize("override, says", [
    ("model.no_such_key=1", "model: Additional properties are not allowed ('no_such_key' was unexpected)"),
    ("training.batch_size=four", "training.batch_size: 'four' is not of type 'integer'"),
    ("training.batch_size=[4]", "training.batch_size: [4] is not of type 'integer'"),
    ("model.rnn_hidden_size.width=1", "--set model.rnn_hidden_size.width: model.rnn_hidden_size is 256, "
                                      "not an object"),
])
def test_init_set_refuses_an_unknown_key_or_a_wrong_type_in_one_line(override, says, workspace, capsys):
    status = main(["--experiment-name", "x", "--experiments-path", str(workspace / "experiments"),
                   "--data-path", str(workspace / "data"), "init", "--config-path",
                   str(ROOT / "config.default.json"), "--set", "training.batch_size=4", "--set", override])
    lines = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and says in lines[0], lines
    assert override.split("=")[0] in lines[0]                          # the line names the key
    assert sorted(p.name for p in (workspace / "experiments").iterdir()) == ["demo", "hifigan", "vqvae"]
    assert list((workspace / "data").iterdir()) == []


def adam_defaults() -> list[float]:
    return list(torch.optim.Adam([torch.zeros(1, requires_grad=True)]).defaults["betas"])


def test_an_old_snapshot_reads_with_adam_betas_in_training(tmp_path):
    """A config.json written before adam_betas moved to `training` (vqvae: in `model`; other
    families: none, so Adam's own) reads as this version writes it, and its optimizers get them."""
    old = validate_config(family_config("vqvae"))
    old["model"]["adam_betas"] = [0.5, 0.9]
    del old["training"]["adam_betas"]
    experiment = Experiment(tmp_path, "old")
    experiment.root.mkdir()
    experiment.config_path.write_text(json.dumps(old))
    config = experiment.config()
    assert "adam_betas" not in config["model"] and config["training"]["adam_betas"] == [0.5, 0.9]
    assert validate_config(config) == config                               # a current snapshot
    optimizer = build_optimizer([torch.zeros(1, requires_grad=True)], config["training"])
    assert optimizer.param_groups[0]["betas"] == (0.5, 0.9)
    old = validate_config(family_config("samplernn"))
    del old["training"]["adam_betas"]
    assert upgrade_snapshot(old)["training"]["adam_betas"] == adam_defaults()


def test_null_adam_betas_become_the_family_default_in_the_snapshot():
    assert validate_config(family_config("vqvae"))["training"]["adam_betas"] == [0.5, 0.9]
    assert validate_config(family_config("cwgan_gp"))["training"]["adam_betas"] == [0.5, 0.9]
    assert validate_config(family_config("melnet"))["training"]["adam_betas"] == adam_defaults()
    config = family_config("melnet", {"training.adam_betas": [0.8, 0.99]})
    assert validate_config(config)["training"]["adam_betas"] == [0.8, 0.99]
    config = family_config("hifigan", {"training.adam_betas": None})          # the paper's
    assert validate_config(config)["training"]["adam_betas"] == [0.8, 0.99]


@pytest.mark.parametrize("bf16, precision", [(True, "bf16"), (False, "fp32")])
def test_training_bf16_of_an_old_snapshot_or_config_reads_as_precision(tmp_path, bf16, precision):
    old = validate_config(family_config("melnet"))
    del old["training"]["precision"]
    old["training"]["bf16"] = bf16                        # as a snapshot of an earlier version
    experiment = Experiment(tmp_path, "old")
    experiment.root.mkdir()
    experiment.config_path.write_text(json.dumps(old))
    config = experiment.config()
    assert config["training"]["precision"] == precision and "bf16" not in config["training"]
    assert validate_config(config) == config                              # a current snapshot
    file = family_config("melnet", {"training.bf16": bf16})               # an old config file
    assert validate_config(file)["training"]["precision"] == precision


def test_training_precision_is_checked_with_its_choices():
    assert validate_config(family_config("samplernn"))["training"]["precision"] == "fp32"
    with pytest.raises(UserError, match=r"^config: training\.precision: 'fp8' is not one of "):
        validate_config(family_config("samplernn", {"training.precision": "fp8"}))
