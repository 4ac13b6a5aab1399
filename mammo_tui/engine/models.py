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
    weights = get_model_weights(arch).DEFAULT
    cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    return (
        f"Pretrained ImageNet weights for {arch} are not available ({detail}). Either: "
        f"(1) on a machine with internet run `python -c \"import torchvision; "
        f"torchvision.models.get_model('{arch}', weights='DEFAULT')\"` and copy {cache.name} to "
        f"{cache} on this machine (torchvision's cache; TORCH_HOME moves it); or "
        f"(2) download {weights.url} anywhere and pass --weights /path/to/{cache.name}; or "
        f"(3) train from scratch with --no-pretrained (much weaker on small datasets: expect to "
        f"need more epochs and to unfreeze everything, freeze = \"none\")."
    )


def cached_weights_path(arch: str) -> Path:
    weights = get_model_weights(arch).DEFAULT
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name


def _load_torchvision(arch: str, pretrained: bool, weights_file: str) -> nn.Module:
    if weights_file:
        path = Path(weights_file).expanduser()
        if not path.is_file():
            raise WeightsUnavailableError(f"--weights {weights_file}: no such file")
        model = get_model(arch, weights=None)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle payloads, truncated files, not-a-checkpoint
            raise WeightsUnavailableError(
                f"--weights {path}: cannot be loaded as a plain state dict ({exc.__class__.__name__}: "
                f"{str(exc)[:200]}). Use a torchvision .pth state dict such as "
                f"{Path(get_model_weights(arch).DEFAULT.url).name}."
            ) from None
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        missing, unexpected = model.load_state_dict(state, strict=False)
        if len(missing) > len(state) or unexpected:
            raise WeightsUnavailableError(
                f"--weights {path} does not match {arch}: {len(missing)} missing and "
                f"{len(unexpected)} unexpected keys (e.g. {(list(missing) + list(unexpected))[:3]})"
            )
        return model
    if not pretrained:
        return get_model(arch, weights=None)
    try:
        return get_model(arch, weights="DEFAULT")
    except Exception as exc:  # URLError offline, corrupt cache, hash mismatch
        raise WeightsUnavailableError(_weights_help(arch, f"{exc.__class__.__name__}: {exc}")) from None


def build_model(arch: str, num_classes: int = 4, pretrained: bool = True, weights_file: str = "") -> Classifier:
    if arch not in ARCHS:
        raise ConfigError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    net = _load_torchvision(arch, pretrained, weights_file)
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


def apply_train_mode(model: Classifier) -> None:
    """train() for the model, but frozen BatchNorm layers keep their running statistics."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            if not any(p.requires_grad for p in module.parameters(recurse=False)):
                module.eval()


def backbone_frozen(model: Classifier) -> bool:
    return not any(p.requires_grad for p in model.backbone.parameters())


def default_num_workers(device: str) -> int:
    # Images are preloaded into memory; on CPU the model needs every core, and workers only
    # add IPC. On CUDA, workers keep augmentation off the critical path.
    if device != "cuda":
        return 0
    return max(1, min(8, (os.cpu_count() or 2) - 1))
