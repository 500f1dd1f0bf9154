"""Seconds per epoch: cnnlab's training loop against the chapter's classic DataLoader one.

The same as `cnnlab bench` (see `--help`), for a checkout without the console script:
    python benchmarks/epoch_time.py --data fashion_mnist --epochs 3 --out bench.json
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # a source checkout

from cnnlab.cli import bench_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(bench_main(sys.argv[1:]))
