"""benchmarks/claims_cost.py, the ledger's cost estimate: the figures it scales by."""

import importlib.util
from pathlib import Path

import pytest

from cnnlab import measures
from cnnlab.config import AFTER_TRAINING, SyntheticDataConfig

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "claims_cost.py"
spec = importlib.util.spec_from_file_location("claims_cost", SCRIPT)
claims_cost = importlib.util.module_from_spec(spec)
spec.loader.exec_module(claims_cost)
pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_cut_training_set_is_counted_as_cut_after_the_full_one():
    """Claims 10 and 19 train on data.train_size images: estimated after a claim on the
    whole set, their steps were once scaled to it (ten times the cost)."""
    cache = {}
    assert claims_cost.counts(SyntheticDataConfig(train_size=300), cache) == (300, 256)
    assert claims_cost.counts(SyntheticDataConfig(train_size=60), cache) == (60, 256)


def test_the_evaluations_follow_the_measures_a_run_takes():
    n_train, n_test = 60_000, 10_000
    assert claims_cost.eval_images([], 5, n_train, n_test) == 5 * n_test
    every = claims_cost.eval_images(AFTER_TRAINING, 1, n_train, n_test)
    assert every == n_test * (1 + 5 + 1) + measures.TRAIN_SAMPLE
    assert claims_cost.eval_images(["train_accuracy"], 1, 500, n_test) == n_test + 500
