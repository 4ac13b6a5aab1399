"""The sweep leaderboard screen (tui/sweep.py): `watch SWEEP_DIR`, the runs browser's sweep row, a
live `mammo-tui sweep` with its quit question and exit summary, and one snapshot.

Every sweep here is real: tiny runs (resnet18 from scratch, 32 px, 1 epoch of 2 batches) trained
by drivers.sweep.run_sweep on the session's demo dataset.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from rich.text import Text
from textual.widgets import DataTable

from corpus import TINY_SWEEP_SET as TINY  # every run: a few seconds on a CPU
from mammo_tui.stats import format_mean_std
from mammo_tui.drivers.leaderboard import leaderboard
from mammo_tui.drivers.sweep import SweepJob, run_sweep
from mammo_tui.metrics import selection_score
from mammo_tui.rundir import SUMMARY_FILE, SWEEP_FILE, atomic_write_text, read_summary
from mammo_tui.tui.app import MammoApp
from mammo_tui.tui.dashboard import DashboardScreen
from mammo_tui.tui.dialogs import ConfirmScreen, HelpScreen
from mammo_tui.tui.render import STATUS_STYLE
from mammo_tui.tui.runs import RunsScreen
from mammo_tui.tui.sweep import SweepScreen
from tui_helpers import async_test, screen_text, wait_until
from mammo_tui.tui.watchcheck import watch_problem

SPEC = '[sweep]\nbase = "demo"\nseeds = [0, 1]\n' + TINY + """
[[variants]]
name = "ce"
set = { sampler = "none", class_weights = "none", loss = "ce" }
[[variants]]
name = "focal"
set = { sampler = "none", loss = "focal" }
"""


@pytest.fixture(scope="module")
def swept(tiny_demo, tmp_path_factory) -> Path:
    """A finished sweep: 2 configurations x 2 seeds, in runs/cmp (shared: ~15 s)."""
    root = tmp_path_factory.mktemp("tui-sweep")
    (root / "spec.toml").write_text(SPEC, encoding="utf-8")
    result = run_sweep(SweepJob(spec=str(root / "spec.toml"), dataset=tiny_demo, outdir=str(root / "runs"),
                                run_name="cmp"))
    assert result.best is not None and len(result.entries) == 2
    return result.sweep_dir


def table_rows(screen: SweepScreen) -> list[list]:
    table = screen.query_one(DataTable)
    return [table.get_row_at(i) for i in range(table.row_count)]


def expected_rows(sweep_dir: Path) -> list[list]:
    """The leaderboard's values as the table must show them (no screen code involved)."""
    return [[str(e.rank) if e.rank is not None else "–", e.config_id, e.status, f"{e.seeds_done}/{e.seeds_planned}",
             format_mean_std(e.kappa_quadratic, "–"), format_mean_std(e.balanced_accuracy_adjusted, "–"),
             format_mean_std(e.lowest_recall, "–")] for e in leaderboard(sweep_dir)]


def plain(row: list) -> list:
    return [cell.plain if isinstance(cell, Text) else cell for cell in row]


async def open_watch(pilot, app) -> SweepScreen:
    await wait_until(pilot, lambda: isinstance(app.screen, SweepScreen), what="the sweep screen")
    screen = app.screen
    await wait_until(pilot, lambda: screen.query_one(DataTable).row_count > 0, what="the leaderboard rows")
    return screen


# -- watch ---------------------------------------------------------------------------------------------


@pytest.mark.slow
@async_test
async def test_watch_shows_the_leaderboard_of_the_folder(swept):
    assert watch_problem(swept) is None  # `mammo-tui watch SWEEP_DIR` is accepted
    assert "cmp" in watch_problem(swept.parent)  # the runs folder: names the sweep to watch
    app = MammoApp("watch", run_dir=str(swept))
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_watch(pilot, app)
        rows = table_rows(screen)
        assert [plain(r) for r in rows] == expected_rows(swept)
        assert [r[1] for r in rows] == ["ce", "focal"] or [r[1] for r in rows] == ["focal", "ce"]
        for row in rows:  # the runs browser's colours
            assert row[2].style == STATUS_STYLE[row[2].plain]
        text = screen_text(app)
        assert "sweep finished · 4/4 runs finished · best " in text
        assert "watch (read-only) · cmp · finished · 4/4 runs" in text
        # the log: what finished before this watch, then the sweep's end
        assert text.count("(earlier)") == 4 and "sweep finished: best" in text
        assert not screen.check_action("back", ()) and not screen.engine_running
        await pilot.press("question_mark")
        await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen), what="the help")
        help_text = screen_text(app)
        assert "Keys: sweep leaderboard" in help_text and "Open run" in help_text and "read-only" in help_text


@async_test
async def test_enter_opens_the_configurations_best_run_and_escape_returns(swept):
    app = MammoApp("watch", run_dir=str(swept))
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_watch(pilot, app)
        await pilot.press("down")  # the second-ranked configuration
        entry = leaderboard(swept)[1]
        scores = {run: selection_score(read_summary(swept / run)["best_metrics"]) for run in entry.runs}
        best = max(entry.runs, key=scores.__getitem__)
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, DashboardScreen), what="the dashboard")
        assert Path(app.screen.run_dir) == swept / best and app.screen.read_only
        await wait_until(pilot, lambda: app.screen.state.finished is not None, what="the replay")
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is screen, what="back on the leaderboard")
        assert screen.query_one(DataTable).cursor_row == 1


@pytest.mark.slow
@async_test
async def test_watch_of_a_live_sweep_follows_a_member_finishing(swept, tmp_path):
    """A copy of the sweep, rewound to its last run training: when that run's summary.json
    appears, the table, the progress line and the log follow within a refresh."""
    sweep_dir = tmp_path / "cmp"
    shutil.copytree(swept, sweep_dir)
    manifest = json.loads((sweep_dir / SWEEP_FILE).read_text())
    manifest["status"] = "running"
    manifest.pop("outcome", None)
    (sweep_dir / SWEEP_FILE).write_text(json.dumps(manifest))
    last = manifest["members"][-1]
    summary = (sweep_dir / last["run"] / SUMMARY_FILE).read_text()
    (sweep_dir / last["run"] / SUMMARY_FILE).unlink()  # its events.jsonl stays: training

    app = MammoApp("watch", run_dir=str(sweep_dir))
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_watch(pilot, app)
        assert [plain(r) for r in table_rows(screen)] == expected_rows(sweep_dir)
        row = next(plain(r) for r in table_rows(screen) if r[1] == last["config_id"])
        assert row[3] == "1/2"
        text = screen_text(app)
        assert f"▶ run 4/4 · {last['config_id']} · seed {last['seed']} · epoch 0/1" in text
        assert f"run 4/4 started: {last['config_id']}, seed {last['seed']}" in text

        atomic_write_text(sweep_dir / last["run"] / SUMMARY_FILE, summary)  # the run finishes
        await wait_until(pilot, lambda: [plain(r) for r in table_rows(screen)] == expected_rows(sweep_dir)
                         and "2/2" == next(plain(r)[3] for r in table_rows(screen) if r[1] == last["config_id"]),
                         timeout=10, what="the leaderboard to follow the new summary.json")
        status = json.loads(summary)["status"]
        await wait_until(pilot, lambda: f"run 4/4 {last['config_id']}, seed {last['seed']}: {status}"
                         in screen_text(app), timeout=10, what="the log line")
        assert "▶" not in screen_text(app)


@pytest.mark.slow
@async_test
async def test_runs_browser_lists_the_sweep_with_its_runs_and_opens_its_leaderboard(swept):
    app = MammoApp("runs", runs_root=str(swept.parent))
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, RunsScreen), what="the runs browser")
        text = screen_text(app)
        assert "cmp  4-run sweep" in text and "4/4 runs" in text
        members = json.loads((swept / SWEEP_FILE).read_text())["members"]
        for member in members:
            assert f"└ {member['run']}" in text
        assert text.index("4-run sweep") < min(text.index(m["run"]) for m in members)
        await pilot.press("enter")  # the cursor starts on the sweep's row
        screen = await open_watch(pilot, app)
        assert [plain(r) for r in table_rows(screen)] == expected_rows(swept)
        await pilot.press("escape")
        await wait_until(pilot, lambda: isinstance(app.screen, RunsScreen), what="back in the browser")


# -- a live sweep ----------------------------------------------------------------------------------------

LIVE_SPEC = '[sweep]\nbase = "demo"\nseeds = [0]\n' + TINY + """
[[variants]]
name = "a"
[[variants]]
name = "b"
set = { epochs = 20 }
"""


def live_job(tmp_path: Path, dataset) -> SweepJob:
    (tmp_path / "spec.toml").write_text(LIVE_SPEC, encoding="utf-8")
    return SweepJob(spec=str(tmp_path / "spec.toml"), dataset=dataset, outdir=str(tmp_path / "runs"),
                    run_name="live")


async def until_b_trains(pilot, app) -> SweepScreen:
    await wait_until(pilot, lambda: isinstance(app.screen, SweepScreen), what="the sweep screen")
    screen = app.screen
    await wait_until(pilot, lambda: "▶ run 2/2 · b · seed 0 · epoch" in screen_text(app), timeout=180,
                     what="run b training, on the progress line")
    return screen


@pytest.mark.slow
@pytest.mark.parametrize("how", ["q", "hangup"])
@async_test
async def test_live_sweep_stops_on_quit_or_hangup_saving_the_run_and_the_sweep(tiny_demo, tmp_path, how):
    """q asks first, then stops; SIGHUP / SIGTERM (the app's handler) stop at once. Either way the
    run training is saved as interrupted, the sweep too, and the exit summary says how to go on."""
    app = MammoApp(sweep=live_job(tmp_path, tiny_demo))
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await until_b_trains(pilot, app)
        assert screen in app.dashboards() and screen.engine_running and not screen.read_only
        assert [plain(r)[1:4] for r in table_rows(screen)][0][0] == "a"
        assert "run 1/2 a, seed 0:" in screen_text(app)
        if how == "q":
            await pilot.press("q")
            await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the quit question")
            assert f"Continue it with: mammo-tui sweep --resume {tmp_path / 'runs' / 'live'}" in app.screen.question
            assert screen.engine_running  # asking stops nothing
            await pilot.press("y")
        else:
            app._on_hangup()
        await wait_until(pilot, lambda: not screen.engine_running, timeout=120, what="the sweep thread to stop")
    assert app.exit_code == 130
    sweep_dir = tmp_path / "runs" / "live"
    assert json.loads((sweep_dir / SWEEP_FILE).read_text())["status"] == "interrupted"
    assert read_summary(sweep_dir / "b-seed0")["status"] == "interrupted"
    summary = app.exit_summary()
    assert "best configuration: a" in summary and "train it: mammo-tui train --no-ui" in summary
    assert f"sweep stopped; continue it with: mammo-tui sweep --resume {sweep_dir}" in summary
    assert f"mammo-tui report {sweep_dir}" in summary and f"mammo-tui watch {sweep_dir}" in summary


# -- snapshot ---------------------------------------------------------------------------------------------


# fixed best metrics per member: the snapshot must not hang on float noise of 1-epoch runs (their
# values tie at 0.000 and the order would come from AUC, which threads and BLAS may shift)
FIXED = {"ce-seed0": ("healthy", 0.61, 0.52, 0.81), "ce-seed1": ("warning", 0.55, 0.44, 0.78),
         "focal-seed0": ("collapsed", 0.05, 0.02, 0.55), "focal-seed1": ("healthy", 0.47, 0.40, 0.74)}


def fixed_copy(swept: Path, root: Path) -> Path:
    """A copy of the real sweep with FIXED metrics written into each member's summary.json."""
    copy = root / "runs" / swept.name
    shutil.copytree(swept, copy, ignore=shutil.ignore_patterns("checkpoints", ".lock"))
    for run, (status, kappa, bal, auc) in FIXED.items():
        summary = read_summary(copy / run)
        recall = [0.5, bal, 0.6, 0.7]
        summary["status"] = summary["best_status"] = status
        summary["best_metrics"] = {**summary["best_metrics"], "kappa_quadratic": kappa, "auc_macro": auc,
                                   "balanced_accuracy_adjusted": bal, "recall_per_class": recall}
        atomic_write_text(copy / run / SUMMARY_FILE, json.dumps(summary))
    return copy


@pytest.mark.slow
def test_snapshot_of_a_finished_sweep(snap_compare, swept, tmp_path):
    fixed = fixed_copy(swept, tmp_path)

    async def run_before(pilot) -> None:
        app = pilot.app
        await open_watch(pilot, app)
        await wait_until(pilot, lambda: "sweep finished: best" in screen_text(app), what="the log")
        await pilot.pause(0.1)

    assert [e.config_id for e in leaderboard(fixed)] == ["ce", "focal"]
    assert snap_compare(MammoApp("watch", run_dir=str(fixed)), terminal_size=(80, 24), run_before=run_before)
