#!/usr/bin/python3
"""Quality baseline: train the Keras SmallerVGGNet in PyTorch on a data set written
by `tailor data fashion` (or any folder tree of the same shape) and report test
quality as JSON.

Needs only Debian packages: python3-torch (1.13), python3-numpy, python3-pil.
No torchvision, no scikit-learn. Run with the system python:

  /usr/bin/python3 scripts/torch_train.py [--epochs 75] [--batch 32] [--size 64]
      [--threads 2] [--seed 0] [--augment|--no-augment] [--json FILE] [--save FILE] DATA

DATA holds train/, val/ and test/. In each split an image's labels are either the
name of its folder split on '_' (DATA/train/black_blue_dress/000123.png), or, when
the split has a labels.csv (columns path,labels; labels separated by spaces or
'|'; path relative to the csv), the csv's.

What it does, as the tutorial (pyimagesearch multi-label Keras) did, except where noted:
- vocabulary: sorted union of all labels (like sklearn's MultiLabelBinarizer);
- inputs scaled to [0,1], then normalised with the train split's per-channel mean
  and std (the tutorial only scaled);
- the net is the one of shared/bench/torch_baseline.py (BatchNorm eps 1e-3,
  momentum 0.01, i.e. Keras' defaults), sigmoid outputs, binary cross-entropy;
- Adam lr 1e-3, eps 1e-7, with Keras' time-based decay lr_t = lr/(1+decay*t),
  decay = lr/epochs, t = optimizer steps so far. (Keras applies eps to the
  uncorrected sqrt(v); torch to the bias-corrected one: a negligible difference);
- augmentation as Keras' ImageDataGenerator(rotation_range=25, width_shift_range=0.1,
  height_shift_range=0.1, shear_range=0.2, zoom_range=0.2, horizontal_flip=True,
  fill_mode="nearest"), done with affine_grid/grid_sample. As in Keras, shear_range
  is in degrees and the zoom factors of the two axes are drawn independently;
- batches of --batch from a per-epoch shuffle; the last incomplete batch is dropped,
  as the tutorial's steps_per_epoch = len(train) // batch did;
- validation every epoch; the model with the best val loss is kept and evaluated
  on test at the end.

Prints one JSON object to stdout: test mAP (mean over labels of sklearn-style
average precision), macro and micro F1 at per-label thresholds tuned on val (each
label's threshold maximises its val F1), the same at 0.5, subset accuracy, Hamming
loss, per-label numbers and the per-epoch history (train loss, val loss, val mAP).
Progress goes to stderr.
"""
import argparse
import copy
import csv
import json
import math
import os
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see torch_baseline.py

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402

SPLITS = ("train", "val", "test")


def smaller_vgg(size: int, classes: int) -> nn.Module:
    """Keras SmallerVGGNet: conv-relu-bn blocks, sigmoid output (multi-label)."""
    bn = lambda c: nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)  # Keras defaults
    s = ((size // 3) // 2) // 2
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), bn(32), nn.MaxPool2d(3, 3), nn.Dropout(0.25),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), bn(64),
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), bn(64), nn.MaxPool2d(2, 2), nn.Dropout(0.25),
        nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), bn(128),
        nn.Conv2d(128, 128, 3, padding=1), nn.ReLU(), bn(128), nn.MaxPool2d(2, 2), nn.Dropout(0.25),
        nn.Flatten(), nn.Linear(128 * s * s, 1024), nn.ReLU(),
        nn.BatchNorm1d(1024, eps=1e-3, momentum=0.01), nn.Dropout(0.5),
        nn.Linear(1024, classes), nn.Sigmoid(),
    )


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- data

def list_split(root: str, split: str):
    """Returns sorted [(path, [labels])] of one split."""
    d = os.path.join(root, split)
    if not os.path.isdir(d):
        raise SystemExit(f"torch_train: no {split}/ folder in {root}")
    items = []
    csv_path = os.path.join(d, "labels.csv")
    if os.path.exists(csv_path):
        with open(csv_path, newline="") as f:
            rows = csv.DictReader(f)
            if rows.fieldnames is None or "path" not in rows.fieldnames or "labels" not in rows.fieldnames:
                raise SystemExit(f"torch_train: {csv_path}: want header path,labels")
            for r in rows:
                labels = r["labels"].replace("|", " ").split()
                items.append((os.path.join(d, r["path"]), labels))
    else:
        for sub in sorted(os.listdir(d)):
            sd = os.path.join(d, sub)
            if not os.path.isdir(sd):
                continue
            labels = [l for l in sub.split("_") if l]
            for name in sorted(os.listdir(sd)):
                if name.lower().endswith((".png", ".jpg", ".jpeg")):
                    items.append((os.path.join(sd, name), labels))
    items.sort(key=lambda it: it[0])
    if not items:
        raise SystemExit(f"torch_train: no images in {d}")
    return items


def load_images(items, size: int) -> np.ndarray:
    """uint8 array N x size x size x 3."""
    out = np.empty((len(items), size, size, 3), dtype=np.uint8)
    for i, (path, _) in enumerate(items):
        with Image.open(path) as im:
            im = im.convert("RGB")
            if im.size != (size, size):
                im = im.resize((size, size), Image.BILINEAR)
            out[i] = np.asarray(im)
    return out


def binarize(items, vocab) -> np.ndarray:
    index = {l: i for i, l in enumerate(vocab)}
    y = np.zeros((len(items), len(vocab)), dtype=np.float32)
    for i, (_, labels) in enumerate(items):
        for l in labels:
            y[i, index[l]] = 1.0
    return y


def to_tensor(x_uint8: np.ndarray, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    x = torch.from_numpy(x_uint8).permute(0, 3, 1, 2).float().div_(255.0)
    return (x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)


# ---------------------------------------------------------------- augmentation

def augment(x: torch.Tensor, gen: torch.Generator, rotation=25.0, shift=0.1, shear=0.2, zoom=0.2) -> torch.Tensor:
    """Keras ImageDataGenerator's random affine transform, nearest fill, then a
    random horizontal flip, for a batch of square NCHW images."""
    n, _, h, w = x.shape
    u = lambda lo, hi: torch.rand(n, generator=gen, dtype=torch.float64) * (hi - lo) + lo
    theta = torch.deg2rad(u(-rotation, rotation))
    tx = u(-shift, shift) * h  # rows, pixels
    ty = u(-shift, shift) * w  # cols, pixels
    sh = torch.deg2rad(u(-shear, shear))  # Keras: shear_range is in degrees
    zx = u(1 - zoom, 1 + zoom)
    zy = u(1 - zoom, 1 + zoom)
    flip = torch.rand(n, generator=gen) < 0.5

    def mat(rows):
        return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)  # n x 3 x 3

    one, zero = torch.ones(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
    c, s = torch.cos(theta), torch.sin(theta)
    rot = mat([[c, -s, zero], [s, c, zero], [zero, zero, one]])
    shift_m = mat([[one, zero, tx], [zero, one, ty], [zero, zero, one]])
    shear_m = mat([[one, -torch.sin(sh), zero], [zero, torch.cos(sh), zero], [zero, zero, one]])
    zoom_m = mat([[zx, zero, zero], [zero, zy, zero], [zero, zero, one]])
    # Keras: output pixel (row, col), centred, maps to input = M @ output.
    m = rot @ shift_m @ shear_m @ zoom_m
    # Swap to (x=col, y=row) and to affine_grid's normalised coordinates
    # (align_corners=False: centred pixels times 2/size).
    p = torch.tensor([[0, 1, 0], [1, 0, 0], [0, 0, 1]], dtype=torch.float64)
    m = p @ m @ p
    a = m[:, :2, :].clone()
    a[:, 0, 2] *= 2.0 / w
    a[:, 1, 2] *= 2.0 / h
    grid = F.affine_grid(a.float(), list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return torch.where(flip.view(n, 1, 1, 1), out.flip(3), out)


# ---------------------------------------------------------------- metrics (numpy, sklearn semantics)

def average_precision(y: np.ndarray, s: np.ndarray) -> float:
    """sklearn.metrics.average_precision_score for one label: sum over distinct
    score thresholds (descending) of (R_n - R_{n-1}) * P_n. nan without positives."""
    pos = y.sum()
    if pos == 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    distinct = np.where(np.diff(s))[0]
    last = np.r_[distinct, len(y) - 1]
    tp = np.cumsum(y)[last]
    fp = (last + 1) - tp
    precision = tp / (tp + fp)
    recall = tp / pos
    prev = np.r_[0.0, recall[:-1]]
    return float(np.sum((recall - prev) * precision))


def f1_counts(tp, fp, fn):
    d = 2 * tp + fp + fn
    return 0.0 if d == 0 else 2 * tp / d  # sklearn's zero_division=0


def best_threshold(y: np.ndarray, s: np.ndarray) -> float:
    """Threshold (predict s >= t) maximising F1 of one label; 0.5 if no positives."""
    pos = y.sum()
    if pos == 0:
        return 0.5
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    tp = np.cumsum(y)
    k = np.arange(1, len(y) + 1)
    last = np.r_[np.where(np.diff(s))[0], len(y) - 1]  # cut after ties only
    f1 = 2 * tp[last] / (k[last] + pos)
    i = int(np.argmax(f1))
    return float(s[last[i]])


def quality(y: np.ndarray, p: np.ndarray, thresholds: np.ndarray, vocab) -> dict:
    pred = (p >= thresholds[None, :]).astype(np.float32)
    tp = (pred * y).sum(0)
    fp = (pred * (1 - y)).sum(0)
    fn = ((1 - pred) * y).sum(0)
    f1 = [f1_counts(tp[j], fp[j], fn[j]) for j in range(len(vocab))]
    return {
        "macro_f1": float(np.mean(f1)),
        "micro_f1": float(f1_counts(tp.sum(), fp.sum(), fn.sum())),
        "subset_accuracy": float(np.mean(np.all(pred == y, axis=1))),
        "hamming_loss": float(np.mean(pred != y)),
        "per_label_f1": {l: float(f1[j]) for j, l in enumerate(vocab)},
    }


def mean_ap(y: np.ndarray, p: np.ndarray):
    aps = np.array([average_precision(y[:, j], p[:, j]) for j in range(y.shape[1])])
    return float(np.nanmean(aps)) if np.any(~np.isnan(aps)) else float("nan"), aps


# ---------------------------------------------------------------- training

@torch.no_grad()
def predict(net, x_uint8, mean, std, batch=256):
    net.eval()
    out = []
    for i in range(0, len(x_uint8), batch):
        out.append(net(to_tensor(x_uint8[i:i + batch], mean, std)))
    return torch.cat(out).numpy().astype(np.float64)


def bce(y: np.ndarray, p: np.ndarray) -> float:
    """Mean binary cross-entropy as nn.BCELoss computes it (log clamped at -100)."""
    lp = np.maximum(np.log(np.maximum(p, 0)), -100)
    lq = np.maximum(np.log(np.maximum(1 - p, 0)), -100)
    return float(-np.mean(y * lp + (1 - y) * lq))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", help="folder with train/, val/ and test/")
    ap.add_argument("--epochs", type=int, default=75, help="epochs (the tutorial used 75)")
    ap.add_argument("--batch", type=int, default=32, help="batch size")
    ap.add_argument("--size", type=int, default=64, help="image size; images of another size are resized")
    ap.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    ap.add_argument("--seed", type=int, default=0, help="seed for weights, shuffling, augmentation, dropout")
    ap.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True,
                    help="Keras ImageDataGenerator-style augmentation of train batches")
    ap.add_argument("--json", help="also write the result JSON to this file")
    ap.add_argument("--save", help="save the best model's state_dict and vocabulary to this file")
    a = ap.parse_args()
    if a.size < 12 or a.epochs < 1 or a.batch < 2:
        ap.error("want --size >= 12, --epochs >= 1, --batch >= 2")

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    gen = torch.Generator().manual_seed(a.seed + 1)

    t0 = time.time()
    items = {sp: list_split(a.data, sp) for sp in SPLITS}
    vocab = sorted({l for sp in SPLITS for _, ls in items[sp] for l in ls})
    xs = {sp: load_images(items[sp], a.size) for sp in SPLITS}
    ys = {sp: binarize(items[sp], vocab) for sp in SPLITS}
    x01 = xs["train"].reshape(-1, 3).astype(np.float64) / 255.0
    mean = torch.tensor(x01.mean(0), dtype=torch.float32)
    std = torch.tensor(np.maximum(x01.std(0), 1e-6), dtype=torch.float32)
    del x01
    log(f"loaded {', '.join(f'{sp} {len(items[sp])}' for sp in SPLITS)} images of {a.size}px, "
        f"{len(vocab)} labels, in {time.time() - t0:.1f}s; mean {mean.tolist()} std {std.tolist()}")

    net = smaller_vgg(a.size, len(vocab))
    loss_fn = nn.BCELoss()
    opt = torch.optim.Adam(net.parameters(), lr=a.lr, eps=1e-7)
    decay = a.lr / a.epochs
    steps = 0
    n = len(items["train"])
    per_epoch = n // a.batch
    if per_epoch == 0:
        raise SystemExit(f"torch_train: {n} training images, fewer than one batch of {a.batch}")

    history, best, best_state, best_epoch = [], math.inf, None, 0
    for epoch in range(1, a.epochs + 1):
        te = time.time()
        net.train()
        perm = rng.permutation(n)
        total = 0.0
        for b in range(per_epoch):
            idx = np.sort(perm[b * a.batch:(b + 1) * a.batch])
            x = to_tensor(xs["train"][idx], mean, std)
            if a.augment:
                x = augment(x, gen)
            y = torch.from_numpy(ys["train"][idx])
            for g in opt.param_groups:
                g["lr"] = a.lr / (1.0 + decay * steps)  # Keras time-based decay
            opt.zero_grad()
            loss = loss_fn(net(x), y)
            loss.backward()
            opt.step()
            steps += 1
            total += loss.item()
        train_loss = total / per_epoch
        pv = predict(net, xs["val"], mean, std)
        val_loss = bce(ys["val"], pv)
        val_map, _ = mean_ap(ys["val"], pv)
        history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
                        "val_map": val_map, "seconds": time.time() - te})
        if val_loss < best:
            best, best_epoch, best_state = val_loss, epoch, copy.deepcopy(net.state_dict())
        log(f"epoch {epoch}/{a.epochs}: train loss {train_loss:.4f} val loss {val_loss:.4f} "
            f"val mAP {val_map:.4f} ({time.time() - te:.1f}s){' *' if best_epoch == epoch else ''}")

    net.load_state_dict(best_state)
    pv = predict(net, xs["val"], mean, std)
    pt = predict(net, xs["test"], mean, std)
    thresholds = np.array([best_threshold(ys["val"][:, j], pv[:, j]) for j in range(len(vocab))])
    test_map, aps = mean_ap(ys["test"], pt)
    tuned = quality(ys["test"], pt, thresholds, vocab)
    at_half = quality(ys["test"], pt, np.full(len(vocab), 0.5), vocab)
    result = {
        "framework": "pytorch",
        "torch": torch.__version__,
        "data": os.path.abspath(a.data),
        "size": a.size, "batch": a.batch, "epochs": a.epochs, "lr": a.lr, "seed": a.seed,
        "augment": a.augment, "threads": a.threads,
        "counts": {sp: len(items[sp]) for sp in SPLITS},
        "labels": vocab,
        "best_epoch": best_epoch,
        "best_val_loss": best,
        "test": {
            "loss": bce(ys["test"], pt),
            "map": test_map,
            "macro_f1": tuned["macro_f1"],
            "micro_f1": tuned["micro_f1"],
            "subset_accuracy": tuned["subset_accuracy"],
            "hamming_loss": tuned["hamming_loss"],
            "at_0.5": {k: v for k, v in at_half.items() if k != "per_label_f1"},
            "per_label": {l: {"ap": None if math.isnan(aps[j]) else float(aps[j]),
                              "f1": tuned["per_label_f1"][l],
                              "threshold": float(thresholds[j])} for j, l in enumerate(vocab)},
        },
        "history": history,
        "seconds": time.time() - t0,
    }
    text = json.dumps(result, indent=1)
    print(text)
    if a.json:
        with open(a.json, "w") as f:
            f.write(text + "\n")
    if a.save:
        torch.save({"state_dict": best_state, "labels": vocab, "size": a.size,
                    "mean": mean.tolist(), "std": std.tolist()}, a.save)


if __name__ == "__main__":
    main()
