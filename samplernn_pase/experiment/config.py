"""Configuration: the one check of a config, and defaults.

The config is grouped by category (`data`, `model`, `training`, `test`). Each
category has its own schema fragment in `schema/`; `model` picks its fragment
by `model.type`. Validation fills in every default so that the snapshot
written by `init` is complete: later commands read only that snapshot and
never depend on the defaults of the installed version (a snapshot of an
earlier version is read as this one writes it: `upgrade_snapshot`).
`validate_config` runs every rule, each written once (see its docstring);
`init` calls it before any corpus work.
"""

import copy
import json
import math
from pathlib import Path

import jsonschema

from ..errors import UserError

SCHEMA_DIR = Path(__file__).parent / "schema"
SECTIONS = ("data", "training", "test")


def model_types() -> list[str]:
    """The model families whose schema fragment ships in the package."""
    return sorted(p.stem[len("model_"):] for p in SCHEMA_DIR.glob("model_*.json"))


def read_json(path: Path, what: str) -> dict:
    """The JSON in `path`, or a one-line UserError saying that the `what` is missing or not JSON."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: {what} not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise UserError(f"{path}: invalid JSON ({error.msg} at line {error.lineno})") from None


def load_schema(name: str, schema_dir: Path = SCHEMA_DIR) -> dict:
    return read_json(Path(schema_dir) / f"{name}.json", "schema")


def fill_defaults(schema: dict, instance: dict) -> dict:
    """Set every missing property that has a `default`, recursing into objects."""
    for key, subschema in schema.get("properties", {}).items():
        if key not in instance and "default" in subschema:
            instance[key] = copy.deepcopy(subschema["default"])
        if isinstance(instance.get(key), dict) and "properties" in subschema:
            fill_defaults(subschema, instance[key])
    return instance


def _validate(schema: dict, instance: dict, where: str, source: str) -> None:
    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(instance))
    if error is not None:
        path = ".".join([where] + [str(p) for p in error.absolute_path]) if where else \
            ".".join(str(p) for p in error.absolute_path)
        raise UserError(f"{source}: {path or 'config'}: {error.message}")


def validate_config(config: dict, source: str = "config", schema_dir: Path = SCHEMA_DIR,
                    experiments_path: Path | None = None) -> dict:
    """Return a validated copy of `config` with every default filled in, or a one-line UserError
    naming the field: the one check of a config, which `init` runs before it reads any corpus.

    Three kinds of rule, each written once: the type, range or choices of one field in the
    schema; a rule between fields of the `model` section in the family's dataclass config
    (`problems()`, models/section.py); a rule between sections here (`cross_section_problems`).
    With `experiments_path`, the experiments the config names (a PASE or VQ-VAE experiment)
    must exist and fit (`named_experiment_problems`). What only the corpus can tell (labels for
    linguistic conditioning, genders for a `gender` label) is checked after it is indexed.
    """
    if not isinstance(config, dict):
        raise UserError(f"{source}: the config must be a JSON object")
    config = fill_defaults(load_schema("config", schema_dir), copy.deepcopy(config))
    if isinstance(config.get("training"), dict):
        rename_bf16(config["training"])
    _validate(load_schema("config", schema_dir), config, "", source)
    for section in SECTIONS:
        schema = load_schema(section, schema_dir)
        fill_defaults(schema, config[section])
        _validate(schema, config[section], section, source)
    model_type = config["model"]["type"]
    if not (Path(schema_dir) / f"model_{model_type}.json").exists():
        known = ", ".join(model_types())
        raise UserError(f"{source}: model.type: unknown model type {model_type!r} (known: {known})")
    schema = load_schema(f"model_{model_type}", schema_dir)
    fill_defaults(schema, config["model"])
    _validate(schema, config["model"], "model", source)
    config_class = model_config_class(model_type)
    if config["training"].get("adam_betas") is None:      # the snapshot names the betas it trains with
        config["training"]["adam_betas"] = list(config_class.default_adam_betas)
    problems = cross_section_problems(config)
    if experiments_path is not None and not problems:
        problems = named_experiment_problems(config, Path(experiments_path))
    if problems:
        raise UserError(f"{source}: {problems[0]}")
    return config


def apply_overrides(config: dict, overrides: list[str]) -> dict:
    """A copy of `config` with `init --set KEY=VALUE` applied, before the one check
    (`validate_config`), which names an unknown key or a wrong type. KEY is dotted
    (`training.batch_size`; a list item by its index, `data.corpora.0.path`); VALUE is JSON
    (`32`, `0.5`, `true`, `null`, `[20, 4]`, `{"type": "step"}`), else the string as given."""
    config = copy.deepcopy(config)
    for text in overrides:
        key, equals, raw = text.partition("=")
        parts = key.split(".")
        if not equals or not all(parts):
            raise UserError(f"--set {text}: expected KEY=VALUE with a dotted key, "
                            "e.g. training.batch_size=32")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = config
        for depth, part in enumerate(parts):
            where = ".".join(parts[:depth]) or "the config"
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise UserError(f"--set {key}: {where} is a list of {len(node)}; "
                                    f"{part!r} is not one of its indices")
                part = int(part)
            elif not isinstance(node, dict):
                raise UserError(f"--set {key}: {where} is {json.dumps(node)}, not an object")
            if depth == len(parts) - 1:
                node[part] = value
            else:
                if isinstance(node, dict) and part not in node:
                    node[part] = {}
                node = node[part]
    return config


def model_config_class(model_type: str):
    """The dataclass config of a model family (models/<family>.py)."""
    if model_type == "samplernn":
        from ..models.samplernn import SampleRNNConfig as config_class
    elif model_type == "melnet":
        from ..models.melnet import MelNetConfig as config_class
    elif model_type == "pase":
        from ..models.pase import PASEConfig as config_class
    elif model_type == "vqvae":
        from ..models.vqvae import VQVAEConfig as config_class
    elif model_type == "gpt_prior":
        from ..models.gpt import GPTConfig as config_class
    elif model_type == "cwgan_gp":
        from ..models.cwgan_gp import CWGANGPConfig as config_class
    elif model_type == "acoustic":
        from ..models.acoustic import AcousticConfig as config_class
    elif model_type == "hifigan":
        from ..models.hifigan import HiFiGANConfig as config_class
    else:
        raise UserError(f"model.type: unknown model type {model_type!r}")
    return config_class


def model_section_problems(config: dict, **derived) -> list[str]:
    """The family's rules between the fields of the `model` section (its dataclass's `problems`);
    `derived` replaces fields that come from elsewhere (e.g. the GPT prior's column height)."""
    try:
        model_config_class(config["model"]["type"]).from_dict(config["model"], **derived)
    except UserError as error:       # ConfigError, or an unknown setting
        return [str(error)]
    return []


def cross_section_problems(config: dict) -> list[str]:
    """The model section's own rules, then rules between sections, as `field: why` lines."""
    model, data = config["model"], config["data"]
    if model["type"] == "gpt_prior":   # the column height is the VQ-VAE's: see named_experiment_problems
        problems = model_section_problems(config, column_height=1)
    else:
        problems = model_section_problems(config)
    if model["type"] == "samplernn" and math.prod(model["ratios"]) != data["hop_length"]:
        problems.append(f"model.ratios: their product ({math.prod(model['ratios'])}) must equal "
                        f"data.hop_length ({data['hop_length']}), the samples per conditioning frame")
    if model["type"] == "pase" and model["sample_rate"] != data["sample_rate"]:
        problems.append(f"model.sample_rate: {model['sample_rate']} differs from the corpus rate "
                        f"data.sample_rate {data['sample_rate']}")
    tier = config["training"].get("tier")
    if tier is not None and model["type"] != "melnet":
        problems.append(f"training.tier: {tier}, but only MelNet experiments have tiers (null here)")
    elif tier is not None and tier > model["tiers"]:
        problems.append(f"training.tier: {tier}, but the model has tiers 1..{model['tiers']}")
    return problems


def vocoder_problems(experiments_path: Path, name: str, epoch) -> list[str]:
    """An acoustic model's vocoder: a trained SampleRNN on acoustic (WORLD) conditioning. Its
    analysis and speakers are compared with the corpus's once it is indexed (runners/acoustic.py)."""
    from .folder import Experiment
    from .weights import named_experiment
    field = "model.vocoder_experiment"
    candidate = Experiment(experiments_path, name)
    if candidate.exists():      # the conditioning is said before a missing checkpoint
        vocoder = candidate.config()["model"]
        if vocoder.get("type") == "samplernn" and vocoder.get("conditioning") != "acoustic":
            return [f"{field}: {name} is conditioned on {vocoder.get('conditioning')!r}, not \"acoustic\" "
                    "(the WORLD features this model predicts)"]
    try:
        named_experiment(experiments_path, name, epoch, "samplernn", field)
    except UserError as error:
        return [str(error) if str(error).startswith(field) else f"{field}: {error}"]
    return []


#: The fields of a mel analysis besides the sample rate (audio/mel.py `MelAnalysis`).
MEL_ANALYSIS_FIELDS = ("n_mels", "n_fft", "hop_length", "win_length", "fmin", "fmax")


def mel_analysis(config: dict) -> dict:
    """The mel analysis of a validated config: data.sample_rate and the model's mel fields,
    fmax null read as half the sample rate. Every family's mels are natural-log mels of
    audio/mel.py before any family-specific scaling (MelNet standardizes them, the VQ-VAE maps
    them to [-1, 1]), which each undoes before its vocoder."""
    rate = config["data"]["sample_rate"]
    analysis = {"sample_rate": rate, **{key: config["model"].get(key) for key in MEL_ANALYSIS_FIELDS}}
    if analysis["fmax"] is None:
        analysis["fmax"] = rate / 2
    return analysis


def mel_vocoder_problems(config: dict, experiments_path: Path) -> list[str]:
    """A mel family's `model.vocoder_experiment`: a HiFi-GAN experiment (with the checkpoint
    asked for) whose mel analysis is this config's, field for field."""
    from .weights import named_experiment
    model, field = config["model"], "model.vocoder_experiment"
    name = model.get("vocoder_experiment")
    if name is None:
        return []
    _, vocoder, _ = named_experiment(experiments_path, name, model.get("vocoder_epoch"), "hifigan", field)
    here, there = mel_analysis(config), mel_analysis(vocoder)
    differences = [f"{key} {there[key]} there, {here[key]} here" for key in here
                   if float(here[key]) != float(there[key])]
    if differences:
        return [f"{field}: {name}'s mel analysis differs from this model's ({'; '.join(differences)})"]
    return []


def named_experiment_problems(config: dict, experiments_path: Path) -> list[str]:
    """The experiment a config names must exist, be of the right family, hold the checkpoint
    asked for, and fit: a GPT prior's context holds two of its VQ-VAE's code columns, at the
    corpus's sample rate; a mel family's HiFi-GAN vocoder has its mel analysis. (`init` of a PASE-conditioned SampleRNN, or of a GPT prior; the
    experiment of `init_from`, of this family, whose architecture `init` compares later.)"""
    from .weights import named_experiment
    model = config["model"]
    try:
        if config.get("init_from"):
            named_experiment(experiments_path, config["init_from"]["experiment"],
                             config["init_from"].get("epoch"), model["type"], "init_from")
        if model["type"] in ("samplernn", "acoustic") and model["conds_speaker_type"] == "pase":
            named_experiment(experiments_path, model["pase_experiment"], model["pase_epoch"], "pase",
                             "model.pase_experiment")
        if model["type"] in ("melnet", "vqvae"):
            return mel_vocoder_problems(config, experiments_path)
        if model["type"] == "acoustic" and model.get("vocoder_experiment") is not None:
            return vocoder_problems(experiments_path, model["vocoder_experiment"], model.get("vocoder_epoch"))
        if model["type"] == "gpt_prior":
            _, vqvae, _ = named_experiment(experiments_path, model["vqvae_experiment"], model["vqvae_epoch"],
                                           "vqvae", "model.vqvae_experiment")
            if vqvae["data"]["sample_rate"] != config["data"]["sample_rate"]:
                return [f"model.vqvae_experiment: its mels are at {vqvae['data']['sample_rate']} Hz, "
                        f"this corpus at data.sample_rate {config['data']['sample_rate']}"]
            column_height = vqvae["model"]["n_mels"] // vqvae["model"]["downsample_freq"]
            return model_section_problems(config, column_height=column_height)
    except UserError as error:
        return [str(error)]
    return []


def rename_bf16(training: dict) -> dict:
    """`training.bf16` (a boolean, before `training.precision` replaced it) as `precision`:
    true reads as "bf16", false as "fp32". Old snapshots and old config files alike."""
    if "bf16" in training and isinstance(training["bf16"], bool):
        bf16 = training.pop("bf16")
        training.setdefault("precision", "bf16" if bf16 else "fp32")
    return training


def upgrade_snapshot(config: dict) -> dict:
    """A config.json written by an earlier version, read as this version writes it: `adam_betas`
    moved from `model` to `training` (Adam's (0.9, 0.999) where a family had none); `bf16`
    became `precision` (`rename_bf16`)."""
    model, training = config.get("model", {}), config.setdefault("training", {})
    rename_bf16(training)
    betas = model.pop("adam_betas", None)
    if training.get("adam_betas") is None:
        training["adam_betas"] = list(betas or (0.9, 0.999))
    return config


def read_config_file(path: Path) -> dict:
    return read_json(path, "config file")


def describe_schema(schema: dict, prefix: str = "") -> list[tuple[str, str, str]]:
    """(field, default, description) rows of a schema fragment, nested objects flattened."""
    rows = []
    for key, sub in schema.get("properties", {}).items():
        name = f"{prefix}{key}"
        default = json.dumps(sub["default"]) if "default" in sub and "properties" not in sub else ""
        rows.append((name, default, sub.get("description", "")))
        if "properties" in sub:
            rows.extend(describe_schema(sub, name + "."))
    return rows


def main() -> None:
    """Print every config field as a Markdown table (what the README points to)."""
    print("# Configuration fields\n\nGenerated from the schema shipped in the package by\n"
          "`python -m samplernn_pase.experiment.config > docs/config.md`; the schema is the "
          "source of truth.")
    sections = [("", "config")] + [(s + ".", s) for s in SECTIONS]
    sections += [("model.", f"model_{t}") for t in model_types()]
    for prefix, name in sections:
        print(f"\n### {name}.json\n\n| field | default | description |\n|---|---|---|")
        for field, default, description in describe_schema(load_schema(name), prefix):
            print(f"| `{field}` | `{default}` | {description} |" if default else
                  f"| `{field}` | | {description} |")


if __name__ == "__main__":
    main()
