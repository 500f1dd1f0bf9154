"""Issue 32: a sweep's table and plots readable at a glance. Rows are named by what tells
their configuration apart (`mlp`, `lenet5`, `lenet5 width=2 depth=1`, `lenet5 kernel3`),
the text table fits 120 columns unless --wide, plots are at most ~1600 px wide with
short legend labels. The figures are read back as saved, as test_pictures.py does."""

from pathlib import Path

import pytest
from conftest import cnnlab_train
from matplotlib.figure import Figure

from cnnlab import cli, compare, plots

pytestmark = pytest.mark.usefixtures("one_thread")


def compare_cli(capsys, *args) -> tuple[int, str]:
    code = cli.main(["compare", *map(str, args)])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out


def png_width(file: Path) -> int:
    return int.from_bytes(file.read_bytes()[16:20], "big")  # the IHDR chunk's width


def legend_labels(fig: Figure) -> list[str]:
    (legend,) = fig.legends
    return [text.get_text() for text in legend.get_texts()]


def test_the_chapter_sweep_reads_at_a_glance(tmp_path, capsys, saved):
    sweep = tmp_path / "chapter"
    overrides = ["experiment=chapter", "data=digits", "trainer.epochs=1", "seeds=2"]
    assert cnnlab_train(sweep, *overrides, multirun=True) == 0
    capsys.readouterr()

    code, out = compare_cli(capsys, sweep)
    assert code == 0
    lines = out.splitlines()
    assert max(map(len, lines)) <= compare.WIDTH
    assert [line.split()[0] for line in lines[2:4]] == ["mlp", "lenet5"]
    assert lines[0].split()[0] == "config" and "model.channels" not in out
    assert lines[-1].startswith("--wide adds: run, ") and lines[-1].endswith("config keys")

    code, out = compare_cli(capsys, sweep, "--wide")
    assert code == 0 and "model.channels" in out and "0_model=mlp" in out
    assert max(map(len, out.splitlines())) > compare.WIDTH  # what the default view saves

    assert compare_cli(capsys, sweep, "--out", tmp_path / "out")[0] == 0
    for name in ("accuracy_vs_params.png", "loss_curves.png"):
        assert png_width(tmp_path / "out" / name) <= 1600
    labels = legend_labels(saved["accuracy_vs_params.png"])
    assert labels == ["mlp (baseline)", "lenet5"]  # the declared baseline: model=mlp
    assert legend_labels(saved["loss_curves.png"]) == labels
    # one epoch: a whole-number tick, not 0.96-1.04
    (axes,) = saved["loss_curves.png"].axes
    low, high = axes.get_xlim()
    assert [t for t in axes.get_xticks() if low <= t <= high] == [1]


def run(model: str, choices: dict | None = None, **keys) -> dict:
    """What records.load_run gives for a run folder, less what config_names does not read."""
    config = {"model.name": model, "seed": 0, **{f"model.{k}": v for k, v in keys.items()}}
    return {"metrics": {"model": model}, "config": config, "choices": choices or {}}


def test_a_config_is_named_by_its_model_then_what_differs_among_that_models_runs():
    runs = [
        run("mlp", hidden=[128]),
        *(
            run("lenet5", width=float(w), depth=d, residual=False, channels=[6, 16])
            for w in (1, 2)
            for d in (1, 2)
        ),
    ]
    runs[-1]["config"]["seed"] = 1  # seeds do not name a configuration
    names = compare.config_names(runs, [f"{i}_job" for i in range(len(runs))])
    assert names == [
        "mlp",
        "lenet5 width=1 depth=1",  # 1, not 1.0
        "lenet5 width=1 depth=2",
        "lenet5 width=2 depth=1",
        "lenet5 width=2 depth=2",
    ]


def test_a_chosen_group_names_the_keys_it_sets():
    runs = [
        run("lenet5", {"variant": "baseline"}, kernel_size=5),
        run("lenet5", {"variant": "kernel3"}, kernel_size=3),
        run("lenet5", {"variant": "multiscale"}, branches=[1, 3, 5], padding="same"),
        run("lenet5", {"variant": "kernel3"}, kernel_size=3, residual=True),
        {"metrics": {}, "config": {}, "choices": {}},  # a folder without a config
    ]
    names = compare.config_names(runs, ["a", "b", "c", "d", "4_broken"])
    assert names == [
        "lenet5 baseline",
        "lenet5 kernel3",
        "lenet5 multiscale",
        "lenet5 kernel3 residual=true",  # as an override writes it
        "4_broken",
    ]


def test_long_names_are_wrapped_to_short_legend_lines():
    name = "lenet5 " + " ".join(f"key{i}=value{i}" for i in range(8))
    assert all(len(line) <= plots.LABEL for line in plots.label(name).splitlines())
    assert plots.label(name).replace("\n", " ") == name
