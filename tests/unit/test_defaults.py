"""Defaults live in the config schema: every config dataclass that mirrors a schema section agrees with it."""

from __future__ import annotations

import dataclasses
import importlib

import pytest
import yaml

from tests.conftest import REPO

SCHEMA = yaml.safe_load((REPO / "schemas" / "config.schema.yaml").read_text())

# dataclass -> the schema section whose keys it mirrors
MIRRORS = {
    "neuronkit.scores.plnd:PLNDConfig": ("plnd",), "neuronkit.sntune:SNTuneConfig": ("sntune",),
    "neuronkit.scores.contrast:ContrastConfig": ("contrast",), "neuronkit.generate:GenerationConfig": ("generate",),
    "neuronkit.safeguard:SafeguardConfig": ("safeguard",), "neuronkit.overlap:OverlapConfig": ("overlap",),
    "neuronkit.realign:RealignConfig": ("nlsr",), "neuronkit.attack:MixConfig": ("nlsr",),
    "neuronkit.scores.adapter_scores:ScoreConfig": ("nlsr",), "neuronkit.tune:TrainConfig": ("sft",),
    "neuronkit.tune:AdapterConfig": ("sft", "adapter"), "neuronkit.alignment_data:AlignmentDataConfig": ("alignment",),
    "neuronkit.deactivate:ControlConfig": ("deactivation",),
}


def _resolve(node: dict) -> dict:
    while "$ref" in node:
        node = SCHEMA["$defs"][node["$ref"].rsplit("/", 1)[1]]
    return node


def _section(path: tuple[str, ...]) -> dict:
    node = SCHEMA
    for key in path:
        node = _resolve(node["properties"][key])
    return node["properties"]


def _default(field: dataclasses.Field):
    value = field.default_factory() if field.default is dataclasses.MISSING else field.default
    return list(value) if isinstance(value, tuple) else value


@pytest.mark.parametrize("target", sorted(MIRRORS))
def test_dataclass_defaults_equal_the_schema_defaults(target):
    module, name = target.split(":")
    cls = getattr(importlib.import_module(module), name)
    props = _section(MIRRORS[target])
    shared = [f for f in dataclasses.fields(cls) if f.name in props and "default" in props[f.name]
              and (f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING)]
    assert shared, f"{target} shares no key with the schema section {MIRRORS[target]}"
    differing = {f.name: (_default(f), props[f.name]["default"]) for f in shared
                 if _default(f) != props[f.name]["default"]}
    assert not differing, f"{target}: dataclass vs schema defaults {differing}"
