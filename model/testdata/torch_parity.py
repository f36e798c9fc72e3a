#!/usr/bin/python3
"""PyTorch side of model's parity test.

Reads the net's weights, a batch and its targets written by the Go test
(DIR/meta.json + DIR/<name>.f32, raw little-endian float32), builds the same
SmallerVGGNet as ../../shared/bench/torch_baseline.py (train-mode BatchNorm,
dropout off), runs inference with the running statistics (eval mode), then
one forward and backward pass with BCELoss on the sigmoid
output, and writes the loss, every gradient and the updated BatchNorm running
statistics back as DIR/out_<name>.f32 and DIR/out.json, with the inference
output as DIR/out_probs.f32.
"""
import json
import os
import sys

import numpy as np
import torch
import torch.nn as nn


def smaller_vgg(size, classes, dense, channels):
    bn = lambda c: nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)
    s = ((size // 3) // 2) // 2
    return nn.Sequential(
        nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(), bn(32), nn.MaxPool2d(3, 3), nn.Dropout(0.0),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), bn(64),
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), bn(64), nn.MaxPool2d(2, 2), nn.Dropout(0.0),
        nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), bn(128),
        nn.Conv2d(128, 128, 3, padding=1), nn.ReLU(), bn(128), nn.MaxPool2d(2, 2), nn.Dropout(0.0),
        nn.Flatten(), nn.Linear(128 * s * s, dense), nn.ReLU(),
        nn.BatchNorm1d(dense, eps=1e-3, momentum=0.01), nn.Dropout(0.0),
        nn.Linear(dense, classes), nn.Sigmoid(),
    )


def main():
    d = sys.argv[1]
    meta = json.load(open(os.path.join(d, "meta.json")))
    torch.set_num_threads(1)

    def load(name):
        shape = meta["shapes"][name]
        a = np.fromfile(os.path.join(d, name.replace("/", "_") + ".f32"), dtype="<f4")
        return torch.from_numpy(a.reshape(shape).copy())

    net = smaller_vgg(meta["size"], meta["labels"], meta["dense"], meta["channels"])
    convs = [m for m in net if isinstance(m, nn.Conv2d)]
    bns = [m for m in net if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d))]
    lins = [m for m in net if isinstance(m, nn.Linear)]
    # name -> (module parameter, transpose?)
    params = {}
    for i, m in enumerate(convs):
        params[f"conv{i+1}/w"] = (m.weight, False)
        params[f"conv{i+1}/b"] = (m.bias, False)
    for i, m in enumerate(bns):
        params[f"bn{i+1}/gamma"] = (m.weight, False)
        params[f"bn{i+1}/beta"] = (m.bias, False)
    params["dense1/w"] = (lins[0].weight, True)
    params["dense1/b"] = (lins[0].bias, False)
    params["out/w"] = (lins[1].weight, True)
    params["out/b"] = (lins[1].bias, False)
    with torch.no_grad():
        for name, (p, tr) in params.items():
            v = load(name)
            p.copy_(v.t() if tr else v)
        for i, m in enumerate(bns):
            m.running_mean.copy_(load(f"bn{i+1}/mean"))
            m.running_var.copy_(load(f"bn{i+1}/var"))
    x, y = load("x"), load("y")
    # inference first, with the running statistics as loaded
    net.eval()
    with torch.no_grad():
        probs = net(x)
    net.train()
    loss = nn.BCELoss()(net(x), y)
    loss.backward()
    out = {"loss": loss.item(), "shapes": {}}
    def dump(name, t):
        a = t.detach().numpy().astype("<f4")
        a.tofile(os.path.join(d, "out_" + name.replace("/", "_") + ".f32"))
        out["shapes"][name] = list(a.shape)
    dump("probs", probs)
    for name, (p, tr) in params.items():
        dump(name, p.grad.t() if tr else p.grad)
    for i, m in enumerate(bns):
        dump(f"bn{i+1}/mean", m.running_mean)
        dump(f"bn{i+1}/var", m.running_var)
    json.dump(out, open(os.path.join(d, "out.json"), "w"))


if __name__ == "__main__":
    main()
