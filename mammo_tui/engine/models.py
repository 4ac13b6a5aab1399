"""torchvision classifiers for single-channel mammograms, split into backbone + head.

The split makes the freezing modes explicit (head / last block / last two blocks / none) and lets
the trainer precompute backbone features when only the head trains.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn
from torchvision.models import get_model, get_model_weights

from mammo_tui.engine.checkpoint import read_torch_file, validate_checkpoint
from mammo_tui.errors import ConfigError, WeightsUnavailableError

ARCHS = ("resnet18", "resnet34", "resnet50", "efficientnet_b0")
FREEZE_ORDER = ("head", "last_block", "last_two_blocks", "none")


class Classifier(nn.Module):
    def __init__(self, arch: str, backbone: nn.Module, head: nn.Module, blocks: list[nn.Module]):
        super().__init__()
        self.arch = arch
        self.backbone = backbone  # image [N,1,S,S] -> pooled features [N,F]
        self.head = head
        # The backbone's stages, shallowest first; the last entries unfreeze first.
        self._blocks = blocks
        self.weights_note = ""  # what build_model loaded from a --weights file, for the run's log

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def blocks(self) -> list[nn.Module]:
        return self._blocks


def _single_channel(conv: nn.Conv2d) -> nn.Conv2d:
    """Grayscale input: sum the RGB filters, which keeps pretrained responses to a gray image."""
    new = nn.Conv2d(1, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    bias=conv.bias is not None)
    with torch.no_grad():
        new.weight.copy_(conv.weight.sum(dim=1, keepdim=True))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


def _weights_help(arch: str, detail: str) -> str:
    from mammo_tui.weights import how_to_get

    return (f"Pretrained ImageNet weights for {arch} are not available ({detail}). Either "
            f"{how_to_get(arch)}; or train from scratch with --no-pretrained (much weaker on small "
            "datasets; or run without --preset: the decision flow then picks the from_scratch preset).")


HEAD_PREFIXES = {"resnet": ("fc.",), "efficientnet": ("classifier.",)}  # replaced by a new 4-class head
OPTIONAL_SUFFIXES = ("num_batches_tracked",)  # BatchNorm step counters; older .pth files omit them
LISTED_KEYS = 5  # key names quoted in a message before "..."


def _head_prefixes(arch: str) -> tuple[str, ...]:
    return HEAD_PREFIXES["resnet" if arch.startswith("resnet") else "efficientnet"]


def _key_summary(keys: list[str]) -> str:
    """`conv1.weight, bn1.weight` for a few keys; for many, counts per layer and the first names."""
    if len(keys) <= LISTED_KEYS:
        return ", ".join(keys)
    depth = 1 if len({k.split(".")[0] for k in keys}) > 1 else 2  # efficientnet: all under features.
    groups: dict[str, int] = {}
    for key in keys:
        prefix = ".".join(key.split(".")[:depth])
        groups[prefix] = groups.get(prefix, 0) + 1
    listing = ", ".join(f"{prefix}.* ({count})" for prefix, count in groups.items())
    return f"{listing}; first: {', '.join(keys[:LISTED_KEYS])}, ..."


def _shape(value) -> str:
    return "x".join(str(d) for d in getattr(value, "shape", ())) or "scalar"


def _read_weights_file(path: Path, arch: str) -> dict:
    what = f"--weights {path}"
    state = read_torch_file(path, what, WeightsUnavailableError)  # folder, empty, truncated, not torch
    if isinstance(state, dict) and (_is_run_checkpoint(state) or "format_version" in state):
        # a mammo-tui checkpoint: the same checks as for eval and --resume (format, keys, config)
        return validate_checkpoint(state, path, WeightsUnavailableError, what)
    for wrapper in ("state_dict", "model"):  # {"state_dict": ...}, torchvision reference scripts' {"model": ...}
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
            break
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        held = "a Tensor" if isinstance(state, torch.Tensor) else f"a {type(state).__name__}"
        if isinstance(state, dict) and state:
            held += " with non-tensor values"
        raise WeightsUnavailableError(
            f"{what}: neither a state dict (layer names -> tensors) nor a mammo-tui checkpoint (a run's "
            f"checkpoints/best.pt); it holds {held}. Use a torchvision .pth state dict such as "
            f"{Path(get_model_weights(arch).DEFAULT.url).name}.")
    return state


def _is_run_checkpoint(state: dict) -> bool:
    """A mammo-tui checkpoint (a run's checkpoints/best.pt): {"model": {backbone.*, head.*}, "arch", ...}."""
    model = state.get("model")
    return isinstance(model, dict) and any(str(k).startswith("backbone.") for k in model)


def _check_shapes(target: dict, source: dict, path: Path, what: str) -> None:
    wrong = [f"{key} (file {_shape(value)}, {what} {_shape(target[key])})" for key, value in source.items()
             if key in target and tuple(value.shape) != tuple(target[key].shape)]
    if wrong:
        more = f" and {len(wrong) - LISTED_KEYS} more" if len(wrong) > LISTED_KEYS else ""
        raise WeightsUnavailableError(
            f"--weights {path}: {len(wrong)} tensor(s) have the wrong shape for {what}: "
            f"{'; '.join(wrong[:LISTED_KEYS])}{more}. The file is for another architecture or variant; "
            f"use weights made for {what}.")


def _load_state_dict(net: nn.Module, arch: str, state: dict, path: Path, allow_partial: bool) -> str:
    """A torchvision state dict into the torchvision model (3-channel stem, before the head swap).

    The classification head is never loaded (it is replaced by a new 4-class head), so its keys
    are dropped whatever their size. Every other tensor must be there and fit, unless
    allow_partial (then what is missing stays at random initialisation, and the note says so).
    """
    heads = _head_prefixes(arch)
    state = {k: v for k, v in state.items() if not k.startswith(heads)}
    target = {k: v for k, v in net.state_dict().items() if not k.startswith(heads)}
    unexpected = [k for k in state if k not in target]
    if unexpected:
        raise WeightsUnavailableError(
            f"--weights {path} does not match {arch}: {len(unexpected)} key(s) that {arch} does not have "
            f"({_key_summary(unexpected)}). It is a state dict of another architecture; use one of {arch}, "
            f"e.g. {Path(get_model_weights(arch).DEFAULT.url).name}.")
    _check_shapes(target, state, path, arch)
    required = [k for k in target if not k.endswith(OPTIONAL_SUFFIXES)]
    missing = [k for k in required if k not in state]
    if missing and not allow_partial:
        raise WeightsUnavailableError(
            f"--weights {path} covers only part of the {arch} backbone: {len(missing)} of {len(required)} "
            f"tensors are missing ({_key_summary(missing)}). Those layers would stay random while the "
            "run counts as pretrained. Use a complete state dict, or set allow_partial_weights = true "
            "to load it anyway.")
    net.load_state_dict(state, strict=False)
    if missing:
        return (f"--weights {path.name}: {len(required) - len(missing)} of {len(required)} backbone tensors "
                f"loaded; {len(missing)} left at random initialisation ({_key_summary(missing)}) "
                "because allow_partial_weights = true")
    return ""


def _load_run_backbone(model: "Classifier", checkpoint: dict, path: Path) -> str:
    """The backbone of a mammo-tui checkpoint into a new model of the same arch (strict); the head stays new."""
    source_arch = checkpoint.get("arch")
    if source_arch != model.arch:
        raise WeightsUnavailableError(
            f"--weights {path} is a mammo-tui checkpoint of a {source_arch or 'unknown architecture'}, "
            f"but this run builds a {model.arch}; a backbone only loads into the same architecture. "
            f"Set arch = \"{source_arch}\" (--set arch={source_arch}) or use a {model.arch} checkpoint.")
    channels = int(checkpoint.get("in_channels", 1))
    if channels != 1:
        raise WeightsUnavailableError(f"--weights {path}: a checkpoint for {channels}-channel input; "
                                      "mammo-tui reads single-channel images")
    prefix = "backbone."
    state = {k[len(prefix):]: v for k, v in checkpoint["model"].items() if k.startswith(prefix)}
    target = model.backbone.state_dict()
    _check_shapes(target, state, path, f"the {model.arch} backbone")
    missing = [k for k in target if k not in state and not k.endswith(OPTIONAL_SUFFIXES)]
    unexpected = [k for k in state if k not in target]
    if missing or unexpected:
        raise WeightsUnavailableError(
            f"--weights {path}: the checkpoint's backbone does not fit a {model.arch} backbone "
            f"({len(missing)} missing: {_key_summary(missing) or '-'}; {len(unexpected)} unexpected: "
            f"{_key_summary(unexpected) or '-'}); it may be from another mammo-tui version")
    model.backbone.load_state_dict(state, strict=False)
    epoch = checkpoint.get("epoch")
    return (f"--weights {path.name}: backbone of a mammo-tui {source_arch} checkpoint"
            + (f" (epoch {epoch})" if epoch is not None else "") + "; the head starts new")


def _load_torchvision(arch: str, pretrained: bool) -> nn.Module:
    if not pretrained:
        return get_model(arch, weights=None)
    try:
        return get_model(arch, weights="DEFAULT")
    except Exception as exc:  # URLError offline, corrupt cache, hash mismatch
        raise WeightsUnavailableError(_weights_help(arch, f"{exc.__class__.__name__}: {exc}")) from None


def build_model(arch: str, num_classes: int = 4, pretrained: bool = True, weights_file: str = "",
                allow_partial: bool = False) -> Classifier:
    """A torchvision `arch` for single-channel input with a new `num_classes` head.

    weights_file: a torchvision state dict (its head keys are ignored; every backbone tensor must be
    there unless allow_partial) or a mammo-tui checkpoint (a run's checkpoints/best.pt: its backbone,
    same arch, strictly; the head starts new). It replaces `pretrained`. The model's `weights_note`
    says what was loaded from the file ("" without one).
    """
    if arch not in ARCHS:
        raise ConfigError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    run_checkpoint = None
    note = ""
    if weights_file:
        path = Path(weights_file).expanduser()
        state = _read_weights_file(path, arch)
        net = get_model(arch, weights=None)
        if _is_run_checkpoint(state):
            run_checkpoint = state
        else:
            note = _load_state_dict(net, arch, state, path, allow_partial)
    else:
        net = _load_torchvision(arch, pretrained)
    model = _classifier(arch, net, num_classes)
    if run_checkpoint is not None:
        note = _load_run_backbone(model, run_checkpoint, path)
    model.weights_note = note
    return model


def _classifier(arch: str, net: nn.Module, num_classes: int) -> Classifier:
    if arch.startswith("resnet"):
        net.conv1 = _single_channel(net.conv1)
        head = nn.Linear(net.fc.in_features, num_classes)
        net.fc = nn.Identity()
        blocks = [nn.ModuleList([net.conv1, net.bn1]), net.layer1, net.layer2, net.layer3, net.layer4]
        return Classifier(arch, net, head, blocks)
    # efficientnet_b0: features[0] is the stem, features[1..7] MBConv stages, features[8] the 1x1 head conv
    stem = net.features[0][0]
    net.features[0][0] = _single_channel(stem)
    in_features = net.classifier[1].in_features
    head = nn.Sequential(nn.Dropout(p=0.2), nn.Linear(in_features, num_classes))
    backbone = nn.Sequential(net.features, net.avgpool, nn.Flatten(1))
    blocks = [net.features[0], *net.features[1:6], nn.ModuleList([net.features[6]]),
              nn.ModuleList([net.features[7], net.features[8]])]
    return Classifier(arch, backbone, head, blocks)


def trainable_blocks(freeze: str) -> int:
    """How many backbone stages (from the top) train under a freeze mode; -1 = all."""
    return {"head": 0, "last_block": 1, "last_two_blocks": 2, "none": -1}[freeze]


def set_trainable(model: Classifier, freeze: str) -> str:
    """Freeze everything but the head and the top stages; returns a short description."""
    n = trainable_blocks(freeze)
    for p in model.backbone.parameters():
        p.requires_grad = n == -1
    for p in model.head.parameters():
        p.requires_grad = True
    blocks = model.blocks()
    if n > 0:
        for block in blocks[-n:]:
            for p in block.parameters():
                p.requires_grad = True
    return {"head": "head", "last_block": "head+last block", "last_two_blocks": "head+last two blocks",
            "none": "all layers"}[freeze]


def _is_frozen(module: nn.Module) -> bool:
    """Has parameters and none of them trains (a parameterless module is frozen only with its parent)."""
    flags = [p.requires_grad for p in module.parameters()]
    return bool(flags) and not any(flags)


def _eval_frozen(module: nn.Module) -> None:
    if _is_frozen(module):
        module.eval()  # the whole subtree: BatchNorm, Dropout, StochasticDepth inside it too
        return
    for child in module.children():
        _eval_frozen(child)


def apply_train_mode(model: Classifier) -> None:
    """train() for the trainable parts; every frozen module runs in eval mode.

    A frozen module (all of its parameters frozen) keeps BatchNorm running statistics (part of the
    pretrained features) and has no randomness: efficientnet's StochasticDepth and Dropout inside a
    frozen block would otherwise drop paths in train mode, so frozen features would differ from call
    to call and from the cached ones. Trainable blocks stay in train mode, stochastic depth included.
    """
    model.train()
    _eval_frozen(model)


def backbone_frozen(model: Classifier) -> bool:
    return not any(p.requires_grad for p in model.backbone.parameters())


def default_num_workers(device: str) -> int:
    # Images are preloaded into memory; on CPU the model needs every core, and workers only
    # add IPC. On CUDA, workers keep augmentation off the critical path.
    if device != "cuda":
        return 0
    return max(1, min(8, (os.cpu_count() or 2) - 1))
