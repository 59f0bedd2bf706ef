"""Checkpoint variant names: the one place that writes and reads the poison fraction in ``attacked_p0.1``."""

from __future__ import annotations

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
