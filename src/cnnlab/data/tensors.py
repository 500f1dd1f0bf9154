"""Loaded data as the model sees them: float32 on the training device, normalised once for
the whole set (there are no per-sample transforms), and the statistics data.normalize=auto
takes from the training data."""

from __future__ import annotations

import torch

from cnnlab.data.base import DataError


def as_float(x: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] (ToTensor's scale), series as they are, as float32."""
    return x.float().div_(255) if x.dtype == torch.uint8 else x.float()


def channel_stats(x: torch.Tensor, chunk: int = 4096) -> list[list[float]]:
    """Per-channel [mean, std] of x on to_device's scale, summed over chunks so a large set
    never needs a float copy of itself."""
    axes = [0, *range(2, x.dim())]
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for i in range(0, len(x), chunk):
        part = as_float(x[i : i + chunk])  # float32 within a chunk, float64 across chunks
        total += part.sum(axes).double()
        squares += part.square().sum(axes).double()
    n = max(1, x.numel() // x.shape[1])
    mean = total / n
    std = (squares / n - mean.square()).clamp(min=0).sqrt()
    std = torch.where(std > 1e-6, std, torch.ones_like(std))  # a constant channel stays put
    return [mean.tolist(), std.tolist()]


def free_memory(device: torch.device) -> int | None:
    """Bytes free on the device (host RAM for the CPU), or None where that is not known."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as f:
                line = next(line for line in f if line.startswith("MemAvailable:"))
            return int(line.split()[1]) * 1024
        except (OSError, StopIteration, ValueError):
            return None
    return None


def to_device(x: torch.Tensor, device: torch.device, normalize) -> torch.Tensor:
    """The data as float32 on the device, (x - mean) / std; uint8 images are first scaled to
    [0, 1], so it is the same arithmetic as ToTensor + Normalize, done once for the whole
    set; float data (time series) are not scaled. mean and std are numbers or one per
    channel. The uint8 tensor crosses to the device, a quarter of the bytes of the float one.

    The size is checked before the move: data that would not fit fail naming the size.
    """
    device = torch.device(device)
    needed = 4 * x.numel() + (x.numel() * x.element_size() if x.device != device else 0)
    free = free_memory(device)
    if free is not None and needed > free:
        shape = "x".join(map(str, x.shape))
        raise DataError(
            f"the data ({shape} {str(x.dtype).removeprefix('torch.')}) need "
            f"{needed / 2**30:.2f} GiB on {device} as float32 but {free / 2**30:.2f} GiB is "
            f"free: use fewer or smaller inputs (data.train_size, data.image_size) or a "
            f"device with more memory (device=cpu)"
        )
    shape = (-1,) + (1,) * (x.dim() - 2)  # one value per channel, broadcast over the rest
    mean, std = (torch.tensor(v, dtype=torch.float32, device=device).view(shape) for v in normalize)
    if x.dtype == torch.uint8:
        return x.to(device).float().div_(255).sub_(mean).div_(std)
    return x.to(device, torch.float32).sub(mean).div_(std)  # never in place on the caller's x
