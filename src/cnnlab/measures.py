"""Per-run measurements beyond test accuracy, for the chapter's claims (the claim presets,
configs/experiment/claim_*.yaml, that cnnlab claims judges): each copy's figures go into
metrics.json's per_seed rows, their mean over the copies that did not diverge beside
`accuracy`. Accuracies are fractions 0-1, as `accuracy` is.

- shift_accuracy {"0": acc, ..., "4": acc}: test accuracy with every test image moved k
  pixels right and k pixels down (a series: k steps later), the uncovered border filled with
  the background (a stored 0, normalised as the data are). Shift 0 is the test set itself.
- dead_units {layer: share}: per activation layer (named as `cnnlab inspect` names it), the
  share of its units whose output is never positive on any test image. A unit is one output
  element: a conv layer's channel at one position, a dense layer's feature (the neuron of
  Lu et al. 2019's dying ReLU). Read from each copy in eval mode, in float32.
- grad_ratio: the gradient norm of the first layer's weight over that of the last layer's,
  each summed over the first GRAD_STEPS training steps of a fresh run (a ratio of means: a
  step whose last-layer gradient is near 0 does not blow it up). Not measured on a resumed
  run, whose first steps are long past.
- epoch1_accuracy: test accuracy after epoch 1, from history.csv's row; None with a
  validation split (the test set is read once, at the end: history holds val_accuracy).
- train_accuracy, generalization_gap: accuracy on a fixed sample of TRAIN_SAMPLE training
  images (eval mode, at the end, the weights the test figures come from; every run of a
  training set draws the same sample: a seeded permutation), and train_accuracy - accuracy.
  train_accuracy_images says how many (all of them in a smaller training set).

Which of shift_accuracy, dead_units and train_accuracy a run takes is config `measures`
(config.AFTER_TRAINING, all by default): each is passes over data after training, so a claim
preset takes only what its claim is judged on. A measurement not taken is absent (None).

Training is not slowed: the gradient norms are a few device ops on the first steps (no
host sync), everything else runs after training. Nothing here knows Hydra.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

import torch
from torch import nn

from cnnlab.config import AFTER_TRAINING
from cnnlab.data import to_device
from cnnlab.layers import ACTIVATIONS

SHIFTS = range(5)  # pixels: 0 (the test set) to 4; claims 2 and 3 judge 2-4 (shift_drop)
# steps whose gradients grad_ratio averages: 3,200 images at batch 64, inside epoch 1 on
# MNIST, where a vanishing gradient shows before Adam's scaling has evened the layers out
GRAD_STEPS = 50
# training images train_accuracy reads: a generalisation gap of a point or less, at a
# binomial standard error of about 0.1 point on 10,000 images (the same images in every run,
# so a paired comparison shares them), for a sixth of a pass over MNIST's 60,000
TRAIN_SAMPLE = 10_000
ACTIVATION_TYPES = tuple({type(make(0.05)) for make in ACTIVATIONS.values()})
WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Linear)


def shift(x: torch.Tensor, k: int) -> torch.Tensor:
    """x [N, C, *spatial] moved k right along the last axis and, for images, k down along
    the one before; zeros where nothing moved in."""
    if k == 0:
        return x
    out = torch.zeros_like(x)
    if x.dim() == 4:
        out[..., k:, k:] = x[..., :-k, :-k]
    else:
        out[..., k:] = x[..., :-k]
    return out


def shift_accuracies(evaluate: Callable, x_raw: torch.Tensor, y, device, normalize) -> list:
    """Per copy, {"0": accuracy, ...} over SHIFTS; `evaluate(x, y)` gives an Evaluation per
    copy, `x_raw` is the test set as loaded (shifted, then normalised as the data are)."""
    per_shift = {
        str(k): [e.accuracy for e in evaluate(to_device(shift(x_raw, k), device, normalize), y)]
        for k in SHIFTS
    }
    copies = len(next(iter(per_shift.values())))
    return [{k: accuracies[i] for k, accuracies in per_shift.items()} for i in range(copies)]


@torch.no_grad()
def dead_units(model: nn.Module, x: torch.Tensor, batch_size: int) -> dict[str, float]:
    """Per activation layer of `model`, the share of units never positive on `x`."""
    highest: dict[str, torch.Tensor] = {}

    def keep_max(name: str):
        def hook(layer, inputs, output):
            top = output.float().amax(0)
            highest[name] = top if name not in highest else torch.maximum(highest[name], top)

        return hook

    hooks = [
        m.register_forward_hook(keep_max(name))
        for name, m in model.named_modules()
        if isinstance(m, ACTIVATION_TYPES)
    ]
    training = model.training
    model.eval()
    try:
        for i in range(0, len(x), batch_size):
            model(x[i : i + batch_size])
    finally:
        model.train(training)
        for h in hooks:
            h.remove()
    return {name: float((top <= 0).float().mean()) for name, top in highest.items()}


def weight_names(model: nn.Module) -> tuple[str, str]:
    """The names of the first and the last conv or dense layer's weight, in forward order."""
    names = [f"{name}.weight" for name, m in model.named_modules() if isinstance(m, WEIGHTED)]
    return names[0], names[-1]


class GradProbe:
    """Sums the first and last layer's gradient norms, per copy, over the first `steps`
    training steps (wrap() the run's step). The gradients are read after the step, where
    they still are until the next step's zero_grad."""

    def __init__(self, model: nn.Module, names: tuple[str, str], copies: int, steps=GRAD_STEPS):
        params = dict(model.named_parameters())
        self.weights = [params[name] for name in names]
        self.copies, self.steps, self.taken = copies, steps, 0
        self.sums = torch.zeros(2, copies, device=self.weights[0].device)

    def norms(self, grad: torch.Tensor) -> torch.Tensor:
        if self.copies == 1:
            return grad.float().norm().reshape(1)
        return grad.float().flatten(1).norm(dim=1)  # a stack: [copies, ...]

    def wrap(self, step: Callable) -> Callable:
        def probed(idx: torch.Tensor) -> torch.Tensor:
            loss = step(idx)
            if self.taken < self.steps:
                self.taken += 1
                self.sums += torch.stack([self.norms(w.grad) for w in self.weights])
            return loss

        return probed

    def ratios(self) -> list[float | None]:
        if not self.taken:
            return [None] * self.copies
        first, last = self.sums.tolist()
        return [a / b if b > 0 else None for a, b in zip(first, last, strict=True)]


def probe_first_steps(state, training) -> GradProbe | None:
    """A GradProbe around the run's step (loop.Training), for a fresh run (None for a
    resumed one)."""
    if state.images_seen:
        return None
    probe = GradProbe(state.model, weight_names(training.copy(0)), len(state.seeds))
    training.step = probe.wrap(training.step)
    return probe


def epoch1_accuracies(history: list[dict], seeds: list[int]) -> list[float | None]:
    row = {r["seed"]: r.get("test_accuracy") for r in history if r["epoch"] == 1}
    return [row.get(seed) for seed in seeds]


# what measure() gives each copy: metrics.json's keys for them (their means over the copies)
MEASUREMENTS = (
    "shift_accuracy",
    "dead_units",
    "grad_ratio",
    "epoch1_accuracy",
    "train_accuracy",
    "train_accuracy_images",
    "generalization_gap",
)


def train_sample(n: int) -> torch.Tensor:
    """The indices of the training images train_accuracy reads: the same for every run of an
    n-image training set."""
    if n <= TRAIN_SAMPLE:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(0))[:TRAIN_SAMPLE]


def measure(
    run: tuple, evaluations: list, eval_batch_size: int, probe, taken=AFTER_TRAINING
) -> list[dict]:
    """Each copy's measurements (per state.seeds; a diverged copy's: {}). `run` is (state,
    training, dataset as loaded, tensors on the device, input shape) after training;
    `evaluations`: each copy's test Evaluation; `taken`: which of config.AFTER_TRAINING."""
    state, training, dataset, tensors, _ = run
    device = tensors.x_test.device
    copies = range(len(state.seeds))
    shifted, train = [None] * len(copies), [None] * len(copies)
    if "shift_accuracy" in taken:
        shifted = shift_accuracies(
            training.evaluate, dataset.x_test, tensors.y_test, device, dataset.normalize
        )
    if "train_accuracy" in taken:
        picked = train_sample(len(tensors.y_train)).to(tensors.y_train.device)
        train = training.evaluate(tensors.x_train[picked], tensors.y_train[picked])
    ratios = probe.ratios() if probe is not None else [None] * len(state.seeds)
    first = epoch1_accuracies(state.history, state.seeds)
    rows = []
    for i, seed in enumerate(state.seeds):
        if seed in state.diverged:
            rows.append({})
            continue
        row = {"grad_ratio": ratios[i], "epoch1_accuracy": first[i]}
        if shifted[i] is not None:
            row["shift_accuracy"] = shifted[i]
        if "dead_units" in taken:
            row["dead_units"] = dead_units(training.copy(i), tensors.x_test, eval_batch_size)
        if train[i] is not None:
            row["train_accuracy"] = train[i].accuracy
            row["train_accuracy_images"] = len(picked)
            row["generalization_gap"] = train[i].accuracy - evaluations[i].accuracy
        rows.append(row)
    return rows


def mean_of(rows: list[dict]) -> dict:
    """The copies' mean of each measurement (per shift, per layer for the mappings)."""
    rows = [row for row in rows if row]
    if not rows:
        return {}

    def mean(values):
        values = [v for v in values if v is not None]
        if len(set(values)) == 1:  # one figure for all (train_accuracy_images): kept as is
            return values[0]
        return statistics.fmean(values) if values else None

    out = {}
    for key, value in rows[0].items():
        if isinstance(value, dict):
            out[key] = {k: mean(row[key][k] for row in rows) for k in value}
        else:
            out[key] = mean(row[key] for row in rows)
    return out
