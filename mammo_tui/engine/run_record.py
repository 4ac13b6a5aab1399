"""The run's config record: which config trained which epochs (segments), and config.toml.

Written by the run set-up (launch) and the trainer (a change on resume, a restart after a fix);
read back by --resume. Plain Python: no torch.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mammo_tui import config as config_mod
from mammo_tui.config import TrainConfig
from mammo_tui.rundir import CONFIG_FILE, atomic_write_text

def launch_segment(cfg: TrainConfig | dict[str, Any], origin: str) -> dict[str, Any]:
    """The first entry of a run's config history: the launch config from epoch 1."""
    values = cfg.to_dict() if isinstance(cfg, TrainConfig) else dict(cfg)
    return {"first_epoch": 1, "config": values, "reason": origin or "launch", "restart": True}


def config_history(segments: list[dict[str, Any]], last_epoch: int) -> list[dict[str, Any]]:
    """Which config trained which epochs: one entry per segment (launch, each change or restart),
    with its epochs, what changed against the segment before, why, and the whole config."""
    out = []
    for number, segment in enumerate(segments):
        end = segments[number + 1]["first_epoch"] - 1 if number + 1 < len(segments) else last_epoch
        previous = segments[number - 1]["config"] if number else segment["config"]
        out.append({"epochs": [segment["first_epoch"], end], "reason": segment["reason"],
                    "restart": bool(segment.get("restart")),
                    "changes": {k: [previous.get(k), v] for k, v in segment["config"].items() if previous.get(k) != v},
                    "config": segment["config"]})
    return out


def write_config_toml(run_dir: Path, cfg: TrainConfig, segments: list[dict[str, Any]],
                      reasons: list[str] = ()) -> None:
    """config.toml: the config training uses now, headed by comments that say where it came from
    (the plan's reasons) and which config trained which epochs (comments: `--preset config.toml`
    still reads it)."""
    comments = ["mammo-tui run config: the values this run trains with now."]
    for number, entry in enumerate(config_history(segments, 0)):
        changes = ", ".join(f"{k} = {b!r}" for k, (_, b) in entry["changes"].items())
        what = f"{changes or 'no change'} ({entry['reason']})" if number else entry["reason"]
        comments.append(f"From epoch {entry['epochs'][0]}: {what}")
    if reasons:
        comments += ["", "Why this preset (the decision flow):"] + [f"- {r}" for r in reasons]
    atomic_write_text(run_dir / CONFIG_FILE, config_mod.to_toml(cfg, comments=comments))


def set_toml_value(path: Path, key: str, value: Any) -> None:
    """One `key = value` line of config.toml replaced (or added), its comments kept."""
    line = config_mod.to_toml({key: value}).strip()
    text = path.read_text(encoding="utf-8")
    text, found = re.subn(rf"^{re.escape(key)} = .*$", lambda _: line, text, count=1, flags=re.M)
    atomic_write_text(path, text if found else text.rstrip("\n") + f"\n{line}\n")
