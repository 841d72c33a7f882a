"""A class-conditional diffusion model in pixel space, built from diffusers parts, as a
gencond generator.

The denoiser is diffusers' ``UNet2DModel`` with a class embedding of ``num_classes + 1``
entries: the last one is the "null" class that classifier-free guidance (Ho & Salimans
2022) conditions on, and that training substitutes for a label with probability
``p_uncond``. The noise schedule is DDPM's (Ho et al. 2020): ``num_train_timesteps``
steps, linear or cosine (``squaredcos_cap_v2``) betas, epsilon or v prediction.

As a generator (the interface every gencond generator has): a latent is the initial
Gaussian noise of an image, (C, H, W); :meth:`DiffusionGenerator.generate` runs a
deterministic sampler (DDIM with eta = 0, or DPM-Solver++ multistep) from it, with
guidance ``uncond + w * (cond - uncond)`` (w = 1: the conditional model alone, one pass
per step; otherwise two). An image therefore depends only on its latent and label, so a
slot's image is fixed by the seed, as for every generator. The sampler, its steps, the
guidance scale and DDIM's clipping rule are serving settings: saved with the model as
defaults, changed for one use by :meth:`DiffusionGenerator.with_sampler` without touching
the weights.
"""

from __future__ import annotations

import copy

import torch
from diffusers.configuration_utils import register_to_config

from gencond.errors import GencondError
from gencond.models.generators import ConditionalGenerator, gaussian_latents, register_generator
from gencond.runtime import autocast, check_precision, resolve_precision

SAMPLERS = ("ddim", "dpm")
DDIM_CLIPS = ("consistent", "image")
BETA_SCHEDULES = ("linear", "squaredcos_cap_v2")
PREDICTION_TYPES = ("epsilon", "v_prediction")


def check_sampling(sampler: str, steps: int, guidance_scale: float, ddim_clip: str = "consistent") -> None:
    if sampler not in SAMPLERS:
        raise GencondError(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    if steps <= 0:
        raise GencondError(f"sampling steps must be positive, got {steps}")
    if not guidance_scale >= 0:  # also refuses NaN
        raise GencondError(f"guidance scale must be >= 0 (1 = no guidance), got {guidance_scale}")
    if ddim_clip not in DDIM_CLIPS:
        raise GencondError(f"ddim_clip must be one of {', '.join(DDIM_CLIPS)}, got {ddim_clip!r}")


def check_schedule(num_train_timesteps: int, beta_schedule: str, prediction_type: str) -> None:
    if num_train_timesteps <= 1:
        raise GencondError(f"num_train_timesteps must be > 1, got {num_train_timesteps}")
    if beta_schedule not in BETA_SCHEDULES:
        raise GencondError(f"beta_schedule must be one of {', '.join(BETA_SCHEDULES)}, got {beta_schedule!r}")
    if prediction_type not in PREDICTION_TYPES:
        raise GencondError(f"prediction_type must be one of {', '.join(PREDICTION_TYPES)}, got {prediction_type!r}")


def check_unet(block_channels: list[int], layers_per_block: int, attention_levels: list[int]) -> None:
    if not block_channels or min(block_channels) <= 0 or layers_per_block <= 0:
        raise GencondError("block_channels must be a non-empty list of positive widths and layers_per_block positive")
    groups = norm_groups(block_channels)
    if any(c % groups for c in block_channels):
        raise GencondError(f"every width in block_channels must be a multiple of {groups} (group norm), "
                           f"got {block_channels}")
    bad = [a for a in attention_levels if not 0 <= a < len(block_channels)]
    if bad:
        raise GencondError(f"attention level {bad[0]} does not exist: levels are 0..{len(block_channels) - 1}")


def norm_groups(block_channels: list[int]) -> int:
    """Group-norm groups: 32 (DDPM, diffusers' default) where the narrowest level allows, fewer otherwise."""
    return min(32, min(block_channels))


@register_generator("diffusion_unet")
class DiffusionGenerator(ConditionalGenerator):
    """The class-conditional pixel-space diffusion model (see the module docstring)."""

    @register_to_config
    def __init__(
        self,
        num_classes: int,
        channels: int = 3,
        image_size: int = 32,
        block_channels: list[int] = (64, 128, 128),
        layers_per_block: int = 2,
        attention_levels: list[int] = (1,),
        num_train_timesteps: int = 1000,
        beta_schedule: str = "linear",
        prediction_type: str = "epsilon",
        sampler: str = "ddim",
        sampling_steps: int = 25,
        guidance_scale: float = 2.0,
        dataset: dict | None = None,
        ddim_clip: str = "consistent",
    ):
        from diffusers import UNet2DModel

        super().__init__(num_classes, channels, image_size, dataset)
        block_channels, attention_levels = list(block_channels), list(attention_levels)
        check_unet(block_channels, layers_per_block, attention_levels)
        check_schedule(num_train_timesteps, beta_schedule, prediction_type)
        check_sampling(sampler, sampling_steps, guidance_scale, ddim_clip)
        levels = range(len(block_channels))
        self.unet = UNet2DModel(
            sample_size=image_size, in_channels=channels, out_channels=channels,
            block_out_channels=tuple(block_channels), layers_per_block=layers_per_block,
            down_block_types=tuple("AttnDownBlock2D" if i in attention_levels else "DownBlock2D" for i in levels),
            up_block_types=tuple("AttnUpBlock2D" if i in attention_levels else "UpBlock2D" for i in reversed(levels)),
            norm_num_groups=norm_groups(block_channels), num_class_embeds=num_classes + 1)
        self.latent_dim = channels * image_size * image_size
        self.null_class = num_classes
        self.sampler, self.sampling_steps, self.guidance_scale = sampler, sampling_steps, float(guidance_scale)
        self.ddim_clip = ddim_clip
        self.mixed_precision = "no"  # the UNet's autocast while sampling: a serving setting, never saved

    def forward(self, sample: torch.Tensor, timesteps: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The UNet's prediction (noise or velocity, by ``prediction_type``) for noisy images
        at ``timesteps``; label ``num_classes`` is the null class."""
        return self.unet(sample, timesteps, class_labels=labels).sample

    def schedule_config(self) -> dict:
        """The noise schedule shared by training and every sampler."""
        cfg = self.config
        return {"num_train_timesteps": cfg.num_train_timesteps, "beta_schedule": cfg.beta_schedule,
                "prediction_type": cfg.prediction_type}

    def training_scheduler(self):
        """diffusers' ``DDPMScheduler`` over this model's schedule: ``add_noise`` and
        ``get_velocity`` for training."""
        from diffusers import DDPMScheduler

        return DDPMScheduler(**self.schedule_config())

    def sampling_scheduler(self):
        """A fresh sampler (a multistep solver keeps state across one sampling run)."""
        from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

        if self.sampler == "ddim":
            scheduler = DDIMScheduler(**self.schedule_config(), clip_sample=True)
        else:
            scheduler = DPMSolverMultistepScheduler(**self.schedule_config(), algorithm_type="dpmsolver++",
                                                    solver_order=2)
        scheduler.set_timesteps(self.sampling_steps)
        return scheduler

    def with_sampler(self, sampler: str | None = None, steps: int | None = None,
                     guidance_scale: float | None = None, mixed_precision: str | None = None,
                     ddim_clip: str | None = None) -> DiffusionGenerator:
        """This model serving with another sampler, number of steps, guidance scale, UNet
        precision while sampling (``no``, ``bf16``, ``fp16``, ``auto``) or DDIM clipping rule
        (``consistent``, ``image``), sharing its weights (as :meth:`truncated` does); None
        keeps the current one."""
        given = {"sampler": sampler, "sampling_steps": None if steps is None else int(steps),
                 "guidance_scale": None if guidance_scale is None else float(guidance_scale),
                 "mixed_precision": mixed_precision, "ddim_clip": ddim_clip}
        if all(v is None for v in given.values()):
            return self
        served = copy.copy(self)
        for name, value in given.items():
            if value is not None:
                setattr(served, name, value)
        check_sampling(served.sampler, served.sampling_steps, served.guidance_scale, served.ddim_clip)
        check_precision("sampling precision", served.mixed_precision)
        return served

    def sampling_description(self) -> dict:
        """The sampler settings; DDIM's clipping rule with DDIM only, the precision only
        where it is not fp32 (``no``)."""
        described = {"sampler": self.sampler, "steps": self.sampling_steps, "guidance_scale": self.guidance_scale}
        return described | ({"ddim_clip": self.ddim_clip} if self.sampler == "ddim" else {}) \
            | ({"mixed_precision": self.mixed_precision} if self.mixed_precision != "no" else {})

    def latents(self, slots: torch.Tensor | None, count: int, generator: torch.Generator) -> torch.Tensor:
        """Initial noise, (count, C, H, W); truncated at ``truncation`` when that is positive."""
        noise = gaussian_latents(count, self.latent_dim, generator, self.truncation)
        return noise.view(count, self.channels, self.image_size, self.image_size)

    def inverted_steps(self, strength: float) -> int:
        """How many of the sampler's steps a start at ``strength`` leaves to run: the last
        ``strength`` fraction of them (1: all, from pure noise), at least one."""
        if not 0.0 < strength <= 1.0:
            raise GencondError(f"strength must be in (0, 1], got {strength}")
        return max(1, round(strength * self.sampling_steps))

    def guided_output(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The model's prediction for ``x`` at ``t``, guided ``uncond + w * (cond - uncond)``
        (one pass when w = 1)."""
        w, t = self.guidance_scale, t.to(self.device)
        with autocast(resolve_precision(self.mixed_precision, self.device), self.device):
            if w == 1.0:
                return self(x, t, labels).float()
            both = torch.cat([labels, torch.full_like(labels, self.null_class)])
            cond, uncond = self(torch.cat([x, x]), t, both).float().chunk(2)
        return uncond + w * (cond - uncond)

    @torch.no_grad()
    def generate(self, labels: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """Images in the dataset's normalized space, sampled from ``latents`` (the initial
        noise) by the serving sampler, with classifier-free guidance unless the scale is 1."""
        return self.generate_from(labels, latents)

    @torch.no_grad()
    def generate_from(self, labels: torch.Tensor, latents: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
        """:meth:`generate` from ``latents`` taken to be noisy images at the timestep where
        the last ``strength`` fraction of the sampler's steps begins, as :meth:`invert` at
        the same ``strength`` leaves them (1: pure noise, all steps)."""
        self.eval()
        scheduler = self.sampling_scheduler()
        steps = self.inverted_steps(strength)
        if steps < self.sampling_steps and self.sampler != "ddim":
            raise GencondError(f"starting part-way (strength {strength:g}) needs the ddim sampler, not {self.sampler}")
        x = latents.to(self.device, torch.float32) * (scheduler.init_noise_sigma if strength == 1.0 else 1.0)
        labels = labels.to(self.device)
        # DDIM clips the predicted clean image; ddim_clip "consistent" steps with the noise that
        # clipped image implies (GLIDE; DDPM's posterior), "image" with the model's own noise
        consistent = self.sampler == "ddim" and self.ddim_clip == "consistent"
        for t in scheduler.timesteps[len(scheduler.timesteps) - steps:]:
            output = self.guided_output(scheduler.scale_model_input(x, t), t, labels)
            x = scheduler.step(output, t, x, **({"use_clipped_model_output": True} if consistent else {})).prev_sample
        return self.info.from_generator_range(x.clamp(-1, 1))

    @torch.no_grad()
    def invert(self, images: torch.Tensor, labels: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
        """Deterministic DDIM inversion (eta 0, the serving steps and guidance) of images in
        the dataset's normalized space: the noisy images from which :meth:`generate_from` at
        the same ``strength`` runs back to (approximately) ``images``."""
        from diffusers import DDIMInverseScheduler

        self.eval()
        inverse = DDIMInverseScheduler(**self.schedule_config(), clip_sample=False)
        inverse.set_timesteps(self.sampling_steps)
        x = self.info.to_generator_range(images.to(self.device, torch.float32))
        labels = labels.to(self.device)
        for t in inverse.timesteps[:self.inverted_steps(strength)]:
            x = inverse.step(self.guided_output(x, t, labels), t, x).prev_sample
        return x

def predicted_original(scheduler, noisy: torch.Tensor, prediction: torch.Tensor, timesteps: torch.Tensor,
                       prediction_type: str) -> torch.Tensor:
    """The clean image a prediction implies at ``timesteps``: (x_t - sqrt(1 - a) eps) / sqrt(a)
    for epsilon, sqrt(a) x_t - sqrt(1 - a) v for v prediction (a = alpha-bar at t)."""
    alpha = scheduler.alphas_cumprod.to(noisy.device)[timesteps].float().view(-1, 1, 1, 1)
    if prediction_type == "epsilon":
        return (noisy - (1 - alpha).sqrt() * prediction) / alpha.sqrt()
    return alpha.sqrt() * noisy - (1 - alpha).sqrt() * prediction
