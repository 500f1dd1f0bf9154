"""The user's own images: a folder of class folders (or train/ and test/ each so), decoded
once with Pillow and cached as a uint8 tensor in data.root/image_folder_cache."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import torch

from cnnlab.config import ImageFolderDataConfig
from cnnlab.data.base import DataError, Dataset, data_root, log, read_once, stamp
from cnnlab.files import atomic_file
from cnnlab.outcome import ConfigError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
# bumped when what the cache holds changes, so an old cache is never read as a new one
# (2: 16-bit grey scaled, transparency laid over IMAGE_BACKGROUND)
IMAGE_CACHE_VERSION = 2
# the grey level transparent pixels are laid over: white, as viewers show them
IMAGE_BACKGROUND = 255


def image_size(cfg: ImageFolderDataConfig) -> tuple[int, int]:
    size = cfg.image_size
    return (size, size) if isinstance(size, int) else tuple(size)


def class_folders(folder: Path, stamps: list | None = None) -> list[Path]:
    """The folders in `folder` but hidden ones, by name; its stamp (base.stamp) taken before
    it is listed goes to `stamps`."""
    if stamps is not None:
        stamps.append((folder, stamp(folder)))
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def image_files(
    folder: Path, skipped: list[str] | None = None, stamps: list | None = None
) -> list[str]:
    """Image files below a class folder (sub-folders too), by name; other files and hidden
    ones are left out. Entries named as images that are not regular files (a FIFO, a device,
    a broken link: opening a FIFO would wait forever) go to `skipped`; the stamp of each
    folder, taken before it is listed, to `stamps`. Plain strings and scandir: with pathlib,
    listing 4,000 files took 0.25 s, most of a cached load; and a DirEntry knows its type
    without a stat (a link is followed)."""
    found = []
    folders = [str(folder)]
    while folders:
        path = folders.pop()
        if stamps is not None:
            stamps.append((path, stamp(path)))
        for entry in list_folder(path):
            if entry.name.startswith("."):
                continue
            if entry.is_dir(follow_symlinks=False):
                folders.append(entry.path)
            elif not entry.name.lower().endswith(IMAGE_SUFFIXES):
                continue
            elif is_regular(entry):
                found.append(entry.path)
            elif skipped is not None:
                skipped.append(entry.path)
    return sorted(found)


def list_tree(train_dir: Path, test_dir: Path | None) -> dict:
    """The class folders of train_dir (and of test_dir) and the image files of each, named
    by class, with the names skipped. The check before the run (data.spec) and the run
    (data.load) both need it: listed once, and again only where a folder has changed
    (read_once). Shared between callers: not to be changed."""

    def read():
        stamps, skipped = [], []
        classes = [p.name for p in class_folders(train_dir, stamps)]
        tree = {
            "classes": classes,
            "train": {c: image_files(train_dir / c, skipped, stamps) for c in classes},
        }
        if test_dir is not None:
            tested = [p.name for p in class_folders(test_dir, stamps)]
            tree["test"] = {c: image_files(test_dir / c, skipped, stamps) for c in tested}
        return {**tree, "skipped": sorted(skipped)}, stamps

    key = (os.path.abspath(train_dir), test_dir and os.path.abspath(test_dir))
    return read_once(("image folder", *key), read)


def list_folder(folder: str) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as entries:
            return list(entries)
    except OSError as e:
        raise DataError(
            f"{folder} cannot be listed ({e.strerror}): check its permissions"
        ) from None


def is_regular(entry: os.DirEntry) -> bool:
    """A regular file, or a link to one."""
    try:
        return entry.is_file()
    except OSError:  # a loop of links
        return False


def held_out(n: int, fraction: float) -> int:
    """Images of a class of n that data.test_fraction puts in the test set (one stays)."""
    return min(n - 1, round(fraction * n))


def scan_image_folder(cfg: ImageFolderDataConfig) -> dict:
    """Which files make the training and test sets, and the class names: names and folders
    only, nothing is decoded. Bad layouts fail here with one line naming the folder."""
    if not cfg.path:
        raise ConfigError(
            "data.path is not set: data=image_folder needs data.path=DIR, a folder with one "
            "sub-folder of images per class (or train/ and test/ each so)"
        )
    root = Path(cfg.path).expanduser().resolve()
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise ConfigError(f"data.path={cfg.path} {what}: give a folder of class folders")
    split = [root / "train", root / "test"]
    given = [p.is_dir() for p in split]
    if any(given) and not all(given):
        have, lack = (split[0], split[1]) if given[0] else (split[1], split[0])
        raise ConfigError(
            f"data.path={cfg.path} has {have.name}/ but no {lack.name}/: give both (each with "
            f"the class folders), or only class folders to split by data.test_fraction"
        )
    train_dir = split[0] if all(given) else root
    tree = list_tree(train_dir, split[1] if all(given) else None)
    classes = tree["classes"]
    if not classes:
        raise ConfigError(
            f"data.path={cfg.path}: no class folders in {train_dir} (expected "
            f"{train_dir}/CLASS/IMAGE.png, one folder per class)"
        )
    if extra := [c for c in tree.get("test", {}) if c not in classes]:
        raise ConfigError(
            f"data.path={cfg.path}: test/{extra[0]} has no training folder "
            f"(train/ has {', '.join(classes)})"
        )
    check_image_counts(cfg, {k: v for k, v in tree.items() if k in ("train", "test")}, all(given))
    return {"root": root, **tree}


def check_image_counts(cfg: ImageFolderDataConfig, parts: dict, split_given: bool) -> None:
    """No empty class folder, and a test set that is not empty."""
    for part, by_class in parts.items():
        for c, files in by_class.items():
            if not files:
                sub = f"{part}/{c}" if split_given else c
                raise ConfigError(
                    f"data.path={cfg.path}: class folder {sub} holds no images "
                    f"({', '.join(IMAGE_SUFFIXES)}): add some or remove the folder"
                )
    if len(parts["train"]) < 2:
        raise ConfigError(
            f"data.path={cfg.path}: one class folder ({next(iter(parts['train']))}): a "
            f"classifier needs two or more, one folder per class"
        )
    if split_given and not parts["test"]:
        raise ConfigError(
            f"data.path={cfg.path}: test/ has no class folders, so nothing would be tested: "
            f"add test/CLASS/IMAGE.png, or give only class folders to split by "
            f"data.test_fraction"
        )
    counts = [len(files) for files in parts["train"].values()]
    if not split_given and not sum(held_out(n, cfg.test_fraction) for n in counts):
        raise ConfigError(
            f"data.path={cfg.path}: data.test_fraction={cfg.test_fraction} holds out no image "
            f"(classes of {', '.join(map(str, counts))} images; each keeps one to train on), "
            f"so nothing would be tested: add images or raise data.test_fraction"
        )


def image_folder_spec(cfg: ImageFolderDataConfig) -> tuple[tuple[int, ...], list[str]]:
    return (cfg.channels, *image_size(cfg)), scan_image_folder(cfg)["classes"]


def image_folder_counts(cfg: ImageFolderDataConfig) -> tuple[list[int], list[int]]:
    """Images per class of the training and test sets, from the listing (as load_image_folder
    splits them: each class holds held_out of its images out without a test/ folder)."""
    scan = scan_image_folder(cfg)
    listed = [len(scan["train"][c]) for c in scan["classes"]]
    if "test" in scan:
        return listed, [len(scan["test"].get(c, [])) for c in scan["classes"]]
    test = [held_out(n, cfg.test_fraction) for n in listed]
    return [n - t for n, t in zip(listed, test, strict=True)], test


def flatten_image(img, channels: int):
    """img as 'L' or 'RGB' with its contents kept, where Pillow's convert would lose them:
    16-bit grey (convert clips it at 255) is scaled to 8 bits, and transparency (convert
    drops it, showing whatever colour the transparent pixels hold) is laid over
    IMAGE_BACKGROUND. Palette, 1-bit and CMYK images convert as they are."""
    import numpy as np
    from PIL import Image

    if img.mode == "I" or img.mode.startswith("I;16"):  # Pillow reads 16-bit PNGs so
        grey = np.asarray(img, dtype=np.float64) / 257
        img = Image.fromarray(grey.round().clip(0, 255).astype(np.uint8), "L")
    elif img.has_transparency_data:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (IMAGE_BACKGROUND,) * 3 + (255,))
        img = Image.alpha_composite(background, rgba)
    return img.convert("L" if channels == 1 else "RGB")


def decode_image(path: str, channels: int, size: tuple[int, int]):
    """One file -> H x W x C uint8 array (grey or RGB, resized to `size`, aspect not kept),
    or the reason it cannot be read. Opened without blocking and checked to be a regular
    file first: a FIFO put in its place since the listing must not hang the load."""
    import numpy as np
    from PIL import Image

    h, w = size
    try:
        with open(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return "not a regular file"
            with Image.open(f) as img:
                # JPEG only: decode at a reduced scale (still >= the target) instead of in full
                img.draft("L" if channels == 1 else "RGB", (w, h))
                img = flatten_image(img, channels)
                if img.size != (w, h):
                    img = img.resize((w, h), Image.Resampling.BILINEAR)
                return np.asarray(img, dtype=np.uint8).reshape(h, w, channels)
    except Exception as e:  # Pillow's plugins raise many types on damaged files
        reason = str(e).replace(f"'{path}'", "").replace(f" {path}", "").strip() or "no reason"
        return f"{type(e).__name__}: {reason}".splitlines()[0]  # the path is named by the caller


def decode_images(
    files: list[str], channels: int, size: tuple[int, int], workers: int | None = None
) -> torch.Tensor:
    """N x C x H x W uint8. Pillow releases the GIL while it decodes and resizes, so threads
    (one per core, at most 16) decode in parallel. A file that cannot be read fails the
    load, named: nothing trains on a silently smaller set."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    with ThreadPoolExecutor(workers or min(16, os.cpu_count() or 1)) as pool:
        decoded = list(pool.map(lambda p: decode_image(p, channels, size), files))
    bad = [(p, r) for p, r in zip(files, decoded, strict=True) if isinstance(r, str)]
    if bad:
        shown = "; ".join(f"{p} ({reason})" for p, reason in bad[:5])
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise DataError(
            f"{len(bad)} image file(s) cannot be read: {shown}{more}: replace or delete them"
        )
    if not decoded:
        return torch.empty(0, channels, *size, dtype=torch.uint8)
    return torch.from_numpy(np.stack(decoded)).permute(0, 3, 1, 2).contiguous()


def listed_images(scan: dict) -> tuple[list[str], list[int]]:
    """Every image file, the training ones first, and its class index."""
    files, labels = [], []
    for part in ("train", "test"):
        for c, paths in scan.get(part, {}).items():
            files += paths
            labels += [scan["classes"].index(c)] * len(paths)
    return files, labels


def image_cache_path(cfg: ImageFolderDataConfig, files: list[str]) -> Path:
    """Where the decoded images are cached: keyed by every file's (absolute) path, size and
    mtime and by the target shape, so a changed, added or removed file, or another
    data.image_size or data.channels, makes a new one."""
    key = hashlib.sha256(repr((IMAGE_CACHE_VERSION, cfg.channels, image_size(cfg))).encode())
    for f in files:
        try:
            st = os.stat(f)
        except OSError as e:
            raise DataError(
                f"{f} cannot be read ({e.strerror}): it went since the listing"
            ) from None
        key.update(f"\n{f}\t{st.st_size}\t{st.st_mtime_ns}".encode())
    return data_root(cfg) / "image_folder_cache" / f"{key.hexdigest()[:32]}.pt"


def read_image_cache(path: Path, n: int) -> torch.Tensor | None:
    """The cached images, or None: no cache, or a damaged one (only a cache: decode again)."""
    try:
        x = torch.load(path, weights_only=True)["x"]
    except Exception:  # no file, or whatever torch.load raises on a damaged one
        return None
    return x if isinstance(x, torch.Tensor) and len(x) == n else None


def write_image_cache(path: Path, x: torch.Tensor) -> None:
    """Written whole or not at all (atomic_file); a cache that cannot be written is skipped
    with a warning (the run trains on: only later loads are slower)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as f:
            torch.save({"x": x}, f)
    except (OSError, RuntimeError) as e:  # torch.save raises RuntimeError where a write fails
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        log.warning(
            "warning: could not write the image cache %s (%s): the next run decodes again",
            path,
            reason,
        )


def split_stratified(y: torch.Tensor, fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed seeded split that holds out held_out(n, fraction) images of each class of n:
    the same split for every run and every seed."""
    g = torch.Generator().manual_seed(0)
    train, test = [], []
    for c in range(int(y.max()) + 1 if len(y) else 0):
        idx = (y == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_test = held_out(len(idx), fraction)
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return torch.cat(train).sort().values, torch.cat(test).sort().values


def load_image_folder(cfg: ImageFolderDataConfig) -> Dataset:
    """Decoded once, then read from the cache in data.root/image_folder_cache."""
    scan = scan_image_folder(cfg)
    if skipped := scan["skipped"]:
        more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        log.warning(
            "warning: %d image name(s) skipped, not regular files (a FIFO, a device, a link "
            "to a folder or to nothing): %s%s",
            *(len(skipped), ", ".join(skipped[:5]), more),
        )
    files, labels = listed_images(scan)
    labels = torch.tensor(labels, dtype=torch.long)
    cache = image_cache_path(cfg, files)
    x = read_image_cache(cache, len(files))
    if x is None:
        x = decode_images(files, cfg.channels, image_size(cfg))
        write_image_cache(cache, x)
    if "test" in scan:
        n_train = sum(len(f) for f in scan["train"].values())
        train_idx, test_idx = torch.arange(n_train), torch.arange(n_train, len(files))
    else:
        train_idx, test_idx = split_stratified(labels, cfg.test_fraction)
    return Dataset(x[train_idx], labels[train_idx], x[test_idx], labels[test_idx], scan["classes"])
