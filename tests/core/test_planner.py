"""Planner: DESIGN.md decision flow x freezing depth by size, over every table boundary."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from mammo_tui.errors import ConfigError

from mammo_tui.config import load_preset, preset_names, resolve
from mammo_tui.planner import (
    DECISION_TABLE,
    PRESET_FOR_FREEZE,
    SIZE_TABLE,
    format_plan,
    format_ratio,
    plan,
)

REFERENCE = [40, 363, 849, 335]

# class counts with max/min exactly 10, just above 10, and an empty class
RATIOS = {"10": [100, 1000, 500, 400], "10.01": [100, 1001, 500, 400], "empty": [0, 300, 300, 100]}

# (n_images, ratio) -> (rule, freeze), written out by hand from the two DESIGN.md tables
EXPECTED = {
    (499, "10"): (2, "head"),  # size says head only: more frozen than rule 2's last block
    (499, "10.01"): (1, "head"),
    (499, "empty"): (1, "head"),
    (500, "10"): (2, "last_block"),
    (500, "10.01"): (1, "head"),  # size allows last block; highest risk keeps head only
    (500, "empty"): (1, "head"),
    (999, "10"): (2, "last_block"),
    (999, "10.01"): (1, "head"),
    (999, "empty"): (1, "head"),
    (1000, "10"): (4, "last_block"),  # size 500-2000 wins over rule 4's last two blocks
    (1000, "10.01"): (3, "last_block"),
    (1000, "empty"): (3, "last_block"),
    (1999, "10"): (4, "last_block"),
    (1999, "10.01"): (3, "last_block"),
    (1999, "empty"): (3, "last_block"),
    (2000, "10"): (4, "last_two_blocks"),
    (2000, "10.01"): (3, "last_block"),  # medium risk caps at last block
    (2000, "empty"): (3, "last_block"),
    (10000, "10"): (4, "last_two_blocks"),
    (10000, "10.01"): (3, "last_block"),
    (10000, "empty"): (3, "last_block"),
    (10001, "10"): (4, "none"),  # low risk lets size reach full fine-tuning
    (10001, "10.01"): (3, "last_block"),
    (10001, "empty"): (3, "last_block"),
}
RISK = {1: "highest", 2: "medium", 3: "medium", 4: "low"}


@pytest.mark.parametrize("n, ratio", list(EXPECTED))
def test_table_boundaries(n: int, ratio: str) -> None:
    rule, freeze = EXPECTED[(n, ratio)]
    p = plan(n, RATIOS[ratio])
    assert (p.rule, p.freeze, p.risk) == (rule, freeze, RISK[rule])
    assert p.preset == PRESET_FOR_FREEZE[freeze]
    assert load_preset(p.preset)["freeze"] == p.freeze
    assert "freeze" not in p.overrides
    # the rule's stated settings hold once the overrides are applied
    cfg = resolve(p.preset, p.overrides)
    settings = DECISION_TABLE[rule - 1].settings
    if "sampler" in settings:
        assert cfg.sampler == settings["sampler"]
    if freeze != "head":
        assert cfg.warmup_epochs == settings["warmup_epochs"]
    assert p.reasons and any(f"Rule {rule}:" in r for r in p.reasons)


def test_reference_counts_give_the_reference_preset() -> None:
    p = plan(sum(REFERENCE), REFERENCE)
    assert (p.rule, p.risk, p.preset, p.freeze, p.overrides) == (3, "medium", "last_block", "last_block", {})
    assert p.imbalance == pytest.approx(849 / 40)
    assert (
        "1,587 images (>= 1000) and imbalance 21.2 (max/min, > 10): medium risk -> frozen + last block, "
        "weighted sampler, warmup 2" in p.reasons[0]
    )
    cfg = resolve(p.preset, p.overrides)
    assert (cfg.freeze, cfg.sampler, cfg.class_weights, cfg.warmup_epochs) == ("last_block", "weighted", "none", 2)


def test_empty_class_is_named() -> None:
    p = plan(700, [0, 300, 300, 100])
    assert p.empty_classes == ["A"]
    assert p.reasons[0].startswith("Class A has no images: the imbalance is infinite, treated as > 10")
    assert math.isinf(p.imbalance)
    two = plan(1200, [600, 0, 600, 0])
    assert two.empty_classes == ["B", "D"] and two.reasons[0].startswith("Class B, D have no images")
    assert plan(0, [0, 0, 0, 0]).rule == 1  # degenerate, but no crash


def test_imbalance_is_max_over_min() -> None:
    assert plan(2000, [50, 500, 400, 300]).rule == 4  # exactly 10
    assert plan(2000, [49, 500, 400, 300]).rule == 3
    assert plan(2000, [500, 49, 400, 300]).rule == 3  # order does not matter


def test_size_table_wins_in_reasons() -> None:
    small = plan(400, [100, 100, 100, 100])
    assert (small.rule, small.preset) == (2, "head_only")
    assert any("more frozen setting wins" in r for r in small.reasons)
    big = plan(20000, [5000] * 4)
    assert big.preset == "full_finetune" and any("low risk allows it" in r for r in big.reasons)


def test_rule_4_on_a_last_block_preset_overrides_warmup() -> None:
    p = plan(1500, [300, 400, 500, 300])
    assert (p.rule, p.preset, p.overrides) == (4, "last_block", {"warmup_epochs": 1})
    assert any("warmup_epochs = 1" in r for r in p.reasons)


def test_decision_table_is_data() -> None:
    assert [r.rule for r in DECISION_TABLE] == [1, 2, 3, 4]
    assert [(r.images, r.imbalance, r.risk) for r in DECISION_TABLE] == [
        ("< 1000", "> 10", "highest"), ("< 1000", "<= 10", "medium"),
        (">= 1000", "> 10", "medium"), (">= 1000", "<= 10", "low"),
    ]
    assert {PRESET_FOR_FREEZE[r.freeze] for r in SIZE_TABLE} <= set(preset_names())
    assert set(PRESET_FOR_FREEZE.values()) <= set(preset_names())


def test_format_ratio_shows_the_side_of_ten() -> None:
    assert format_ratio(21.225) == "21.2"
    assert format_ratio(10.0) == "10.0"
    assert format_ratio(10.01) == "10.01"
    assert format_ratio(math.inf) == "infinite"


@pytest.mark.parametrize("n, counts", [(1587, REFERENCE), (400, [100] * 4), (20000, [5000] * 4),
                                       (700, [0, 300, 300, 100]), (123456, [100000, 20000, 3000, 456])])
def test_format_plan_fits_80_columns(n: int, counts: list[int]) -> None:
    p = plan(n, counts)
    text = format_plan(p)
    assert all(len(line) < 80 for line in text.splitlines()), text
    assert f"preset {p.preset}" in text
    marked = [line for line in text.splitlines() if line.startswith("  * ")]
    assert marked[0].startswith(f"  * {p.rule} ")
    assert len(marked) == 2  # one decision row, one size row


def test_plan_is_json() -> None:
    data = json.loads(json.dumps(plan(700, [0, 300, 300, 100]).to_dict(), allow_nan=False))
    assert data["imbalance"] is None and data["preset"] == "head_only"
    assert json.loads(json.dumps(plan(1587, REFERENCE).to_dict()))["imbalance"] == pytest.approx(21.225)


@pytest.mark.parametrize("n, counts", [(-1, [1, 1, 1, 1]), (10, []), (10, [1, -1, 1, 1])])
def test_bad_input(n: int, counts: list[int]) -> None:
    with pytest.raises(ValueError):
        plan(n, counts)


def test_rule_modules_stay_light() -> None:
    # The wizard imports the planner at start-up: no torch, textual, or scikit-learn.
    code = ("import sys, mammo_tui.planner, mammo_tui.collapse; "
            "print(sorted(m for m in ('torch', 'textual', 'sklearn', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --- beyond the two tables: patients, pretrained weights, the user's flags --------------------------

from mammo_tui.weights import WeightsStatus  # noqa: E402


def available(arch, weights_file, pretrained):
    if not pretrained and not weights_file:
        return WeightsStatus(arch, False, "off", "pretrained = false")
    return WeightsStatus(arch, True, "cache", f"ImageNet weights for {arch} found in the cache")


def missing(arch, weights_file, pretrained):
    if weights_file:
        return WeightsStatus(arch, True, "file", f"pretrained weights for {arch} from {weights_file}")
    if not pretrained:
        return WeightsStatus(arch, False, "off", "pretrained = false")
    return WeightsStatus(arch, False, "none", f"no ImageNet weights for {arch}: not cached, offline")


def test_the_size_rules_count_patients_when_the_dataset_knows_them() -> None:
    # 1,587 images but 420 patients (about 4 views each): small by the rule that is about samples
    by_images = plan(1587, REFERENCE)
    by_patients = plan(1587, REFERENCE, n_patients=420)
    assert (by_images.rule, by_images.preset) == (3, "last_block")
    assert (by_patients.rule, by_patients.preset) == (1, "head_only")
    assert any("count patients, not images" in r for r in by_patients.reasons)
    assert any("1,587 images from 420 patients (< 1000 patients)" in r for r in by_patients.reasons)
    text = format_plan(by_patients)
    assert "1,587 images from 420 patients" in text
    assert [line for line in text.splitlines() if line.startswith("  * ")][1].startswith("  * < 500")
    # one image per patient (or unknown patients): the same as counting images
    assert plan(1587, REFERENCE, n_patients=1587).rule == 3


def test_without_pretrained_weights_nothing_is_frozen_and_no_warmup_runs() -> None:
    for n, counts in [(794, [20, 181, 425, 168]), (1587, REFERENCE), (20000, [5000] * 4), (1500, [300, 400, 500, 300])]:
        p = plan(n, counts, weights_probe=missing)
        assert p.preset == "from_scratch" and p.config.freeze == "none"
        assert p.config.warmup_epochs == 0 and p.config.pretrained is False
        assert not p.weights.available
        assert any("a frozen random backbone learns nothing" in r for r in p.reasons)
        assert p.headline.startswith("from_scratch (rule ") and "no pretrained weights" in p.headline
        assert "Pretrained weights: NONE" in format_plan(p)
    # the rule's balancing survives the switch
    assert plan(794, [20, 181, 425, 168], weights_probe=missing).config.sampler == "weighted"
    # with weights, the rules' frozen presets stand
    p = plan(794, [20, 181, 425, 168], weights_probe=available)
    assert (p.preset, p.config.freeze, p.config.pretrained) == ("head_only", "head", True)
    assert any("Pretrained weights: ImageNet weights for resnet50 found" in r for r in p.reasons)
    # a --weights file counts
    p = plan(794, [20, 181, 425, 168], overrides={"weights": "/x/backbone.pth"}, weights_probe=missing)
    assert (p.preset, p.config.freeze) == ("head_only", "head")


def test_the_users_flags_win_key_by_key_and_are_checked() -> None:
    p = plan(794, [20, 181, 425, 168], overrides={"epochs": 3, "lr": 3e-4, "arch": "resnet18"},
             weights_probe=available)
    assert (p.preset, p.config.epochs, p.config.lr, p.config.arch, p.config.freeze) == \
        ("head_only", 3, 3e-4, "resnet18", "head")
    assert p.overrides["epochs"] == 3 and any("Your flags" in r for r in p.reasons)
    # --no-pretrained: the plan trains from scratch
    assert plan(794, [20, 181, 425, 168], overrides={"pretrained": False}, weights_probe=available).preset == "from_scratch"
    # a frozen backbone asked for explicitly without weights is refused, not silently changed
    with pytest.raises(ConfigError, match="freezes a randomly initialised backbone"):
        plan(794, [20, 181, 425, 168], overrides={"freeze": "last_block", "pretrained": False}, weights_probe=missing)


def test_the_demo_is_sized_for_a_cpu_but_defended_by_the_plan() -> None:
    p = plan(794, [20, 181, 425, 168], n_patients=230, demo=True, weights_probe=missing)
    demo = load_preset("demo")
    assert (p.config.arch, p.config.img_size, p.config.epochs) == (demo["arch"], demo["img_size"], demo["epochs"])
    assert (p.preset, p.config.freeze, p.config.warmup_epochs, p.config.sampler) == ("from_scratch", "none", 0, "weighted")
    cached = plan(794, [20, 181, 425, 168], n_patients=230, demo=True, weights_probe=available)
    assert (cached.preset, cached.config.freeze, cached.config.arch) == ("head_only", "head", "resnet18")


def test_epochs_not_above_warmup_is_said_in_the_plan() -> None:
    p = plan(1587, REFERENCE, overrides={"epochs": 2}, weights_probe=available)
    assert p.config.warmup_epochs == 2
    [warning] = [w for w in p.warnings if "warmup_epochs (2) >= epochs (2)" in w]
    assert "trains the head only" in warning and warning in " ".join(format_plan(p).split())
    assert not [w for w in plan(1587, REFERENCE, overrides={"epochs": 3}, weights_probe=available).warnings
                if "warmup_epochs" in w]


def test_weights_table_matches_torchvision_and_the_hub_dir(tmp_path, monkeypatch) -> None:
    import torch
    from torchvision.models import get_model_weights

    from mammo_tui import weights

    for arch, url in weights.WEIGHTS_URLS.items():
        assert get_model_weights(arch).DEFAULT.url == url
    assert weights.torch_hub_dir() == __import__("pathlib").Path(torch.hub.get_dir())
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv(weights.OFFLINE_ENV, "1")
    status = weights.weights_status("resnet18")
    assert not status.available and str(tmp_path) in status.detail and "--weights" in status.detail
    cached = weights.cached_weights_path("resnet18")
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"x")
    assert weights.weights_status("resnet18").source == "cache"
    assert weights.weights_status("resnet18", pretrained=False).source == "off"
    assert weights.weights_status("resnet18", str(tmp_path / "nope.pth")).available is False


# -- img_size from the device and the detector size ---------------------------------------------


class _Sizes:
    def __init__(self, median: float) -> None:
        self.median = median


class _Fingerprint:
    """The fingerprint fields plan_for reads, for images of the given width x height."""

    def __init__(self, width: float, height: float) -> None:
        self.n_images, self.n_patients, self.class_counts = 794, 400, [20, 181, 425, 168]
        self.width, self.height = _Sizes(width), _Sizes(height)


@pytest.mark.parametrize("device, width, height, expected", [
    ("cuda", 2560, 3328, 512),  # full-field detector on a GPU: the resolution density needs
    ("cuda", 3328, 4096, 512),
    ("cpu", 2560, 3328, 224),  # CPU: the preset's small size
    ("cuda", 208, 256, 224),  # a GPU, but small images: no gain from more pixels than they have
    ("cpu", 208, 256, 224),
])
def test_img_size_follows_the_device_and_the_detector_size(device, width, height, expected):
    from mammo_tui.planner import plan_for

    p = plan_for(_Fingerprint(width, height), device=device)
    assert p.config.img_size == expected
    reason = next(r for r in p.reasons if r.startswith("Image size"))
    assert f"Image size {expected} px" in reason and f"{max(width, height):,} px images" in reason
    assert ("no GPU" in reason) == (device == "cpu")


def test_img_size_suggestion_yields_to_the_user_the_demo_and_an_unknown_device():
    from mammo_tui.planner import plan_for

    fp = _Fingerprint(2560, 3328)
    assert plan_for(fp, {"img_size": 1024}, device="cuda").config.img_size == 1024  # the user's flag wins
    assert plan_for(fp, demo=True, device="cuda").config.img_size == load_preset("demo")["img_size"]
    unknown = plan_for(fp)  # device not given: the preset's, as before (snapshots stay machine-independent)
    assert unknown.config.img_size == 224 and not any(r.startswith("Image size") for r in unknown.reasons)
    scratch = plan(794, [20, 181, 425, 168], device="cuda", image_side=3328,
                   weights_probe=lambda arch, file, pretrained: _NoWeights())
    assert scratch.preset == "from_scratch" and scratch.config.img_size == 512  # kept without weights


class _NoWeights:
    available, detail = False, "no cached weights (test)"

    def to_dict(self):
        return {"available": False}


def test_detect_device_honours_an_explicit_choice_and_needs_no_torch(monkeypatch):
    from mammo_tui.planner import detect_device

    assert detect_device("cpu") == "cpu" and detect_device("cuda") == "cuda"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    assert detect_device("auto") == "cpu"  # GPUs hidden


@pytest.mark.parametrize("preset", ["head_only", "last_block", "last_two_blocks", "full_finetune", "from_scratch"])
@pytest.mark.parametrize("size", [512, 1024])
def test_every_preset_accepts_512_and_1024_px(preset, size):
    assert resolve(preset, {"img_size": size}).img_size == size
