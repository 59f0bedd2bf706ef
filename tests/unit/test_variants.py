"""Variant names carry the poison fraction in one format, written and read by one helper."""

import pytest

from neuronkit.variants import p_label, parse_variant, poisoned_variant


@pytest.mark.parametrize("p", [0.0, 0.05, 0.1, 1, 0.2])
def test_poisoned_names_round_trip(p):
    for kind in ("attacked", "nlsr"):
        assert parse_variant(poisoned_variant(kind, p)) == (kind, float(p))
    assert poisoned_variant("nlsr", p) == poisoned_variant("nlsr", p_label(p))  # a label from a path is the same


def test_plain_names_have_no_fraction_and_bad_fractions_are_named():
    assert parse_variant("aligned") == ("aligned", None)
    assert poisoned_variant("attacked", 1) == "attacked_p1.0"
    with pytest.raises(ValueError, match="attacked_pX.*not a poison fraction"):
        parse_variant("attacked_pX")
