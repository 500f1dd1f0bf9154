"""cnnlab.layers: the name -> layer tables, padding arithmetic and the conv block."""

import pytest
import torch
from torch import nn

from cnnlab.config import Activation, Norm, Pool
from cnnlab.layers import (
    ACTIVATIONS,
    NORMS,
    POOLS,
    conv_block,
    conv_out,
    lookup,
    resolve_padding,
    same_padding,
)


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
    assert isinstance(block[1], nn.LocalResponseNorm)
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
