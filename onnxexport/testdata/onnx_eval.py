#!/usr/bin/python3
"""Runs an exported ONNX model with tools tailor did not write.

    onnx_eval.py MODEL.onnx OUT.f32 (--pixels FILE N | --images IMAGE...)

1. onnx.checker.check_model(model, full_check=True) and strict shape
   inference: the file is valid ONNX, every node's shapes fit, and the
   output is [batch, len(labels)] (Debian's python3-onnx).
2. The input is prepared from the model's metadata_props only: input_size,
   input_channels, input_channel_order, input_layout, input_scale,
   input_mean, input_std. --pixels reads N images of raw uint8 HWC pixels
   at input_size (what tailor's decoder yields); --images decodes image
   files with PIL (already at input_size: no resizing here).
3. A small interpreter runs the graph node by node with PyTorch ops
   (torch.nn.functional), in float64, reading every node's inputs, outputs
   and attributes and the initializers by name; an op or attribute it does
   not know is an error, so a wrong graph fails instead of being guessed
   right.
4. The graph's output (N x len(labels)) is written to OUT.f32 as raw
   little-endian float32; a JSON summary goes to stdout.
"""
import json
import sys

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper


def attrs_of(node):
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def take(attrs, known, node):
    unknown = set(attrs) - set(known)
    if unknown:
        raise ValueError(f"{node.op_type} {node.name}: attributes {sorted(unknown)} not supported")
    return {k: attrs.get(k, d) for k, d in known.items()}


def sym_pads(pads, node):
    if pads is None:
        return (0, 0)
    if len(pads) != 4 or pads[0] != pads[2] or pads[1] != pads[3]:
        raise ValueError(f"{node.op_type} {node.name}: asymmetric pads {pads}")
    return (pads[0], pads[1])


def run_node(node, env):
    x = [env[i] for i in node.input]
    a = attrs_of(node)
    op = node.op_type
    if op == "Conv":
        a = take(a, {"kernel_shape": None, "pads": None, "strides": [1, 1], "dilations": [1, 1],
                     "group": 1, "auto_pad": b"NOTSET"}, node)
        if a["auto_pad"] not in (b"NOTSET", "NOTSET"):
            raise ValueError(f"Conv {node.name}: auto_pad {a['auto_pad']} not supported")
        w = x[1]
        if a["kernel_shape"] is not None and list(a["kernel_shape"]) != list(w.shape[2:]):
            raise ValueError(f"Conv {node.name}: kernel_shape {a['kernel_shape']} but weight {list(w.shape)}")
        bias = x[2] if len(x) > 2 else None
        return [F.conv2d(x[0], w, bias, stride=tuple(a["strides"]), padding=sym_pads(a["pads"], node),
                         dilation=tuple(a["dilations"]), groups=a["group"])]
    if op == "Relu":
        take(a, {}, node)
        return [torch.relu(x[0])]
    if op == "Sigmoid":
        take(a, {}, node)
        return [torch.sigmoid(x[0])]
    if op == "BatchNormalization":
        a = take(a, {"epsilon": 1e-5, "momentum": 0.9}, node)
        if len(node.output) != 1:
            raise ValueError(f"BatchNormalization {node.name}: training outputs not supported")
        scale, bias, mean, var = x[1:5]
        return [F.batch_norm(x[0], mean, var, weight=scale, bias=bias, training=False, eps=a["epsilon"])]
    if op == "MaxPool":
        a = take(a, {"kernel_shape": None, "strides": None, "pads": None, "ceil_mode": 0,
                     "dilations": [1, 1], "storage_order": 0, "auto_pad": b"NOTSET"}, node)
        if a["auto_pad"] not in (b"NOTSET", "NOTSET") or a["storage_order"] != 0 or len(node.output) != 1:
            raise ValueError(f"MaxPool {node.name}: auto_pad, storage_order or indices not supported")
        k = tuple(a["kernel_shape"])
        s = tuple(a["strides"]) if a["strides"] is not None else (1, 1)
        return [F.max_pool2d(x[0], k, stride=s, padding=sym_pads(a["pads"], node),
                             dilation=tuple(a["dilations"]), ceil_mode=bool(a["ceil_mode"]))]
    if op == "Flatten":
        a = take(a, {"axis": 1}, node)
        ax = a["axis"] % x[0].dim() if a["axis"] < 0 else a["axis"]
        lead = int(np.prod(x[0].shape[:ax])) if ax > 0 else 1
        return [x[0].reshape(lead, -1)]
    if op == "Reshape":
        take(a, {}, node)
        return [x[0].reshape([int(v) for v in x[1].tolist()])]
    if op == "Gemm":
        a = take(a, {"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 0}, node)
        A = x[0].t() if a["transA"] else x[0]
        B = x[1].t() if a["transB"] else x[1]
        y = a["alpha"] * (A @ B)
        if len(x) > 2:
            y = y + a["beta"] * x[2]
        return [y]
    raise ValueError(f"op {op} ({node.name}) not supported by this interpreter")


def main():
    args = sys.argv[1:]
    if len(args) < 4 or args[2] not in ("--pixels", "--images"):
        sys.exit(__doc__)
    path, out_path, mode = args[0], args[1], args[2]
    m = onnx.load(path)
    onnx.checker.check_model(m, full_check=True)
    # strict shape inference: every node's input shapes must fit its op, and
    # the output must come out [batch, labels] from the input's shape alone
    inferred = onnx.shape_inference.infer_shapes(m, check_type=True, strict_mode=True)
    out_dims = inferred.graph.output[0].type.tensor_type.shape.dim
    meta = {p.key: p.value for p in m.metadata_props}
    size, channels = int(meta["input_size"]), int(meta["input_channels"])
    if meta["input_layout"] != "NCHW" or meta["input_channel_order"] != "RGB" or channels != 3:
        raise ValueError(f"input {meta['input_layout']} {meta['input_channel_order']} {channels} channels: want NCHW RGB 3")
    scale = float(meta["input_scale"])
    mean = np.array(json.loads(meta["input_mean"]), dtype=np.float64)
    std = np.array(json.loads(meta["input_std"]), dtype=np.float64)
    labels = json.loads(meta["labels"])
    thresholds = json.loads(meta["thresholds"])
    if len(mean) != channels or len(std) != channels or len(thresholds) != len(labels):
        raise ValueError("metadata: mean, std, thresholds do not match the channels and labels")

    if mode == "--pixels":
        n = int(args[4])
        pix = np.fromfile(args[3], dtype=np.uint8).reshape(n, size, size, channels)
    else:
        from PIL import Image
        ims = [np.asarray(Image.open(p).convert("RGB"), dtype=np.uint8) for p in args[3:]]
        for p, im in zip(args[3:], ims):
            if im.shape != (size, size, channels):
                raise ValueError(f"{p}: {im.shape}, want {size}x{size}x{channels} (no resizing here)")
        pix = np.stack(ims)
        n = len(ims)
    x = (pix.astype(np.float64) * scale - mean) / std
    x = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))

    g = m.graph
    if len(g.input) != 1 or len(g.output) != 1:
        raise ValueError(f"graph has {len(g.input)} inputs and {len(g.output)} outputs, want 1 and 1")
    dims = g.input[0].type.tensor_type.shape.dim
    want = [None, channels, size, size]
    got = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    if got != want or not dims[0].dim_param:
        raise ValueError(f"input shape {got} (batch {dims[0].dim_param!r}), want [batch, {channels}, {size}, {size}]")
    odims = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in out_dims]
    if odims != [dims[0].dim_param, len(labels)]:
        raise ValueError(f"inferred output shape {odims}, want [{dims[0].dim_param!r}, {len(labels)}]")
    env = {t.name: torch.from_numpy(numpy_helper.to_array(t).astype(np.float64)) for t in g.initializer}
    env[g.input[0].name] = x
    ops = {}
    for node in g.node:
        outs = run_node(node, env)
        for name, v in zip(node.output, outs):
            env[name] = v
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    y = env[g.output[0].name]
    if tuple(y.shape) != (n, len(labels)):
        raise ValueError(f"output shape {tuple(y.shape)}, want ({n}, {len(labels)})")
    y.numpy().astype("<f4").tofile(out_path)
    json.dump({"images": n, "labels": len(labels), "nodes": len(g.node), "ops": ops,
               "opset": [o.version for o in m.opset_import if o.domain in ("", "ai.onnx")],
               "ir_version": m.ir_version, "producer": m.producer_name}, sys.stdout)
    print()


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
