"""cnnlab: a config-driven experiment CLI for convolutional networks.

From Python: `train(*overrides)` runs what `cnnlab train` runs and returns a Run (metrics,
history, run_dir); `compare_runs(*paths)` is `cnnlab compare`'s table as a DataFrame."""

from cnnlab.api import Run, compare_runs, train

__all__ = ["Run", "compare_runs", "train"]
__version__ = "0.1.0"
