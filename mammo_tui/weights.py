"""Are pretrained weights actually available? Checked before training, without importing torch.

Freezing only defends against collapse when the frozen layers hold pretrained features; a frozen
*random* backbone is no defense at all. So the planner (and the wizard, `plan`, the console) must
know, before a run starts, where the weights would come from:
  file     --weights FILE (or `weights = ...`) exists
  cache    torchvision's cache ($TORCH_HOME/hub/checkpoints, what torch.hub.get_dir() uses)
  network  not cached, but the download server answers (torchvision downloads it at start)
  none     none of these: training must start from scratch
  off      pretrained = false (--no-pretrained): not wanted

The file names are torchvision's DEFAULT weights for each architecture (a test checks them
against torchvision). The network probe is one HEAD request with a short timeout, done at most
once per URL per process; MAMMO_TUI_OFFLINE=1 skips it (air-gapped boxes, tests).
"""

from __future__ import annotations

import functools
import os
from dataclasses import asdict, dataclass
from pathlib import Path

WEIGHTS_URLS = {
    "resnet18": "https://download.pytorch.org/models/resnet18-f37072fd.pth",
    "resnet34": "https://download.pytorch.org/models/resnet34-b627a593.pth",
    "resnet50": "https://download.pytorch.org/models/resnet50-11ad3fa6.pth",
    "efficientnet_b0": "https://download.pytorch.org/models/efficientnet_b0_rwightman-7f5810bc.pth",
}
# torch.save writes a zip archive (PK); files from torch < 1.6 start with a pickle protocol byte
TORCH_MAGIC = (b"PK\x03\x04", b"\x80")
OFFLINE_ENV = "MAMMO_TUI_OFFLINE"
PROBE_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class WeightsStatus:
    arch: str
    available: bool
    source: str  # file | cache | network | none | off
    detail: str  # one sentence for the plan, the wizard and the console

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def torch_hub_dir() -> Path:
    """torch.hub.get_dir() without importing torch: $TORCH_HOME/hub, TORCH_HOME defaulting to
    $XDG_CACHE_HOME/torch or ~/.cache/torch."""
    home = os.environ.get("TORCH_HOME")
    if not home:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
        home = os.path.join(xdg, "torch")
    return Path(os.path.expanduser(home)) / "hub"


def cached_weights_path(arch: str) -> Path:
    return torch_hub_dir() / "checkpoints" / WEIGHTS_URLS[arch].rsplit("/", 1)[-1]


@functools.lru_cache(maxsize=None)
def _reachable(url: str) -> tuple[bool, str]:
    import urllib.request

    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=PROBE_TIMEOUT_S):
            return True, ""
    except Exception as exc:  # URLError, timeouts, proxies: any failure means "cannot download"
        return False, f"{exc.__class__.__name__}: {getattr(exc, 'reason', exc)}"


def how_to_get(arch: str) -> str:
    """What a user on an offline box does to get pretrained weights."""
    url = WEIGHTS_URLS[arch]
    return (f"download {url} on a machine with internet and copy it to {cached_weights_path(arch)} "
            f"(torchvision's cache), or pass --weights /path/to/{url.rsplit('/', 1)[-1]}")


def weights_file_problem(path: Path) -> str:
    """What makes `path` unusable as a weights file, seen without torch ("" = none found): the
    contents are checked when the model is built (engine/models.py)."""
    if path.is_dir():
        return "is a folder, not a file; pass the .pth/.pt file in it"
    if not path.exists():
        return "no such file"
    if not path.is_file():  # a device (/dev/null), a FIFO, a socket: nothing torch.load can use
        return "not a regular file; pass the .pth/.pt file itself"
    try:
        with path.open("rb") as handle:
            head = handle.read(4)
    except OSError as exc:
        return f"cannot read it ({exc.strerror or exc})"
    if not head:
        return "the file is empty (0 bytes); copy it again"
    if not head.startswith(TORCH_MAGIC):
        return f"not a PyTorch file (it starts with {head!r}; torch.save writes a zip archive)"
    return ""


def weights_status(arch: str, weights_file: str = "", pretrained: bool = True,
                   check_network: bool = True) -> WeightsStatus:
    """Where this run's pretrained weights would come from, or why there are none."""
    if weights_file:
        path = Path(weights_file).expanduser()
        problem = weights_file_problem(path)
        if not problem:
            return WeightsStatus(arch, True, "file", f"pretrained weights for {arch} from {path}")
        return WeightsStatus(arch, False, "none", f"--weights {weights_file}: {problem}")
    if not pretrained:
        return WeightsStatus(arch, False, "off", f"pretrained = false: {arch} starts from random weights")
    if arch not in WEIGHTS_URLS:
        return WeightsStatus(arch, False, "none", f"no pretrained weights are known for {arch!r}")
    cached = cached_weights_path(arch)
    if cached.is_file():
        return WeightsStatus(arch, True, "cache", f"ImageNet weights for {arch} found in {cached}")
    if check_network and os.environ.get(OFFLINE_ENV, "") not in ("1", "true", "yes"):
        ok, why = _reachable(WEIGHTS_URLS[arch])
        if ok:
            return WeightsStatus(arch, True, "network",
                                 f"ImageNet weights for {arch} are not cached; torchvision downloads them "
                                 f"at start ({WEIGHTS_URLS[arch]})")
        offline = f"not in {cached}, and the download server is unreachable ({why})"
    else:
        offline = f"not in {cached}, and the network was not checked ({OFFLINE_ENV} is set)" \
            if check_network else f"not in {cached}"
    return WeightsStatus(arch, False, "none", f"no ImageNet weights for {arch}: {offline}. To use them: "
                         + how_to_get(arch))
