"""The secret behind the patient digests: a group is HMAC-SHA256(secret, PatientID), so the digests
in a run directory (splits.csv) cannot be brute-forced back to a PatientID / MRN without the
secret, and the secret is never written into a run directory.

Where the secret comes from, first that applies:
1. $MAMMO_TUI_GROUP_SECRET_FILE: a dataset-level secret, for runs that several people must split
   the same way and compare (share the file with them, not with the run directories). Its owner
   and group may read it; a world-readable one is refused.
2. <config dir>/group-secret: created once per user and machine (32 random bytes as hex, mode
   0600); a copy readable by group or others is refused. Config dir: $MAMMO_TUI_CONFIG_DIR, else
   $XDG_CONFIG_HOME/mammo-tui, else ~/.config/mammo-tui.
Same secret, same digests, same splits; another secret gives other digests and so other splits.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
import tempfile
import time
from functools import lru_cache
from pathlib import Path

from mammo_tui.errors import MammoError

SECRET_FILE_ENV = "MAMMO_TUI_GROUP_SECRET_FILE"
CONFIG_DIR_ENV = "MAMMO_TUI_CONFIG_DIR"
SECRET_NAME = "group-secret"
MIN_SECRET_BYTES = 16  # a shorter secret could itself be guessed
_SECRET_BYTES = 32


class GroupSecretError(MammoError):
    """The digest secret cannot be read, created, or is not private enough."""


def config_dir() -> Path:
    configured = os.environ.get(CONFIG_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    xdg = os.environ.get("XDG_CONFIG_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".config") / "mammo-tui"


def secret_source() -> tuple[Path, bool]:
    """(path of the secret, whether it is a shared dataset-level secret)."""
    shared = os.environ.get(SECRET_FILE_ENV)
    if shared:
        return Path(shared).expanduser(), True
    return config_dir() / SECRET_NAME, False


def group_key() -> bytes:
    """The secret's bytes; the per-user secret is created on first use."""
    path, shared = secret_source()
    return _load_key(str(path), shared)


def keyed_digest(text: str) -> str:
    """Hex HMAC-SHA256 of text under the group secret."""
    return hmac.new(group_key(), text.encode("utf-8"), hashlib.sha256).hexdigest()


def secret_fingerprint() -> str:
    """A short, non-reversible name of the secret in use (safe to record): two runs with the same
    fingerprint split the same patients the same way."""
    return "key-" + keyed_digest("mammo-tui secret fingerprint")[:8]


def clear_cache() -> None:
    """Forget the secrets read so far (tests; a secret file replaced while running)."""
    _load_key.cache_clear()


@lru_cache(maxsize=8)
def _load_key(path_text: str, shared: bool) -> bytes:
    path = Path(path_text)
    if not shared and not path.exists():
        _create_secret(path)
    return _read_secret(path, shared)


def _create_secret(path: Path) -> None:
    """Write a new secret atomically: complete before it is visible, and never two of them (a
    second process that loses the race uses the winner's)."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{SECRET_NAME}-")  # mode 0600
        try:
            with os.fdopen(fd, "w", encoding="ascii") as handle:
                handle.write(secrets.token_hex(_SECRET_BYTES) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(tmp, path)  # atomic, fails if it exists (like O_EXCL)
            except FileExistsError:
                pass
            except OSError:  # a file system without hard links: O_EXCL on the name itself
                _create_exclusive(path, Path(tmp).read_bytes())
        finally:
            Path(tmp).unlink(missing_ok=True)
    except OSError as error:
        raise GroupSecretError(
            f"cannot create the patient-digest secret {path} ({error.strerror or error}). Set "
            f"{CONFIG_DIR_ENV} to a writable folder, or {SECRET_FILE_ENV} to a secret file.") from None


def _create_exclusive(path: Path, data: bytes) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _read_secret(path: Path, shared: bool) -> bytes:
    what = f"the dataset secret {path} (from {SECRET_FILE_ENV})" if shared else f"the patient-digest secret {path}"
    for _ in range(20):  # a racing O_EXCL writer may not have written it yet
        try:
            _check_private(path, shared, what)
            data = path.read_bytes().strip()
        except FileNotFoundError:
            raise GroupSecretError(f"{what} does not exist. Point {SECRET_FILE_ENV} at an existing file, "
                                   "e.g. one made with: python -c 'import secrets; print(secrets.token_hex(32))' "
                                   "> FILE; chmod 600 FILE") from None
        except OSError as error:
            raise GroupSecretError(f"cannot read {what}: {error.strerror or error}.") from None
        if data or shared:
            break
        time.sleep(0.05)
    if len(data) < MIN_SECRET_BYTES:
        raise GroupSecretError(f"{what} is too short ({len(data)} bytes; at least {MIN_SECRET_BYTES}): a short "
                               "secret can be guessed. Use 32 random bytes, e.g. secrets.token_hex(32).")
    return data


def _check_private(path: Path, shared: bool, what: str) -> None:
    """Anyone who can read the secret can reverse the digests: refuse one that is too open."""
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):
        raise GroupSecretError(f"{what} is not a regular file.")
    if os.name != "posix":  # no POSIX modes to check
        return
    mode = stat.S_IMODE(info.st_mode)
    too_open = mode & (0o007 if shared else 0o077)
    if too_open:
        who = "everyone" if mode & 0o007 else "its group"
        fix = "chmod o-rwx" if shared else "chmod 600"
        raise GroupSecretError(f"{what} is readable by {who} (mode {mode:04o}): whoever reads it can reverse "
                               f"the patient digests. Run: {fix} {path}")
    if not shared and info.st_uid != os.geteuid():
        raise GroupSecretError(f"{what} belongs to another user (uid {info.st_uid}). Remove it, or set "
                               f"{CONFIG_DIR_ENV} to your own folder.")
