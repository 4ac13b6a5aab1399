"""User-facing errors: the CLI prints their message (no traceback) and exits with `exit_code`."""

from __future__ import annotations

from mammo_tui.exitcodes import EXIT_BAD_INPUT


class MammoError(Exception):
    """A problem caused by the user's input or environment, explained in words."""

    exit_code = EXIT_BAD_INPUT


class DatasetError(MammoError):
    """The dataset cannot be read at all (missing CSV, missing column, nothing usable)."""


class ConfigError(MammoError):
    """A preset, flag or --set override is invalid."""


class WeightsUnavailableError(MammoError):
    """Pretrained weights were asked for but cannot be loaded."""


class RunDirError(MammoError):
    """The run directory cannot be written or resumed."""


class TrackingError(ConfigError):
    """A tracking spec that cannot work: unknown kind, no target, library not installed (exit 2)."""
