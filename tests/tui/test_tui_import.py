"""The app starts fast: importing it and showing the wizard's first screen never loads torch."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

START_UP_LIMIT_S = 1.5


def run_python(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_wizard_first_screen_does_not_import_torch():
    out = run_python("""
        import asyncio, sys, time
        t0 = time.perf_counter()
        from mammo_tui.tui.app import MammoApp
        imported = time.perf_counter() - t0

        async def main():
            app = MammoApp("wizard")
            async with app.run_test(size=(80, 24)) as pilot:
                await pilot.pause()
                return type(app.screen).__name__

        screen = asyncio.run(main())
        heavy = [m for m in ("torch", "torchvision", "pydicom", "cv2") if m in sys.modules]
        print(screen, imported, ",".join(heavy) or "-")
    """)
    screen, imported, heavy = out.split()
    assert screen == "DatasetScreen"
    assert heavy == "-", f"imported at start-up: {heavy}"
    assert float(imported) < START_UP_LIMIT_S


def test_unknown_mode_is_refused():
    from mammo_tui.tui.app import MammoApp

    with pytest.raises(ValueError, match="wizard, watch, runs"):
        MammoApp("train")
