"""Issue 21: each picture read off the figure as a reader sees it: titled with reader's names
(`conv 1: 6 filters, 5x5`, not `features.0.0.0`), labelled, nothing clipped, no canvas
left empty, whole epochs on a loss curve."""

from __future__ import annotations

import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from cnnlab import pictures, report
from cnnlab.config import LeNetConfig, MLPConfig
from cnnlab.models import build_model

MNIST = (1, 28, 28)
SERIES = (1, 96)


@pytest.fixture
def drawn(monkeypatch) -> list[Figure]:
    """Every figure saved, drawn (so that text has its place) instead of written."""
    figures = []

    def keep(fig, path, **kw):
        FigureCanvasAgg(fig).draw()  # as savefig renders it
        figures.append(fig)

    monkeypatch.setattr(Figure, "savefig", keep)
    return figures


def titles(fig: Figure) -> list[str]:
    return [ax.get_title() for ax in fig.axes if ax.get_title()]


def inside(fig: Figure) -> bool:
    """Every title and axis label lies within the canvas."""
    renderer, canvas = fig.canvas.get_renderer(), fig.bbox
    texts = [t for ax in fig.axes for t in (ax.title, ax.xaxis.label, ax.yaxis.label)]
    boxes = [t.get_window_extent(renderer) for t in texts if t.get_text()]
    return all(
        b.x0 >= canvas.x0 - 1 and b.x1 <= canvas.x1 + 1 and b.y0 >= canvas.y0 - 1
        and b.y1 <= canvas.y1 + 1
        for b in boxes
    )  # fmt: skip


def test_lenet_pictures_name_convs_as_a_reader_does(drawn):
    model = build_model(LeNetConfig(), MNIST, 10)
    pictures.plot_filters(model, "filters.png")
    pictures.plot_feature_maps(model, torch.randn(2, *MNIST), "maps.png")
    filters, maps = drawn
    assert titles(filters) == ["conv 1: 6 filters, 5x5"]
    assert titles(maps) == [
        "input 1x28x28", "conv 1 (5x5)\n6 channels, 24x24", "conv 2 (5x5)\n16 channels, 8x8",
    ]  # fmt: skip
    assert not any("features" in t for t in titles(filters) + titles(maps))
    assert inside(filters) and inside(maps)


def test_stride_dilation_and_a_bottleneck_are_said(drawn):
    pictures.plot_filters(build_model(LeNetConfig(stride=2, padding=2), MNIST, 10), "a.png")
    pictures.plot_filters(build_model(LeNetConfig(dilation=2), MNIST, 10), "b.png")
    pictures.plot_filters(build_model(LeNetConfig(bottleneck=4), MNIST, 10), "c.png")
    assert [titles(fig)[0] for fig in drawn] == [
        "conv 1: 6 filters, 5x5, stride 2x2",
        "conv 1: 6 filters, 5x5, dilation 2x2",
        "conv 2: 6 filters, 5x5,\neach over 4 input channels",  # behind the 1x1 conv 1
    ]


def test_mlp_weights_are_called_what_they_are(drawn):
    pictures.plot_filters(build_model(MLPConfig(), MNIST, 10), "filters.png", MNIST)
    (title,) = titles(drawn[0])
    assert title.startswith("first dense layer: the weights of 64 of 128 hidden units")
    assert "filters" not in title and "channel" not in title
    assert inside(drawn[0])


def test_one_dimensional_pictures_fit_and_keep_thin_separators(drawn):
    model = build_model(LeNetConfig(), SERIES, 2)
    pictures.plot_filters(model, "filters.png")
    pictures.plot_feature_maps(model, torch.randn(2, *SERIES), "maps.png")
    filters, maps = drawn
    assert titles(filters) == ["conv 1: 6 filters, 5"] and inside(filters)
    assert titles(maps)[1:] == ["conv 1 (5)\n6 channels, 92", "conv 2 (5)\n16 channels, 42"]
    assert inside(maps)
    # 6 channels, each ROW_HEIGHT rows, one separator row between two: data rows dominate
    stage = maps.axes[1].images[0].get_array()
    assert stage.shape[0] == 6 * pictures.ROW_HEIGHT + 5
    assert int(stage.mask.all(axis=1).sum()) == 5


def test_one_epoch_loss_curve_has_whole_epoch_ticks(drawn):
    rows = [{"epoch": 1, "seed": s, "train_loss": 2.0 + s, "test_loss": 1.5 + s} for s in (0, 1)]
    report.plot_loss_curve(rows, "curve.png", "lenet5 on digits")
    (ax,) = drawn[0].axes
    assert list(ax.get_xticks()) == [1]
    assert len(ax.collections) == 2  # a bar per curve for the spread, not a band
    assert inside(drawn[0])


def test_mistakes_fill_their_canvas(drawn):
    images = torch.randint(0, 255, (32, 1, 28, 28), dtype=torch.uint8)
    y_true, y_pred = torch.zeros(32, dtype=torch.long), torch.ones(32, dtype=torch.long)
    shown = pictures.plot_mistakes(images, y_true, y_pred, torch.rand(32), ["a", "b"], "m.png")
    assert shown == 16
    (ax,) = drawn[0].axes
    height = ax.get_window_extent().height / drawn[0].bbox.height
    width = ax.get_window_extent().width / drawn[0].bbox.width
    assert height > 0.85 and width > 0.85  # the mosaic, not a strip in the middle


def test_a_residual_stage_is_named_with_its_convs(drawn):
    model = build_model(LeNetConfig(residual=True, depth=2, padding="same"), MNIST, 10)
    pictures.plot_feature_maps(model, torch.randn(1, *MNIST), "maps.png")
    assert [t.split("\n")[0] for t in titles(drawn[0])[1:]] == [
        "residual stage, convs 1-3",
        "residual stage, convs 4-6",
    ]  # fmt: skip  (two 5x5 convs and the 1x1 projection of the shortcut each)
