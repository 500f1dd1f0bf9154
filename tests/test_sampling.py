"""data.train_size / data.test_size: a fixed, seeded sample stratified by class, the same
for every source, every run and every training seed (not the first N rows: an image folder
lists its images class by class)."""

import csv

import pytest
import torch
from conftest import cnnlab_train
from PIL import Image

from cnnlab import data
from cnnlab.config import DataConfig, ImageFolderDataConfig, SyntheticDataConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def three_classes(root, n=40):
    """root/{a,b,c}/i.png: n small grey images per class, each of its own value."""
    for c, name in enumerate("abc"):
        (root / name).mkdir(parents=True)
        for i in range(n):
            Image.new("L", (8, 8), 80 * c + i).save(root / name / f"{i}.png")
    return root


def test_a_folder_cut_to_n_keeps_every_class_in_proportion(tmp_path):
    folder = three_classes(tmp_path / "imgs")
    cfg = ImageFolderDataConfig(path=str(folder), root=str(tmp_path / "data"), image_size=8)
    whole = data.load(cfg)
    assert torch.bincount(whole.y_test).tolist() == [8, 8, 8]  # test_fraction 0.2 of 40
    cut = data.load(ImageFolderDataConfig(**{**vars(cfg), "train_size": 30, "test_size": 9}))
    assert torch.bincount(cut.y_train).tolist() == [10, 10, 10]
    assert torch.bincount(cut.y_test).tolist() == [3, 3, 3]
    # images of the set, with their own labels, in the set's order
    kept = data.sample(whole.y_train, 30)
    assert torch.equal(cut.x_train, whole.x_train[kept]) and kept.tolist() == sorted(kept.tolist())
    assert torch.equal(cut.y_train, whole.y_train[kept])


def test_the_same_n_gives_the_same_images_whatever_the_global_seed(tmp_path):
    cfg = SyntheticDataConfig(train_size=512, test_size=256)
    generated = data.source(cfg).load(cfg)
    cut = DataConfig(name="digits", root=str(tmp_path), train_size=100, test_size=40)
    torch.manual_seed(1)
    first = data.load(cut), data.sample(generated.y_train, 100)
    torch.manual_seed(2)  # as another training seed would set it
    again = data.load(cut), data.sample(generated.y_train, 100)
    assert torch.equal(first[0].x_train, again[0].x_train)
    assert torch.equal(first[0].x_test, again[0].x_test)
    assert torch.equal(first[1], again[1])


@pytest.mark.parametrize(
    "counts, n, expected",
    [
        ([50, 30, 20], 10, [5, 3, 2]),  # exact shares
        ([7, 7, 7], 10, [4, 3, 3]),  # the leftover image to the lowest class on a tie
        ([90, 6, 4], 10, [9, 1, 0]),  # largest remainders: 0.6 beats 0.4
        ([3, 3], 6, [3, 3]),  # n as large as the set: all of it
    ],
)
def test_each_class_keeps_its_share(counts, n, expected):
    y = torch.cat([torch.full((k,), c) for c, k in enumerate(counts)])
    y = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(3))]
    kept = y[data.sample(y, n)]
    assert len(kept) == n
    assert torch.bincount(kept, minlength=len(counts)).tolist() == expected


def test_n_none_or_larger_than_the_set_keeps_it_as_it_is():
    y = torch.tensor([2, 0, 1, 0])
    assert data.sample(y, None) == slice(None) and data.sample(y, 4) == slice(None)


def test_a_run_on_a_folder_cut_to_n_tests_every_class(tmp_path):
    folder = three_classes(tmp_path / "imgs")
    run = tmp_path / "run"
    code = cnnlab_train(
        run, "model=mlp", "data=image_folder", f"data.path={folder}", "data.image_size=8",
        f"data.root={tmp_path / 'data'}", "data.train_size=30", "data.test_size=9",
        "pictures=false", "trainer.epochs=1",
    )  # fmt: skip
    assert code == 0
    with open(run / "confusion_matrix.csv") as f:
        rows = list(csv.reader(f))[1:]
    assert {row[0]: sum(map(int, row[1:])) for row in rows} == {"a": 3, "b": 3, "c": 3}
