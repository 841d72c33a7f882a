"""Multi-formation (IDC; Kim et al. 2022): one stored image holds f x f smaller images.

``decode`` cuts every stored H x W image into f x f blocks and upsamples each block back
to H x W (bilinear, align_corners=False), so a set of N stored images trains a network on
f^2 N images at the same pixel budget. The output is block-major, as in the official
code: decoded image ``k * N + m`` is block ``k = i * f + j`` (row i, column j) of stored
image m. ``encode`` is the initialisation that goes the other way: it shrinks f^2 N
images (nearest neighbour, the code's default) and tiles them so that ``decode`` returns
approximations of them in the same order.

Both work in any affine pixel space (bilinear weights sum to one), so they apply to
normalized images directly; the padding of a side not divisible by f is the value that
a mid-grey (0.5) pixel has in that space.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def grey_pad(info) -> torch.Tensor:
    """Per-channel value of a mid-grey (0.5) pixel in ``info``'s normalized space: the
    padding of a side not divisible by f, as the code pads with 0.5."""
    return info.normalize(torch.full((1, info.channels, 1, 1), 0.5)).flatten()


def _padded_side(size: int, factor: int) -> int:
    return -(-size // factor) * factor


def decode(images: torch.Tensor, factor: int, pad_value: torch.Tensor | float = 0.0) -> torch.Tensor:
    """(N, C, H, W) stored images -> (f^2 N, C, H, W) training images, block-major."""
    if factor == 1:
        return images
    n, c, h, w = images.shape
    side = _padded_side(max(h, w), factor)
    if (h, w) != (side, side):
        canvas = torch.empty(n, c, side, side, dtype=images.dtype, device=images.device)
        canvas[:] = torch.as_tensor(pad_value, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
        canvas[:, :, :h, :w] = images
        images = canvas
    block = side // factor
    blocks = images.view(n, c, factor, block, factor, block).permute(2, 4, 0, 1, 3, 5).reshape(factor * factor * n, c, block, block)
    return F.interpolate(blocks, size=(h, w), mode="bilinear", align_corners=False)


def decode_labels(labels: torch.Tensor, factor: int) -> torch.Tensor:
    """Labels (N,) or soft labels (N, C) of :func:`decode`'s output."""
    return labels.repeat(factor * factor, *([1] * (labels.dim() - 1)))


def encode(images: torch.Tensor, factor: int) -> torch.Tensor:
    """(f^2 N, C, H, W) block-major images -> (N, C, H, W) stored images: image ``k N + m``
    shrunk into block k of stored image m."""
    if factor == 1:
        return images
    total, c, h, w = images.shape
    n = total // (factor * factor)
    side = _padded_side(max(h, w), factor)
    block = side // factor
    small = F.interpolate(images, size=(block, block), mode="nearest")
    tiled = small.view(factor, factor, n, c, block, block).permute(2, 3, 0, 4, 1, 5).reshape(n, c, side, side)
    return tiled[:, :, :h, :w].contiguous()
