"""`cnnlab bench` (bench.py): the benchmark runs and refuses what it cannot run."""

import json

import pytest
import torch

from cnnlab.cli import main as cli_main


def test_bench_smoke_writes_both_pipelines_and_a_ratio(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = cli_main(
        [
            "bench",
            "--data",
            "synthetic",
            "--epochs",
            "1",
            "--train-size",
            "256",
            "--device",
            "cpu",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    report = json.loads(out.read_text())
    assert report["machine"]["torch_version"] == torch.__version__
    assert [r["model"] for r in report["results"]] == ["mlp", "lenet5"]
    for r in report["results"]:
        for pipeline in ("classic", "cnnlab"):
            assert len(r[pipeline]["epoch_seconds"]) == 1
            assert r[pipeline]["median_seconds"] > 0
            assert 0 <= r[pipeline]["accuracy"] <= 1
        assert r["speedup"] > 0
        assert r["cnnlab"]["path"] == "eager"
        # same initial weights and batch order: only float rounding (fused Adam, channels-
        # last) tells the pipelines apart, which may flip a few of the 128 test images
        assert abs(r["classic"]["accuracy"] - r["cnnlab"]["accuracy"]) <= 3 / 128
    printed = capsys.readouterr().out
    assert "speed-up" in printed and "lenet5" in printed


def test_bench_rejects_an_unknown_model(capsys):
    with pytest.raises(SystemExit) as e:
        cli_main(["bench", "--models", "mlp,vgg", "--data", "synthetic"])
    assert e.value.code == 2
    assert "vgg" in capsys.readouterr().err
