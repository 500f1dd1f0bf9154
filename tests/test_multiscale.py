"""Issue 23: model.branches, Inception's multi-scale stage (parallel convs, concatenated)."""

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import QUICK, cnnlab_train, metrics_of

from cnnlab import cli, hydra_app
from cnnlab.config import LeNetConfig
from cnnlab.layers import Branches, branch_shares
from cnnlab.models import build_model, summary
from cnnlab.stack import stack_models

pytestmark = pytest.mark.usefixtures("one_thread")

BRANCHED = ["model=lenet5", "model.padding=same", "model.branches=[1,3,5]"]


def inspected(capsys, *overrides):
    assert cli.main(["inspect", *overrides, "--format", "json"]) == 0
    info = json.loads(capsys.readouterr().out)
    return info["params"], info["macs"], info["receptive_field"]


def test_inspect_numbers_of_the_issue(capsys):
    assert inspected(capsys, *BRANCHED) == (106_362, 366_856, 16)
    assert inspected(capsys, "model=lenet5", "model.padding=same") == (107_786, 693_000, 16)


def test_inspect_rows_per_branch(capsys):
    assert cli.main(["inspect", *BRANCHED, "--format", "json"]) == 0
    kernels = [r["kernel"] for r in json.loads(capsys.readouterr().out)["layers"] if r["kernel"]]
    assert kernels[:3] == ["1x1", "3x3", "5x5"] and kernels[4:7] == ["1x1", "3x3", "5x5"]


def test_shares_and_summary():
    assert branch_shares(16, 3) == [6, 5, 5] and branch_shares(6, 4) == [2, 2, 1, 1]
    model = build_model(LeNetConfig(padding="same", branches=[1, 3, 5]), (1, 28, 28), 10)
    assert "incept6[1,3,5]" in summary(model) and "incept16[1,3,5]" in summary(model)
    pooled = build_model(
        LeNetConfig(padding="same", branches=[1, 3], branch_pool=True, bottleneck=4),
        (1, 28, 28),
        10,
    )
    assert "incept16[1,3,pool]" in summary(pooled)
    assert pooled(torch.randn(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("dims", [1, 2])
def test_stage_equals_separate_convs_by_hand(dims):
    torch.manual_seed(0)
    shape = (3, 20) if dims == 1 else (3, 12, 12)
    model = build_model(LeNetConfig(padding="same", branches=[1, 3, 5]), shape, 4)
    stage = next(m for m in model.modules() if isinstance(m, Branches))
    x = torch.randn(2, *shape)
    conv = F.conv1d if dims == 1 else F.conv2d
    by_hand = torch.cat(
        [conv(x, b[0].weight, b[0].bias, padding=b[0].kernel_size[0] // 2) for b in stage], 1
    )
    assert by_hand.shape[1] == 6
    torch.testing.assert_close(stage(x), by_hand)


def test_seeds_stacked_match_each_model():
    torch.manual_seed(0)
    cfg = LeNetConfig(padding="same", branches=[1, 3, 5], branch_pool=True, bottleneck=3)
    models = [build_model(cfg, (2, 16, 16), 5) for _ in range(3)]
    stacked = stack_models(models)
    x = torch.randn(4, 2, 16, 16)
    out = stacked(x.repeat(1, 3, 1, 1))
    for i, m in enumerate(models):
        torch.testing.assert_close(out[i], m(x))


@pytest.mark.parametrize("shape", ["[1,28,28]", "[1,64]"])
def test_train_seeds_together(tmp_path, shape):
    run = tmp_path / "run"
    assert cnnlab_train(run, *QUICK, f"data.shape={shape}", *BRANCHED[1:], "seeds=2") == 0
    assert metrics_of(run)


def test_kernels_experiment_has_the_multiscale_job():
    jobs = hydra_app.composed_jobs(["experiment=kernels"], multirun=True)
    assert [j.model.branches for j in jobs].count([1, 3, 5]) == 1


@pytest.mark.parametrize(
    "bad, word",
    [
        (["model.factorize=true", "model.branches=[1,3,5]"], "model.factorize"),
        (["model.branches=[2]"], "model.branches"),
        (["model.branches=[]"], "model.branches"),
        (["model.channels=[2,16]", "model.branches=[1,3,5]"], "model.branches"),
    ],
)
def test_refusals(tmp_path, capfd, bad, word):
    run = tmp_path / "run"
    assert cnnlab_train(run, *QUICK, *bad) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and word in err[0], err
    assert not run.exists()
