"""Hostile input (issue 19): every value a user or an edited file can hand cnnlab that
cannot work is one `error: ` line on stderr naming the key or file, exit 2, no traceback,
and no run folder. Trackers that cannot log warn once and the run trains on.

Start-up (issue 30): help, argparse's refusals and the refusals of Hydra and the range
checks answer without importing torch; a run sets torch's numeric flags only where they
differ from what it wants (torch.use_deterministic_algorithms imports torch's compiler
stack) and puts back those it set. The timings: benchmarks/startup.py."""

import math
from pathlib import Path

import pytest
import torch
from conftest import SMALL, bad_input_line, cnnlab_train

from cnnlab import hydra_app
from cnnlab.checks import check_config

# (overrides, words the error line must hold: the key, and where useful what is allowed)
BAD = [
    (["trainer.lr=nan"], ["trainer.lr=nan", "> 0"]),
    (["trainer.lr=inf"], ["trainer.lr=inf", "finite"]),
    (["model.width=nan"], ["model.width=nan", "> 0"]),
    (["model.width=-inf"], ["model.width=-inf"]),
    (["model.negative_slope=nan"], ["model.negative_slope=nan", "finite"]),
    (["data=synthetic", "data.normalize=[nan,1]"], ["data.normalize", "finite"]),
    (["data=synthetic", "data.normalize=[0.5,inf]"], ["data.normalize", "finite"]),
    (["data=synthetic", "data.normalize=[0.5]"], ["data.normalize=[0.5]", "[mean, std]"]),
    (["data=image_folder", "data.image_size=[28]"], ["data.image_size=[28]", "[h, w]"]),
    (["data=image_folder", "data.image_size=[28,28,3]"], ["data.image_size", "[h, w]"]),
    (["data=synthetic", "data.shape=[28]"], ["data.shape"]),
    (["model.kernel_size=[3,3,3]"], ["model.kernel_size=[3, 3, 3]", "[h, w]"]),
    (["model.kernel_size=2.5"], ["model.kernel_size=2.5"]),
    (["model.kernel_size=0"], ["model.kernel_size=0", ">= 1"]),
    (["model.kernel_size=[a,b]"], ["model.kernel_size"]),
    (["model.padding=weird"], ["model.padding='weird'", "same"]),
    (["model.padding=1.5"], ["model.padding=1.5"]),
    (["model.padding=-1"], ["model.padding=-1", ">= 0"]),
    (["model.padding=[1,1,1]"], ["model.padding"]),
    (["model.channels=[]"], ["model.channels=[]"]),
    (["model.fc=[0]"], ["model.fc=0"]),
    (["model.depth=100000"], ["model.depth=100000", "at most"]),
    (["model.width=1e9"], ["model.width", "too large"]),
    (["model=mlp", "model.width=1e9"], ["model.width", "GiB"]),
    (["trainer.batch_size=0"], ["trainer.batch_size=0", "> 0"]),
    (["trainer.eval_batch_size=-1"], ["trainer.eval_batch_size=-1", "> 0"]),
    (["trainer.epochs=-1"], ["trainer.epochs=-1", ">= 0"]),
    (["trainer.epochs=abc"], ["trainer.epochs", "abc"]),
    (["trainer.batch_size=1e3"], ["trainer.batch_size"]),
    (["trainer.optimizer=rmsprop"], ["trainer.optimizer", "adam"]),
    (["seeds=0"], ["seeds=0", ">= 1"]),
    (["seeds=-1"], ["seeds=-1"]),
    (["seed=-5"], ["seed=-5"]),
    (["seed=1.5"], ["seed"]),
    (["device=gpu"], ["device='gpu'", "cuda:N", "mps"]),
    (["device=cuda:abc"], ["device='cuda:abc'", "cuda:N"]),
    (["model.activation=swish"], ["model.activation", "leaky_relu"]),
    (["model=nope"], ["model/nope", "lenet5"]),
    (["+model.foo=1"], ["model.foo", "allowed"]),
    (["~model"], ["model", "model=NAME"]),
    (["~logger"], ["logger"]),
    (["model.width=[1"], ["model.width=[1"]),
    (["model.width=1]"], ["model.width=1]"]),
    (["hydra.run.dir="], ["hydra.run.dir"]),
    (["model.width=1,2"], ["model.width=1,2", "-m"]),
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished 1-epoch run and the overrides it was trained with."""
    overrides = [*SMALL, "trainer.epochs=1", "pictures=false"]
    run = tmp_path_factory.mktemp("trained") / "run"
    assert cnnlab_train(run, *overrides) == 0
    return run, overrides


def edited_checkpoint(trained, tmp_path, edit) -> Path:
    run, _ = trained
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    edit(state["model"])
    path = tmp_path / "edited.pt"
    torch.save(state, path)
    return path


def wrong_shape(model: dict) -> None:
    model["features.0.0.0.weight"] = torch.zeros(3, 1, 5, 5)


def missing_key(model: dict) -> None:
    del model["classifier.5.bias"]


@pytest.mark.parametrize("overrides,words", BAD, ids=[" ".join(o) for o, _ in BAD])
def test_bad_override_is_one_error_line_and_no_folder(
    overrides, words, tmp_path, monkeypatch, capfd
):
    device = [] if any(o.startswith("device=") for o in overrides) else ["device=cpu"]
    line = bad_input_line(tmp_path, monkeypatch, capfd, "train", *device, *overrides)
    for word in words:
        assert word in line, line


@pytest.mark.parametrize(
    "overrides",
    [["model.width=nan"], ["model.width=inf"], ["model.width=1e9"], ["model.depth=100000"]],
)
def test_inspect_refuses_what_train_refuses(overrides, tmp_path, monkeypatch, capfd):
    line = bad_input_line(tmp_path, monkeypatch, capfd, "inspect", *overrides)
    assert overrides[0].split("=")[0] in line, line


@pytest.mark.parametrize("edit", [wrong_shape, missing_key])
def test_resume_from_a_checkpoint_whose_tensors_do_not_fit(
    edit, trained, tmp_path, monkeypatch, capfd
):
    path = edited_checkpoint(trained, tmp_path, edit)
    _, overrides = trained
    line = bad_input_line(
        tmp_path,
        monkeypatch,
        capfd,
        "train",
        "device=cpu",
        *overrides,
        "trainer.epochs=2",
        f"resume={path}",
    )
    assert f"resume={path}" in line and ("features.0.0.0.weight" in line or "bias" in line)


def test_resume_paths_that_are_no_checkpoint(tmp_path, monkeypatch, capfd):
    empty = tmp_path / "empty_run"
    empty.mkdir()
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    folder = tmp_path / "last.pt"
    folder.mkdir()
    for path in (empty, text, folder, tmp_path / "nowhere"):
        line = bad_input_line(tmp_path, monkeypatch, capfd, "train", "device=cpu", f"resume={path}")
        assert f"resume={path}" in line, line


def test_finite_check_covers_every_float_field():
    """The walk reaches floats nested in lists and in every group's dataclass."""
    from cnnlab.config import LeNetConfig, TrainConfig, refuse_non_finite
    from cnnlab.outcome import ConfigError

    refuse_non_finite(TrainConfig(model=LeNetConfig()))  # the defaults pass
    cfg = TrainConfig(model=LeNetConfig())
    cfg.model.negative_slope = math.nan
    with pytest.raises(ConfigError, match="model.negative_slope=nan"):
        refuse_non_finite(cfg)


def test_check_config_still_checks_the_model_on_the_meta_device():
    job = hydra_app.composed_jobs(["model=mlp", "data=digits"], multirun=False)[0]
    checked = check_config(job)
    assert next(checked.model.parameters()).device.type == "meta"
