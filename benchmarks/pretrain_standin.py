"""A stand-in for ImageNet weights: a resnet18 pretrained here on a separate synthetic source task.

ImageNet weights cannot be downloaded on the machines this project is built on, and a *random*
backbone gives freezing nothing to preserve. So bench_collapse.py fine-tunes from this stand-in.

The source task (what the stand-in was trained on), exactly:
- images from the demo generator's drawing function (`mammo_tui.data.demo.synth_mammogram`), drawn
  from their own random stream (SOURCE_SEED; the target dataset uses seed 0 of the demo's
  generator, so no source image is a target image), without patients, classes or label noise;
- the fibroglandular fraction of each image is uniform on [FRACTION_LOW, FRACTION_HIGH] and the label
  is which of N_BINS equal-width bins it falls in: a *balanced*, fine-grained 8-class task (the
  target has 4 imbalanced, noisy classes);
- each image goes through what the engine's decoder does to a demo DICOM (12-bit values, then a
  stored display window for P_WINDOW of them, else the decoder's percentile window), resize_pad to
  the benchmark's size and the engine's normalisation, random horizontal flips;
- torchvision resnet18 with a single-channel conv1, trained from random initialisation with AdamW
  (lr 1e-3, cosine), cross-entropy.
This source task is much closer to the target than ImageNet is to real mammograms (its features
encode tissue fraction directly), so frozen features are better here than ImageNet's would be on
real data: the benchmark shows what freezing preserves, not how good ImageNet features are.

Saved in the format `--weights` takes: a torchvision resnet18 state dict (3-channel conv1 whose
weight is the single-channel filter / 3 repeated on 3 channels, so the engine's sum of the RGB
filters gives back the trained filter), BatchNorm statistics included, `fc.*` keys dropped.

    python benchmarks/pretrain_standin.py OUT.pth [--img-size 48] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

SOURCE_SEED = 20_250_101  # the source task's random stream (the target demo dataset uses seed 0)
N_BINS = 8
FRACTION_LOW, FRACTION_HIGH = 0.04, 0.92
IMAGES_PER_BIN = 300
EPOCHS = 8
BATCH_SIZE = 64
LR = 1e-3
HOLDOUT = 0.1  # share of the source images kept aside to report the source-task accuracy
VERSION = 1  # bump when anything above changes: the cache file name carries it


def standin_path(cache: Path, img_size: int) -> Path:
    return cache / f"standin-resnet18-fraction{N_BINS}bins-{img_size}px-v{VERSION}.pth"


def render_source_images(img_size: int, n_per_bin: int = IMAGES_PER_BIN,
                         seed: int = SOURCE_SEED) -> tuple[np.ndarray, np.ndarray]:
    """[N, S, S] float32 images in [0, 1] as the engine would see them, and their bin labels."""
    from mammo_tui.data.demo import IMAGE_SHAPES, MAX_STORED, P_WINDOW, synth_mammogram
    from mammo_tui.data.dicom import percentile_window
    from mammo_tui.data.images import resize_pad

    rng = np.random.default_rng(seed)
    n = n_per_bin * N_BINS
    labels = np.repeat(np.arange(N_BINS), n_per_bin)
    width = (FRACTION_HIGH - FRACTION_LOW) / N_BINS
    images = np.empty((n, img_size, img_size), np.float32)
    for i, label in enumerate(labels):
        fraction = FRACTION_LOW + width * (label + float(rng.random()))
        shape = IMAGE_SHAPES[int(rng.integers(len(IMAGE_SHAPES)))]
        image = synth_mammogram(rng, shape, fraction, chest_wall_left=bool(rng.random() < 0.5))
        stored = np.rint(image * (MAX_STORED - 100) + 50).astype(np.float32)
        if rng.random() < P_WINDOW:  # a stored display window over the breast, as the demo writes
            low, high = np.percentile(stored[image > 0.2], [1.0, 99.5])
            centre, span = (low + high) / 2, (high - low) * 1.1
            decoded = np.clip((stored - (centre - span / 2)) / span, 0.0, 1.0)
        else:
            decoded = percentile_window(stored)
        images[i] = resize_pad(decoded, img_size)
    return images, labels


def export_state_dict(model) -> dict:
    """A single-channel resnet18 -> torchvision resnet18 state dict that `--weights` loads."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items() if not k.startswith("fc.")}
    state["conv1.weight"] = (state["conv1.weight"] / 3.0).repeat(1, 3, 1, 1)
    return state


def pretrain(out: Path, img_size: int, threads: int = 1, epochs: int = EPOCHS, n_per_bin: int = IMAGES_PER_BIN,
             log=print) -> dict:
    """Train the stand-in and save it at `out` (+ `out`.json describing it); returns that description."""
    import torch
    from torch import nn
    from torchvision.models import resnet18

    from mammo_tui.data.dataset import NORM_MEAN, NORM_STD

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    images, labels = render_source_images(img_size, n_per_bin)
    log(f"stand-in: rendered {len(labels)} source images ({N_BINS} balanced tissue-fraction bins) "
        f"in {time.perf_counter() - t0:.0f} s")
    rng = np.random.default_rng(SOURCE_SEED + 1)
    order = rng.permutation(len(labels))
    n_hold = int(round(HOLDOUT * len(labels)))
    hold, train = order[:n_hold], order[n_hold:]
    x_all = torch.from_numpy((images - NORM_MEAN) / NORM_STD).unsqueeze(1)
    y_all = torch.from_numpy(labels).long()

    torch.manual_seed(SOURCE_SEED)
    model = resnet18(weights=None, num_classes=N_BINS)
    model.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=1e-4)
    steps = epochs * -(-len(train) // BATCH_SIZE)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=LR, total_steps=steps, pct_start=0.15)
    generator = torch.Generator().manual_seed(SOURCE_SEED)
    hold_acc = float("nan")
    for epoch in range(1, epochs + 1):
        model.train()
        perm = torch.from_numpy(train)[torch.randperm(len(train), generator=generator)]
        total = 0.0
        for start in range(0, len(perm), BATCH_SIZE):
            idx = perm[start:start + BATCH_SIZE]
            x = x_all[idx]
            flip = torch.rand(len(idx), generator=generator) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            loss = nn.functional.cross_entropy(model(x), y_all[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += float(loss.detach()) * len(idx)
        model.eval()
        with torch.no_grad():
            pred = torch.cat([model(x_all[hold[i:i + 256]]).argmax(1) for i in range(0, len(hold), 256)])
        hold_acc = float((pred == y_all[hold]).float().mean())
        near = float(((pred - y_all[hold]).abs() <= 1).float().mean())
        log(f"stand-in epoch {epoch}/{epochs}: loss {total / len(train):.3f}, held-out accuracy {hold_acc:.3f} "
            f"(within one bin {near:.3f}), {time.perf_counter() - t0:.0f} s")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    torch.save(export_state_dict(model), tmp)
    tmp.replace(out)
    info = {
        "what": "resnet18 pretrained on a synthetic source task (stand-in for ImageNet weights)",
        "source_task": (f"{N_BINS} balanced bins of the fibroglandular fraction on [{FRACTION_LOW}, {FRACTION_HIGH}], "
                        f"{len(labels)} images from mammo_tui.data.demo.synth_mammogram, seed {SOURCE_SEED}"),
        "img_size": img_size, "epochs": epochs, "lr": LR, "batch_size": BATCH_SIZE,
        "source_holdout_accuracy": hold_acc, "chance": 1 / N_BINS,
        "train_seconds": round(time.perf_counter() - t0, 1), "version": VERSION,
    }
    out.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def ensure_standin(cache: Path, img_size: int, threads: int = 1, log=print) -> tuple[Path, dict]:
    """The cached stand-in for this image size, pretrained on first use."""
    path = standin_path(cache, img_size)
    meta = path.with_suffix(".json")
    if path.is_file() and meta.is_file():
        return path, json.loads(meta.read_text())
    log(f"stand-in weights not cached: pretraining them into {path} (once; a few minutes)")
    return path, pretrain(path, img_size, threads, log=log)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--img-size", type=int, default=48)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--per-bin", type=int, default=IMAGES_PER_BIN)
    args = parser.parse_args()
    print(json.dumps(pretrain(args.out, args.img_size, args.threads, args.epochs, args.per_bin), indent=2))


if __name__ == "__main__":
    main()
