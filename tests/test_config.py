"""Config validation: profiles load, overrides parse, unknown keys list the valid ones."""

import json
from dataclasses import MISSING, fields

import pytest
import yaml

from thadcr import config as config_module
from thadcr import files
from thadcr.config import (
    KEYS_ADDED,
    Config,
    ConfigError,
    available_profiles,
    from_dict,
    load_profile,
    make_config,
    save_config,
    valid_keys,
)


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


@pytest.mark.parametrize(
    "override, message",
    [
        ("lr=abc", "lr must be positive (a number), got 'abc'"),
        ("lr=-0.001", "lr must be positive (a number), got -0.001"),
        ("batch_size=abc", "batch_size must be at least 2 (an integer), got 'abc'"),
        ("epochs=2.5", "epochs must be positive (an integer), got 2.5"),
        ("epochs=true", "epochs must be positive (an integer), got True"),  # a bool is not an int
        ("amp=maybe", "amp must be true or false, got 'maybe'"),
        ("amp=1", "amp must be true or false, got 1"),
        ("text_layers=[1,2]", "text_layers must be a list of 3 integers, each 0 or positive, got [1, 2]"),
        ("text_layers=[1,2,x]", "text_layers must be a list of 3 integers, each 0 or positive, got [1, 2, 'x']"),
        ("text_layers=3", "text_layers must be a list of 3 integers, each 0 or positive, got 3"),
        ("tau=0", "tau must be positive (a number), got 0"),
        ("lam=.inf", "lam must be 0 or positive (a number), got inf"),  # numbers are finite
        ("seed=-1", "seed must be 0 or positive (an integer), got -1"),
        ("text_trainable_layers=-2", "text_trainable_layers must be at least -1 (an integer), got -2"),
        ("lr_gamma=1.5", "lr_gamma must be in (0, 1] (a number), got 1.5"),
        ("variant=null", "variant=None is not one of 'DP'"),
        ("data_root=null", "data_root must be text, got None"),
        ("clip_seconds=null", "clip_seconds must be positive (a number), got None"),  # only Optional keys take null
        ("device=quantum", "device must be 'auto' or a torch device (cpu, cuda, cuda:1, mps, ...), got 'quantum'"),
        ("specaug_time_masks=[2]", "specaug_time_masks must be 0 or positive (an integer), got [2]"),
    ],
)
def test_values_are_checked_against_their_type_and_range(override, message):
    with pytest.raises(ConfigError) as error:
        make_config("tiny", [override])
    assert message in str(error.value)


def test_dict_overrides_and_recorded_configs_are_checked_too():
    with pytest.raises(ConfigError, match=r"amp must be true or false, got 'yes'"):
        make_config("tiny", {"amp": "yes"})  # a dict is typed already: no YAML reading
    values = make_config("tiny").to_dict()
    with pytest.raises(ConfigError, match=r"^checkpoint x\.pt: epochs must be positive \(an integer\), got '2'"):
        from_dict({**values, "epochs": "2"}, source="checkpoint x.pt")


def test_ints_are_numbers_yaml_booleans_and_text_keys_keep_their_text():
    c = make_config("tiny", ["lr=1", "alpha=0", "amp=no", "same_clip_positives=on", "cache_dir=2024",
                             "device=cpu", "audio_checkpoint=null", "text_model=~"])  # fmt: skip
    assert c.lr == 1.0 and isinstance(c.lr, float) and isinstance(c.alpha, float)
    assert c.amp is False and c.same_clip_positives is True
    assert c.cache_dir == "2024"  # YAML would read an int; a text key keeps the text given
    assert c.audio_checkpoint is None and c.text_model is None


def test_a_value_that_is_not_yaml_names_the_override():
    with pytest.raises(ConfigError, match=r"override 'text_layers=\[1,2': the value is not valid YAML"):
        make_config("tiny", ["text_layers=[1,2"])


def test_config_has_no_defaults_a_run_sets_every_key():
    assert all(f.default is MISSING and f.default_factory is MISSING for f in fields(Config))
    with pytest.raises(TypeError):
        Config()  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match=r"missing key\(s\) .*n_factors") as error:
        from_dict({"variant": "DP"}, source="mine.json")
    assert "mine.json" in str(error.value) and "variant" not in str(error.value).split("missing")[1]


def test_a_record_older_than_a_key_reads_as_the_behaviour_before_it():
    assert set(KEYS_ADDED) <= set(valid_keys())
    recorded = make_config("tiny").to_dict()  # tiny tests the last epoch; before the key, best validation
    for key in KEYS_ADDED:
        del recorded[key]
    old = from_dict(recorded, source="old metrics.json")
    assert {key: getattr(old, key) for key in KEYS_ADDED} == KEYS_ADDED
    assert old.model_selection == "best_val" and old.factor_reduce == "sum" and old.tha_max_audio_tokens == 0
    recorded.pop("joint_dim")  # a key every record has: its absence is an error, not a guess
    with pytest.raises(ConfigError, match=r"old metrics.json: missing key\(s\) joint_dim"):
        from_dict(recorded, source="old metrics.json")


def test_a_profile_must_set_every_key(tmp_path, monkeypatch):
    values = load_profile("tiny")
    del values["specaug_time_masks"]  # a key with an earlier value: still required in a profile
    (tmp_path / "partial.yaml").write_text(yaml.safe_dump(values))
    monkeypatch.setattr(config_module, "PROFILE_DIR", tmp_path)
    with pytest.raises(ConfigError, match=r"partial.yaml: missing key\(s\) specaug_time_masks"):
        make_config("partial")


def test_stale_settings_reads_unrecorded_keys_as_their_earlier_value(tmp_path):
    from thadcr.experiments.plan import plan, stale_settings

    run = plan("tiny", tables=(4,))[0]
    recorded = run.config().to_dict()
    del recorded["model_selection"], recorded["specaug_time_masks"]  # both added to Config after runs existed
    (tmp_path / "metrics.json").write_text(json.dumps({"config": recorded}))
    # the tiny plan tests the last epoch; a run from before the key tested the best-validation one
    assert stale_settings(run, tmp_path) == {"model_selection": ("<absent>", "last")}


def test_save_config_is_atomic_and_round_trips(tmp_path, monkeypatch):
    config = make_config("tiny", ["lr=0.002"])
    path = tmp_path / "config.json"
    save_config(config, path)
    assert from_dict(json.loads(path.read_text())) == config
    before = path.read_bytes()

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        save_config(config.replace(lr=0.5), path)
    assert path.read_bytes() == before and list(tmp_path.iterdir()) == [path]  # old file intact, no partial left
