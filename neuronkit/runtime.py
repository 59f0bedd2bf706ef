"""Process-level settings every stage applies first: seeds, threads, quiet logging."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch so CPU runs repeat bit for bit."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def set_threads(threads: int) -> None:
    """Pin intra-op threads to what the scheduler granted: oversubscription is the usual CPU slowdown."""
    threads = max(1, int(threads))
    torch.set_num_threads(threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def setup(seed: int, threads: int) -> None:
    """Seeds + threads + offline-friendly defaults, in one call at the top of a stage."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    set_threads(threads)
    seed_everything(seed)
