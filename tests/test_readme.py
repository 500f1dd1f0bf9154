"""The README's checkable statements against the code: the key lists of metrics.json and of
`cnnlab inspect --format json`, which keys repeat between same-seed runs, the run counts
of the presets, which presets take `data=digits`, what inspect reads, and the figures in
docs/. Each test reads the README's own words, so a change on either side shows here."""

import functools
import json
import re
from pathlib import Path

import pytest
from conftest import QUICK, TIMING_KEYS, cnnlab_train, metrics_of

from cnnlab import checks, cli, hydra_app
from cnnlab.outcome import ConfigError

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
PRESETS = sorted(p.stem for p in (ROOT / "configs" / "experiment").glob("*.yaml"))


def flat(text: str) -> str:
    """The text with every run of whitespace (line breaks too) as one space."""
    return " ".join(text.split())


def backticked(text: str) -> set[str]:
    """The names written as `name` in text."""
    return set(re.findall(r"`([a-z_0-9]+)`", text))


def section(heading: str) -> str:
    """The README from a heading line up to the next heading of any level."""
    start = README.index(f"\n{heading}\n")
    end = re.compile(r"\n#{2,4} ").search(README, start + 1)
    return README[start : end.start() if end else len(README)]


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    """Two runs with the same seed and config, one after the other in this process."""
    root = tmp_path_factory.mktemp("twins")
    for name in ("a", "b"):
        code = cnnlab_train(root / name, *QUICK)
        assert code == 0
    return metrics_of(root / "a"), metrics_of(root / "b")


def test_readme_lists_every_metrics_json_key_a_run_writes(twins):
    (row,) = [line for line in README.splitlines() if line.startswith("| `metrics.json` |")]
    named = backticked(row.split("|")[2])
    metrics = twins[0]
    written = set(metrics) | set(metrics["numerics"])
    missing = sorted(written - named)
    assert not missing, f"README's metrics.json row misses the keys {missing}"
    # every run writes every key (null where it has no figure: `error` of a completed run,
    # device memory on the CPU)
    unwritten = sorted(named - written)
    assert not unwritten, f"README's metrics.json row names keys no run writes: {unwritten}"


def test_same_seed_runs_differ_only_in_the_keys_the_readme_names(twins):
    (bullet,) = [b for b in README.split("\n- ") if b.startswith("Same seed, same config")]
    except_part = re.search(r"every key except (.*?) \(", flat(bullet))
    assert except_part, "README's same-seed promise names no keys that may differ"
    assert backticked(except_part.group(1)) == TIMING_KEYS
    a, b = twins
    assert set(a) == set(b)
    assert {k for k in a if a[k] != b[k]} <= TIMING_KEYS


def test_readme_lists_the_inspect_json_keys(capsys):
    assert cli.main(["inspect", "data=synthetic", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    shape = re.search(r"`--format json` gives `([^`]*)`", README).group(1)
    top, layers = re.fullmatch(r"(.*)\[\{(.*)\}\](.*)", flat(shape)).group(1, 2)
    for named, keys, what in (
        (top, report, "its top level"),
        (layers, report["layers"][0], "a layer"),
    ):
        names = set(re.findall(r'"(\w+)"', named))
        assert names == set(keys), (
            f"README's inspect JSON for {what} misses {sorted(set(keys) - names)}, "
            f"names {sorted(names - set(keys))} that it does not have"
        )


@functools.cache  # each preset's jobs are composed once for the tests below (seconds each)
def jobs(*overrides: str) -> list:
    return hydra_app.composed_jobs(list(overrides), multirun=True)


def test_readme_run_counts_match_the_composed_sweeps():
    text = flat(README)
    # "`experiment=timeseries` on the 2-core CPU (6 runs of 3 seeds each, ..."
    stated = re.findall(r"`experiment=(\w+)`[^`(]*\((\d+) runs(?: of (\d+) seeds)?", text)
    # "cnnlab train -m model=lenet5 model.width=1,2 ...   # 4-job sweep"
    sweeps = re.findall(r"^cnnlab train -m (.*?)\s+# (\d+)-job sweep", README, re.M)
    assert stated and sweeps
    for preset, runs, seeds in stated:
        composed = jobs(f"experiment={preset}")
        assert len(composed) == int(runs), preset
        if seeds:
            assert {job.seeds for job in composed} == {int(seeds)}, preset
    for overrides, count in sweeps:
        assert len(jobs(*overrides.split())) == int(count), overrides
    # "The experiment presets train 5 seeds per configuration (timeseries: 3)"
    usual, others = re.search(
        r"presets train (\d+) seeds per configuration \((.*?)\)", text
    ).groups()
    seeds = {name: int(n) for name, n in re.findall(r"(\w+): (\d+)", others)}
    for preset in PRESETS:
        assert {job.seeds for job in jobs(f"experiment={preset}")} == {
            seeds.get(preset, int(usual))
        }, preset


def test_data_digits_fits_the_presets_the_readme_says(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path))  # no data is read; none may be written
    said = re.search(
        r"Add `data=digits`.*? to any of them(?: but ((?:`\w+`(?:, | and )?)+))?", flat(README)
    )
    refused = set(re.findall(r"`(\w+)`", said.group(1) or ""))
    for preset in PRESETS:
        root = tmp_path / preset  # each preset's own data root
        monkeypatch.setenv("CNNLAB_DATA", str(root))
        composed = jobs(f"experiment={preset}", "data=digits")
        try:
            for job in composed:
                checks.check_config(job)
        except ConfigError:
            assert preset in refused, f"experiment={preset} data=digits is refused: say so"
        else:
            assert preset not in refused, f"experiment={preset} data=digits works after all"
        # a preset that cuts the training set (claims 10 and 19) reads the source's counts
        # to cut it (README: the check), so only the others promise to read nothing
        if all(job.data.train_size is None for job in composed):
            assert not root.exists() or not list(root.iterdir()), preset


def test_inspect_reads_a_ucr_file_and_an_image_folder_as_the_readme_says(tmp_path, capsys):
    words = flat(section("### `cnnlab inspect [overrides] [--format table|md|csv|json]`"))
    assert "reads no dataset file" not in words
    assert "UCR sets and image folders are read for their shape" in words
    folder = tmp_path / "UCRArchive_2018" / "ECG200"
    folder.mkdir(parents=True)
    for part in ("TRAIN", "TEST"):  # series of length 7: the shape comes from the file
        (folder / f"ECG200_{part}.tsv").write_text(
            "1\t0\t1\t2\t3\t4\t5\t6\n-1\t6\t5\t4\t3\t2\t1\t0\n"
        )
    ucr = ["model=mlp", "data=ucr", f"data.root={tmp_path}", "data.download=false"]
    assert cli.main(["inspect", *ucr, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["input_shape"] == [1, 7]
    (tmp_path / "pets" / "cat").mkdir(parents=True)  # a class folder without images
    assert cli.main(["inspect", "data=image_folder", f"data.path={tmp_path / 'pets'}"]) == 2
    assert "holds no images" in capsys.readouterr().err


def test_every_figure_in_docs_is_in_the_readme():
    docs = ROOT / "docs"
    referenced = set(re.findall(r"\]\(docs/([^)\s]+)\)", README))
    figures = {p.relative_to(docs).as_posix() for p in docs.rglob("*.png")}
    assert not figures - referenced, f"docs/ figures the README never shows: {figures - referenced}"
    missing = {name for name in referenced if not (docs / name).is_file()}
    assert not missing, f"README links missing docs/ files: {missing}"


def test_every_link_to_a_readme_section_finds_its_heading():
    """A heading renamed (the ledger's lost its "(partial in this release)") must take its
    links along: GitHub's anchor is the heading lower-cased, punctuation dropped, spaces to -."""
    headings = re.findall(r"^#+ (.+)$", README, re.M)
    anchors = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}
    links = set(re.findall(r"\]\(#([^)]+)\)", README))
    assert links and links <= anchors, links - anchors
