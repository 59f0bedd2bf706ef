"""Shared fixtures: seeded everything, tiny random models, the shared data folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same RNG state."""
    from neuronkit.runtime import seed_everything

    seed_everything(0)
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    """A materialized random tiny Llama checkpoint (built once per session)."""
    from neuronkit.models import materialize
    from neuronkit.modelspec import ModelSpec

    out = tmp_path_factory.mktemp("tiny") / "base"
    materialize(ModelSpec(name="tiny", source="builtin:tiny"), out)
    return out


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture(scope="session")
def hub_cache(tmp_path_factory):
    """A Hugging Face cache filled by the real download clients from a stand-in hub on 127.0.0.1 (tests/hub_cache.py):
    a tiny Llama-3 under test-org/tiny-llama-3, AdvBench-style and preference datasets, Llama-3-8B's config.json."""
    from tests.hub_cache import make_hub_cache

    return make_hub_cache(tmp_path_factory.mktemp("hub"))
