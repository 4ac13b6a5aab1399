"""The dashboard's fix actions: mark, apply (restart the run, or a new run or CV, with the
suggestions) and, in watch mode, the command that would do it. The changes themselves are the
application layer's (app/fixes.py); this is the asking and the telling.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mammo_tui.app.fixes import apply_command, apply_fixes, changes_of, fixed_request
from mammo_tui.tui.dialogs import ConfirmScreen
from mammo_tui.tui.render import change_text, suggestion_label
from mammo_tui.tui.state import COLLAPSE
from mammo_tui.tui.widgets import SuggestionList

EDIT_HINT = "esc / e: back to the configuration, with every field kept, to change it and launch again"


class FixActions:
    """Mixed into DashboardScreen (state, request, read_only, engine_running, start_training, _say)."""

    def action_apply_note(self) -> None:
        """`a` with nothing to apply: say why, and what to do instead."""
        if self.state.failed is not None and not self.engine_running:
            how = EDIT_HINT if self.edit_wizard() is not None else "fix the cause and train again"
            self.notify(f"the run failed; there is no collapse fix to apply. {how}", timeout=6)
        elif self.state.collapse is None:
            self.notify("no suggestions yet: they come with the first collapse check", timeout=4)
        else:
            self.notify("no suggestions: the collapse check is healthy", timeout=3)

    def chosen_suggestions(self) -> list[dict[str, Any]]:
        """The marked suggestions (space), else the highlighted one."""
        return self.query_one(SuggestionList).chosen(self.state.suggestions())

    def action_mark(self) -> None:
        self.query_one(SuggestionList).toggle_mark()

    def action_apply(self) -> None:
        chosen = self.chosen_suggestions()
        if not chosen:
            self.action_apply_note()
            return
        if self.read_only:  # nothing to restart here: the command that would do it
            command = apply_command(chosen, self.state.run_dir, self.state.folds_total if self.state.is_cv else 0,
                                    finished_at=self.trained_all_epochs())
            self._say("info", f"to apply {'; '.join(map(change_text, chosen))}: {command}")
            self.notify(command, title="read-only: run this to apply the fix", timeout=12)
            return

        fresh = self.completed  # every epoch done: resuming would have nothing left to train
        how = (f"The run has finished, so a new run starts with the changed config (from the initial "
               f"weights); it records {self.state.run_name or 'this run'} as the run it came from."
               if fresh else
               f"The run stops and restarts from {self.state.restart_point()} with the changed config, "
               "a fresh optimizer, warmup and LR schedule for the remaining epochs.")
        if self.state.is_cv:  # folds must not differ in config, so a fix means a new CV
            fresh = True
            how = ("Every fold of a cross-validation trains the same way, so a new cross-validation "
                   "starts with the change.")
            if not self.state.cv_finished:
                how += (" This one stops; its finished folds are kept (continue it with "
                        f"mammo-tui cv --resume {self.state.cv_dir}).")

        def answered(yes: bool | None) -> None:
            if yes:
                self.run_worker(self._apply_and_restart(chosen, fresh), group="apply", exclusive=True)

        what = "\n".join(f"• {suggestion_label(s)}" for s in chosen)
        self.app.push_screen(ConfirmScreen(f"Apply\n{what}\n\n{how}", yes="Apply"), answered)

    def trained_all_epochs(self) -> int | None:
        """The epochs of a run that trained all it was configured for (None: it has some left)."""
        finished = self.state.finished
        if finished is None or finished.interrupted or not finished.epochs_completed:
            return None
        planned = int(self.state.config.get("epochs") or 0)
        return finished.epochs_completed if finished.epochs_completed >= planned else None

    @property
    def completed(self) -> bool:
        """The run trained all its epochs (not stopped, not failed)."""
        finished = self.state.finished
        return (finished is not None and not finished.interrupted and not self.engine_running)

    async def _apply_and_restart(self, chosen: list[dict[str, Any]], fresh: bool) -> None:
        from mammo_tui.errors import ConfigError

        if self.engine_running:
            self._say("warning", "stopping to apply a suggestion…")
            await self.stop_engine()
        try:
            config = apply_fixes(self.current_config(), chosen)
        except ConfigError as exc:
            self.notify(str(exc), title="cannot apply", severity="error", timeout=8)
            return
        change = ", ".join(map(change_text, chosen))
        self.query_one(SuggestionList).marked.clear()
        run_dir = self.state.run_dir or getattr(self.result, "run_dir", None)
        if fresh:
            what = "cross-validation" if self.state.is_cv else "run"
            self._say("warning", f"applied {change}: starting a new {what} from the initial weights")
            parent = "" if self.state.is_cv else str(run_dir or "")
            self.fix_note = f"fix of {Path(parent or self.state.cv_dir).name}: {change}"
            self.start_training(fixed_request(self.request, config, run_dir=None, fresh=True, parent=parent))
            return
        if not run_dir:
            self.notify("the run has no directory yet; nothing to resume", severity="error")
            return
        restart_point = self.state.restart_point()
        self.state.config.update(changes_of(chosen))
        self._dirty.add(COLLAPSE)  # the applied suggestions leave the list now
        self.fix_note = f"{change} applied"
        self._say("warning", f"applied {change}: restarting {Path(run_dir).name} from {restart_point}")
        self.start_training(fixed_request(self.request, config, run_dir=str(run_dir), fresh=False))

    def current_config(self):
        """The config the run uses now (RunStarted + any ConfigChanged), as a TrainConfig."""
        from mammo_tui.config import KEYS, from_mapping

        request_config = getattr(self.request, "config", None)
        base = request_config.to_dict() if request_config is not None else {}
        base.update({k: v for k, v in self.state.config.items() if k in KEYS})
        return from_mapping(base, source="run config")
