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


def test_site_variants_train_lora_on_the_site_modules_or_the_published_ia3_neuron_scale():
    """The _mlp variants differ from their parent only at the MLP neurons, whichever adapter kind is configured."""
    from neuronkit.tune import TrainConfig
    from neuronkit.variants import site_adapter

    lora = {"kind": "lora", "r": 8, "target_modules": ["q_proj", "down_proj"]}
    assert site_adapter(lora, ["gate_proj", "up_proj"]) == {"kind": "lora", "r": 8,
                                                             "target_modules": ["gate_proj", "up_proj"]}
    ia3 = site_adapter({"kind": "ia3", "target_modules": ["q_proj", "down_proj"], "feedforward_modules": []},
                       ["gate_proj", "up_proj"])
    peft = TrainConfig.from_config("sft", {"adapter": ia3}).adapter.peft_config()
    assert set(peft.target_modules) == set(peft.feedforward_modules) == {"down_proj"}
