"""Differentiable siamese augmentation (DSA; Zhao & Bilen, ICML 2021).

Every operation is written as two steps, *sample parameters* and *apply them*, so that

- siamese augmentation samples one parameter set and applies it to two batches (the real
  and the synthetic batch in DSA and DM matching);
- per-sample augmentation (for training evaluation networks) samples one parameter set per
  image;
- the identity parameters of each operation leave a batch unchanged (a test checks this).

All operations are differentiable with respect to the images. Parameters follow the
reference implementation: flip p=0.5; scale factors in [1/1.2, 1.2]; rotation within
+-15 degrees; translation ("crop") by up to 1/8 of the side with zero fill; cutout of a
square of half the side; colour = brightness (+U(-0.5, 0.5)), saturation (deviation from
the channel mean times U(0, 2)), contrast (deviation from the image mean times
U(0.5, 1.5)).

How operations combine is selectable (it changes accuracy by several points):

``mode="dsa"`` (default, DC/DSA/DM code)
    one operation of the strategy is drawn per call and applied;
``mode="idc"`` (IDC and DiM code)
    flip, colour and cutout are always applied when the strategy names them, plus one
    operation drawn from the rest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from gencond.errors import GencondError

DEFAULT_STRATEGY = "color_crop_cutout_flip_scale_rotate"
MODES = ("dsa", "idc")
_ALWAYS_IN_IDC_MODE = ("flip", "color", "cutout")
# Application order of the always-on operations in IDC mode: flip, colour, the drawn
# operation, cutout last.
_IDC_BEFORE, _IDC_AFTER = ("flip", "color"), ("cutout",)


@dataclass(frozen=True)
class DSAParams:
    """The DSA hyper-parameters (reference values)."""

    flip_prob: float = 0.5
    scale_ratio: float = 1.2
    rotate_degrees: float = 15.0
    crop_ratio: float = 0.125
    cutout_ratio: float = 0.5
    brightness: float = 1.0
    saturation: float = 2.0
    contrast: float = 0.5


def _uniform(n: int, low: float, high: float, device, generator) -> torch.Tensor:
    return torch.rand(n, device=device, generator=generator) * (high - low) + low


def _randint(n: int, low: int, high_inclusive: int, device, generator) -> torch.Tensor:
    return torch.randint(low, high_inclusive + 1, (n,), device=device, generator=generator)


def _per_image(p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Parameters of shape (1,) or (N,) reshaped to broadcast over an NCHW batch."""
    return p.to(x.dtype).view(-1, 1, 1, 1)


# --- the operations: sample(n, size, params, device, generator) -> dict, apply(x, dict) ---


def _sample_flip(n, size, hp, device, gen):
    return {"flip": torch.rand(n, device=device, generator=gen) < hp.flip_prob}


def _apply_flip(x, p):
    return torch.where(p["flip"].view(-1, 1, 1, 1), x.flip(3), x)


def _sample_color(n, size, hp, device, gen):
    return {
        "brightness": _uniform(n, -0.5 * hp.brightness, 0.5 * hp.brightness, device, gen),
        "saturation": _uniform(n, 0.0, hp.saturation, device, gen),
        "contrast": _uniform(n, hp.contrast, hp.contrast + 1.0, device, gen),
    }


def _apply_color(x, p):
    x = x + _per_image(p["brightness"], x)
    channel_mean = x.mean(dim=1, keepdim=True)
    x = (x - channel_mean) * _per_image(p["saturation"], x) + channel_mean
    image_mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - image_mean) * _per_image(p["contrast"], x) + image_mean


def _sample_crop(n, size, hp, device, gen):
    shift = int(size * hp.crop_ratio + 0.5)
    return {"dy": _randint(n, -shift, shift, device, gen), "dx": _randint(n, -shift, shift, device, gen)}


def _apply_crop(x, p):
    """Translate by whole pixels, filling with zeros (the reference pads and crops)."""
    n, c, h, w = x.shape
    rows = torch.arange(h, device=x.device).view(1, h, 1) + p["dy"].view(-1, 1, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w) + p["dx"].view(-1, 1, 1)
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    flat = (rows.clamp(0, h - 1) * w + cols.clamp(0, w - 1)).expand(n, h, w).reshape(n, 1, h * w)
    moved = x.reshape(n, c, h * w).gather(2, flat.expand(n, c, h * w)).view(n, c, h, w)
    return moved * inside.unsqueeze(1).to(x.dtype)


def _sample_cutout(n, size, hp, device, gen):
    side = int(size * hp.cutout_ratio + 0.5)
    # Centres range over [0, size] for even cutouts (so the square can hang off either edge).
    high = size - 1 + (1 - side % 2)
    return {
        "side": torch.full((n,), side, device=device),
        "cy": _randint(n, 0, high, device, gen),
        "cx": _randint(n, 0, high, device, gen),
    }


def _apply_cutout(x, p):
    h, w = x.shape[2:]
    side = p["side"].view(-1, 1, 1)
    top = p["cy"].view(-1, 1, 1) - side // 2
    left = p["cx"].view(-1, 1, 1) - side // 2
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    hole = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)
    return x * (~hole).unsqueeze(1).to(x.dtype)


def _affine(x, theta):
    theta = theta.to(x.dtype).expand(x.shape[0], 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False)


def _sample_scale(n, size, hp, device, gen):
    r = hp.scale_ratio
    return {"sx": _uniform(n, 1 / r, r, device, gen), "sy": _uniform(n, 1 / r, r, device, gen)}


def _apply_scale(x, p):
    zero = torch.zeros_like(p["sx"])
    theta = torch.stack([torch.stack([p["sx"], zero, zero], -1), torch.stack([zero, p["sy"], zero], -1)], 1)
    return _affine(x, theta)


def _sample_rotate(n, size, hp, device, gen):
    limit = hp.rotate_degrees / 180 * math.pi
    return {"angle": _uniform(n, -limit, limit, device, gen)}


def _apply_rotate(x, p):
    cos, sin, zero = p["angle"].cos(), p["angle"].sin(), torch.zeros_like(p["angle"])
    theta = torch.stack([torch.stack([cos, -sin, zero], -1), torch.stack([sin, cos, zero], -1)], 1)
    return _affine(x, theta)


OPERATIONS = {
    "color": (_sample_color, _apply_color),
    "crop": (_sample_crop, _apply_crop),
    "cutout": (_sample_cutout, _apply_cutout),
    "flip": (_sample_flip, _apply_flip),
    "scale": (_sample_scale, _apply_scale),
    "rotate": (_sample_rotate, _apply_rotate),
}


def identity_params(op: str, n: int = 1, size: int = 32, device=None) -> dict[str, torch.Tensor]:
    """Parameters under which ``op`` leaves images unchanged."""
    zeros = torch.zeros(n, device=device)
    ones = torch.ones(n, device=device)
    return {
        "color": lambda: {"brightness": zeros, "saturation": ones, "contrast": ones},
        "crop": lambda: {"dy": zeros.long(), "dx": zeros.long()},
        "cutout": lambda: {"side": zeros.long(), "cy": zeros.long(), "cx": zeros.long()},
        "flip": lambda: {"flip": zeros.bool()},
        "scale": lambda: {"sx": ones, "sy": ones},
        "rotate": lambda: {"angle": zeros},
    }[op]()


@dataclass
class AugmentDraw:
    """One sampled augmentation: the operations to run, in order, with their parameters.

    Parameter tensors have length 1 (siamese: shared by every image of every batch it is
    applied to) or N (one set per image).
    """

    steps: list[tuple[str, dict[str, torch.Tensor]]] = field(default_factory=list)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for op, params in self.steps:
            x = OPERATIONS[op][1](x, params)
        return x


@dataclass
class GroupDraw:
    """One augmentation per group of images (e.g. per class): every image of group g, in
    any batch it is applied to, gets group g's operations and parameters.

    ``plans[g]`` names group g's operations; ``params[op]`` holds one parameter set per
    group for every operation of the strategy.
    """

    plans: list[tuple[str, ...]]
    params: dict[str, dict[str, torch.Tensor]]

    def __call__(self, x: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        """Augment ``x``, whose image i belongs to group ``groups[i]``. One pass per distinct
        plan (at most a few), never per group or per image."""
        distinct = sorted(set(self.plans))
        plan_of_group = torch.tensor([distinct.index(p) for p in self.plans], device=groups.device)
        plan_of_image = plan_of_group[groups]
        pieces, positions = [], []
        for k, plan in enumerate(distinct):
            idx = (plan_of_image == k).nonzero().squeeze(1)
            if len(idx) == 0:
                continue
            g = groups[idx]
            draw = AugmentDraw([(op, {name: v[g] for name, v in self.params[op].items()}) for op in plan])
            pieces.append(draw(x[idx]))
            positions.append(idx)
        if not pieces:
            return x
        order = torch.cat(positions)
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(len(order), device=order.device)
        return torch.cat(pieces)[inverse]


class DSA:
    """Differentiable siamese augmentation with a strategy and a combination mode.

    ``dsa(x)`` augments with one parameter set per image; ``dsa.siamese(a, b)`` augments
    two batches with one shared parameter set; ``dsa.draw(n, size)`` returns the sampled
    parameters for reuse; ``dsa.draw_groups(g, size)`` draws one augmentation per group
    (class-wise siamese augmentation of DM and DSA, all classes in one call).
    """

    def __init__(
        self,
        strategy: str = DEFAULT_STRATEGY,
        mode: str = "dsa",
        params: DSAParams = DSAParams(),
        generator: torch.Generator | None = None,
    ):
        ops = [op for op in strategy.split("_") if op] if strategy.lower() != "none" else []
        unknown = [op for op in ops if op not in OPERATIONS]
        if unknown:
            raise GencondError(
                f"unknown DSA operation(s) {', '.join(unknown)}; choose from {', '.join(OPERATIONS)}"
            )
        if mode not in MODES:
            raise GencondError(f"unknown DSA mode {mode!r}; choose one of {', '.join(MODES)}")
        self.ops, self.mode, self.params, self.generator = ops, mode, params, generator

    def _choose(self, candidates: list[str], device) -> str:
        index = torch.randint(len(candidates), (1,), generator=self.generator, device=device)
        return candidates[int(index)]

    def _plan(self, device) -> list[str]:
        """The operations one call runs, according to the combination mode."""
        if not self.ops:
            return []
        if self.mode == "dsa":
            return [self._choose(self.ops, device)]
        others = [op for op in self.ops if op not in _ALWAYS_IN_IDC_MODE]
        drawn = [self._choose(others, device)] if others else []
        before = [op for op in _IDC_BEFORE if op in self.ops]
        after = [op for op in _IDC_AFTER if op in self.ops]
        return before + drawn + after

    def draw(self, n: int, size: int, device=None) -> AugmentDraw:
        gen_device = self.generator.device if self.generator is not None else device
        steps = [
            (op, {k: v.to(device) for k, v in OPERATIONS[op][0](n, size, self.params, gen_device, self.generator).items()})
            for op in self._plan(gen_device)
        ]
        return AugmentDraw(steps)

    def draw_groups(self, num_groups: int, size: int, device=None) -> GroupDraw:
        """Independent draws for ``num_groups`` groups, the choice of operations included,
        as the DM/DSA code does with one random seed per class."""
        gen_device = self.generator.device if self.generator is not None else device
        plans = [tuple(self._plan(gen_device)) for _ in range(num_groups)]
        params = {
            op: {k: v.to(device) for k, v in OPERATIONS[op][0](num_groups, size, self.params, gen_device, self.generator).items()}
            for op in self.ops
        }
        return GroupDraw(plans, params)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Augment with parameters drawn independently for every image."""
        return self.draw(x.shape[0], x.shape[-1], x.device)(x)

    def siamese(self, *batches: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Augment several batches with one shared parameter set (same transform for all)."""
        draw = self.draw(1, batches[0].shape[-1], batches[0].device)
        return tuple(draw(b) for b in batches)
