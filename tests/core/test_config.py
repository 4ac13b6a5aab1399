import re
import tomllib

import pytest

from mammo_tui import config
from mammo_tui.config import TrainConfig
from mammo_tui.errors import ConfigError

ISSUE_KEYS = ["arch", "pretrained", "weights", "freeze", "warmup_epochs", "sampler", "class_weights",
              "loss", "focal_gamma", "la_tau", "lr", "weight_decay", "epochs", "batch_size", "img_size",
              "augment", "scheduler", "early_stop_patience", "seed", "on_collapse"]


def test_public_key_names_exist():
    # scripts depend on these names; renaming one must fail here
    assert set(ISSUE_KEYS) <= set(config.KEYS)


def test_every_builtin_preset_loads_and_resolves():
    assert {"head_only", "last_block", "last_two_blocks", "full_finetune", "demo"} <= set(config.preset_names())
    for name in config.preset_names():
        cfg = config.resolve(name)
        assert isinstance(cfg, TrainConfig)
        assert config.preset_description(name)


def test_last_block_preset_is_the_reference_setting():
    cfg = config.resolve("last_block")
    assert (cfg.arch, cfg.freeze, cfg.sampler, cfg.class_weights, cfg.warmup_epochs) == \
           ("resnet50", "last_block", "weighted", "none", 2)
    assert (cfg.lr, cfg.batch_size, cfg.epochs) == (1e-4, 16, 10)


def test_flags_then_set_override_the_preset():
    overrides = {"epochs": 3, **config.parse_set(["lr=3e-4", "augment=false", "arch=resnet18", "sampler=none"])}
    cfg = config.resolve("last_block", overrides)
    assert (cfg.epochs, cfg.lr, cfg.augment, cfg.arch, cfg.sampler) == (3, 3e-4, False, "resnet18", "none")


@pytest.mark.parametrize("item, fragment", [
    ("lerning_rate=1", "unknown config key 'lerning_rate'"),
    ("epochs=ten", "epochs must be int"),
    ("freeze=layer4", "freeze must be one of"),
    ("augment=maybe", "augment must be bool"),
    ("noequals", "expected key=value"),
])
def test_bad_set_values_are_named(item, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(")):
        config.parse_set([item])


def test_double_balancing_refused_unless_forced():
    with pytest.raises(ConfigError, match="balances the classes twice"):
        config.resolve("last_block", {"class_weights": "balanced"})
    cfg = config.resolve("last_block", {"class_weights": "balanced", "allow_double_balancing": True})
    assert cfg.class_weights == "balanced"


@pytest.mark.parametrize("changes, named", [
    ({"loss": "logit_adjusted"}, "sampler=weighted together with loss=logit_adjusted"),
    ({"loss": "logit_adjusted", "sampler": "none", "class_weights": "balanced"},
     "class_weights=balanced together with loss=logit_adjusted"),
])
def test_logit_adjusted_loss_on_top_of_another_balancer_is_double_balancing(changes, named):
    # seen: last_block + loss=logit_adjusted predicted A for 100 % of the images at epoch 1
    with pytest.raises(ConfigError, match=named):
        config.resolve("last_block", changes)
    forced = config.resolve("last_block", {**changes, "allow_double_balancing": True})
    assert forced.loss == "logit_adjusted"
    alone = config.resolve("last_block", {**changes, "sampler": "none", "class_weights": "none"})
    assert config.balancing(alone) == ["loss=logit_adjusted"]
    # switched off, a balancer does not count: sampler_power 0 samples the natural frequencies
    assert config.resolve("last_block", {"loss": "logit_adjusted", "sampler_power": 0.0}).loss == "logit_adjusted"


@pytest.mark.parametrize("preset", ["head_only", "last_block", "last_two_blocks"])
def test_a_frozen_random_backbone_is_refused(preset):
    with pytest.raises(ConfigError, match="freezes a randomly initialised backbone"):
        config.resolve(preset, {"pretrained": False})
    # pretrained weights from a file are pretrained weights
    assert config.resolve(preset, {"pretrained": False, "weights": "backbone.pth"}).freeze != "none"
    assert config.resolve(preset, {"pretrained": False, "freeze": "none"}).freeze == "none"


@pytest.mark.parametrize("item", ["sampler_power=1.5", "sampler_power=-0.1", "warn_dominance=0", "warn_dominance=1.2"])
def test_new_keys_have_ranges(item):
    key = item.split("=")[0]
    with pytest.raises(ConfigError, match=key):
        config.resolve("last_block", config.parse_set([item]))


def test_preset_file_with_unknown_key_or_wrong_type(tmp_path):
    bad_key = tmp_path / "bad_key.toml"
    bad_key.write_text('arch = "resnet18"\nlearning_rate = 0.1\n')
    with pytest.raises(ConfigError, match="bad_key.toml: unknown config key 'learning_rate'"):
        config.resolve(str(bad_key))
    bad_type = tmp_path / "bad_type.toml"
    bad_type.write_text('epochs = "ten"\n')
    with pytest.raises(ConfigError, match="epochs must be int"):
        config.resolve(str(bad_type))
    broken = tmp_path / "broken.toml"
    broken.write_text("epochs = = 3\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.resolve(str(broken))
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        config.resolve("nope")


def test_to_toml_round_trips():
    cfg = config.resolve("demo", {"weights": 'C:\\w "x".pth'})
    text = config.to_toml(cfg, description="copy")
    assert config.from_mapping({k: v for k, v in tomllib.loads(text).items() if k != "description"}) == cfg


def test_ranges_checked():
    with pytest.raises(ConfigError, match=r"batch_size must be in \[1, 1024\]"):
        config.from_mapping({"batch_size": 0})
    with pytest.raises(ConfigError, match=r"img_size must be in \[16, 2048\]"):
        config.from_mapping({"img_size": 8})
    with pytest.raises(ConfigError, match="crt_epochs \\(10\\) must be smaller than epochs"):
        config.from_mapping({"crt_epochs": 10})


NUMERIC = [key for key in config.KEYS if config._TYPES[key] in (int, float)]


def test_every_numeric_key_has_a_range_that_holds_its_default():
    # a new int/float key without a row in RANGES fails here: add its range, with the reason
    assert sorted(NUMERIC) == sorted(config.RANGES)
    defaults = TrainConfig()
    for key in NUMERIC:
        assert config.RANGES[key].holds(getattr(defaults, key)), key


def _outside(span: config.Range) -> list[float]:
    """nan, +-inf, just below and far above the range."""
    low = span.low if span.open_low else span.low - (1 if span.low == int(span.low) else 0.01)
    return [float("nan"), float("inf"), float("-inf"), low, span.high * 10 + 1]


@pytest.mark.parametrize("key", NUMERIC)
def test_every_numeric_key_refuses_nan_inf_and_out_of_range_values(key):
    span = config.RANGES[key]
    message = re.escape(f"{key} must be in {span.text()} ({span.why}), got ")
    for value in _outside(span):
        raw = repr(value).replace("'", "") if value == value else "nan"
        with pytest.raises(ConfigError, match=message):
            config.parse_set([f"{key}={raw}"])  # TOML: nan, inf, -inf
        with pytest.raises(ConfigError, match=message):
            config.from_mapping({key: value}, source="config.toml")
    for bound, is_open in ((span.low, span.open_low), (span.high, span.open_high)):
        if not is_open:
            assert config.coerce(key, bound) == bound


@pytest.mark.parametrize("item, message", [
    ("lr=nan", "--set lr=nan: lr must be in (0, 1] (AdamW steps above 1 diverge at once), got nan"),
    ("lr=inf", "lr must be in (0, 1]"),
    ("weight_decay=-0.1", "weight_decay must be in [0, 1]"),
    ("focal_gamma=-1", "focal_gamma must be in [0, 10]"),
    ("grad_clip=-1", "grad_clip must be in [0, 1000]"),
    ("seed=-1", "seed must be in [0, 2147483647]"),
    ("seed=4294967297", "seed must be in [0, 2147483647]"),
    ("img_size=100000", "img_size must be in [16, 2048] (images are resized"),
    ("max_batches_per_epoch=-1", "max_batches_per_epoch must be in [0, 1000000000] (0 = all batches), got -1"),
    ("num_workers=1000", "num_workers must be in [-1, 64]"),
    ("collapse_kappa=5", "collapse_kappa must be in [-1, 1]"),
    ("collapse_dominance=0", "collapse_dominance must be in (0, 1]"),
    ("val_fraction=1", "val_fraction must be in (0, 1)"),
    ("epochs=inf", "epochs must be in [1, 10000]"),
    ("epochs=nan", "epochs must be in [1, 10000]"),
])
def test_issue_examples_name_the_key_and_the_range(item, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        config.parse_set([item])


def test_a_preset_out_of_range_is_named_with_its_file(tmp_path):
    preset = tmp_path / "huge.toml"
    preset.write_text("img_size = 100000\n")
    with pytest.raises(ConfigError, match=r"preset huge.toml: img_size must be in \[16, 2048\]"):
        config.resolve(str(preset))


@pytest.mark.parametrize("value", ["a\x00b.pth", "a\nb.pth"])
def test_string_keys_refuse_nul_bytes_and_line_breaks(value):
    with pytest.raises(ConfigError, match="weights must be one line of text"):
        config.from_mapping({"weights": value})
