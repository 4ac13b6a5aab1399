"""The training engine on real (tiny) demo data: defenses, collapse, resume, failures."""

import dataclasses
import math
import threading

import numpy as np
import pytest
import torch

from mammo_tui import config
from mammo_tui.engine.checkpoint import load_checkpoint
from mammo_tui.app import TrainRequest, train
from mammo_tui.errors import ConfigError
from mammo_tui.rundir import read_summary
from mammo_tui.runlog import read_events

from conftest import make_tiny_config


def tiny_config(**changes):  # the shared tiny config, but every batch of an epoch unless a test says
    return make_tiny_config(**{"max_batches_per_epoch": 0, **changes})


def run(spec, tmp_path, sink=None, cancel=None, diverge=False, **changes):
    cfg = tiny_config(**changes)
    if diverge:  # lr 1e30 is outside lr's range: set past the check to force a NaN loss
        cfg = dataclasses.replace(cfg, lr=1e30)
    request = TrainRequest(config=cfg, dataset=spec, outdir=str(tmp_path / "runs"))
    events = []

    def collect(event):
        events.append(event)
        if sink:
            sink(event)

    return train(request, collect, cancel), events


def last_checkpoint_recorder():
    """(epoch -> model state of last.pt as saved after that epoch, the sink that fills it)."""
    snapshots = {}

    def grab(event):
        if event.type == "checkpoint" and event.kind == "last":
            snapshots[event.epoch] = load_checkpoint(event.path)["model"]

    return snapshots, grab


@pytest.mark.slow
def test_warmup_trains_the_head_only_then_unfreezes_the_last_block(tiny_demo, tmp_path, backbone_weights):
    snapshots, grab = last_checkpoint_recorder()
    result, events = run(tiny_demo, tmp_path, sink=grab, epochs=3, warmup_epochs=2, freeze="last_block",
                         max_batches_per_epoch=2, lr=1e-3, weights=backbone_weights)
    trainable = [e.trainable for e in events if e.type == "epoch"]
    assert trainable == ["head", "head", "head+last block"]
    key4 = "backbone.layer4.0.conv1.weight"
    key1 = "backbone.layer1.0.conv1.weight"
    # layer4 frozen through warmup, trained once unfrozen; layer1 never trains
    assert torch.equal(snapshots[1][key4], snapshots[2][key4])
    assert not torch.equal(snapshots[2][key4], snapshots[3][key4])
    assert torch.equal(snapshots[1][key1], snapshots[3][key1])
    assert not torch.equal(snapshots[1]["head.weight"], snapshots[2]["head.weight"])


@pytest.fixture(scope="module")
def offline_weights(tmp_path_factory):
    """A local torchvision state dict, as a user on an offline box passes with --weights."""
    from torchvision.models import resnet18

    path = tmp_path_factory.mktemp("weights") / "resnet18-local.pth"
    torch.manual_seed(0)
    torch.save(resnet18(weights=None).state_dict(), path)
    return str(path)


@pytest.mark.slow
def test_forced_collapse_ends_collapsed_with_sampler_and_freezing_suggestions(tiny_demo, tmp_path,
                                                                              offline_weights):
    # full fine-tuning of a "pretrained" network, no balancing, high LR: the reference's failure
    result, events = run(tiny_demo, tmp_path, epochs=2, freeze="none", warmup_epochs=0, sampler="none",
                         class_weights="none", lr=0.05, grad_clip=0.0, pretrained=True,
                         weights=offline_weights)
    assert result.status == "collapsed" and result.exit_code == 3
    collapse = [e for e in events if e.type == "collapse"]
    assert collapse[-1].status == "collapsed"
    keys = [s["key"] for s in collapse[-1].suggestions]
    assert "sampler" in keys and "freeze" in keys
    summary = read_summary(result.run_dir)
    assert summary["status"] == "collapsed"
    assert max(summary["best_metrics"]["prediction_distribution"]) >= 0.99


@pytest.mark.slow
def test_interrupt_then_resume_continues_at_the_next_epoch(tiny_demo, tmp_path):
    cancel = threading.Event()

    def stop_after_first_epoch(event):
        if event.type == "checkpoint" and event.kind == "last" and event.epoch == 1:
            cancel.set()

    first, _ = run(tiny_demo, tmp_path, sink=stop_after_first_epoch, cancel=cancel, epochs=3,
                   max_batches_per_epoch=2)
    assert (first.status, first.exit_code) == ("interrupted", 130)
    summary = read_summary(first.run_dir)
    assert summary["interrupted"] and summary["epochs_completed"] == 1
    assert (first.run_dir / "checkpoints" / "last.pt").is_file()

    events = []
    resumed = train(TrainRequest(resume=str(first.run_dir)), events.append)
    started = [e for e in events if e.type == "run_started"][0]
    assert started.start_epoch == 2
    assert [e.epoch for e in events if e.type == "epoch"] == [2, 3]
    assert resumed.exit_code in (0, 3) and read_summary(first.run_dir)["epochs_completed"] == 3
    # the log keeps both sessions
    assert [e.type for e in read_events(first.run_dir)].count("run_started") == 2


def test_resume_refuses_a_changed_config_unless_forced(tiny_demo, tmp_path):
    first, _ = run(tiny_demo, tmp_path, epochs=1, max_batches_per_epoch=1)
    changed = config.from_mapping({**load_checkpoint(first.run_dir / "checkpoints" / "last.pt")["config"],
                                   "lr": 0.5})
    with pytest.raises(ConfigError, match="lr: 0.001 -> 0.5"):
        train(TrainRequest(config=changed, resume=str(first.run_dir)))


def test_nan_loss_stops_cleanly_naming_epoch_and_batch(tiny_demo, tmp_path):
    result, events = run(tiny_demo, tmp_path, epochs=2, diverge=True, grad_clip=0.0, freeze="none",
                         warmup_epochs=0, max_batches_per_epoch=6)
    failed = [e for e in events if e.type == "failed"]
    assert result.exit_code == 1 and failed
    assert f"epoch {failed[0].epoch}, batch {failed[0].batch}" in failed[0].error
    assert read_summary(result.run_dir)["status"] == "failed"


def test_checkpoints_are_self_describing(tiny_demo, tmp_path):
    result, _ = run(tiny_demo, tmp_path, epochs=1, max_batches_per_epoch=1)
    ckpt = load_checkpoint(result.run_dir / "checkpoints" / "best.pt")
    assert ckpt["arch"] == "resnet18" and ckpt["img_size"] == 32
    assert ckpt["class_names"] == ["A", "B", "C", "D"] and ckpt["config"]["sampler"] == "weighted"
    from mammo_tui.engine.models import build_model

    model = build_model(ckpt["arch"], len(ckpt["class_names"]), pretrained=False)
    model.load_state_dict(ckpt["model"])
    model.eval()
    assert model(torch.zeros(1, 1, ckpt["img_size"], ckpt["img_size"])).shape == (1, 4)
    for name in ("config.toml", "events.jsonl", "splits.csv", "summary.json", "dataset.json"):
        assert (result.run_dir / name).is_file(), name


def test_tampered_checkpoint_with_pickle_payload_is_refused(tmp_path):

    from mammo_tui.errors import MammoError

    class Payload:
        def __reduce__(self):
            return (exec, ("open('pwned', 'w').write('x')",))

    path = tmp_path / "best.pt"
    torch.save({"model": {}, "evil": Payload()}, path)
    with pytest.raises(MammoError, match="refusing checkpoint"):
        load_checkpoint(path)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.slow
def test_frozen_feature_cache_matches_recomputing_the_backbone(tiny_demo, tmp_path, backbone_weights):
    common = dict(epochs=2, freeze="head", warmup_epochs=0, augment=False, max_batches_per_epoch=3, lr=1e-2,
                  weights=backbone_weights)
    cached, ev_cached = run(tiny_demo, tmp_path / "a", frozen_feature_cache=True, **common)
    plain, ev_plain = run(tiny_demo, tmp_path / "b", frozen_feature_cache=False, **common)
    assert any("features computed once" in getattr(e, "message", "") for e in ev_cached)
    m1 = [e.metrics["kappa_quadratic"] for e in ev_cached if e.type == "epoch"]
    m2 = [e.metrics["kappa_quadratic"] for e in ev_plain if e.type == "epoch"]
    loss1 = [e.train_loss for e in ev_cached if e.type == "epoch"]
    loss2 = [e.train_loss for e in ev_plain if e.type == "epoch"]
    np.testing.assert_allclose(loss1, loss2, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(m1, m2, atol=1e-6)


@pytest.mark.slow
def test_crt_retrains_a_fresh_head_on_the_best_backbone_with_balanced_sampling(tiny_demo, tmp_path):
    snapshots, grab = last_checkpoint_recorder()
    result, events = run(tiny_demo, tmp_path, sink=grab, epochs=3, crt_epochs=1, sampler="none",
                         freeze="none", warmup_epochs=0, max_batches_per_epoch=2)
    assert [e.trainable for e in events if e.type == "epoch"] == ["all layers", "all layers", "head"]
    assert any("cRT" in getattr(e, "message", "") for e in events)
    layer = "backbone.layer3.0.conv1.weight"
    best_epoch = max((e for e in events if e.type == "checkpoint" and e.kind == "best" and e.epoch < 3),
                     key=lambda e: e.epoch).epoch
    assert torch.equal(snapshots[3][layer], snapshots[best_epoch][layer])  # backbone = best, frozen
    with pytest.raises(ConfigError, match="crt_epochs"):
        tiny_config(epochs=2, crt_epochs=2)


@pytest.mark.slow
def test_recover_rolls_back_applies_the_top_suggestion_and_uses_the_new_config(tiny_demo, tmp_path,
                                                                               offline_weights):
    result, events = run(tiny_demo, tmp_path, epochs=4, freeze="none", warmup_epochs=0, sampler="none",
                         class_weights="none", lr=0.05, grad_clip=0.0, pretrained=True, weights=offline_weights,
                         on_collapse="recover", max_batches_per_epoch=3)
    changes = [e for e in events if e.type == "config_changed"]
    assert changes, "a collapse must trigger a recovery"
    # the top suggestion of the collapse check that triggered it: lr 0.05 is far too high
    [trigger] = [e for e in events if e.type == "collapse" and e.epoch == changes[0].epoch]
    top = trigger.suggestions[0]
    assert (top["key"], top["value"]) == ("lr", 1e-4)
    assert changes[0].changes == {"lr": [0.05, 1e-4]}
    assert "restarted from the initial weights (no epoch was healthy)" in changes[0].reason
    # after a recovery the detector and suggestions see the new config: never the same fix twice
    applied = [tuple(sorted(c.changes)) for c in changes]
    assert len(applied) == len(set(applied))
    later = [e for e in events if e.type == "collapse" and e.epoch > changes[0].epoch]
    assert all(s["key"] != "lr" or s["value"] < 1e-4 for e in later for s in e.suggestions)
    assert load_checkpoint(result.run_dir / "checkpoints" / "last.pt")["config"]["lr"] <= 1e-4


@pytest.mark.slow
def test_a_run_from_before_crop_breast_resumes_without_the_crop(tiny_demo, tmp_path):
    # its config.toml and last.pt lack the key: it trained uncropped and must go on uncropped,
    # with no "config differs" refusal for a key the user never changed
    import re

    from mammo_tui.engine.checkpoint import save_checkpoint

    first, _ = run(tiny_demo, tmp_path, epochs=1, max_batches_per_epoch=1, crop_breast=False)
    toml = first.run_dir / "config.toml"
    toml.write_text(re.sub(r"^crop_breast = .*\n", "", toml.read_text(), flags=re.M))
    last = first.run_dir / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=True)
    del state["config"]["crop_breast"], state["format_version"]
    save_checkpoint(last, state)
    assert "crop_breast" not in toml.read_text()
    resumed = train(TrainRequest(resume=str(first.run_dir), overrides={"epochs": 2}, force=True))
    assert resumed.exit_code in (0, 3)
    summary = read_summary(first.run_dir)
    assert summary["epochs_completed"] == 2 and summary["config"]["crop_breast"] is False
    changes = [c["changes"] for c in summary["config_history"] if c.get("changes")]
    assert all(set(c) == {"epochs"} for c in changes), changes


@pytest.mark.slow
def _epoch_lrs(events) -> dict[int, float]:
    return {e.epoch: e.lr for e in events if e.type == "epoch"}


@pytest.mark.slow
def test_a_forced_resume_with_a_new_lr_anneals_a_cosine_over_the_epochs_left(tiny_demo, tmp_path):
    """After 3 epochs at 1e-3 of a 3-epoch cosine, `--resume --epochs 8 --lr 5e-4 --force` trains
    epochs 4-8 at 5e-4 x (1 + cos(pi k / 5)) / 2, k = 0..4: the new lr as given, then a cosine over
    the 5 epochs left (it used to span all 8 epochs: 5.00, 4.81, 4.27, 3.46, 2.50 x 1e-4)."""
    first, _ = run(tiny_demo, tmp_path, epochs=3, lr=1e-3, max_batches_per_epoch=1, scheduler="cosine")
    events = []
    train(TrainRequest(resume=str(first.run_dir), overrides={"epochs": 8, "lr": 5e-4}, force=True), events.append)
    expected = [5e-4 * (1 + math.cos(math.pi * k / 5)) / 2 for k in range(5)]
    assert [_epoch_lrs(events)[epoch] for epoch in range(4, 9)] == pytest.approx(expected, rel=1e-6)


@pytest.mark.slow
def test_a_forced_resume_with_a_new_length_follows_the_schedule_of_a_run_that_long(tiny_demo, tmp_path):
    """`--set epochs=6 --force` on a finished 3-epoch cosine run (the command every run prints at its
    end) trains epochs 4-6 at the lr a 6-epoch run has there: not at the finished schedule's 0, not
    back at the configured lr."""
    short, _ = run(tiny_demo, tmp_path / "a", epochs=3, max_batches_per_epoch=1, scheduler="cosine")
    events = []
    train(TrainRequest(resume=str(short.run_dir), overrides={"epochs": 6}, force=True), events.append)
    _, long_events = run(tiny_demo, tmp_path / "b", epochs=6, max_batches_per_epoch=1, scheduler="cosine")
    resumed, launched = _epoch_lrs(events), _epoch_lrs(long_events)
    assert [resumed[e] for e in (4, 5, 6)] == pytest.approx([launched[e] for e in (4, 5, 6)], rel=1e-6)
    assert 0 < resumed[6] < resumed[5] < resumed[4] < launched[1]


def test_a_forced_resume_trains_with_the_new_lr(tiny_demo, tmp_path):
    """--force with another lr: the saved optimizer and LR schedule must not override it."""
    first, _ = run(tiny_demo, tmp_path, epochs=1, max_batches_per_epoch=1, scheduler="cosine")
    events = []
    resumed = train(TrainRequest(resume=str(first.run_dir), overrides={"epochs": 3, "lr": 0.0123}, force=True),
                    events.append)
    assert resumed.exit_code in (0, 3)
    lrs = {e.epoch: e.lr for e in events if e.type == "epoch"}
    assert lrs[2] == pytest.approx(0.0123)  # as given on the first epoch after the change
    assert lrs[3] < lrs[2]  # then the cosine schedule over what is left
    ckpt = load_checkpoint(first.run_dir / "checkpoints" / "last.pt")
    assert ckpt["config"]["lr"] == 0.0123


def test_the_early_stop_count_is_saved_and_restored_with_the_run(tiny_demo, tmp_path):
    """last.pt holds the epochs since the best one, counted after the epoch it saves, so a resumed
    run stops where the uninterrupted one would (it used to count from zero again)."""
    from mammo_tui.engine.policies import EarlyStopping

    result, _ = run(tiny_demo, tmp_path, epochs=2, max_batches_per_epoch=1)
    state = load_checkpoint(result.run_dir / "checkpoints" / "last.pt")
    assert state["early_stop_stale"] == 2 - read_summary(result.run_dir)["best_epoch"]

    counting = EarlyStopping()
    counting.step(False)
    counting.step(False)
    resumed = EarlyStopping()
    resumed.load_state_dict(counting.state_dict())
    assert resumed.stale == 2 and resumed.should_stop(2) and not resumed.should_stop(3)
    older = EarlyStopping()
    older.load_state_dict({})  # a checkpoint from before the count was saved
    assert older.stale == 0


def test_a_plain_resume_never_reopens_a_run_that_finished_early(tiny_demo, tmp_path):
    """`train --resume` of an early-stopped run trained the epochs the early stop had decided
    against, without being asked; it is refused now, naming how, and nothing is written. (The
    run on disk is what an early stop leaves: last.pt at epoch 1 of 2, a finished status.)"""
    import json

    stop = threading.Event()
    stopped, _ = run(tiny_demo, tmp_path, cancel=stop, epochs=2, max_batches_per_epoch=1,
                     sink=lambda e: stop.set() if e.type == "epoch" else None)
    summary_file = stopped.run_dir / "summary.json"
    summary_file.write_text(json.dumps({**json.loads(summary_file.read_text()), "status": "healthy"}))
    log = (stopped.run_dir / "events.jsonl").read_bytes()
    with pytest.raises(ConfigError, match=r"has finished \(healthy; it stopped after 1 of 2 epochs.*"
                                          r"--set early_stop_patience=0 --force"):
        train(TrainRequest(resume=str(stopped.run_dir)))
    assert (stopped.run_dir / "events.jsonl").read_bytes() == log
