"""Helpers for the TUI tests (tests/test_tui_*.py and others): tiny configs, waiting on a Pilot, screen text."""

from __future__ import annotations

import asyncio
import io
import time
from typing import Any, Callable

from rich.console import Console

from mammo_tui.config import TrainConfig

# CPU-sized: resnet18 from scratch at 32 px, a few batches per epoch.
TINY = dict(arch="resnet18", pretrained=False, freeze="none", warmup_epochs=0, img_size=32,
            batch_size=16, epochs=1, max_batches_per_epoch=2, num_workers=0, device="cpu",
            early_stop_patience=0, augment=False)
# What DESIGN.md says collapses: full fine-tuning, no balancing, a large learning rate.
COLLAPSE = dict(TINY, sampler="none", class_weights="none", lr=0.1)


def tiny_config(**overrides: Any) -> TrainConfig:
    return TrainConfig(**{**TINY, **overrides})


def collapse_config(**overrides: Any) -> TrainConfig:
    return TrainConfig(**{**COLLAPSE, **overrides})


async def wait_until(pilot, predicate: Callable[[], bool], timeout: float = 120.0,
                     what: str = "condition") -> None:
    """Let the app run until predicate() holds; fail with `what` after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; the screen:\n"
                                 + screen_text(pilot.app))
        await pilot.pause(0.05)
        await asyncio.sleep(0)


def screen_text(app) -> str:
    """The current screen as plain text (what a user would read)."""
    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), force_terminal=True,
                      color_system="truecolor", record=True, legacy_windows=False, safe_box=False)
    console.print(app.screen._compositor.render_update(full=True,
                                                       screen_stack=app._background_screens))
    return console.export_text(styles=False)


def async_test(test: Callable) -> Callable:
    """Run an async test function with asyncio.run (the project has no pytest asyncio plugin)."""
    import functools

    @functools.wraps(test)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return asyncio.run(test(*args, **kwargs))

    return wrapper


async def to_config_screen(pilot, app):
    """Walk the wizard on the demo dataset (ctrl+d) to the config screen and return it."""
    from mammo_tui.tui.configure import ConfigScreen
    from mammo_tui.tui.decision import DecisionScreen
    from mammo_tui.tui.fingerprint_view import FingerprintScreen
    from mammo_tui.tui.wizard import DatasetScreen

    for screen_type, key in ((DatasetScreen, "ctrl+d"), (FingerprintScreen, "enter"),
                             (DecisionScreen, "enter")):
        await wait_until(pilot, lambda: isinstance(app.screen, screen_type), what=screen_type.__name__)
        await pilot.press(key)
    await wait_until(pilot, lambda: isinstance(app.screen, ConfigScreen), what="ConfigScreen")
    await pilot.pause()
    return app.screen
