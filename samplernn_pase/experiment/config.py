"""Configuration: validation against the shipped JSON schema, and defaults.

The config is grouped by category (`data`, `model`, `training`, `test`). Each
category has its own schema fragment in `schema/`; `model` picks its fragment
by `model.type`. Validation fills in every default so that the snapshot
written by `init` is complete: later commands read only that snapshot and
never depend on the defaults of the installed version.
"""

import copy
import json
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


def validate_config(config: dict, source: str = "config", schema_dir: Path = SCHEMA_DIR) -> dict:
    """Return a validated copy of `config` with every default filled in."""
    if not isinstance(config, dict):
        raise UserError(f"{source}: the config must be a JSON object")
    config = fill_defaults(load_schema("config", schema_dir), copy.deepcopy(config))
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
    check_consistency(config, source)
    return config


def check_consistency(config: dict, source: str) -> None:
    """Rules that span sections, which a JSON schema cannot express."""
    model = config["model"]
    if model["type"] == "vqvae":
        from ..models.vqvae import VQVAEConfig
        problem = VQVAEConfig.from_dict(model).check()
        if problem:
            raise UserError(f"{source}: {problem}")
    if model["type"] == "samplernn":
        frame_size = 1
        for ratio in model["ratios"]:
            frame_size *= ratio
        hop = config["data"].get("hop_length")
        if hop is not None and frame_size != hop:
            raise UserError(
                f"{source}: model.ratios: their product ({frame_size}) must equal "
                f"data.hop_length ({hop}), the samples per conditioning frame")


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
