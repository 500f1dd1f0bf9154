"""The chapter's worked example on real data: one epoch of each model on Fashion-MNIST."""

import json
from pathlib import Path

import pytest

DEBIAN = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not DEBIAN.is_dir(), reason="Debian's dataset-fashion-mnist not installed")
@pytest.mark.parametrize("model, params", [("lenet5", 44_426), ("mlp", 101_770)])
def test_one_epoch_on_fashion_mnist_reaches_80_percent(tmp_path, run_cli, model, params):
    run = tmp_path / "run"
    r = run_cli(
        tmp_path,
        "train",
        f"model={model}",
        "data=fashion_mnist",
        "trainer.epochs=1",
        "trainer.progress=false",
        f"hydra.run.dir={run}",
    )
    assert r.returncode == 0, r.stderr[-2000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["params"] == params
    assert sum(c["support"] for c in metrics["per_class"].values()) == 10_000  # the full test set
    assert metrics["accuracy"] >= 0.80, metrics["accuracy"]
