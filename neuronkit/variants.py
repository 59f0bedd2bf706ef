"""Checkpoint variants: the one place that writes and reads the poison fraction in ``attacked_p0.1``, and the
adapter the site variants (``sft_mlp``, ``aligned_mlp``) train."""

from __future__ import annotations

from typing import Mapping, Sequence

from .archs import ArchSpec

POISON_SEP = "_p"


def p_label(p: float) -> str:
    """A poison fraction as it appears in a variant name and path (0.1 -> "0.1", 1 -> "1.0")."""
    return repr(float(p))


def poisoned_variant(kind: str, p: float | str) -> str:
    """The name of a variant trained (``attacked``) or repaired (``nlsr``) at poison fraction ``p``."""
    return f"{kind}{POISON_SEP}{p if isinstance(p, str) else p_label(p)}"


def parse_variant(name: str) -> tuple[str, float | None]:
    """(kind, poison fraction or None) of a variant name; ``aligned`` -> ("aligned", None)."""
    kind, sep, p = name.partition(POISON_SEP)
    if not sep:
        return name, None
    try:
        return kind, float(p)
    except ValueError:
        raise ValueError(f"variant name {name!r}: {p!r} after {POISON_SEP!r} is not a poison fraction") from None


# The published pair's adapter: IA3 scales on down_proj's input (the architecture table's MLP neuron site), one
# scale per MLP neuron. Every family in the table names that projection alike.
NEURON_SCALE_MODULES = (ArchSpec.down,)


def site_adapter(adapter: Mapping, site_modules: Sequence[str]) -> dict:
    """The adapter of a site variant, which differs from its parent only at the MLP neurons (the patch site):
    LoRA on ``site_modules`` (gate/up feed the neurons), or with ``kind: ia3`` the published per-neuron scale on
    down_proj's input (``models.load_variant`` moves it onto up_proj's rows, so the site carries it)."""
    if adapter.get("kind", "lora") == "ia3":
        return {**adapter, "target_modules": list(NEURON_SCALE_MODULES),
                "feedforward_modules": list(NEURON_SCALE_MODULES)}
    return {**adapter, "target_modules": list(site_modules)}
