import copy

import pytest
import yaml

from neuronkit.config import ConfigError, deep_merge, load_config_files, stage_params, validate_config
from tests.conftest import REPO


@pytest.fixture
def cfg():
    return yaml.safe_load((REPO / "config.yaml").read_text())


def test_shipped_config_is_valid_and_gets_defaults(cfg):
    valid = validate_config(cfg)
    assert valid["judge"]["kind"] == "refusal"
    assert valid["models"]["smollm2"]["trust_remote_code"] is False
    assert valid["models"]["llama3"]["resources"]["gpu"] == 1
    assert valid["datasets"]["harmful_test"]["shuffle_seed"] is None


def test_unknown_key_is_named_with_its_path(cfg):
    cfg["models"]["tiny"]["treads"] = 2
    with pytest.raises(ConfigError, match=r"models\.tiny: Additional properties are not allowed \('treads'"):
        validate_config(cfg)


def test_wrong_type_is_named_with_its_path(cfg):
    cfg["generate"]["max_new_tokens"] = "many"
    with pytest.raises(ConfigError, match=r"generate\.max_new_tokens: 'many' is not of type 'integer'"):
        validate_config(cfg)


def test_the_mlp_only_pair_trains_only_the_projections_that_feed_the_neurons(cfg):
    assert validate_config(copy.deepcopy(cfg))["alignment"]["site_modules"] == ["gate_proj", "up_proj"]
    evaluated = copy.deepcopy(cfg)
    evaluated["evaluation"] = {"variants": ["base", "sft_mlp", "aligned_mlp"]}  # the pair can be scored like any other
    assert validate_config(evaluated)["evaluation"]["variants"] == ["base", "sft_mlp", "aligned_mlp"]
    cfg["alignment"]["site_modules"] = ["gate_proj", "down_proj"]  # down_proj's weights act after the patch site
    with pytest.raises(ConfigError, match=r"alignment\.site_modules\.1: 'down_proj' is not one of"):
        validate_config(cfg)


def test_bad_override_is_reported_without_defaults_leaking(cfg):
    cfg["models"]["tiny"]["overrides"]["sft"]["lr"] = 1
    with pytest.raises(ConfigError, match=r"models\.tiny\.overrides\.sft: Additional properties.*'lr'"):
        validate_config(cfg)


def test_overrides_merge_over_global_stage_values(cfg):
    valid = validate_config(cfg)
    sft = stage_params(valid, "tiny", "sft")
    assert sft["batch_size"] == 4 and sft["learning_rate"] == valid["sft"]["learning_rate"]
    assert sft["adapter"]["r"] == valid["sft"]["adapter"]["r"]


def test_undefined_dataset_reference_is_named(cfg):
    cfg["evaluation"] = {"harmful": ["harmful_test", "nope"]}
    with pytest.raises(ConfigError, match=r"evaluation\.harmful\[1\]: dataset 'nope' is not defined"):
        validate_config(cfg)


def test_the_random_control_runs_only_at_trained_poison_fractions(cfg):
    assert validate_config(cfg)["nlsr"]["random_control_p"] == [0.1]
    cfg["nlsr"]["random_control_p"] = [0.1, 0.3]
    with pytest.raises(ConfigError, match=r"nlsr\.random_control_p \(model llama3\): \[0\.3\] not in nlsr\.p_grid"):
        validate_config(cfg)


def test_padding_free_batches_are_refused_for_a_preference_stage(cfg):
    assert validate_config(copy.deepcopy(cfg))["preference"]["padding_free"] is False
    cfg["models"]["tiny"]["overrides"]["preference"]["padding_free"] = True
    with pytest.raises(ConfigError, match=r"preference\.padding_free \(model tiny\): .*SFT stages only"):
        validate_config(cfg)


def test_default_model_must_exist(cfg):
    cfg["default_model"] = "gpt5"
    with pytest.raises(ConfigError, match="default_model: 'gpt5' is not among models"):
        validate_config(cfg)


def test_validation_does_not_mutate_input(cfg):
    before = copy.deepcopy(cfg)
    validate_config(cfg)
    assert cfg == before


def test_config_files_merge_in_order(tmp_path):
    extra = tmp_path / "x.yaml"
    extra.write_text("generate: {max_new_tokens: 7}\n")
    merged = load_config_files([REPO / "config.yaml", extra])
    configured = yaml.safe_load((REPO / "config.yaml").read_text())["generate"]
    assert configured["max_new_tokens"] != 7
    assert merged["generate"]["max_new_tokens"] == 7 and merged["generate"]["batch_size"] == configured["batch_size"]
    assert deep_merge({"a": {"b": 1, "c": 2}}, {"a": {"b": 3}}) == {"a": {"b": 3, "c": 2}}


def test_model_without_overrides_gets_the_global_stage_values(cfg):
    """Regression: schema defaults must never fill a model's overrides and shadow the global section."""
    cfg["models"]["smollm2"].pop("overrides", None)
    valid = validate_config(cfg)
    assert valid["models"]["smollm2"]["overrides"] == {}
    for stage in ("sft", "preference", "generate", "self_answers", "contrast", "patching", "sntune", "nlsr"):
        assert stage_params(valid, "smollm2", stage) == valid[stage]
    assert stage_params(valid, "smollm2", "sft")["learning_rate"] == cfg["sft"]["learning_rate"]


@pytest.mark.parametrize("path, value, message", [
    (("contrast", "dataset"), "nope", r"contrast\.dataset: dataset 'nope' is not defined"),
    (("contrast", "helpful_dataset"), "nope", r"contrast\.helpful_dataset: dataset 'nope' is not defined"),
    (("patching", "datasets"), ["harmful_test", "nope"], r"patching\.datasets\[1\]: dataset 'nope'"),
    (("safeguard", "test"), ["nope"], r"safeguard\.test\[0\]: dataset 'nope'"),
    (("plnd", "foundation_dataset"), "nope", r"plnd\.foundation_dataset: dataset 'nope'"),
    (("nlsr", "task"), "nope", r"nlsr\.task: dataset 'nope'"),
    (("contrast", "unaligned"), "aligned", r"contrast\.aligned and contrast\.unaligned are both 'aligned'"),
    (("patching", "k_grid"), [0], r"patching\.k_grid\.0: 0 is less than or equal to the minimum of 0"),
    (("nlsr", "p_grid"), [1.5], r"nlsr\.p_grid\.0: 1\.5 is greater than the maximum of 1"),
])
def test_method_sections_name_the_bad_key(cfg, path, value, message):
    cfg.setdefault(path[0], {})[path[1]] = value
    with pytest.raises(ConfigError, match=message):
        validate_config(cfg)


def test_judge_defaults_in_the_schema_are_the_judge_s_own():
    """One place per fact: the schema's degeneracy thresholds and refusal window are the dataclass defaults."""
    import dataclasses

    from neuronkit.config import load_schema
    from neuronkit.judge import DEFAULT_WINDOW_CHARS, DegeneracyCheck

    judge = load_schema()["properties"]["judge"]["properties"]
    schema = {k: v["default"] for k, v in judge["degenerate"]["properties"].items()}
    assert schema == dataclasses.asdict(DegeneracyCheck())
    assert judge["refusal"]["properties"]["window_chars"]["default"] == DEFAULT_WINDOW_CHARS
