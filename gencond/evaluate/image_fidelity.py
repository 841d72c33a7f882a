"""Image fidelity of generated images through torch-fidelity: FID, KID, Inception Score and
precision/recall of generated vs real images, overall and per class.

No machine of this project can download Inception weights, so the features come from one
of two extractors, named beside every figure:

- ``task`` (default): a network trained on the task's own real training split, registered
  with torch-fidelity as a feature extractor; its pooled penultimate features serve FID,
  KID and precision/recall, its logits the Inception Score (an "Inception Score" under
  this classifier, comparable only with itself);
- ``inception``: torch-fidelity's InceptionV3 from a local weights file (grey images
  repeated to three channels); a missing file ends with one line, never a download.

FID and KID depend on the number of images: compare figures only at equal N, which is
stored and printed beside each.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch_fidelity
from torch import nn
from torch.utils.data import Dataset
from torch_fidelity.feature_extractor_base import FeatureExtractorBase

from gencond.data.base import DatasetInfo
from gencond.errors import GencondError

EXTRACTORS = ("task", "inception")
INCEPTION = "inception-v3-compat"
_KEYS = {
    torch_fidelity.KEY_METRIC_FID: "fid",
    torch_fidelity.KEY_METRIC_KID_MEAN: "kid_mean",
    torch_fidelity.KEY_METRIC_KID_STD: "kid_std",
    torch_fidelity.KEY_METRIC_ISC_MEAN: "isc_mean",
    torch_fidelity.KEY_METRIC_ISC_STD: "isc_std",
    torch_fidelity.KEY_METRIC_PRECISION: "precision",
    torch_fidelity.KEY_METRIC_RECALL: "recall",
}
_registered = itertools.count()


class TaskFeatures(FeatureExtractorBase):
    """A network trained on the task's data as a torch-fidelity feature extractor; each
    registered name maps to one network (torch-fidelity builds extractors by name)."""

    networks: dict[str, tuple[nn.Module, DatasetInfo]] = {}

    def __init__(self, name: str, features_list, **kwargs):
        super().__init__(name, features_list)
        self.net, self.info = TaskFeatures.networks[name]

    @staticmethod
    def get_provided_features_list():
        return "pool", "logits_unbiased"

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return "logits_unbiased" if metric == "isc" else "pool"

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return None

    def forward(self, x: torch.Tensor):
        device = next(self.net.parameters()).device
        hidden = self.net.forward_features(self.info.from_pixels(x.to(device)))
        provided = {"pool": self.net.forward_head(hidden, pre_logits=True), "logits_unbiased": self.net.forward_head(hidden)}
        return tuple(provided[f].float() for f in self.features_list)


def register_task_extractor(net: nn.Module, info: DatasetInfo, description: str) -> str:
    """Register ``net`` (eval mode) with torch-fidelity; returns the extractor's name, made of
    letters, digits, ``-``, ``_`` and ``.`` (torch-fidelity refuses path separators, which an
    ``npz:PATH`` dataset name holds)."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"gencond-{description}-{next(_registered)}")
    TaskFeatures.networks[name] = (net.eval(), info)
    torch_fidelity.register_feature_extractor(name, TaskFeatures)
    return name


class Uint8Images(Dataset):
    """Normalized images as the 8-bit tensors torch-fidelity reads (three channels for
    InceptionV3)."""

    def __init__(self, images: torch.Tensor, info: DatasetInfo, rgb: bool = False):
        pixels = (info.denormalize(images.float()).clamp(0, 1) * 255).round().to(torch.uint8)
        self.pixels = pixels.expand(-1, 3, -1, -1) if rgb and pixels.shape[1] == 1 else pixels

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.pixels[i]


@dataclass
class FidelityExtractor:
    """Which features to compare: a registered task network's, or InceptionV3's from a
    local weights file."""

    name: str
    weights: str = ""

    @classmethod
    def inception(cls, weights: str) -> FidelityExtractor:
        if not weights or not Path(weights).is_file():
            raise GencondError(f"Inception weights file {weights or '(none given)'!r} not found; give a local "
                               "file (no download is attempted) or use the task's own extractor")
        return cls(INCEPTION, weights)

    def metrics(self, generated: torch.Tensor, real: torch.Tensor, info: DatasetInfo, device: torch.device,
                seed: int = 0) -> dict[str, float]:
        """FID, KID, Inception Score, precision and recall of ``generated`` vs ``real``
        (normalized images), with the image counts."""
        n = min(len(generated), len(real))
        if n < 10:
            raise GencondError(f"image fidelity needs at least 10 images on each side, got {len(generated)} and {len(real)}")
        rgb = self.name == INCEPTION
        found = torch_fidelity.calculate_metrics(
            input1=Uint8Images(generated, info, rgb), input2=Uint8Images(real, info, rgb), cuda=device.type == "cuda",
            batch_size=200, isc=True, fid=True, kid=True, prc=True, feature_extractor=self.name,
            feature_extractor_weights_path=self.weights or None, kid_subset_size=min(1000, n), verbose=False,
            save_cpu_ram=True, cache=False, rng_seed=seed,
        )
        return {"n_generated": len(generated), "n_real": len(real),
                **{short: float(found[key]) for key, short in _KEYS.items() if key in found}}


def per_class_fidelity(extractor: FidelityExtractor, generated: torch.Tensor, generated_labels: torch.Tensor,
                       real: torch.Tensor, real_labels: torch.Tensor, info: DatasetInfo, device: torch.device,
                       seed: int = 0) -> dict:
    """The metrics over all classes and for each class (the same extractor, N per class)."""
    report = {"extractor": extractor.name, "all": extractor.metrics(generated, real, info, device, seed), "per_class": {}}
    for c, name in enumerate(info.class_names):
        report["per_class"][name] = extractor.metrics(generated[generated_labels == c], real[real_labels == c],
                                                      info, device, seed)
    return report
