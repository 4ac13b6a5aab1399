"""engine/models.py: --weights files (complete, partial, wrong shapes, another head, a mammo-tui
checkpoint) and which layers run in train mode when blocks are frozen."""

from __future__ import annotations

import re

import pytest
import torch
from torchvision.models import get_model

from mammo_tui.engine.checkpoint import save_checkpoint
from mammo_tui.engine.models import apply_train_mode, build_model, set_trainable
from mammo_tui.errors import WeightsUnavailableError


def _state(arch: str, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return get_model(arch, weights=None).state_dict()


def _backbone_equal(model, state: dict[str, torch.Tensor], skip=("fc.", "conv1.")) -> bool:
    """Every backbone tensor of a resnet equals the file's (conv1 is summed to one channel)."""
    own = model.backbone.state_dict()
    return all(torch.equal(own[k], v) for k, v in state.items() if not k.startswith(skip))


# -- --weights FILE: a torchvision state dict ------------------------------------------------------


def test_a_complete_state_dict_loads_and_its_1000_class_head_is_ignored(tmp_path):
    state = _state("resnet18")
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    model = build_model("resnet18", 4, pretrained=True, weights_file=str(path))
    assert _backbone_equal(model, state) and model.head.weight.shape == (4, 512)
    assert torch.equal(model.backbone.conv1.weight, state["conv1.weight"].sum(dim=1, keepdim=True))
    assert model.weights_note == ""


def test_bn_step_counters_are_optional(tmp_path):
    # torchvision's published .pth files predate num_batches_tracked
    state = {k: v for k, v in _state("resnet18").items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "old.pth")
    assert _backbone_equal(build_model("resnet18", 4, weights_file=str(tmp_path / "old.pth")), state)


def test_a_partial_state_dict_is_refused_with_the_missing_keys_named(tmp_path):
    state = _state("resnet18")
    keys = list(state)
    half = {k: state[k] for k in keys[:len(keys) // 2]}  # was loaded silently: len(missing) <= len(state)
    path = tmp_path / "half.pth"
    torch.save(half, path)
    with pytest.raises(WeightsUnavailableError) as info:
        build_model("resnet18", 4, weights_file=str(path))
    message = str(info.value)
    assert str(path) in message and "allow_partial_weights = true" in message
    missing = [k for k in keys[len(keys) // 2:] if not k.startswith("fc.") and not k.endswith("num_batches_tracked")]
    assert f"{len(missing)} of 100 tensors are missing" in message
    assert "layer3.* (" in message and "layer4.* (" in message and missing[0] in message  # grouped by layer


def test_a_partial_state_dict_loads_when_allowed_and_says_what_stayed_random(tmp_path):
    state = _state("resnet18", seed=3)
    half = {k: v for k, v in state.items() if not k.startswith("layer4.")}
    torch.save(half, tmp_path / "no-layer4.pth")
    torch.manual_seed(0)
    model = build_model("resnet18", 4, weights_file=str(tmp_path / "no-layer4.pth"), allow_partial=True)
    assert _backbone_equal(model, half)
    assert not torch.equal(model.backbone.layer4[0].conv1.weight, state["layer4.0.conv1.weight"])
    assert "left at random initialisation" in model.weights_note and "layer4" in model.weights_note


def test_a_few_missing_keys_are_listed_by_name(tmp_path):
    state = _state("resnet18")
    del state["layer4.1.bn2.weight"], state["layer4.1.bn2.bias"]
    torch.save(state, tmp_path / "two.pth")
    with pytest.raises(WeightsUnavailableError, match=r"2 of 100 tensors are missing \(layer4.1.bn2.weight, "
                                                      r"layer4.1.bn2.bias\)"):
        build_model("resnet18", 4, weights_file=str(tmp_path / "two.pth"))


def test_a_head_of_another_size_is_dropped(tmp_path):
    for arch, head in (("resnet18", {"fc.weight": torch.zeros(7, 512), "fc.bias": torch.zeros(7)}),
                       ("efficientnet_b0", {"classifier.1.weight": torch.zeros(2, 1280),
                                            "classifier.1.bias": torch.zeros(2)})):
        state = {**_state(arch), **head}
        torch.save(state, tmp_path / f"{arch}.pth")
        model = build_model(arch, 4, weights_file=str(tmp_path / f"{arch}.pth"))
        assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 4)


def test_efficientnet_state_dict_without_the_classifier_loads(tmp_path):
    state = {k: v for k, v in _state("efficientnet_b0").items() if not k.startswith("classifier.")}
    torch.save(state, tmp_path / "eff.pth")
    model = build_model("efficientnet_b0", 4, weights_file=str(tmp_path / "eff.pth"))
    features = model.backbone[0]
    assert torch.equal(features[8][0].weight, state["features.8.0.weight"])


def test_a_shape_mismatch_names_the_key_and_both_shapes(tmp_path):
    state = _state("resnet18")
    state["layer2.0.conv1.weight"] = torch.zeros(128, 32, 3, 3)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(WeightsUnavailableError, match=r"layer2.0.conv1.weight \(file 128x32x3x3, resnet18 "
                                                      r"128x64x3x3\)"):
        build_model("resnet18", 4, weights_file=str(tmp_path / "bad.pth"))


def test_another_architectures_file_is_refused(tmp_path):
    torch.save(_state("resnet18"), tmp_path / "r18.pth")
    with pytest.raises(WeightsUnavailableError, match="does not match efficientnet_b0"):
        build_model("efficientnet_b0", 4, weights_file=str(tmp_path / "r18.pth"))
    with pytest.raises(WeightsUnavailableError, match="covers only part of the resnet34 backbone"):
        build_model("resnet34", 4, weights_file=str(tmp_path / "r18.pth"))


def test_not_a_state_dict(tmp_path):
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(WeightsUnavailableError, match="neither a state dict"):
        build_model("resnet18", 4, weights_file=str(tmp_path / "list.pth"))
    with pytest.raises(WeightsUnavailableError, match="no such file"):
        build_model("resnet18", 4, weights_file=str(tmp_path / "absent.pth"))


# -- --weights FILE: a mammo-tui checkpoint ------------------------------------------------------


def _run_checkpoint(path, arch="resnet18", seed=1):
    torch.manual_seed(seed)
    source = build_model(arch, 4, pretrained=False)
    save_checkpoint(path, {"model": source.state_dict(), "arch": arch, "class_names": list("ABCD"),
                           "img_size": 32, "in_channels": 1, "epoch": 3, "config": {"arch": arch},
                           "metrics": {"kappa": 0.5}, "history": [{"epoch": 1, "loss": 1.0}]})
    return source


@pytest.mark.parametrize("arch", ["resnet18", "efficientnet_b0"])
def test_a_mammo_tui_checkpoints_backbone_loads_and_the_head_starts_new(tmp_path, arch):
    path = tmp_path / "checkpoints" / "best.pt"
    source = _run_checkpoint(path, arch)
    torch.manual_seed(2)
    model = build_model(arch, 4, pretrained=True, weights_file=str(path))
    theirs = source.backbone.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in model.backbone.state_dict().items())
    head = [p for p in model.head.parameters() if p.dim() == 2][0]
    assert not torch.equal(head, [p for p in source.head.parameters() if p.dim() == 2][0])
    assert "mammo-tui" in model.weights_note and "epoch 3" in model.weights_note


def test_a_mammo_tui_checkpoint_of_another_arch_is_refused_clearly(tmp_path):
    path = tmp_path / "best.pt"
    _run_checkpoint(path, "resnet18")
    with pytest.raises(WeightsUnavailableError, match=r"checkpoint of a resnet18, but this run builds a "
                                                      r"efficientnet_b0.*arch=resnet18"):
        build_model("efficientnet_b0", 4, weights_file=str(path))


# -- train mode with frozen blocks ---------------------------------------------------------------


def _images(n=4, size=32, seed=0):
    return torch.randn(n, 1, size, size, generator=torch.Generator().manual_seed(seed))


def test_a_frozen_efficientnet_backbone_is_deterministic_in_train_mode():
    torch.manual_seed(0)
    model = build_model("efficientnet_b0", 4, pretrained=False)
    assert any(type(m).__name__ == "StochasticDepth" for m in model.backbone.modules())
    set_trainable(model, "head")
    x = _images()
    model.eval()
    with torch.no_grad():
        reference = model.backbone(x)  # what the frozen feature cache computes
    apply_train_mode(model)
    assert model.head.training  # the head trains (its dropout too)
    with torch.no_grad():
        first, second = model.backbone(x), model.backbone(x)
    assert torch.equal(first, second) and torch.equal(first, reference)  # stochastic depth off
    assert not any(m.training for m in model.backbone.modules())


def test_efficientnet_last_block_frozen_blocks_are_deterministic_trainable_ones_train():
    torch.manual_seed(0)
    model = build_model("efficientnet_b0", 4, pretrained=False)
    set_trainable(model, "last_block")
    apply_train_mode(model)
    features = model.backbone[0]  # stem, 7 MBConv stages, 1x1 conv; last_block trains 7 and 8
    trainable, frozen = features[7:], features[:7]
    # (slices are new Sequential wrappers: look at the stages in them)
    assert all(m.training for stage in trainable for m in stage.modules())  # StochasticDepth, BatchNorm train
    assert any(type(m).__name__ == "StochasticDepth" for stage in trainable for m in stage.modules())
    assert not any(m.training for stage in frozen for m in stage.modules())
    stem_to_frozen_top = frozen
    x = _images()
    with torch.no_grad():
        a, b = stem_to_frozen_top(x), stem_to_frozen_top(x)
    assert torch.equal(a, b)
    model.eval()
    with torch.no_grad():
        assert torch.equal(stem_to_frozen_top(x), a)


def test_resnet_train_mode_is_unchanged():
    """Frozen BatchNorm in eval, trainable BatchNorm in train, as before; outputs are the same as
    with the old rule (only frozen BatchNorm layers switched to eval)."""
    torch.manual_seed(0)
    model = build_model("resnet18", 4, pretrained=False)
    set_trainable(model, "last_block")
    apply_train_mode(model)
    bn = [m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert [m.training for m in bn] == [any(p.requires_grad for p in m.parameters()) for m in bn]
    assert model.backbone.layer4[0].bn1.training and not model.backbone.layer3[1].bn2.training
    x = _images(seed=1)
    with torch.no_grad():
        new = model(x)
    model.train()  # the old rule
    for m in bn:
        if not any(p.requires_grad for p in m.parameters()):
            m.eval()
    with torch.no_grad():
        old = model(x)
    assert torch.equal(new, old)


# -- damaged checkpoints: every reader gets a CheckpointError naming the file -----------------------


def _full_checkpoint(path, arch="resnet18"):
    """A best.pt as the trainer writes it (the keys every checkpoint holds)."""
    from mammo_tui import config

    torch.manual_seed(0)
    model = build_model(arch, 4, pretrained=False)
    cfg = config.resolve("demo", {"arch": arch, "img_size": 32, "pretrained": False})
    save_checkpoint(path, {"model": model.state_dict(), "epoch": 1, "config": cfg.to_dict(), "arch": arch,
                           "class_names": list("ABCD"), "img_size": 32, "in_channels": 1,
                           "normalization": {"mean": 0.5, "std": 0.25}, "metrics": {}, "status": "healthy"})


def _damage_kinds():
    from test_corpus_checkpoints import DAMAGE

    extra = {
        "normalization-std-0": (lambda p: torch.save({**torch.load(p, weights_only=True),
                                                      "normalization": {"mean": 0.5, "std": 0.0}}, p),
                                "normalization"),
        "class-names-one": (lambda p: torch.save({**torch.load(p, weights_only=True), "class_names": ["A"]}, p),
                            "class_names"),
        "arch-unknown": (lambda p: torch.save({**torch.load(p, weights_only=True), "arch": "vgg"}, p), "arch"),
        "model-not-tensors": (lambda p: torch.save({**torch.load(p, weights_only=True), "model": {"a": 1}}, p),
                              "not a state dict"),
    }
    return {**DAMAGE, **extra}


@pytest.mark.parametrize("kind", list(_damage_kinds()))
def test_every_damaged_checkpoint_is_named_with_what_is_wrong(tmp_path, kind):
    from mammo_tui.engine.checkpoint import load_checkpoint
    from mammo_tui.errors import MammoError
    from mammo_tui.evaluate import load_run_model

    path = tmp_path / "run" / "checkpoints" / "best.pt"
    _full_checkpoint(path)
    load_checkpoint(path)  # healthy before the damage
    damage, said = _damage_kinds()[kind]
    damage(path)
    with pytest.raises(MammoError) as caught:
        load_run_model(tmp_path / "run")
    assert str(path) in str(caught.value) and said in str(caught.value)


@pytest.mark.parametrize("kind", ["format-99", "img-size-neg", "no-config", "unknown-config-key"])
def test_a_damaged_run_checkpoint_as_weights_is_refused(tmp_path, kind):
    path = tmp_path / "best.pt"
    _full_checkpoint(path)
    damage, said = _damage_kinds()[kind]
    damage(path)
    with pytest.raises(WeightsUnavailableError, match=said):
        build_model("resnet18", 4, weights_file=str(path))


@pytest.mark.parametrize("make, said", [
    (lambda p: p.write_text("resnet18 weights\n"), "not a PyTorch file"),
    (lambda p: p.write_bytes(b""), "empty (0 bytes)"),
    (lambda p: p.mkdir(), "is a folder"),
    (lambda p: torch.save(torch.zeros(3), p), "it holds a Tensor"),
    (lambda p: torch.save({"a": 1}, p), "non-tensor values"),
])
def test_a_bad_weights_file_says_what_it_is(tmp_path, make, said):
    from mammo_tui.weights import weights_status

    path = tmp_path / "w.pth"
    make(path)
    with pytest.raises(WeightsUnavailableError, match=re.escape(f"--weights {path}: ") + ".*" + re.escape(said)):
        build_model("resnet18", 4, weights_file=str(path))
    status = weights_status("resnet18", str(path))  # plan and the wizard say it before training
    if said in ("not a PyTorch file", "empty (0 bytes)", "is a folder"):
        assert not status.available and said in status.detail


def test_a_device_or_fifo_as_weights_is_not_a_regular_file(tmp_path):
    import os

    from mammo_tui.weights import weights_status

    fifo = tmp_path / "w.pth"
    os.mkfifo(fifo)  # reading it would block forever
    for path in ("/dev/null", str(fifo)):
        assert "not a regular file" in weights_status("resnet18", path).detail
        with pytest.raises(WeightsUnavailableError, match="not a regular file"):
            build_model("resnet18", 4, weights_file=path)
