"""cnnlab.layers: the name -> layer tables, padding arithmetic and the conv block.

Issue 23: model.branches, Inception's multi-scale stage (parallel convs, concatenated)."""

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import QUICK, cnnlab_train, metrics_of
from torch import nn

from cnnlab import cli, hydra_app
from cnnlab.config import Activation, LeNetConfig, Norm, Pool
from cnnlab.layers import (
    ACTIVATIONS,
    NORMS,
    POOLS,
    Branches,
    LocalResponseNorm,
    branch_shares,
    conv_block,
    conv_out,
    lookup,
    resolve_padding,
    same_padding,
)
from cnnlab.models import build_model, summary
from cnnlab.stack import stack_models

BRANCHED = ["model=lenet5", "model.padding=same", "model.branches=[1,3,5]"]


def inspected(capsys, *overrides):
    assert cli.main(["inspect", *overrides, "--format", "json"]) == 0
    info = json.loads(capsys.readouterr().out)
    return info["params"], info["macs"], info["receptive_field"]


@pytest.mark.parametrize("kernel_size", [1, 3, 5, 7, (3, 5), (5, 1)])
@pytest.mark.parametrize("dilation", [1, 2, 3])
def test_same_padding_keeps_the_size_for_odd_kernels(kernel_size, dilation):
    padding = same_padding(kernel_size, dilation)
    assert conv_out((28, 27), kernel_size, 1, padding, dilation) == (28, 27)
    # and torch agrees with conv_out
    conv = nn.Conv2d(1, 1, kernel_size, 1, padding, dilation)
    assert conv(torch.zeros(1, 1, 28, 27)).shape[-2:] == (28, 27)


def test_same_padding_is_per_axis():
    assert same_padding((3, 5), 2) == (2, 4)
    assert same_padding(5, (1, 3)) == (2, 6)


def test_resolve_padding():
    assert resolve_padding("same", 5, 2) == (4, 4)
    assert resolve_padding("valid", 5, 2) == (0, 0)
    assert resolve_padding(1, 5, 1) == (1, 1)
    assert resolve_padding((1, 2), 5, 1) == (1, 2)


@pytest.mark.parametrize(
    "size, k, s, p, d, expected",
    [
        ((28, 28), 5, 1, 0, 1, (24, 24)),
        ((28, 28), 5, 2, 0, 1, (12, 12)),
        ((28, 28), 5, 2, 2, 1, (14, 14)),
        ((28, 28), 5, 1, 0, 2, (20, 20)),
        ((24, 24), 2, 2, 0, 1, (12, 12)),  # the 2x2 pool
        ((32, 28), (3, 5), 1, 0, 1, (30, 24)),
    ],
)
def test_conv_out_matches_torch(size, k, s, p, d, expected):
    assert conv_out(size, k, s, p, d) == expected
    assert nn.Conv2d(1, 1, k, s, p, d)(torch.zeros(1, 1, *size)).shape[-2:] == expected


def test_conv_block_bias_off_when_a_norm_with_a_shift_follows():
    plain = conv_block(3, 8, 3)
    assert [type(m) for m in plain] == [nn.Conv2d]
    assert plain[0].bias is not None

    for name in ("batch", "layer", "instance", "group"):
        block = conv_block(3, 8, 3, norm=lambda c, n=name: NORMS[n](c, 2), activation=nn.ReLU)
        assert [type(m) for m in block][0] is nn.Conv2d
        assert isinstance(block[-1], nn.ReLU)
        assert block[0].bias is None, name
        assert block[1].bias is not None, name  # the norm's shift replaces the conv bias


def test_conv_block_keeps_the_bias_before_lrn():
    # LRN has no learnable shift: dropping the conv bias would leave the model without one
    block = conv_block(3, 8, 3, norm=lambda c: NORMS["lrn"](c, 2))
    assert isinstance(block[1], LocalResponseNorm)
    assert block[0].bias is not None


def test_conv_block_factorize():
    block = conv_block(4, 8, (3, 5), stride=2, padding=(1, 2), dilation=1, factorize=True)
    first, second = block[0], block[1]
    assert first.kernel_size == (3, 1) and first.bias is None
    assert second.kernel_size == (1, 5) and second.bias is not None
    assert (first.in_channels, first.out_channels) == (4, 8)
    assert (second.in_channels, second.out_channels) == (8, 8)
    assert len(block) == 2  # no norm or activation between the pair
    # same output as an unfactorized conv with these settings
    x = torch.zeros(1, 4, 28, 28)
    assert block(x).shape == nn.Conv2d(4, 8, (3, 5), 2, (1, 2))(x).shape
    # a 1 x k kernel has nothing to factorize
    assert len(conv_block(4, 8, (1, 5), factorize=True)) == 1


@pytest.mark.parametrize("table, enum", [(ACTIVATIONS, Activation), (POOLS, Pool), (NORMS, Norm)])
def test_tables_cover_the_config_enums_exactly(table, enum):
    assert set(table) == {member.value for member in enum}
    for member in enum:
        lookup(table, member, "key")  # StrEnum members find their entries


def test_lookup_error_names_the_key_and_the_allowed_values():
    with pytest.raises(ValueError) as e:
        lookup(ACTIVATIONS, "swish", "model.activation")
    message = str(e.value)
    assert "model.activation" in message and "swish" in message
    for name in ACTIVATIONS:
        assert name in message


def test_activation_table():
    assert isinstance(ACTIVATIONS["relu"](0.1), nn.ReLU)
    leaky = ACTIVATIONS["leaky_relu"](0.05)
    assert isinstance(leaky, nn.LeakyReLU) and leaky.negative_slope == 0.05
    assert isinstance(ACTIVATIONS["gelu"](0.1), nn.GELU)


def test_layer_norm_normalises_over_c_h_w_per_sample():
    torch.manual_seed(0)
    norm = NORMS["layer"](6, 2)
    x = torch.randn(4, 6, 5, 5) * torch.arange(1.0, 7.0).view(1, 6, 1, 1) + 3.0
    x[1] *= 10  # a sample on another scale
    y = norm(x)
    per_sample = y.flatten(1)
    assert torch.allclose(per_sample.mean(1), torch.zeros(4), atol=1e-5, rtol=0)
    assert torch.allclose(per_sample.std(1, unbiased=False), torch.ones(4), atol=1e-3, rtol=0)
    # not per channel (that would be instance norm): channels keep their relative scale
    assert y[0].flatten(1).std(1).max() > 2 * y[0].flatten(1).std(1).min()
    # each sample on its own: changing one sample leaves the others' outputs alone
    x2 = x.clone()
    x2[0] += 100
    assert torch.allclose(norm(x2)[1:], y[1:])


def test_group_norm_uses_groups():
    norm = NORMS["group"](8, 4)
    assert isinstance(norm, nn.GroupNorm) and norm.num_groups == 4 and norm.num_channels == 8


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


@pytest.mark.parametrize("shape", [(4, 6, 9, 9), (3, 16, 5, 5), (2, 3, 11), (5, 1, 7, 7)])
def test_local_response_norm_is_torchs(shape):
    # the fast LRN must give nn.LocalResponseNorm's numbers and gradients (AlexNet's
    # settings), for channels fewer than the window and for 1-D maps too
    x = (3 * torch.randn(*shape)).requires_grad_()
    grad = torch.randn(*shape)
    ours, theirs = LocalResponseNorm(), nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0)
    y, y0 = ours(x), theirs(x)
    (g,), (g0,) = (torch.autograd.grad(out, x, grad) for out in (y, y0))
    torch.testing.assert_close(y, y0, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g, g0, rtol=1e-5, atol=1e-6)
