"""Patient digests are keyed (HMAC with a secret outside the run directory): the digests in
splits.csv cannot be brute-forced back to MRNs from the run directory alone, the secret is made
once per user (0600, never two), and a shared dataset secret gives everyone the same splits."""

from __future__ import annotations

import base64
import csv
import hashlib
import hmac
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from corpus import FAST, assert_clean, mammo, png
from mammo_tui import privacy
from mammo_tui.data.records import patient_digest
from mammo_tui.errors import MammoError

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")

MRN_BASE = 1_000_000  # seven-digit MRNs, drawn from a 10^5 slice so the brute force stays fast
MRN_SPAN = 100_000


@pytest.fixture
def own_config(tmp_path, monkeypatch):
    """A fresh config dir (so a fresh per-user secret) and no shared secret."""
    folder = tmp_path / "config"
    monkeypatch.setenv(privacy.CONFIG_DIR_ENV, str(folder))
    monkeypatch.delenv(privacy.SECRET_FILE_ENV, raising=False)
    privacy.clear_cache()
    yield folder
    privacy.clear_cache()


def _mrn_dataset(root: Path, n_patients: int = 47) -> tuple[Path, list[str]]:
    """A generic CSV whose patient_id column holds seven-digit MRNs (two images each)."""
    root.mkdir(parents=True)
    mrns = [str(MRN_BASE + int(x)) for x in np.random.default_rng(7).choice(MRN_SPAN, n_patients, replace=False)]
    rows = ["image_path,label,patient_id"]
    for i, mrn in enumerate(mrns):
        for side in ("L", "R"):
            name = f"img{i}_{side}.png"
            png(root / name, 40 + 50 * (i % 4))
            rows.append(f"{name},{'ABCD'[i % 4]},{mrn}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "labels.csv", mrns


def _schemes(key: bytes):
    """Every way to digest an id with a key an attacker could try (the old salted sha1 included)."""
    yield lambda mrn: hashlib.sha1(key + mrn.encode()).hexdigest()
    yield lambda mrn: hmac.new(key, mrn.encode(), hashlib.sha256).hexdigest()
    yield lambda mrn: hmac.new(key, b"mammo-tui-group:" + mrn.encode(), hashlib.sha256).hexdigest()


def _brute_force(digests: set[str], digest) -> set[str]:
    """The MRNs of the slice whose digest (first 12 hex, as in the groups) is in digests."""
    found = set()
    for number in range(MRN_BASE, MRN_BASE + MRN_SPAN):
        if "pt-" + digest(str(number))[:12] in digests:
            found.add(str(number))
    return found


def _run_dir_keys(run_dir: Path) -> set[bytes]:
    """Every string in the run directory's text files that could serve as a key or salt."""
    keys = {b"", b"mammo-tui-group:", b"mammo-tui-group"}
    for path in run_dir.rglob("*"):
        if path.is_file() and path.suffix in {".csv", ".json", ".jsonl", ".toml", ".md", ".txt"}:
            keys.update(token.encode() for token in re.findall(r"[\w:.+/=-]{6,}", path.read_text(errors="ignore")))
    return keys


@pytest.mark.slow
def test_splits_csv_digests_cannot_be_brute_forced_from_the_run_dir(tmp_path):
    config = tmp_path / "config"
    csv_path, mrns = _mrn_dataset(tmp_path / "data")
    proc = mammo("train", "--no-ui", "--csv", csv_path, "--outdir", tmp_path / "runs", "--run-name", "r", *FAST,
                 cwd=tmp_path, env={privacy.CONFIG_DIR_ENV: str(config), privacy.SECRET_FILE_ENV: None})
    assert_clean(proc, (0, 3))
    run_dir = tmp_path / "runs" / "r"
    with open(run_dir / "splits.csv", newline="") as handle:
        digests = {row["group"] for row in csv.DictReader(handle)}
    assert len(digests) == len(mrns) and not digests & set(mrns)

    # the attacker's side: the code (old salt, the HMAC scheme) and every string in the run dir
    for key in _run_dir_keys(run_dir):
        for digest in _schemes(key):
            assert not {"pt-" + digest(mrn)[:12] for mrn in mrns} & digests, f"key {key!r} reverses a digest"
    assert _brute_force(digests, lambda m: hashlib.sha1(b"mammo-tui-group:" + m.encode()).hexdigest()) == set()

    # the secret is outside the run dir, private, and in no run-dir file in any usual encoding
    secret_file = config / privacy.SECRET_NAME
    secret = secret_file.read_bytes().strip()
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    encodings = {secret, base64.b64encode(secret), base64.b64encode(bytes.fromhex(secret.decode())),
                 bytes.fromhex(secret.decode())}
    for path in run_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not any(form in data for form in encodings), f"the secret is in {path}"

    # the control: with the secret the same brute force finds every MRN (10^5 tries, about a second)
    keyed = lambda m: hmac.new(secret, b"mammo-tui-group:" + m.encode(), hashlib.sha256).hexdigest()  # noqa: E731
    assert _brute_force(digests, keyed) == set(mrns)


def test_secret_is_made_once_private_and_reused(own_config):
    first = patient_digest("1234567")
    secret_file = own_config / privacy.SECRET_NAME
    assert secret_file.is_file()
    if os.name == "posix":
        assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
        assert stat.S_IMODE(own_config.stat().st_mode) == 0o700
    data = secret_file.read_bytes()
    privacy.clear_cache()
    assert patient_digest("1234567") == first  # read back from disk: the same splits next time
    assert secret_file.read_bytes() == data
    assert patient_digest("1234568") != first and first.startswith("pt-") and len(first) == 15


def test_another_user_or_machine_gets_other_digests(own_config, tmp_path, monkeypatch):
    mine = patient_digest("1234567")
    monkeypatch.setenv(privacy.CONFIG_DIR_ENV, str(tmp_path / "elsewhere"))
    assert patient_digest("1234567") != mine


def test_config_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv(privacy.CONFIG_DIR_ENV, str(tmp_path / "a"))
    assert privacy.config_dir() == tmp_path / "a"
    monkeypatch.delenv(privacy.CONFIG_DIR_ENV)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert privacy.config_dir() == tmp_path / "xdg" / "mammo-tui"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert privacy.config_dir() == tmp_path / "home" / ".config" / "mammo-tui"


def test_processes_racing_to_create_the_secret_make_one(tmp_path):
    code = "from mammo_tui.data.records import patient_digest; print(patient_digest('1234567'))"
    env = {**os.environ, privacy.CONFIG_DIR_ENV: str(tmp_path / "config")}
    env.pop(privacy.SECRET_FILE_ENV, None)
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(6)]
    outputs = {proc.communicate(timeout=120)[0].strip() for proc in procs}
    assert len(outputs) == 1 and outputs.pop().startswith("pt-")
    assert [p.name for p in (tmp_path / "config").iterdir()] == [privacy.SECRET_NAME]  # no temp file left


@posix_only
@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_a_readable_per_user_secret_is_refused(own_config, mode):
    patient_digest("x")
    secret_file = own_config / privacy.SECRET_NAME
    secret_file.chmod(mode)
    privacy.clear_cache()
    with pytest.raises(MammoError, match=rf"readable by .*chmod 600 {re.escape(str(secret_file))}"):
        patient_digest("x")


def test_a_shared_dataset_secret_gives_everyone_the_same_digests(own_config, tmp_path, monkeypatch):
    shared = tmp_path / "dataset.secret"
    shared.write_text("0123456789abcdef0123456789abcdef\n")
    shared.chmod(0o640)  # the team's group may read it
    monkeypatch.setenv(privacy.SECRET_FILE_ENV, str(shared))
    mine = patient_digest("1234567")
    monkeypatch.setenv(privacy.CONFIG_DIR_ENV, str(tmp_path / "colleague"))
    assert patient_digest("1234567") == mine
    assert not (tmp_path / "colleague").exists(), "no per-user secret is made when a shared one is set"
    expected = hmac.new(b"0123456789abcdef0123456789abcdef", b"mammo-tui-group:1234567", hashlib.sha256)
    assert mine == "pt-" + expected.hexdigest()[:12]


@posix_only
def test_a_bad_shared_secret_is_refused_with_what_to_do(own_config, tmp_path, monkeypatch):
    shared = tmp_path / "dataset.secret"
    monkeypatch.setenv(privacy.SECRET_FILE_ENV, str(shared))
    with pytest.raises(MammoError, match=f"{privacy.SECRET_FILE_ENV}.*does not exist.*token_hex"):
        patient_digest("x")
    shared.write_text("short\n")
    shared.chmod(0o600)
    privacy.clear_cache()
    with pytest.raises(MammoError, match="too short"):
        patient_digest("x")
    shared.write_text("0123456789abcdef0123456789abcdef\n")
    shared.chmod(0o644)
    privacy.clear_cache()
    with pytest.raises(MammoError, match="readable by everyone.*chmod o-rwx"):
        patient_digest("x")


def test_fingerprint_names_the_secret_without_revealing_it(own_config, tmp_path, monkeypatch):
    mine = privacy.secret_fingerprint()
    assert mine.startswith("key-") and privacy.group_key().decode() not in mine
    assert privacy.secret_fingerprint() == mine
    monkeypatch.setenv(privacy.CONFIG_DIR_ENV, str(tmp_path / "other"))
    assert privacy.secret_fingerprint() != mine


@posix_only
def test_cli_names_a_readable_secret(tmp_path):
    config = tmp_path / "config"
    config.mkdir(mode=0o700)
    (config / privacy.SECRET_NAME).write_text("0123456789abcdef0123456789abcdef\n")
    (config / privacy.SECRET_NAME).chmod(0o644)
    csv_path, _ = _mrn_dataset(tmp_path / "data", n_patients=8)
    proc = mammo("plan", csv_path, cwd=tmp_path,
                 env={privacy.CONFIG_DIR_ENV: str(config), privacy.SECRET_FILE_ENV: None})
    assert_clean(proc, 2, "group-secret", "chmod 600")
