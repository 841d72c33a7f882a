"""Class-conditional generators as library objects: the base class every generator
architecture subclasses, their registry, and saving and loading.

Every generator maps (latent, label) to an image in [-1, 1]. What a latent is belongs to
the architecture, so sampling asks the generator for it: :meth:`~ConditionalGenerator.latents`
returns the latents of images at given positions within their class's set (``slots``), or
fresh ones (``slots=None``). DiM's generator draws Gaussian noise whatever the slot; a
codebook generator returns its learned codes for the first slots.
:meth:`~ConditionalGenerator.generate` turns labels and latents into images in the
normalized space of the dataset the generator imitates (its ``dataset`` config), the space
evaluation networks train in.

A generator is a diffusers ``ModelMixin`` and ``ConfigMixin``: its constructor's arguments
are its config (``register_to_config``), ``save_pretrained(dir)`` writes ``config.json`` and
``model.safetensors`` (atomically; never a pickle), and ``from_pretrained(dir)`` returns an
instance of the class that was saved, whichever class it is called on, or refuses with one
line. ``from_pretrained`` also takes a Hugging Face Hub repository id (downloaded through
``huggingface_hub``), and ``push_to_hub`` is diffusers' own.

``truncated(psi)`` serves the same weights with the truncation trick (BigGAN, Brock et al.
2019): the Gaussian part of a latent is drawn from N(0, 1) truncated to [-psi, psi], which
trades diversity for images nearer the modes of their class.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from diffusers.configuration_utils import ConfigMixin
from diffusers.models.modeling_utils import ModelMixin

from gencond import __version__
from gencond.data.base import DatasetInfo
from gencond.errors import GencondError
from gencond.files import atomic_path, write_json

WEIGHTS, CONFIG = "model.safetensors", "config.json"
LEGACY_FORMAT = "gencond-generator/1"  # config.json before generators were diffusers models

GENERATOR_CLASSES: dict[str, type[ConditionalGenerator]] = {}  # by class name, config.json's _class_name
GENERATOR_ARCHITECTURES: dict[str, type[ConditionalGenerator]] = {}  # by architecture name


def gaussian_latents(count: int, dim: int, generator: torch.Generator, truncation: float = 0.0) -> torch.Tensor:
    """(count, dim) draws of N(0, 1); with ``truncation`` psi > 0, of N(0, 1) truncated to
    [-psi, psi], by the inverse CDF (one uniform per entry, so the draw count, and with it
    the stream, does not depend on psi). psi = 0 keeps plain ``torch.randn``."""
    if truncation <= 0:
        return torch.randn(count, dim, generator=generator)
    edge = torch.special.ndtr(torch.tensor(-float(truncation), dtype=torch.float64))
    uniform = torch.rand(count, dim, generator=generator, dtype=torch.float64)
    return torch.special.ndtri(edge + uniform * (1 - 2 * edge)).clamp(-truncation, truncation).float()


def register_generator(name: str):
    """Register a :class:`ConditionalGenerator` subclass under the architecture ``name``."""

    def decorator(cls):
        GENERATOR_ARCHITECTURES[name] = cls
        GENERATOR_CLASSES[cls.__name__] = cls
        cls.architecture = name
        return cls

    return decorator


def unnamed_dataset(num_classes: int, channels: int, image_size: int) -> dict:
    """The dataset description of a generator built without one: classes named by index and
    normalization mean = std = 0.5, under which the generator's [-1, 1] is the normalized space."""
    return DatasetInfo("unnamed", channels, image_size, tuple(str(c) for c in range(num_classes)),
                       (0.5,) * channels, (0.5,) * channels).to_dict()


class ConditionalGenerator(ModelMixin, ConfigMixin):
    """Base of gencond's generators (see the module docstring). A subclass decorates its
    ``__init__`` with diffusers' ``register_to_config``, takes ``num_classes``, ``channels``,
    ``image_size`` and ``dataset`` (a dataset description, ``DatasetInfo.to_dict()``; None:
    :func:`unnamed_dataset`) and passes them here. Tensors a constructor needs (a codebook
    generator's class features) are weights, not config: pass shapes, load values as state."""

    config_name = CONFIG
    architecture: str = ""
    latent_dim: int

    def __init__(self, num_classes: int, channels: int, image_size: int, dataset: dict | None):
        super().__init__()
        self.num_classes, self.channels, self.image_size = num_classes, channels, image_size
        try:
            self.info = DatasetInfo.from_dict(dataset or unnamed_dataset(num_classes, channels, image_size))
        except (KeyError, TypeError, ValueError) as err:
            raise GencondError(f"incomplete dataset description for the generator ({err})") from None
        found = (self.info.num_classes, self.info.channels, self.info.image_size)
        if found != (num_classes, channels, image_size):
            raise GencondError(f"the dataset description has {found[0]} classes of {found[1]} x {found[2]} px images; "
                               f"the generator was built for {num_classes} of {channels} x {image_size} px")
        self.truncation = 0.0
        self.training_record: dict = {}

    def architecture_config(self) -> dict:
        """The constructor's arguments but the dataset description: what a sampled set records."""
        return {k: v for k, v in self.config.items() if not k.startswith("_") and k != "dataset"}

    def truncated(self, psi: float) -> ConditionalGenerator:
        """This generator serving latents truncated at ``psi`` (0 = no truncation), sharing its
        weights; every sampler (``sample_set``, ``GeneratorDataset``, the fresh protocol) follows it."""
        if not psi >= 0:  # also refuses NaN
            raise GencondError(f"truncation must be >= 0 (0 = off), got {psi}")
        served = copy.copy(self)  # a new attribute dict over the same parameters and modules
        served.truncation = float(psi)
        return served

    def with_sampler(self, sampler: str | None = None, steps: int | None = None,
                     guidance_scale: float | None = None, mixed_precision: str | None = None,
                     ddim_clip: str | None = None) -> ConditionalGenerator:
        """This generator with other sampler settings (None: unchanged); only a diffusion
        generator has any, so any setting given here ends with one line."""
        if all(v is None for v in (sampler, steps, guidance_scale, mixed_precision, ddim_clip)):
            return self
        raise GencondError("sampler settings (sampler, steps, guidance scale, precision, DDIM clipping) are for "
                           f"diffusion generators; this one is a {type(self).__name__}")

    def sampling_description(self) -> dict:
        """Serving settings besides the weights that decide what a latent becomes (a diffusion
        model's sampler), recorded with every set drawn; none by default."""
        return {}

    def latents(self, slots: torch.Tensor | None, count: int, generator: torch.Generator) -> torch.Tensor:
        """``count`` latents (on the CPU) for images at positions ``slots`` within their
        class's set, or fresh ones when ``slots`` is None. Default: N(0, I) noise,
        truncated to [-``truncation``, ``truncation``] when that is positive."""
        return gaussian_latents(count, self.latent_dim, generator, self.truncation)

    def generate(self, labels: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """Images in the dataset's normalized space. Batch norm uses running statistics
        (eval mode), so every image depends only on its own latent and label: the same latent
        gives the same image in any batch."""
        self.eval()
        return self.info.from_generator_range(self(latents.to(self.device), labels.to(self.device)).float())

    def forward(self, latents: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def save_pretrained(self, save_directory: str | Path, is_main_process: bool = True, safe_serialization: bool = True,
                        variant: str | None = None, push_to_hub: bool = False, **kwargs) -> Path:
        """Write ``model.safetensors`` (weights and batch-norm statistics) and ``config.json``
        (the constructor's arguments, the training record, the gencond version) to
        ``save_directory``, each atomically. With ``push_to_hub`` the folder is then uploaded
        to the Hub repository ``repo_id`` (default: the folder's name), as diffusers does."""
        from safetensors.torch import save_file

        if not safe_serialization or variant:
            raise GencondError("gencond writes generators as one model.safetensors: no pickles, no variants")
        directory = Path(save_directory)
        if is_main_process:
            directory.mkdir(parents=True, exist_ok=True)
            state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
            with atomic_path(directory / WEIGHTS) as tmp:
                save_file(state, str(tmp), metadata={"format": "pt"})
            write_json(directory / CONFIG, {**json.loads(self.to_json_string()), "_gencond_version": __version__,
                                            "_training": self.training_record})
        if push_to_hub:
            from huggingface_hub import create_repo

            repo_id = create_repo(kwargs.pop("repo_id", directory.name), private=kwargs.pop("private", None),
                                  token=kwargs.get("token"), exist_ok=True).repo_id
            self._upload_folder(directory, repo_id, token=kwargs.get("token"),
                                commit_message=kwargs.get("commit_message"), create_pr=kwargs.get("create_pr", False))
        return directory

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, device: str | torch.device = "cpu",
                        channels_last: bool = True, **hub_kwargs) -> ConditionalGenerator:
        """The generator saved in a folder, or in a Hub repository ``owner/name`` (``hub_kwargs``
        go to ``huggingface_hub.snapshot_download``: ``revision``, ``token``, ``cache_dir``, ...),
        as an instance of the class that was saved (it must be ``cls`` or a subclass), in eval
        mode on ``device``. ``channels_last`` stores the convolution weights in NHWC order,
        which oneDNN and cuDNN run faster (sampling ~1.6x on 2 CPU cores)."""
        directory = pretrained_folder(pretrained_model_name_or_path, **hub_kwargs)
        config = read_generator_config(directory)
        saved = GENERATOR_CLASSES[config["_class_name"]]
        if not issubclass(saved, cls):
            raise GencondError(f"{directory} holds a {saved.__name__}, which is not a {cls.__name__}")
        try:
            net = saved(**{k: v for k, v in config.items() if not k.startswith("_")})
        except TypeError as err:
            raise GencondError(f"{directory / CONFIG}: does not fit {saved.__name__} ({err})") from None
        net.load_state_dict(read_weights(directory / WEIGHTS, net))
        net.training_record = config.get("_training", {})
        memory_format = torch.channels_last if channels_last else torch.preserve_format
        return net.to(device, memory_format=memory_format).eval()


def load_generator(directory: str | Path, device: str | torch.device = "cpu",
                   channels_last: bool = True) -> ConditionalGenerator:
    """``ConditionalGenerator.from_pretrained``: any generator folder (or Hub id), as the class saved."""
    return ConditionalGenerator.from_pretrained(directory, device=device, channels_last=channels_last)


def pretrained_folder(name_or_path: str | Path, **hub_kwargs) -> Path:
    """A local generator folder, or the snapshot of a Hub repository ``owner/name`` (only its
    config and weights are downloaded)."""
    path = Path(name_or_path)
    if path.is_dir() or not _looks_like_repo_id(str(name_or_path)):
        if not path.is_dir():
            raise GencondError(f"no generator folder at {path}")
        return path
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(name_or_path), allow_patterns=[CONFIG, WEIGHTS], **hub_kwargs))
    except Exception as err:  # no network, no such repository, no access: one line either way
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise GencondError(f"no generator folder at {path}, and the Hugging Face Hub did not give one ({first})") from None


def _looks_like_repo_id(text: str) -> bool:
    parts = text.split("/")
    return len(parts) == 2 and all(parts) and not text.startswith((".", "~")) and "\\" not in text


def read_generator_config(directory: str | Path) -> dict:
    """A generator folder's config, checked: the constructor's arguments, ``_class_name``,
    ``_training`` (the record of the run that trained it) and ``_gencond_version``. A folder
    written before generators were diffusers models (``format: gencond-generator/1``) is
    read into the same layout."""
    path = Path(directory) / CONFIG
    if not Path(directory).is_dir():
        raise GencondError(f"no generator folder at {directory}")
    if not path.is_file():
        raise GencondError(f"{directory} has no {CONFIG}; it is not a gencond generator folder")
    try:
        config = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise GencondError(f"cannot parse {path}: {err}") from None
    if isinstance(config, dict) and config.get("format") == LEGACY_FORMAT:
        config = _from_legacy(config, path)
    if not isinstance(config, dict) or config.get("_class_name") not in GENERATOR_CLASSES:
        found = config.get("_class_name") if isinstance(config, dict) else None
        raise GencondError(f"{path} is not a gencond generator config (class {found!r}; known: "
                           f"{', '.join(sorted(GENERATOR_CLASSES))})")
    return config


def _from_legacy(config: dict, path: Path) -> dict:
    if config.get("architecture") not in GENERATOR_ARCHITECTURES or not isinstance(config.get("generator"), dict):
        raise GencondError(f"{path}: unknown generator architecture {config.get('architecture')!r}")
    return {"_class_name": GENERATOR_ARCHITECTURES[config["architecture"]].__name__, **config["generator"],
            "dataset": config.get("dataset"), "_training": config.get("training", {}),
            "_gencond_version": config.get("gencond_version")}


def read_weights(path: Path, net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The safetensors state at ``path``, checked against ``net``'s (names and shapes):
    anything else ends with one line. Pickles are never loaded."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise GencondError(f"no weights file at {path}")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise GencondError(f"cannot read {path} as safetensors (pickles are never loaded): {err}") from None
    expected = net.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        detail = (f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}" if unexpected
                  else f"{wrong[0]} has shape {tuple(state[wrong[0]].shape)}, config needs {tuple(expected[wrong[0]].shape)}")
        raise GencondError(f"{path} does not fit its config: {detail}")
    return state
