"""examples/chapter.ipynb runs end to end in a real Jupyter kernel (nbclient), in a folder of
its own, offline, with an empty data folder: every cell without an error, a run folder per
train() call, and the tables and pictures it shows."""

import json
import os
from pathlib import Path

import pytest
from conftest import CNNLAB, cli_env

nbclient = pytest.importorskip("nbclient")  # the dev extra: nbclient, nbformat, ipykernel
nbformat = pytest.importorskip("nbformat")

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "chapter.ipynb"


def texts(cell) -> str:
    """What a code cell showed: its streams and the text of its results."""
    out = []
    for output in cell.get("outputs", []):
        out.append(output.get("text", ""))
        out.append(output.get("data", {}).get("text/plain", ""))
    return "".join(out)


def test_the_committed_notebook_has_no_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)


@pytest.mark.slow  # a real Jupyter kernel and a run per train() call: over a minute
def test_the_chapter_notebook_runs_end_to_end(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    env = cli_env(tmp_path)
    env["PATH"] = f"{CNNLAB.parent}{os.pathsep}{env.get('PATH', '')}"  # `!cnnlab` is ours
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute(env=env)  # an error in any cell raises CellExecutionError

    ledger = tmp_path / "outputs" / "claims_digits"
    found = sorted(p.parent for p in (tmp_path / "outputs").rglob("metrics.json"))
    runs = [run for run in found if ledger not in run.parents]
    metrics = [json.loads((run / "metrics.json").read_text()) for run in runs]
    assert len(runs) == 6  # MLP, LeNet-5, and the four of width x depth
    assert all(m["status"] == "completed" and 0 < m["accuracy"] <= 1 for m in metrics)
    assert sorted(len(m["seeds"]) for m in metrics) == [1, 1, 3, 3, 3, 3]

    shown = [texts(cell) for cell in nb.cells if cell.cell_type == "code"]
    assert any("accuracy" in text and "lenet5" in text and "mlp" in text for text in shown)
    assert any("total" in text and "Conv2d" in text for text in shown)  # cnnlab inspect
    assert sum("accuracy_%" in text for text in shown) == 2  # the two compare tables
    pictures = [
        output
        for cell in nb.cells
        for output in cell.get("outputs", [])
        if "image/png" in output.get("data", {})
    ]
    assert len(pictures) == 2  # the two loss curves

    # quiet: a cell that trains shows one line per run (its Run), the log is in train.log
    for cell in nb.cells:
        if cell.cell_type == "code" and "train(" in cell.source:
            streams = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
            assert streams and all(line.startswith("Run(") for line in streams.splitlines())
    assert all((run / "train.log").stat().st_size > 0 for run in runs)
    # the prose on the MLP against LeNet-5 is computed from what ran
    by_model = {m["model"]: m for m in metrics if len(m["seeds"]) == 1}
    prose = [
        output["data"]["text/markdown"]
        for cell in nb.cells
        for output in cell.get("outputs", [])
        if "text/markdown" in output.get("data", {})
    ]
    assert len(prose) == 2
    for model in ("mlp", "lenet5"):
        assert f"**{100 * by_model[model]['accuracy']:.2f}%**" in prose[0]

    # section 5: the ledger of claims 1, 2 and 5, its table as claims.md wrote it from the
    # sweeps it ran (claim 5's ReLU arm is claim 3's run)
    assert {p.name for p in ledger.iterdir() if p.is_dir()} == {"claim_01", "claim_03", "claim_05"}
    assert prose[1] == (ledger / "claims.md").read_text().split("\n## ")[0]
    for number in (1, 2, 5):
        row = next(line for line in prose[1].splitlines() if line.startswith(f"| {number} |"))
        assert row.split(" | ")[2].split(" (")[0] in ("holds", "does not hold", "inconclusive")
