"""What a model is made of before it trains: per layer the output shape, parameters,
multiply-accumulates (MACs), receptive field and jump.

The receptive field (RF) of a unit is the size of the input patch it can see; the jump is
the input-pixel distance between neighbouring units of a layer. Axis by axis, each conv
or pool turns the field of its input into that of its output:

    rf_out = rf_in + (kernel - 1) * dilation * jump_in        jump_out = jump_in * stride

Padding moves the patch but never changes its size. Where two paths join (a residual
stage) the larger field counts. After a flatten, a global pool or a dense layer every
unit sees the whole input. The formulas are written over the number of spatial axes, so
1-D models (Conv1d on channels x length) get the same treatment as 2-D ones.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import math

import torch
from torch import nn

from cnnlab.layers import Branches
from cnnlab.models import Residual, count_params

CONVS = (nn.Conv1d, nn.Conv2d)
POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d)
# layers whose kernel, stride and dilation grow the field and the jump
WINDOWED = CONVS + POOLS
# layers after which every unit sees the whole input
WHOLE_INPUT = (
    nn.Flatten,
    nn.Linear,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
)
COLUMNS = ["name", "type", "kernel", "output_shape", "params", "macs", "receptive_field", "jump"]
FOOTER = [
    "RF (receptive field) and jump in input pixels; 'all': the whole input. The model's RF",
    "is that of its last layer before flatten or global pooling. MACs: multiply-accumulates",
    "per input of conv and linear layers; pooling, activations and norms count 0.",
]

# a field: (rf, jump), one int per spatial axis; jump None once units see the whole input
Field = tuple[tuple[int, ...], tuple[int, ...] | None]


def per_axis(value, n: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, tuple | list) else (value,) * n


def layer_field(layer: nn.Module, field: Field, whole: tuple[int, ...]) -> Field:
    """The field of `layer`'s output, given the field of its input."""
    rf, jump = field
    if jump is None or isinstance(layer, WHOLE_INPUT):
        return whole, None
    if isinstance(layer, WINDOWED):
        n = len(rf)
        k, s = per_axis(layer.kernel_size, n), per_axis(layer.stride, n)
        d = per_axis(getattr(layer, "dilation", 1), n)  # average pools have none
        rf = tuple(r + (k[i] - 1) * d[i] * jump[i] for i, r in enumerate(rf))
        jump = tuple(j * s[i] for i, j in enumerate(jump))
    return rf, jump


def widest(a: Field, b: Field, whole: tuple[int, ...]) -> Field:
    """Where two paths add up, a unit sees what either path sees."""
    if a[1] is None or b[1] is None:
        return whole, None
    return tuple(map(max, a[0], b[0])), tuple(map(max, a[1], b[1]))


def leaf_fields(module: nn.Module, name: str, field: Field, whole, out: dict) -> Field:
    """Walk `module` in the order it runs, putting each leaf layer's output field in `out`.

    A container is taken to run its children in the order they were registered (true of
    every cnnlab model); a Residual runs body and shortcut side by side, then its act.
    """

    def inner(child: str) -> str:
        return f"{name}.{child}" if name else child

    if isinstance(module, Residual):
        body = leaf_fields(module.body, inner("body"), field, whole, out)
        shortcut = leaf_fields(module.shortcut, inner("shortcut"), field, whole, out)
        return leaf_fields(module.act, inner("act"), widest(body, shortcut, whole), whole, out)
    if isinstance(module, Branches):  # side by side: the stage sees what its widest branch sees
        fields = [leaf_fields(b, inner(n), field, whole, out) for n, b in module.named_children()]
        return functools.reduce(lambda a, b: widest(a, b, whole), fields)
    children = list(module.named_children())
    if not children:
        out[name] = field = layer_field(module, field, whole)
        return field
    for child_name, child in children:
        field = leaf_fields(child, inner(child_name), field, whole, out)
    return field


def collapse(values: tuple[int, ...] | None):
    """One int when every axis agrees (always, in 1-D), else a list per axis."""
    if values is None:
        return None
    return values[0] if len(set(values)) == 1 else list(values)


def kernel_text(layer: nn.Module, n: int) -> str | None:
    """'5x5', '5x1', '2x2 s2', '5x5 d2': the window of a conv or pool over n axes."""
    if not isinstance(layer, WINDOWED):
        return None
    return window_text(layer.kernel_size, layer.stride, getattr(layer, "dilation", 1), n)


def window_text(kernel, stride, dilation, n: int, words: bool = False) -> str:
    """'5x5 s2 d2', or with `words` '5x5, stride 2, dilation 2' (for pictures' titles): a
    window over n axes; stride and dilation only where they are not 1."""
    parts = ["x".join(map(str, per_axis(kernel, n)))]
    for letter, attr, v in (("s", "stride", stride), ("d", "dilation", dilation)):
        v = collapse(per_axis(v, n))
        if v != 1:
            v = v if isinstance(v, int) else "x".join(map(str, v))
            parts.append(f"{attr} {v}" if words else f"{letter}{v}")
    return (", " if words else " ").join(parts)


def inspect_model(model: nn.Module, input_shape: tuple) -> dict:
    """Parameters, MACs and receptive field of `model` on inputs of `input_shape`
    (channels, *spatial), in total and per leaf layer, in the order the layers run.

    Nothing here reads a weight, so a model built on the meta device (as the check
    before the run builds it) gives the same answer as one with real weights, for no memory.
    """
    shapes, macs = traced_forward(model, input_shape)
    spatial = tuple(input_shape[1:])
    fields: dict[str, Field] = {}
    leaf_fields(model, "", ((1,) * len(spatial), (1,) * len(spatial)), spatial, fields)
    root = type(model).__name__
    layers = []
    receptive_field = collapse(spatial)
    before_flatten = True
    for name, (rf, jump) in fields.items():
        layer = model.get_submodule(name)
        if jump is None:
            before_flatten = False
        elif before_flatten:
            receptive_field = collapse(rf)
        layers.append(
            {
                "name": name or root,
                "type": type(layer).__name__,
                "kernel": kernel_text(layer, len(spatial)),
                "output_shape": shapes.get(layer),
                "params": count_params(layer),
                "macs": macs.get(layer, 0),
                "receptive_field": collapse(rf),
                "jump": collapse(jump),
            }
        )
    return {
        "input_shape": list(input_shape),
        "params": count_params(model),
        "macs": sum(macs.values()),
        "receptive_field": receptive_field,
        "layers": layers,
    }


def layer_macs(layer: nn.Module, output: torch.Tensor) -> int:
    """The multiply-accumulates of one call of a conv or linear layer that gave `output`:
    each output value sums in_channels / groups x kernel elements products (a conv) or
    in_features (a linear layer); bias additions are not counted. The numbers are
    torch.utils.flop_counter's halved (tests/test_inspection.py), counted here from the
    shapes because its FlopCounterMode imports torch._dynamo (1.7 s of a run's start)."""
    if isinstance(layer, CONVS):
        return output.numel() * layer.in_channels // layer.groups * math.prod(layer.kernel_size)
    if isinstance(layer, nn.Linear):
        return output.numel() * layer.in_features
    return 0


def traced_forward(model: nn.Module, input_shape: tuple):
    """The output shape (without the batch axis) of every module, and the MACs of each
    conv and linear layer, after one forward pass of a zero batch of one on the model's
    device and dtype, in eval mode (batch norm's running statistics stay untouched)."""
    first = next(model.parameters(), None)
    x = torch.zeros(
        1,
        *input_shape,
        device=first.device if first is not None else None,
        dtype=first.dtype if first is not None else None,
    )
    shapes: dict[nn.Module, list[int]] = {}
    macs: dict[nn.Module, int] = {}

    def record(layer, inputs, output):
        if isinstance(output, torch.Tensor):
            shapes[layer] = list(output.shape[1:])
            macs[layer] = macs.get(layer, 0) + layer_macs(layer, output)

    hooks = [m.register_forward_hook(record) for m in model.modules()]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return shapes, macs


# ---- output ------------------------------------------------------------------------------


def axes_text(value) -> str:
    if value is None:
        return ""
    return "x".join(map(str, value)) if isinstance(value, list) else str(value)


def row_texts(layer: dict) -> list[str]:
    rf = axes_text(layer["receptive_field"]) if layer["jump"] is not None else "all"
    return [
        layer["name"],
        layer["type"],
        layer["kernel"] or "",
        axes_text(layer["output_shape"]),
        f"{layer['params']:,}",
        f"{layer['macs']:,}",
        rf,
        axes_text(layer["jump"]),
    ]


def format_inspection(info: dict, fmt: str = "table") -> str:
    """`info` from inspect_model as table | md | csv | json. Table and md end with the
    totals and a footer on what the columns count."""
    if fmt == "json":
        return json.dumps(info, indent=2)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(COLUMNS)
        for layer in info["layers"]:
            writer.writerow([axes_text(layer[column]) for column in COLUMNS])
        return buf.getvalue().rstrip("\n")
    if fmt not in ("table", "md"):
        raise ValueError(f"format={fmt!r} is not allowed: choose one of table, md, csv, json")
    header = ["layer", "type", "kernel", "output", "params", "MACs", "RF", "jump"]
    first = ["input", "", "", axes_text(info["input_shape"]), "", "", "1", "1"]
    total = [
        "total",
        "",
        "",
        "",
        f"{info['params']:,}",
        f"{info['macs']:,}",
        axes_text(info["receptive_field"]),
        "",
    ]
    rows = [first, *(row_texts(layer) for layer in info["layers"])]
    numeric = {4, 5, 6, 7}  # right-aligned columns
    if fmt == "md":
        rule = ["---:" if i in numeric else "---" for i in range(len(header))]
        lines = [f"| {' | '.join(r)} |" for r in [header, rule, *rows]]
        lines.append(f"| {' | '.join(f'**{t}**' if t else '' for t in total)} |")
        return "\n".join([*lines, "", " ".join(FOOTER)])
    widths = [max(len(r[i]) for r in [header, *rows, total]) for i in range(len(header))]

    def line(cells):
        return "  ".join(
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    rule = "-" * len(line(header))
    return "\n".join([line(header), rule, *map(line, rows), rule, line(total), *FOOTER])


def conv_stages(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules whose outputs are a model's feature maps, in order: each conv block
    (a conv with its norm and activation), a whole residual stage (its activation comes
    after the shortcut is added), a multi-scale conv's block (its branches' maps
    concatenated), or a bare conv where no block holds it."""
    modules = dict(model.named_modules())
    stages: dict[str, nn.Module] = {}
    for name, layer in modules.items():
        if not isinstance(layer, CONVS):
            continue
        parts = name.split(".")
        ancestors = [".".join(parts[:i]) for i in range(1, len(parts))]
        residual = next((a for a in ancestors if isinstance(modules[a], Residual)), None)
        branches = next((a for a in ancestors if isinstance(modules[a], Branches)), None)
        parent = modules[ancestors[-1]] if ancestors else None
        if residual is not None:
            stages[residual] = modules[residual]
        elif branches is not None:
            block = branches.rpartition(".")[0]  # the Sequential of branches, norm, activation
            starts = block and isinstance(modules[block], nn.Sequential)
            key = block if starts and modules[block][0] is modules[branches] else branches
            stages[key] = modules[key]
        elif is_conv_block(parent):
            stages[ancestors[-1]] = parent
        else:
            stages[name] = layer
    return list(stages.items())


def is_conv_block(module: nn.Module | None) -> bool:
    """A Sequential of single layers with nothing in it that pools or flattens."""
    return isinstance(module, nn.Sequential) and all(
        not list(child.children()) and not isinstance(child, POOLS + WHOLE_INPUT)
        for child in module.children()
    )
