"""Choosing on validation: each copy's best epoch (the highest validation accuracy so far),
its weights when trainer.keep=best, and the patience that stops a run whose validation
accuracy no longer improves. The test set plays no part in any of it: a run reads the test
set once, at the end, with the weights chosen here.

A stack of seeds (stack.py) holds every copy's weights as [copies, ...] tensors, so copy i's
best weights are slice i of each; one seed's are the tensors themselves. Everything here is
tensors and plain values, so it travels in the checkpoint (a resume goes on with the best
so far, its epoch and the patience counter).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class Selection:
    copies: int
    keep_weights: bool  # trainer.keep=best: hold the best epoch's weights of every copy
    best_accuracy: list[float] = field(default_factory=list)  # per copy; -1: no epoch yet
    best_epoch: list[int | None] = field(default_factory=list)
    stale: list[int] = field(default_factory=list)  # epochs since the copy's best
    weights: dict[str, torch.Tensor] | None = None  # the training model's state dict

    def __post_init__(self):
        self.best_accuracy = self.best_accuracy or [-1.0] * self.copies
        self.best_epoch = self.best_epoch or [None] * self.copies
        self.stale = self.stale or [0] * self.copies

    def update(self, epoch: int, accuracies: list[float], model: nn.Module, live: list[bool]):
        """After an epoch: each live copy's validation accuracy. A tie keeps the earlier
        epoch (the same accuracy after more training is no better)."""
        better = [
            i
            for i, (acc, ok) in enumerate(zip(accuracies, live, strict=True))
            if ok and acc > self.best_accuracy[i]
        ]
        for i in range(self.copies):
            if i in better:
                self.best_accuracy[i], self.best_epoch[i], self.stale[i] = accuracies[i], epoch, 0
            elif live[i]:
                self.stale[i] += 1
        if self.keep_weights and better:
            self._keep(model.state_dict(), better)

    def _keep(self, state: dict[str, torch.Tensor], copies: list[int]) -> None:
        if self.weights is None:
            self.weights = {k: v.detach().clone() for k, v in state.items()}
            return
        for key, value in state.items():
            if self.copies == 1:
                self.weights[key].copy_(value)
            else:
                for i in copies:
                    self.weights[key][i].copy_(value[i])

    def improved_at(self, epoch: int) -> bool:
        """Some copy's best epoch is `epoch` (its kept weights changed then)."""
        return epoch in self.best_epoch

    def exhausted(self, patience: int | None, live: list[bool]) -> bool:
        """True once no live copy has improved for `patience` epochs."""
        waiting = [s for s, ok in zip(self.stale, live, strict=True) if ok]
        return patience is not None and bool(waiting) and min(waiting) >= patience

    def apply(self, model: nn.Module) -> None:
        """Put the kept weights (each copy's best epoch) into the model."""
        if self.weights is not None:
            model.load_state_dict(self.weights)

    def figures(self, seeds: list[int], live: list[bool], last: list[float | None]) -> dict:
        """metrics.json's validation figures: the validation accuracy of the weights kept
        (the best epoch's with keep=best, else the last epoch's: `last`) and the best epoch,
        per copy (per_seed, by seed) and at the top: the mean accuracy, and the last epoch
        at which any copy still improved."""
        kept = self.best_accuracy if self.keep_weights else last
        per_seed = {
            seed: {"val_accuracy": kept[i], "best_epoch": self.best_epoch[i]}
            for i, seed in enumerate(seeds)
            if live[i] and self.best_epoch[i] is not None
        }
        rows = per_seed.values()
        return {
            "val_accuracy": statistics.fmean(r["val_accuracy"] for r in rows) if rows else None,
            "best_epoch": max((r["best_epoch"] for r in rows), default=None),
            "per_seed": per_seed,
        }

    def state_dict(self) -> dict:
        return {
            "best_accuracy": list(self.best_accuracy),
            "best_epoch": list(self.best_epoch),
            "stale": list(self.stale),
            "weights": self.weights,
        }

    def load_state_dict(self, state: dict) -> None:
        self.best_accuracy = list(state["best_accuracy"])
        self.best_epoch = list(state["best_epoch"])
        self.stale = list(state["stale"])
        weights = state["weights"]
        if self.keep_weights and weights is not None:
            self.weights = {k: v.clone() for k, v in weights.items()}
