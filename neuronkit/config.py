"""Validate the workflow config against its JSON schema, fill defaults, and check cross-references.

Errors name the offending key path (``models.tiny.threads``) so a user can fix the file
before any compute starts.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml
from jsonschema import Draft202012Validator, validators

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "config.schema.yaml"
STAGE_SECTIONS = ("self_answers", "sft", "preference", "generate", "contrast", "patching", "safeguard", "plnd",
                  "deactivation", "sntune", "nlsr", "overlap", "general")


class ConfigError(ValueError):
    """The config violates the schema or refers to something undefined."""


def _with_defaults(validator_class, root: Mapping[str, Any]):
    """A validator that writes schema defaults into missing properties while it validates."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def default_of(sub: Mapping[str, Any]):
        ref = sub.get("$ref", "")
        if ref.startswith("#/$defs/"):
            sub = root["$defs"][ref[len("#/$defs/"):]]
        return sub.get("default", _MISSING)

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for key, sub in properties.items():
                default = default_of(sub)
                if key not in instance and default is not _MISSING:
                    instance[key] = copy.deepcopy(default)
        yield from validate_properties(validator, properties, instance, schema)

    return validators.extend(validator_class, {"properties": set_defaults})


_MISSING = object()


def load_schema(path: str | Path = SCHEMA_PATH) -> dict:
    """The config schema as a dict."""
    return yaml.safe_load(Path(path).read_text())


def _path(error) -> str:
    """Dotted key path of a validation error (``<root>`` for the top level)."""
    return ".".join(str(p) for p in error.absolute_path) or "<root>"


def _sorted(errors) -> list:
    """Validation errors in key-path order, for stable messages."""
    return sorted(errors, key=lambda e: list(map(str, e.absolute_path)))


def validate_config(config: Mapping[str, Any], schema: Mapping[str, Any] | None = None) -> dict:
    """Return a validated copy of ``config`` with defaults filled; raise ConfigError listing every problem."""
    schema = schema if schema is not None else load_schema()
    cfg = copy.deepcopy(dict(config))
    # Overrides are partial by design: validate them without filling defaults.
    overrides = {name: m.pop("overrides", {}) for name, m in (cfg.get("models") or {}).items()
                 if isinstance(m, dict)}
    validator = _with_defaults(Draft202012Validator, schema)(schema)
    lines = [f"  {_path(e)}: {e.message}" for e in _sorted(validator.iter_errors(cfg))]
    plain = Draft202012Validator({"$defs": schema.get("$defs", {}), "$ref": "#/$defs/overrides"})
    for name, value in overrides.items():
        lines += [f"  models.{name}.overrides.{_path(e)}: {e.message}".replace(".<root>", "")
                  for e in _sorted(plain.iter_errors(value))]
        cfg["models"][name]["overrides"] = value
    if lines:
        raise ConfigError("config does not match schemas/config.schema.yaml:\n" + "\n".join(lines))
    _check_references(cfg)
    _check_nlsr_controls(cfg)
    _check_sft_only_options(cfg)
    _check_neuron_counts(cfg)
    return cfg


def _check_sft_only_options(cfg: Mapping[str, Any]) -> None:
    """Padding-free batches exist for SFT stages only: a preference stage that asks for them is refused at load."""
    problems = [f"preference.padding_free (model {name}): padding-free batches apply to SFT stages only "
                "(sft, nlsr.attack)" for name in cfg["models"]
                if stage_params(cfg, name, "preference").get("padding_free")]
    if problems:
        raise ConfigError("config values do not fit their stage:\n" + "\n".join("  " + p for p in problems))


def _check_nlsr_controls(cfg: Mapping[str, Any]) -> None:
    """The random-mask control runs at poison fractions the attack is trained at."""
    problems = []
    for name in cfg["models"]:
        n = stage_params(cfg, name, "nlsr")
        missing = [p for p in n["random_control_p"] if float(p) not in {float(q) for q in n["p_grid"]}]
        if missing:
            problems.append(f"nlsr.random_control_p (model {name}): {missing} not in nlsr.p_grid {n['p_grid']}")
    if problems:
        raise ConfigError("config refers to undefined names:\n" + "\n".join("  " + p for p in problems))


# (stage section, key) of every neuron count: a whole number >= 1, or a fraction in (0, 1) of the MLP neurons
K_KEYS = (("patching", "k_grid"), ("safeguard", "k"), ("overlap", "dense_k"))


def _k_problem(value, total: int | None) -> str | None:
    """Why a k value is invalid (None when it is fine); ``total`` is the model's MLP neuron count when known."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        return "must be a whole count >= 1 or a fraction in (0, 1)"
    if value >= 1 and float(value) != int(value):
        return "is neither a whole count nor a fraction below 1"
    if value >= 1 and total is not None and int(value) > total:
        return f"exceeds the model's {total} MLP neurons"
    return None


# (stage section, dotted key) of every token length a model must hold: training sequences, documents, new tokens
LENGTH_KEYS = (("sft", "max_length"), ("preference", "max_length"), ("plnd", "max_length"), ("sntune", "max_length"),
               ("nlsr", "attack.max_length"), ("self_answers", "max_new_tokens"), ("generate", "max_new_tokens"),
               ("contrast", "max_new_tokens"))


def _check_neuron_counts(cfg: Mapping[str, Any]) -> None:
    """Model shapes (builtin specs, or a config.json at hand; never weights) against every k value, PLND top-k and
    token length, before any job."""
    from .archs import UnsupportedArchitectureError
    from .modelspec import ModelSpec, ModelSpecError

    problems: list[str] = []
    for name, model in cfg["models"].items():
        try:
            spec = ModelSpec.from_config(name, model)
            sizes = spec.site_sizes()
        except (ModelSpecError, UnsupportedArchitectureError) as err:
            problems.append(str(err) if str(err).startswith("models.") else f"models.{name}.{err}")
            continue
        problems += _k_problems(cfg, name, sizes) + _plnd_problems(cfg, name, sizes)
        problems += _length_problems(cfg, name, _context_length(spec))
    if problems:
        raise ConfigError("config values do not fit the models:\n" + "\n".join("  " + p for p in problems))


def _k_problems(cfg: Mapping[str, Any], name: str, sizes) -> list[str]:
    """Every neuron count (K_KEYS) that is malformed or larger than the model's MLP neurons."""
    total = sizes[0] * sizes[1]["mlp"] if sizes else None
    problems = []
    for stage, key in K_KEYS:
        values = stage_params(cfg, name, stage)[key]
        for value in values if isinstance(values, list) else [values]:
            why = _k_problem(value, total)
            if why:
                problems.append(f"{stage}.{key} (model {name}): {value!r} {why}")
    return problems


def _plnd_problems(cfg: Mapping[str, Any], name: str, sizes) -> list[str]:
    """PLND's per-layer top-k against the dims of the smallest module each applies to (when the shape is known)."""
    if not sizes:
        return []
    plnd = stage_params(cfg, name, "plnd")
    per_layer = {"ffn_top_k": sizes[1]["mlp"], "attn_top_k": min(v for m, v in sizes[1].items() if m != "mlp")}
    return [f"plnd.{key} (model {name}): {plnd[key]} exceeds the {limit} dims per layer of the smallest module it "
            "applies to" for key, limit in per_layer.items() if plnd[key] is not None and plnd[key] > limit]


def _context_length(spec) -> int | None:
    """The model's context (max_position_embeddings) from a config.json at hand (a local folder or the local hub
    cache); None for builtins and for hub ids not in the cache."""
    if spec.builtin is not None:
        return None
    config = spec.local_config()  # the same read-only config.json the shape comes from (never weights)
    return getattr(config, "max_position_embeddings", None) if config is not None else None


def _length_problems(cfg: Mapping[str, Any], name: str, context: int | None) -> list[str]:
    """Every token length (LENGTH_KEYS) longer than the model's context."""
    if context is None:
        return []
    problems = []
    for stage, dotted in LENGTH_KEYS:
        value = stage_params(cfg, name, stage)
        for part in dotted.split("."):
            value = value[part]
        if value > context:
            problems.append(f"{stage}.{dotted} (model {name}): {value} exceeds the model's context of {context} "
                            "tokens (max_position_embeddings in its config.json)")
    return problems


def _check_references(cfg: Mapping[str, Any]) -> None:
    """Names used in one section must be defined in another."""
    problems: list[str] = []
    models, datasets = cfg.get("models", {}), cfg.get("datasets", {})
    if cfg["default_model"] not in models:
        problems.append(f"default_model: {cfg['default_model']!r} is not among models ({', '.join(models)})")
    for key in ("harmful", "benign"):
        name = cfg["alignment"][key]
        if name not in datasets:
            problems.append(f"alignment.{key}: dataset {name!r} is not defined under datasets")
    for where, name in _dataset_references(cfg):
        if name is not None and name not in datasets:
            problems.append(f"{where}: dataset {name!r} is not defined under datasets")
    c = cfg["contrast"]
    if c["aligned"] == c["unaligned"]:
        problems.append(f"contrast.aligned and contrast.unaligned are both {c['aligned']!r}; they must differ")
    if problems:
        raise ConfigError("config refers to undefined names:\n" + "\n".join("  " + p for p in problems))


def _dataset_references(cfg: Mapping[str, Any]) -> list[tuple[str, str | None]]:
    """Every (config path, dataset name) that must name a defined dataset."""
    refs = [(f"evaluation.{key}[{i}]", name) for key in ("harmful", "benign")
            for i, name in enumerate(cfg["evaluation"][key])]
    refs += [(f"alignment.borderline[{i}]", n) for i, n in enumerate(cfg["alignment"]["borderline"])]
    refs += [(f"contrast.{key}", cfg["contrast"][key]) for key in ("dataset", "helpful_dataset")]
    refs += [("patching.ppl_dataset", cfg["patching"]["ppl_dataset"])]
    refs += [(f"patching.datasets[{i}]", n) for i, n in enumerate(cfg["patching"]["datasets"])]
    refs += [(f"safeguard.{key}[{i}]", n) for key in ("train", "test") for i, n in enumerate(cfg["safeguard"][key])]
    refs += [(f"plnd.{key}", cfg["plnd"][key]) for key in ("dataset", "foundation_dataset")]
    refs += [(f"deactivation.datasets[{i}]", n) for i, n in enumerate(cfg["deactivation"]["datasets"])]
    refs += [(f"sntune.{key}", cfg["sntune"][key]) for key in ("dataset", "benign_dataset")]
    refs += [(f"nlsr.{key}", cfg["nlsr"][key]) for key in ("task", "task_test", "harmful_answers", "calibration")]
    refs += [(f"nlsr.datasets[{i}]", n) for i, n in enumerate(cfg["nlsr"]["datasets"])]
    return refs


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict:
    """``override`` on top of ``base``, recursing into nested mappings."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def stage_params(cfg: Mapping[str, Any], model: str, stage: str) -> dict:
    """A stage's parameters for one model: the global section with the model's overrides on top."""
    if stage not in STAGE_SECTIONS:
        raise KeyError(f"unknown stage section {stage!r}; known: {STAGE_SECTIONS}")
    overrides = cfg["models"][model].get("overrides", {}).get(stage, {})
    return deep_merge(cfg[stage], overrides)


def load_config_files(paths: Iterable[str | Path]) -> dict:
    """Merge YAML files in order (later wins), as ``snakemake --configfile`` does, then validate."""
    merged: dict = {}
    for p in paths:
        merged = deep_merge(merged, yaml.safe_load(Path(p).read_text()) or {})
    return validate_config(merged)
