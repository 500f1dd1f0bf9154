"""The ledger of the chapter's claims (claims.py, `cnnlab claims`): the presets, the exact
figures against hand arithmetic, the verdicts of trained tests on known per-seed figures,
and the command end to end on a tiny sweep."""

import re
from itertools import product
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import cnnlab.hydra_app
from cnnlab import records
from cnnlab.claims import (
    MEASURED_FOR,
    METRICS,
    Claim,
    ClaimError,
    claim_verdict,
    figure,
    judge_exact,
    judge_tests,
    ledger,
    load_claims,
    relation_holds,
    section,
    sweep_about,
)
from cnnlab.claims import main as claims_main
from cnnlab.claims import test_rows as table_rows  # not a test: claims.md's rows
from cnnlab.config import is_run_setting, key_values
from cnnlab.records import canon

EXPERIMENTS = cnnlab.hydra_app.config_dir() / "experiment"


def test_a_preset_per_claim_each_composing():
    claims = load_claims(EXPERIMENTS)
    assert [c.number for c in claims] == list(range(1, 21))  # every claim of claims.md
    with initialize_config_dir(config_dir=str(EXPERIMENTS.parent), version_base="1.3"):
        for claim in claims:
            cfg = compose("train", overrides=[f"experiment={claim.preset}"])
            assert cfg.claim.words == claim.words
            assert cfg.baseline  # each sweep declares the row its findings compare with


def test_the_ledgers_sweeps_stack_seeds_and_say_where_they_cut_epochs():
    """The ledger's cost (issue 31): each configuration trains its 5 seeds together in one
    job, and a preset that trains fewer than the chapter's 5 epochs says so in its words."""
    epochs = {}
    with initialize_config_dir(config_dir=str(EXPERIMENTS.parent), version_base="1.3"):
        for claim in load_claims(EXPERIMENTS):
            overrides = [f"experiment={claim.preset}"]
            cfg = compose("train", overrides=overrides, return_hydra_config=True)
            assert cfg.seeds == 5 and "seed" not in cfg.hydra.sweeper.params
            epochs[claim.number] = cfg.trainer.epochs
            if epochs[claim.number] < 5:
                assert f"({epochs[claim.number]} epoch" in claim.experiment
    # claims.md's hand measurements separate 7 and 19 in one epoch; a generalisation gap
    # and the chapter's headline comparison need the chapter's five
    assert epochs[7] == epochs[19] == 1 and epochs[1] == epochs[8] == 5


def test_exact_figures_by_hand():
    assert figure("model=mlp", "params") == 784 * 128 + 128 + 128 * 10 + 10
    assert figure("", "params") == 44_426  # LeNet-5
    assert figure("", "receptive_field") == 16
    # valid 5x5 stages: 28 -> 24 -> 12 -> 8 -> 4, a third conv has nothing left
    assert figure("model.padding=valid", "stages") == 2
    # same: 28 -> 14 -> 7 -> 3 -> 1, a fifth pool cannot halve a 1x1 map
    assert figure("model.padding=same", "stages") == 4
    assert figure("model.stride=2,model.padding=same", "map") == [2, 2]
    assert figure("model.padding=same", "map") == [7, 7]


def test_relations_and_an_exact_verdict():
    assert relation_holds(1, 2, "<") and not relation_holds(2, 2, "<")
    assert relation_holds([3, 5], [3, 5], "=") and relation_holds([2, 2], [7, 7], "<")
    same = "model.padding=same"
    judged = judge_exact(
        {"arm": f"model.dilation=2,{same}", "against": same, "figure": "params", "relation": "="}
    )
    assert judged["verdict"] == "holds" and judged["arm_value"] == judged["against_value"]
    judged = judge_exact({"arm": "model=mlp", "against": "", "figure": "params", "relation": "<"})
    assert judged["verdict"] == "does not hold"


def run(arm: str, values: list[float], metric="accuracy", **config) -> dict:
    """A completed run (as records.load_run reads one) of model.activation=arm with a
    metric per seed; `config` other keys (trainer__epochs=1 is trainer.epochs)."""
    rows = [
        {"seed": seed, "status": "completed", metric: value} for seed, value in enumerate(values)
    ]
    keys = {k.replace("__", "."): v for k, v in config.items()}
    return {
        "path": Path("sweep", arm, *map(str, keys.values())),
        "status": "completed",
        "choices": {},
        "config": {"model.activation": arm, **keys},
        "metrics": {"per_seed": rows},
    }


def gelu_vs_relu(metric="accuracy", direction="higher") -> dict:
    return {
        "arm": "model.activation=gelu",
        "against": "model.activation=relu",
        "metric": metric,
        "direction": direction,
    }


def test_a_clear_difference_holds_or_does_not():
    runs = [run("relu", [0.90, 0.91, 0.92, 0.90]), run("gelu", [0.95, 0.955, 0.97, 0.952])]
    (higher,) = judge_tests(runs, [gelu_vs_relu()])
    assert higher["verdict"] == "holds"
    assert higher["contrast"].diff == pytest.approx(100 * (0.95675 - 0.9075))  # points
    (lower,) = judge_tests(runs, [gelu_vs_relu(direction="lower")])
    assert lower["verdict"] == "does not hold"


def test_claims_md_names_the_correction_its_intervals_carry(tmp_path):
    """Two judged tests: Bonferroni over 2, so the differences' intervals are at 97.5%
    (verdicts.family), and claims.md says so rather than 95% or Holm."""
    runs = [run("relu", [0.90, 0.91, 0.92, 0.90]), run("gelu", [0.95, 0.955, 0.97, 0.952])]
    tests = [gelu_vs_relu(), {**gelu_vs_relu(), "arm": "model.activation=relu"}]
    claim = Claim(6, "GELU", "ReLU vs GELU", "claim_06", "claim_06", tests)
    text, _ = section(claim, {tmp_path: runs})
    assert "each difference's interval at 97.5%, Bonferroni over 2 rows" in text
    assert "Holm" not in text and "diff [95% CI]" not in text


def test_no_detectable_difference_is_inconclusive_with_the_seeds_needed():
    runs = [run("relu", [0.90, 0.93, 0.91]), run("gelu", [0.915, 0.925, 0.92])]
    (item,) = judge_tests(runs, [gelu_vs_relu()])
    assert item["verdict"].startswith("inconclusive (3 seeds detect about")
    needed = int(re.search(r"about (\d+) seeds", item["verdict"])[1])
    assert needed > 3
    assert claim_verdict([item]) == item["verdict"]


def test_too_few_seeds_missing_runs_and_reports():
    runs = [run("relu", [0.9, 0.91]), run("gelu", [0.95, 0.96])]
    (item,) = judge_tests(runs, [gelu_vs_relu()])
    assert item["verdict"].startswith("inconclusive (n too small")
    (missing,) = judge_tests([], [gelu_vs_relu()])
    assert missing["verdict"] == "not run"
    assert claim_verdict([missing]) == "inconclusive (not run)"
    (shown,) = judge_tests(runs, [gelu_vs_relu(direction="report")])
    assert shown["verdict"] == "report"


def test_a_sweeps_line_gives_its_cost():
    metrics = {"data": "mnist", "epochs_completed": 1, "train_seconds": 30.4}
    runs = [{"status": "completed", "metrics": {**metrics, "measure_seconds": 20.2}}] * 2
    assert sweep_about(runs) == (
        "2 runs on mnist, 1 epoch, 61 s of training and 40 s of measurements"
    )


def test_a_gradient_ratio_is_judged_on_its_log():
    """ReLU's ratios (0.05-0.5) against sigmoid's (~1e-7): on a linear scale ReLU's spread
    hides a millionfold difference; on the log the claim is judged as it stands."""
    relu = [0.05, 0.5, 0.3, 0.2, 0.4]
    sigmoid = [1e-7, 2e-7, 3e-7, 1.5e-7, 2.5e-7]
    runs = [run("relu", relu, "grad_ratio"), run("gelu", sigmoid, "grad_ratio")]
    test = {**gelu_vs_relu("grad_ratio"), "arm": "model.activation=relu"}
    test["against"] = "model.activation=gelu"
    (item,) = judge_tests(runs, [test])
    assert item["verdict"] == "holds"
    assert item["contrast"].diff > 5  # orders of magnitude
    low, high = map(float, re.search(r"\[(\S+), (\S+)\]", table_rows([item])[2]).groups())
    assert low < high < 0  # log10 of ratios below 1: not cut at 0 as a share would be


def test_derived_metrics():
    row = {
        "shift_accuracy": {"0": 0.9, "1": 0.8, "2": 0.7, "3": 0.6, "4": 0.5},
        "dead_units": {"a": 0.1, "b": 0.3},
    }
    assert METRICS["shift_drop"][1](row) == pytest.approx(30.0)
    assert METRICS["dead_share"][1](row) == pytest.approx(20.0)


def test_one_claim_end_to_end(tmp_path, run_main):
    tiny = ["data=synthetic", "data.train_size=192", "data.test_size=96", "trainer.epochs=1"]
    tiny += ["seeds=3", "pictures=false", "trainer.progress=false", "--only", "5"]
    result = run_main(tmp_path, "claims", "--dir", "ledger", "--run", *tiny, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    text = (tmp_path / "ledger" / "claims.md").read_text()
    assert "## 5. Leaky ReLU avoids" in text
    verdict = re.search(r"\*\*Verdict: (.+?)\*\*", text)[1]
    assert verdict.split(" (")[0] in ("holds", "does not hold", "inconclusive")
    assert "(n=3)" in text and "ledger/claim_05" in text
    # each sweep it read, with its own runs: claim 3's ReLU arm is run once for seven claims
    assert "- Sweeps: `ledger/claim_05` (1 run on synthetic" in text
    assert "; `ledger/claim_03` (2 runs on synthetic" in text
    for sweep in ("claim_03", "claim_05"):
        assert (tmp_path / "ledger" / sweep / "findings.md").exists()
        assert re.search(rf"^{sweep}: exit 0 after \d+ s$", result.stdout, re.M), sweep


def test_bad_arguments_are_one_error_line(tmp_path, run_main):
    result = run_main(tmp_path, "claims", "--only", "one")
    assert result.returncode == 2
    assert result.stderr.count("error:") == 1 and "one" in result.stderr


def composed_arms(claim) -> list:
    """The config of each job claim's own preset sweeps (its hydra.sweeper grid, each point
    composed as its job is)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    sweep = compose("train", [f"experiment={claim.preset}"], return_hydra_config=True)
    parser = OverridesParser.create()
    axes = []
    for key, values in sweep.hydra.sweeper.params.items():
        override = parser.parse_override(f"{key}={values}")
        points = override.sweep_string_iterator() if override.is_sweep_override() else [values]
        axes.append([f"{key}={value}" for value in points])
    return [compose("train", [f"experiment={claim.preset}", *point]) for point in product(*axes)]


def selects(cfg, selector: str) -> bool:
    """Whether the composed job `cfg` is a run `selector` (KEY=VALUE[,...]) names."""
    wanted = key_values("arm", selector)
    got = {k: cfg.model.name if k == "model" else OmegaConf.select(cfg, k) for k in wanted}
    got = {k: OmegaConf.to_object(v) if OmegaConf.is_config(v) else v for k, v in got.items()}
    return all(canon(got[k]) == canon(v) for k, v in wanted.items())


def test_each_sweep_trains_only_the_arms_a_test_reads_and_measures_what_they_need():
    """The ledger's cost (issue 31): no configuration that no claim's test reads (claims 8, 11
    and 19 are not full grids), a shared arm trained once (claim 6's ReLU arm is claim 1's
    LeNet-5; claim 8's batch norm arm is claim 9's; claim 3's LeNet-5 is the baseline of
    5, 11, 14, 16, 17, 18; claim 12's 'same'-padded one of 13, 14, 15), each test's sides
    one job apiece that differ in no
    training key the test does not name, and after training only the measurements the
    claims reading the sweep judge. Composes each of the ledger's ~30 jobs (0.1-0.3 s
    each): slow for that reason."""
    claims = load_claims(EXPERIMENTS)

    def needs(tests) -> set:
        return {MEASURED_FOR[t["metric"]] for t in tests if t["metric"] in MEASURED_FOR}

    arms = {}
    with initialize_config_dir(config_dir=str(EXPERIMENTS.parent), version_base="1.3"):
        for claim in (c for c in claims if c.tests and c.sweep == c.preset):
            tests = [t for c in claims if claim.preset in c.sweeps for t in c.tests]
            arms[claim.preset] = composed_arms(claim)
            baseline = arms[claim.preset][0].baseline  # compare's row every test is against
            assert sum(selects(arm, baseline) for arm in arms[claim.preset]) == 1, claim.preset
            for arm in arms[claim.preset]:
                assert any(selects(arm, t[side]) for t in tests for side in ("arm", "against"))
                assert set(arm.measures) == needs(tests), claim.preset
        for claim in (c for c in claims if c.sweep != c.preset):  # run as the one it reads
            cfg = compose("train", [f"experiment={claim.preset}"])
            assert needs(claim.tests) <= set(cfg.measures), claim.preset
        for claim in (c for c in claims if c.tests):
            jobs = [job for preset in claim.sweeps for job in arms[preset]]
            for test in claim.tests:
                arm, against = (
                    [j for j in jobs if selects(j, test[s])] for s in ("arm", "against")
                )
                assert len(arm) == len(against) == 1, (claim.preset, test)
                named = {*key_values("arm", test["arm"]), *key_values("arm", test["against"])}
                a, b = (OmegaConf.to_container(j[0], resolve=True) for j in (arm, against))
                for group in ("model", "data", "trainer"):
                    if "model" in named and group == "model":
                        continue  # model=mlp against model=lenet5
                    for key in set(a[group]) | set(b[group]):
                        if f"{group}.{key}" not in named and not is_run_setting(f"{group}.{key}"):
                            assert a[group].get(key) == b[group].get(key), (claim.preset, key)
                assert a["seed"] == b["seed"] and a["seeds"] == b["seeds"], claim.preset
    assert next(c for c in claims if c.number == 6).reads == ["claim_01"]
    own = {n: len(arms[f"claim_{n:02d}"]) for n in (5, 6, 8, 9, 10, 11, 13, 15, 16, 17, 18, 19)}
    assert own == {5: 1, 6: 1, 8: 3, 9: 1, 10: 3, 11: 2, 13: 1, 15: 1, 16: 1, 17: 1, 18: 1, 19: 3}
    assert "claim_14" not in arms  # both its arms are other claims' runs


def test_a_claim_reads_the_runs_of_another_claims_sweep(tmp_path, monkeypatch):
    """Claim 6's ReLU arm is claim 1's LeNet-5 run: the ledger judges GELU (its own sweep)
    against it (claim 1's), run once."""
    held = {
        "claim_06": [run("gelu", [0.95, 0.955, 0.97, 0.952])],
        "claim_01": [run("relu", [0.90, 0.91, 0.92, 0.90])],
    }
    for name in held:
        (tmp_path / name).mkdir()
    monkeypatch.setattr(
        records, "load_runs", lambda dirs: [r for d in dirs for r in held[Path(d).name]]
    )
    claim = Claim(6, "GELU", "ReLU vs GELU", "claim_06", "claim_06", [gelu_vs_relu()])
    claim.reads = ["claim_01"]
    text = ledger([claim], tmp_path)
    assert "| 6 | GELU | holds | `claim_06`, `claim_01` |" in text
    assert f"- Sweeps: `{tmp_path / 'claim_06'}` (1 run " in text
    assert f"; `{tmp_path / 'claim_01'}` (1 run " in text


def test_a_selector_that_names_two_runs_of_one_seed_is_refused():
    """Sweeps share runs (claim 3's LeNet-5 is seven claims' baseline): a test whose
    selector matches two runs of one seed would judge whichever came last."""
    runs = [
        run("relu", [0.90, 0.91, 0.92], model__pool="max"),
        run("relu", [0.80, 0.81, 0.82], model__pool="none"),
        run("gelu", [0.95, 0.955, 0.975], model__pool="max"),
    ]
    with pytest.raises(ClaimError, match="'model.activation=relu' names more than one run"):
        judge_tests(runs, [gelu_vs_relu()])
    named = {**gelu_vs_relu(), "against": "model.activation=relu,model.pool=max"}
    (judged,) = judge_tests(runs, [named])
    assert list(judged["against_values"]) == pytest.approx([90, 91, 92])


def test_runs_that_differ_in_a_key_no_selector_names_are_refused(tmp_path, monkeypatch, capsys):
    """A baseline read from another sweep that trained longer would credit its epochs to
    the knob the test names: refused, one error line, exit 2, no claims.md."""
    runs = [run("relu", [0.90, 0.91, 0.92], trainer__epochs=5), run("gelu", [0.95, 0.955, 0.975])]
    runs[1]["config"]["trainer.epochs"] = 1
    with pytest.raises(ClaimError, match=r"differ in trainer.epochs \(1 in .*, 5 in"):
        judge_tests(runs, [gelu_vs_relu()])
    # a run setting (threads) or a key the test names is no objection
    runs[1]["config"].update({"trainer.epochs": 5, "trainer.threads": 1})
    (judged,) = judge_tests(runs, [gelu_vs_relu()])
    assert judged["verdict"] == "holds"

    runs[1]["config"]["trainer.epochs"] = 1
    (tmp_path / "claim_06").mkdir()
    monkeypatch.setattr(records, "load_runs", lambda dirs: runs)
    experiments = tmp_path / "experiment"
    experiments.mkdir()
    (experiments / "claim_06.yaml").write_text(
        "claim: {number: 6, words: GELU, experiment: ReLU vs GELU, tests: [{arm: "
        "model.activation=gelu, against: model.activation=relu, metric: accuracy, "
        "direction: higher}]}\n"
    )
    assert claims_main(experiments, tmp_path, []) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "trainer.epochs" in err
    assert not (tmp_path / "claims.md").exists()


def test_a_group_chosen_by_the_presets_defaults_is_selected_by_its_name():
    """Claim 6's GELU run has LeNet-5 from its preset's defaults, not its command line:
    `model=lenet5` must still select it (claim 6 read "not run" at full size without)."""
    gelu, relu = run("gelu", [0.95, 0.955, 0.975]), run("relu", [0.90, 0.91, 0.92])
    relu["choices"] = {"model": "lenet5"}  # claim 1's sweep chose it on the command line
    gelu["config"]["model.name"] = relu["config"]["model.name"] = "lenet5"
    test = {**gelu_vs_relu(), "arm": "model=lenet5,model.activation=gelu"}
    test["against"] = "model=lenet5,model.activation=relu"
    (judged,) = judge_tests([gelu, relu], [test])
    assert judged["verdict"] == "holds" and len(judged["arm_values"]) == 3
