"""The pictures read as answers (issue 21): titles name layers as a reader knows them
('conv 1: 6 filters, 5x5', not 'features.0.0.0'), whatever the model is made of; every
text lies inside its figure and no two column titles overlap; a 1-epoch loss curve ticks
whole epochs; mistakes.png is as wide as its images. The figures are read back as saved:
matplotlib's Figure.savefig is wrapped to keep each figure it writes."""

import pytest
import torch
from conftest import MNIST, SERIES, SMALL, cnnlab_train
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from torch import nn

from cnnlab import pictures, report
from cnnlab.config import LeNetConfig, MLPConfig
from cnnlab.layers import branch_shares
from cnnlab.models import build_model, plan


def one_line(text: str) -> str:
    """A title as read, its wrapping undone."""
    return text.replace("\n", " ")


def renderer_of(fig: Figure):
    """A renderer with `fig` drawn on it at the figure's own dpi (savefig drew it at 110 and
    left pixel positions of that dpi behind; a Figure made without pyplot has no canvas of
    its own)."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def assert_readable(fig: Figure) -> None:
    """Everything drawn lies inside the canvas, and no two axes titles overlap."""
    renderer = renderer_of(fig)
    drawn, canvas = fig.get_tightbbox(renderer), fig.bbox_inches  # inches
    tolerance = 1e-6  # inches: a clipped title may stick out by less than 0.01
    assert drawn.x0 >= -tolerance and drawn.y0 >= -tolerance, (drawn, canvas)
    assert drawn.x1 <= canvas.x1 + tolerance and drawn.y1 <= canvas.y1 + tolerance, drawn
    titles = [ax.title.get_window_extent(renderer) for ax in fig.axes if ax.get_title()]
    for i, a in enumerate(titles):
        for b in titles[i + 1 :]:
            assert not a.overlaps(b), (a, b)


def draw(model, shape, tmp_path, saved, images=3) -> tuple[Figure, Figure | None]:
    """filters.png and feature_maps.png (None for a model without convs), checked readable."""
    pictures.plot_filters(model, tmp_path / "filters.png", shape)
    pictures.plot_feature_maps(model, torch.randn(images, *shape), tmp_path / "maps.png")
    for fig in saved.values():
        assert_readable(fig)
    return saved["filters.png"], saved.get("maps.png")


def column_titles(fig: Figure) -> list[str]:
    """The feature-map columns' titles (the first row's axes), after the input's."""
    return [one_line(ax.get_title()) for ax in fig.axes if ax.get_title()][1:]


def test_lenet5_is_named_by_its_convs(tmp_path, saved):
    model = build_model(LeNetConfig(), MNIST, 10)
    filters, maps = draw(model, MNIST, tmp_path, saved)
    assert filters.get_suptitle() == "conv 1: 6 filters, 5x5"
    # each conv's output, as the model's plan sizes it
    convs = [stage.convs[0] for stage in plan(LeNetConfig(), MNIST, 10).stages]
    assert column_titles(maps) == [
        f"conv {i} (5x5) {c.out_ch} channels, {'x'.join(map(str, c.size_out))}"
        for i, c in enumerate(convs, start=1)
    ]
    assert "features." not in filters.get_suptitle() + " ".join(column_titles(maps))


def test_the_mlp_shows_what_its_weights_are(tmp_path, saved):
    filters, maps = draw(build_model(MLPConfig(hidden=[128]), MNIST, 10), MNIST, tmp_path, saved)
    shown = pictures.MAX_TILES
    assert one_line(filters.get_suptitle()) == (
        f"first dense layer: weights of {shown} of 128 hidden units, each shown as a 28x28 image"
    )
    assert "filter" not in filters.get_suptitle() and maps is None


def test_a_one_dimensional_model_reads_as_such(tmp_path, saved):
    model = build_model(LeNetConfig(), SERIES, 2)
    filters, maps = draw(model, SERIES, tmp_path, saved, images=4)
    assert filters.get_suptitle() == "conv 1: 6 filters, 5"  # a kernel of 5 taps
    assert column_titles(maps) == [
        "conv 1 (5) 6 channels, length 92",  # 96 - 4, pooled to 46
        "conv 2 (5) 16 channels, length 42",
    ]
    # a row of pixels per channel, split by hairlines: no gap rows as tall as the data
    for ax, channels in zip(maps.axes[1:3], (6, 16), strict=True):
        assert ax.images[0].get_array().shape == (channels, 92 if channels == 6 else 42)
        (lines,) = ax.collections
        assert len(lines.get_segments()) == channels - 1
    image = filters.axes[0].images[0].get_array()
    assert image.shape == (6, 5) and not image.mask.any()
    # the title of a narrow figure lies inside it (it ran off the edge, clipped)
    title = filters._suptitle.get_window_extent(renderer_of(filters))
    assert filters.bbox.x0 <= title.x0 and title.x1 <= filters.bbox.x1
    assert title.y1 <= filters.bbox.y1


@pytest.mark.parametrize(
    "cfg, filters_title, first_column",
    [
        (
            LeNetConfig(stride=2, dilation=2, padding="same"),
            "conv 1: 6 filters, 5x5, stride 2, dilation 2",
            "conv 1 (5x5, stride 2, dilation 2)",
        ),
        (
            LeNetConfig(bottleneck=4),
            "conv 1: 6 filters, 5x5, each over the 4 channels of the 1x1 conv before it",
            "1x1 conv",
        ),
        (
            LeNetConfig(factorize=True),
            "conv 1: 6 filters, 5x5 factorised as 5x1 then 1x5, the two halves composed",
            "conv 1 (5x5 factorised as 5x1 then 1x5)",
        ),
        (
            LeNetConfig(channels=[8, 16], depth=2, kernel_size=3, padding="same", residual=True),
            "conv 1: 8 filters, 3x3",
            "convs 1-2 (3x3) + shortcut",
        ),
    ],
    ids=["stride-dilation", "bottleneck", "factorised", "residual"],
)
def test_variants_are_named_from_their_modules(tmp_path, saved, cfg, filters_title, first_column):
    filters, maps = draw(build_model(cfg, MNIST, 10), MNIST, tmp_path, saved)
    assert one_line(filters.get_suptitle()) == filters_title
    assert column_titles(maps)[0].startswith(first_column)


def test_a_multi_scale_layer_shows_every_branch(tmp_path, saved):
    cfg = LeNetConfig(branches=[1, 3, 5], padding="same")
    filters, maps = draw(build_model(cfg, MNIST, 10), MNIST, tmp_path, saved)
    shares = branch_shares(cfg.channels[0], 3)
    counts = ", ".join(f"{k}x{k}: {n}" for k, n in zip(cfg.branches, shares, strict=True))
    assert one_line(filters.get_suptitle()) == f"conv 1: 6 filters, in parallel branches ({counts})"
    # one column per multi-scale layer: its branches' maps concatenated
    assert [t.split(") ")[0] for t in column_titles(maps)] == [
        "conv 1 (1x1, 3x3, 5x5 in parallel",
        "conv 2 (1x1, 3x3, 5x5 in parallel",
    ]
    assert column_titles(maps)[0].endswith(f"{sum(shares)} channels, 28x28")


def test_factorised_kernels_compose_into_what_the_pair_computes():
    model = build_model(LeNetConfig(factorize=True), MNIST, 10)
    first, second = [m for m in model.modules() if isinstance(m, nn.Conv2d)][:2]
    x = torch.randn(2, *MNIST)
    composed = pictures.first_layer_weights(model).weights
    pair = nn.functional.conv2d(first(x), second.weight)  # the pair, less the second's bias
    torch.testing.assert_close(nn.functional.conv2d(x, composed), pair, rtol=1e-4, atol=1e-5)


def history(epochs: int, seeds: int) -> list[dict]:
    return [
        {"epoch": e, "seed": s, "train_loss": 1 / (e + s), "test_loss": 1 / (e + s + 1)}
        for e in range(1, epochs + 1)
        for s in range(seeds)
    ]


@pytest.mark.parametrize("epochs, seeds", [(1, 1), (1, 3), (3, 1), (3, 3)])
def test_the_loss_curve_ticks_whole_epochs(tmp_path, saved, epochs, seeds):
    report.plot_loss_curve(history(epochs, seeds), tmp_path / "loss_curve.png", "run")
    fig = saved["loss_curve.png"]
    ax = fig.axes[0]
    low, high = ax.get_xlim()
    ticks = [t for t in ax.get_xticks() if low <= t <= high]
    assert ticks == list(range(1, epochs + 1))
    # one epoch: points and a bar for the seeds' range, no band a sliver wide
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == (2 if seeds > 1 and epochs > 1 else 0)
    assert_readable(fig)


@pytest.mark.parametrize("wrong", [16, 2])
def test_mistakes_fill_their_canvas(tmp_path, saved, wrong):
    n = 40
    images = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8)
    y = torch.zeros(n, dtype=torch.long)
    predicted = torch.cat([torch.ones(wrong, dtype=torch.long), y[wrong:]])
    shown = pictures.plot_mistakes(
        images, y, predicted, torch.rand(n), ["a", "b"], tmp_path / "mistakes.png"
    )
    fig = saved["mistakes.png"]
    assert shown == wrong
    renderer = renderer_of(fig)
    drawn = fig.axes[0].images[0].get_window_extent(renderer)
    assert drawn.width > 0.9 * fig.bbox.width
    assert drawn.height > 0.75 * fig.bbox.height
    assert_readable(fig)


def test_a_run_on_a_series_writes_the_named_pictures(tmp_path, saved):
    run = tmp_path / "run"
    args = [*SMALL, "data.shape=[1,96]", "trainer.epochs=1", "pictures=true"]
    assert cnnlab_train(run, "model=lenet5", *args) == 0
    assert {"loss_curve.png", "filters.png", "feature_maps.png", "mistakes.png"} <= set(saved)
    assert saved["filters.png"].get_suptitle() == "conv 1: 6 filters, 5"
    assert column_titles(saved["feature_maps.png"])[0] == "conv 1 (5) 6 channels, length 92"
    assert list(saved["loss_curve.png"].axes[0].get_xticks()) == [1]
    for fig in saved.values():
        assert_readable(fig)


# ---- issue 32: run pictures say which run they show, and how it ended


def test_a_run_is_titled_by_the_model_keys_it_changes():
    cfg = LeNetConfig(width=2.0, depth=2, residual=True)
    assert pictures.run_title(cfg, "fashion_mnist") == (
        "lenet5 width=2 depth=2 residual=true on fashion_mnist"
    )
    assert pictures.run_title(MLPConfig(), "digits") == "mlp on digits"


@pytest.mark.parametrize(
    "done, planned, status, said",
    [
        (3, 5, "interrupted", "interrupted after 3 of 5 epochs"),
        (2, 5, "diverged", "diverged after 2 of 5 epochs"),
        (3, 5, "completed", "stopped early after 3 of 5 epochs"),
        (5, 5, "completed", None),
    ],
)
def test_an_incomplete_loss_curve_says_so(tmp_path, saved, done, planned, status, said):
    report.plot_loss_curve(history(done, 1), tmp_path / "loss_curve.png", "run", planned, status)
    title = saved["loss_curve.png"].axes[0].get_title()
    assert title.split("\n")[-1] == (said or "run")


@pytest.mark.parametrize("epochs, marked", [(30, True), (31, False)])
def test_only_short_loss_curves_mark_each_epoch(tmp_path, saved, epochs, marked):
    report.plot_loss_curve(history(epochs, 1), tmp_path / "loss_curve.png", "run")
    markers = {line.get_marker() for line in saved["loss_curve.png"].axes[0].get_lines()}
    assert (markers != {"None"}) == marked


@pytest.mark.parametrize(
    "classes, rotation", [([str(i) for i in range(10)], 0), (["cat", "jumper"], 45)]
)
def test_confusion_ticks_slant_only_for_long_names(tmp_path, saved, classes, rotation):
    cm = torch.ones(len(classes), len(classes), dtype=torch.long)
    report.plot_confusion_matrix(cm, classes, tmp_path / "cm.png", "run")
    ticks = saved["cm.png"].axes[0].get_xticklabels()
    assert {tick.get_rotation() for tick in ticks} == {rotation}


def test_one_dimensional_mistakes_have_axes(tmp_path, saved):
    series = torch.randn(6, 1, 50)
    y, predicted = torch.zeros(6, dtype=torch.long), torch.ones(6, dtype=torch.long)
    pictures.plot_mistakes(series, y, predicted, torch.rand(6), ["a", "b"], tmp_path / "m.png")
    drawn = [ax for ax in saved["m.png"].axes if ax.get_lines()]
    assert len(drawn) == 6 and all(ax.axison for ax in drawn)
    # under each column's last plot (6 in 4 columns: the last 4)
    assert [ax.get_xlabel() for ax in drawn] == [""] * 2 + ["time step"] * 4
    assert_readable(saved["m.png"])


def test_feature_maps_have_a_colour_scale_per_column(tmp_path, saved):
    _, maps = draw(build_model(LeNetConfig(), MNIST, 10), MNIST, tmp_path, saved)
    bars = [ax for ax in maps.axes if ax.get_label() == "<colorbar>"]
    assert len(bars) == 2  # one per conv stage


def test_a_multi_scale_layer_labels_its_branches_and_outlines_each_kernel(tmp_path, saved):
    cfg = LeNetConfig(branches=[1, 3, 5], padding="same")
    filters, _ = draw(build_model(cfg, MNIST, 10), MNIST, tmp_path, saved)
    ax = filters.axes[0]
    shares = branch_shares(cfg.channels[0], 3)
    rows = [f"{k}x{k}: {n}" for k, n in zip(cfg.branches, shares, strict=True)]
    assert [t.get_text() for t in ax.get_yticklabels()] == rows  # a row per branch
    # every kernel outlined at its own size: a 1x1 kernel is a box one pixel wide
    sizes = sorted((p.get_width(), p.get_height()) for p in ax.patches)
    assert sizes == sorted(
        (k, k) for k, n in zip(cfg.branches, shares, strict=True) for _ in range(n)
    )


def test_a_picture_is_drawn_once_as_it_is_saved(tmp_path, monkeypatch):
    """pictures.save lays the figure out and draws it once for the file: after
    tight_layout, savefig drew it once more before (0.1 s of a run's 0.9 s of pictures).
    The file is the same to the pixel, and so it is with the confusion matrix's counts left
    out of the layout (they lie inside its axes)."""
    from PIL import Image

    def confusion(path):
        counts = torch.eye(10, dtype=torch.int64)
        report.plot_confusion_matrix(counts, list("0123456789"), path, "a title")

    draws = []
    figure_draw = Figure.draw
    monkeypatch.setattr(Figure, "draw", lambda fig, r: draws.append(fig) or figure_draw(fig, r))
    confusion(tmp_path / "once.png")
    assert len(draws) == 1

    def twice(fig, path):  # as it was: the placeholder engine tight_layout leaves behind
        for text in fig.axes[0].texts:
            text.set_in_layout(True)
        fig.tight_layout()
        fig.savefig(path, dpi=110)

    monkeypatch.setattr(pictures, "save", twice)
    confusion(tmp_path / "twice.png")
    assert len(draws) == 3
    once, before = (Image.open(tmp_path / f"{name}.png").tobytes() for name in ("once", "twice"))
    assert once == before
