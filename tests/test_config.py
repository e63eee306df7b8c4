"""Config validation: profiles load, overrides parse, unknown keys list the valid ones."""

import pytest

from thadcr.config import ConfigError, available_profiles, from_dict, load_profile, make_config, valid_keys


def test_profiles_exist_and_validate():
    assert {"tiny", "paper-audiocaps", "paper-clotho"} <= set(available_profiles())
    for name in available_profiles():
        assert set(load_profile(name)) == set(valid_keys()), f"profile {name} must set every key"


def test_paper_profiles_use_paper_hyperparameters():
    for name in ("paper-audiocaps", "paper-clotho"):
        c = make_config(name)
        assert (c.n_factors, c.alpha, c.beta) == (8, 0.01, 0.005)
        assert c.text_model == "bert-base-uncased" and c.text_layers == [4, 10, 12]
        assert c.htsat_size == "paper" and c.lr == 1e-4 and c.epochs == 50 and c.tau == 0.07
        assert (c.specaug_time_masks, c.specaug_freq_masks) == (0, 0)  # ref [8] names no SpecAugment
        assert c.model_selection == "best_val"  # peers.md: best validation t2a R@1+R@5+R@10
    assert make_config("paper-clotho").layout == "clotho"
    assert make_config("paper-audiocaps").layout == "audiocaps"


def test_specaugment_is_off_by_default_and_set_by_keys():
    c = make_config("tiny")
    assert (c.specaug_time_masks, c.specaug_time_width, c.specaug_freq_masks, c.specaug_freq_width) == (0, 64, 0, 8)
    c = make_config("tiny", ["specaug_time_masks=2", "specaug_freq_masks=2"])
    assert (c.specaug_time_masks, c.specaug_freq_masks) == (2, 2)
    with pytest.raises(ConfigError, match="specaug_freq_width must be 0 or positive"):
        make_config("tiny", ["specaug_freq_width=-1"])


def test_model_selection_is_a_checked_choice():
    assert make_config("tiny").model_selection == "last"  # the reproduction notes say why
    assert make_config("tiny", ["model_selection=best_val"]).model_selection == "best_val"
    with pytest.raises(ConfigError, match="model_selection='best' is not one of 'best_val', 'last'"):
        make_config("tiny", ["model_selection=best"])


def test_overrides_are_typed():
    c = make_config("tiny", ["variant=DP", "alpha=0.02", "text_layers=[1,2,3]", "audio_checkpoint=null"])
    assert c.variant == "DP" and c.alpha == 0.02 and c.text_layers == [1, 2, 3] and c.audio_checkpoint is None
    assert make_config("tiny", {"seed": 3}).seed == 3


@pytest.mark.parametrize("bad", [["nonsense=1"], {"nonsense": 1}])
def test_unknown_key_lists_valid_keys(bad):
    with pytest.raises(ConfigError) as err:
        make_config("tiny", bad)
    assert "nonsense" in str(err.value) and "variant" in str(err.value) and "n_factors" in str(err.value)


def test_unknown_key_in_dict():
    with pytest.raises(ConfigError, match="Valid keys"):
        from_dict({"variant": "DP", "colour": "red"})


@pytest.mark.parametrize(
    "override, message",
    [("variant=XYZ", "variant"), ("batch_size=1", "batch_size"), ("text_layers=[1,2]", "text_layers"),
     ("n_factors=0", "n_factors"), ("max_missing_share=2", "max_missing_share")],
)
def test_bad_values(override, message):
    with pytest.raises(ConfigError, match=message):
        make_config("tiny", [override])


def test_unknown_profile_and_malformed_override():
    with pytest.raises(ConfigError, match="available"):
        make_config("huge")
    with pytest.raises(ConfigError, match="key=value"):
        make_config("tiny", ["variant"])
