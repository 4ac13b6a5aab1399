"""The defenses themselves must not cause, hide or mis-treat a collapse (engine side).

Restarts after a fix (dashboard apply, on_collapse = recover) go back to the best *healthy*
weights or the initial ones, count warmup again and restart the LR schedule; a random backbone
never trains head-only epochs; the run records which config trained which epochs.
"""

import json
import tomllib

import pytest
import torch

from mammo_tui import config
from mammo_tui.engine.checkpoint import load_checkpoint
from mammo_tui.engine.losses import inverse_frequency_weights
from mammo_tui.app import TrainRequest, train
from mammo_tui.engine.run_setup import RunSetup
from mammo_tui.engine.trainer import Trainer
from mammo_tui.rundir import read_summary
from mammo_tui.runlog import read_events

from conftest import TINY as SHARED_TINY

# the shared tiny config but for `pretrained`: the demo preset's (true), or the plan's, decides
TINY = {key: value for key, value in SHARED_TINY.items() if key != "pretrained"}


def cfg(**changes):
    return config.from_mapping({**config.load_preset("demo"), **TINY, **changes})


def start(spec, tmp_path, name="run", **changes):
    return train(TrainRequest(config=cfg(**changes), dataset=spec, outdir=str(tmp_path), run_name=name))


def epochs_of(events, kind="epoch"):
    return [e for e in events if e.type == kind]


def test_a_restart_goes_back_to_the_best_healthy_weights_never_a_collapsed_epoch(tiny_demo, tmp_path,
                                                                                   backbone_weights):
    """best.pt may be a collapsed epoch (it scored best); a fix must not restart from it."""
    setup = RunSetup(TrainRequest(config=cfg(epochs=4, weights=backbone_weights, freeze="last_block"),
                                dataset=tiny_demo, outdir=str(tmp_path), run_name="r"))
    setup.build_model()
    setup.materialise()
    trainer = Trainer(setup, lambda e: None, __import__("threading").Event())
    trainer.load_data()
    trainer.build()
    metrics = {"kappa_quadratic": 0.1}

    def nudge(value):  # a different model per epoch, recognisable by its head bias
        with torch.no_grad():
            trainer.model.head.bias.fill_(value)

    nudge(1.0)
    trainer._keep_checkpoints(1, metrics, "healthy", (0.10, 0.1, 0.5))
    nudge(2.0)
    trainer._keep_checkpoints(2, metrics, "warning", (0.20, 0.2, 0.5))
    nudge(3.0)
    trainer._keep_checkpoints(3, metrics, "collapsed", (0.30, 0.3, 0.5))  # best by score, collapsed
    ckpt = tmp_path / "r" / "checkpoints"
    assert load_checkpoint(ckpt / "best.pt")["epoch"] == 3
    assert load_checkpoint(ckpt / "healthy.pt")["epoch"] == 1
    rollback = trainer._restart(3, trainer.cfg.replace(lr=1e-4), "test fix")
    assert rollback == "the best healthy checkpoint (epoch 1)"
    assert float(trainer.model.head.bias.detach()[0]) == 1.0
    # no healthy epoch at all: the initial weights, not the best (collapsed) ones
    trainer.best_healthy_state = None
    assert trainer._restart(3, trainer.cfg, "again") == "the initial weights (no epoch was healthy)"
    assert torch.equal(trainer.model.head.bias, trainer.initial_state["head.bias"])
    assert [s["first_epoch"] for s in trainer.segments] == [1, 4, 4] and trainer.segment_start == 4


def test_ties_within_float_noise_go_to_kappa(tiny_demo, tmp_path):
    setup = RunSetup(TrainRequest(config=cfg(epochs=2, pretrained=False), dataset=tiny_demo, outdir=str(tmp_path),
                                run_name="t"))
    setup.build_model()
    setup.materialise()
    trainer = Trainer(setup, lambda e: None, __import__("threading").Event())
    trainer.load_data()
    trainer.build()
    assert trainer._keep_checkpoints(1, {}, "warning", (0.40000000000000002, 0.30, 0.5))
    # bal-acc-adj higher by 1e-12 only, kappa lower: not better
    assert not trainer._keep_checkpoints(2, {}, "warning", (0.40 + 1e-12, 0.20, 0.5))
    assert trainer.best_epoch == 1


@pytest.mark.slow
def test_applying_a_fix_restarts_warmup_and_the_lr_schedule_and_records_the_history(tiny_demo, tmp_path,
                                                                                    backbone_weights):
    first = start(tiny_demo, tmp_path, epochs=3, freeze="last_block", warmup_epochs=1, lr=1e-3,
                  weights=backbone_weights)
    run_dir = first.run_dir
    saved = load_checkpoint(run_dir / "checkpoints" / "last.pt")["config"]
    fixed = config.from_mapping({**saved, "warmup_epochs": 2, "lr": 3e-4, "epochs": 6})
    events = []
    train(TrainRequest(config=fixed, resume=str(run_dir), force=True, restart=True), events.append)
    epochs = epochs_of(events)
    assert [e.epoch for e in epochs] == [4, 5, 6]
    # warmup counts from the restart: two head-only epochs, then the last block trains again
    assert [e.trainable for e in epochs] == ["head", "head", "head+last block"]
    # the new LR is used as given on the first epoch after the restart, then decays (cosine over 4-6)
    lrs = [e.lr for e in epochs]
    assert lrs[0] == pytest.approx(3e-4) and lrs[0] > lrs[1] > lrs[2] > 0
    assert any("restarting at epoch 4 from" in getattr(e, "message", "") for e in events)
    [change] = epochs_of(events, "config_changed")
    assert change.changes["warmup_epochs"] == [1, 2] and "restarted from" in change.reason
    summary = read_summary(run_dir)
    history = summary["config_history"]
    assert [h["epochs"] for h in history] == [[1, 3], [4, 6]]
    assert history[1]["restart"] and history[1]["changes"]["lr"] == [1e-3, 3e-4]
    text = (run_dir / "config.toml").read_text()
    assert "# From epoch 4: " in text and "lr = 0.0003" in text
    assert tomllib.loads(text)["warmup_epochs"] == 2  # the comments keep it a readable config


@pytest.mark.slow
def test_recover_after_a_collapse_restarts_and_the_schedule_follows(tiny_demo, tmp_path, backbone_weights):
    result = start(tiny_demo, tmp_path, epochs=4, freeze="none", warmup_epochs=0, sampler="none",
                   lr=0.05, grad_clip=0.0, weights=backbone_weights, on_collapse="recover",
                   max_batches_per_epoch=3)
    events = read_events(result.run_dir)
    [first_change, *_] = epochs_of(events, "config_changed")
    after = [e for e in epochs_of(events) if e.epoch == first_change.epoch + 1]
    assert after and after[0].lr == pytest.approx(first_change.changes["lr"][1])
    history = read_summary(result.run_dir)["config_history"]
    assert history[1]["epochs"][0] == first_change.epoch + 1 and "collapse" in history[1]["reason"]


@pytest.mark.slow
def test_a_random_backbone_never_trains_head_only_epochs(tiny_demo, tmp_path):
    # the demo from scratch used to spend epoch 1 training a head on random features ("collapsed")
    result = start(tiny_demo, tmp_path, epochs=2, pretrained=False, freeze="none", warmup_epochs=2)
    events = read_events(result.run_dir)
    assert [e.trainable for e in epochs_of(events)] == ["all layers", "all layers"]
    notes = [e.message for e in events if e.type == "log"]
    assert any("warmup_epochs = 2 is skipped" in n for n in notes)


def test_epochs_not_above_warmup_says_the_run_is_head_only(tiny_demo, tmp_path, backbone_weights):
    result = start(tiny_demo, tmp_path, epochs=2, freeze="last_block", warmup_epochs=2, weights=backbone_weights)
    events = read_events(result.run_dir)
    assert [e.trainable for e in epochs_of(events)] == ["head", "head"]
    assert any("warmup_epochs (2) >= epochs (2)" in e.message for e in events if e.type == "log")


def test_without_a_config_the_run_trains_the_plans_preset(tiny_demo, tmp_path):
    result = train(TrainRequest(config=None, dataset=tiny_demo, outdir=str(tmp_path), run_name="auto",
                                overrides={**TINY, "epochs": 1}))
    text = (result.run_dir / "config.toml").read_text()
    # no pretrained weights on this machine: the plan trains from scratch and says why
    assert "# From epoch 1: preset auto: from_scratch (rule 1 of 4; no pretrained weights)" in text
    assert "a frozen random backbone learns nothing" in text
    saved = tomllib.loads(text)
    assert (saved["freeze"], saved["warmup_epochs"], saved["pretrained"], saved["epochs"]) == ("none", 0, False, 1)
    info = json.loads((result.run_dir / "dataset.json").read_text())
    assert info["preset"] == "from_scratch" and info["plan"]["rule"] == 1
    started = epochs_of(read_events(result.run_dir), "run_started")[0]
    assert "preset auto: from_scratch (rule 1 of 4; no pretrained weights)" in started.notes


def test_sampler_power_softens_the_inverse_frequency_weights():
    labels = [0] * 4 + [1] * 16 + [2] * 64
    full, sqrt, natural = (inverse_frequency_weights(labels, 4, p) for p in (1.0, 0.5, 0.0))
    assert full[0] / full[-1] == pytest.approx(16.0)
    assert sqrt[0] / sqrt[-1] == pytest.approx(4.0)
    assert natural[0] == natural[-1] == 1.0
