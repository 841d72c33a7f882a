"""``gencond sample``: draw exactly INPC images per class from a trained generator."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from gencond.artifacts import check_compatible
from gencond.cli import command
from gencond.data import DatasetSplits
from gencond.engine import CANDIDATE_RULES, ReferenceNetwork, resolve_device
from gencond.engine.candidates import check_candidates
from gencond.engine.d3hr import D3HR, D3HR_GROUPS, D3HR_STRENGTH, check_invertible, fit_latent_gaussians
from gencond.engine.sampling import check_inpc, class_list, set_config, stream_set
from gencond.errors import GencondError
from gencond.methods.coresets import SelectionConfig, embedding_network
from gencond.models import ConditionalGenerator, load_generator
from gencond.models.diffusion import DDIM_CLIPS, SAMPLERS
from gencond.runtime import PRECISIONS
from gencond.serve.export import FORMATS, check_fits, output_path, write_stream

SHIPPED = Path(__file__).resolve().parents[2] / "checkpoints" / "dim_digits"


def default_checkpoint() -> Path:
    if not SHIPPED.is_dir():
        raise GencondError(f"no --checkpoint given and the shipped generator is missing at {SHIPPED}")
    return SHIPPED


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--inpc", type=int, required=True, help="images per class")
    parser.add_argument("--checkpoint", type=Path, help=f"generator folder (default: the shipped {SHIPPED.name})")
    parser.add_argument("--out", type=Path, help="output folder (png) or file (npz, pt); default samples/inpc<N>")
    parser.add_argument("--format", default="png", choices=FORMATS, help="png: ImageFolder tree; others: condensed set file")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same images")
    parser.add_argument("--classes", type=int, nargs="+", help="class indices to draw (default: all)")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--shard-size", type=int, default=50_000, metavar="IMAGES",
                        help="a safetensors or npz set of more images is written as a folder of files of this many "
                             "images and an index.json (memory stays bounded by it)")
    parser.add_argument("--truncation", type=float, default=0.0, metavar="PSI",
                        help="draw the latents' Gaussian part from N(0, 1) truncated to [-PSI, PSI]: images nearer "
                             "their class's modes, less diverse (0 = off)")
    parser.add_argument("--sampler", choices=SAMPLERS, help="diffusion generators: ddim or dpm (DPM-Solver++) "
                                                            "(default: the one saved with the model)")
    parser.add_argument("--sampling-steps", type=int, help="diffusion generators: sampler steps (default: as saved)")
    parser.add_argument("--guidance-scale", type=float, help="diffusion generators: classifier-free guidance scale, "
                                                             "1 = none (default: as saved)")
    parser.add_argument("--mixed-precision", choices=PRECISIONS, help="diffusion generators: the UNet's precision "
                        "while sampling (default: no, fp32; auto: bf16 where the device runs it natively)")
    parser.add_argument("--ddim-clip", choices=DDIM_CLIPS, help="diffusion generators: consistent = DDIM steps with "
                        "the noise its clipped clean image implies, image = with the model's own (default: as saved)")
    parser.add_argument("--latents", choices=("noise", "d3hr"), default="noise",
                        help="diffusion generators: d3hr = D3HR's chosen latents, fitted to DDIM inversions of the real "
                             "training split (the set then depends on INPC)")
    parser.add_argument("--strength", type=float, help="D3HR: the fraction of the sampler's steps inverted and "
                                                       f"denoised again (default {D3HR_STRENGTH})")
    parser.add_argument("--groups", type=int, help=f"D3HR: candidate groups searched per class (default {D3HR_GROUPS:,})")
    parser.add_argument("--candidates", type=int, default=1, metavar="M",
                        help="draw M x INPC images per class and keep INPC of them by --rule (1 = no selection)")
    parser.add_argument("--rule", default="herding", help=f"candidate selection rule: {', '.join(CANDIDATE_RULES)}")
    parser.add_argument("--selector-epochs", type=int, default=SelectionConfig.embed_epochs,
                        help="epochs the selection network (the coresets' ConvNet) trains on the real training split")
    parser.add_argument("--soft-labels", action="store_true",
                        help="also store a teacher's logits of every image as soft_labels (not with --format png)")
    parser.add_argument("--teacher-epochs", type=int, default=10,
                        help="epochs the teacher (ConvNet) trains on the real training split")
    parser.add_argument("--data-root", help="where the generator's dataset lives (default: as in its training config)")
    parser.add_argument("--device", default="auto")


def training_splits(generator: ConditionalGenerator, role: str, data_root: str | None, device: str, seed: int,
                    epochs: int = 0) -> tuple[SelectionConfig, DatasetSplits]:
    """The config and splits of the dataset the generator was trained on (read from its
    training config), for what ``role`` needs of its real training images."""
    training = generator.training_record
    if "dataset" not in training:
        raise GencondError(f"the generator's config names no training dataset: the {role} needs its real data")
    cfg = SelectionConfig(dataset=training["dataset"], data_root=data_root or training.get("data_root", "data"),
                          image_size=training.get("image_size", 0), download=training.get("download", False),
                          embed_epochs=epochs, device=device, seed=seed)
    cfg.check()
    splits = cfg.load_splits()
    check_compatible(generator.info, splits.info, "the generator")
    return cfg, splits


def real_data_reference(generator: ConditionalGenerator, role: str, epochs: int, data_root: str | None, device: str,
                        seed: int) -> ReferenceNetwork:
    """The coresets' embedding network (the selection network or the teacher: ``role``),
    trained on the real training split of the dataset the generator was trained on."""
    cfg, splits = training_splits(generator, role, data_root, device, seed, epochs)
    start = time.perf_counter()
    net = embedding_network(splits.train, cfg, seed)
    seconds = time.perf_counter() - start
    print(f"{role}: {cfg.embed_net} trained {epochs} epoch(s) on {len(splits.train)} real images of "
          f"{splits.info.name} in {seconds:.1f} s")
    return ReferenceNetwork(net, {"network": cfg.embed_net, "trained_on": f"{splits.info.name} training split",
                          "images": len(splits.train), "epochs": epochs, "seed": seed, "train_seconds": round(seconds, 2)})


def d3hr_latents(generator: ConditionalGenerator, args: argparse.Namespace) -> D3HR:
    """D3HR's class Gaussians for the classes asked for, fitted to inversions of the real
    training split."""
    check_invertible(generator)
    _, splits = training_splits(generator, "D3HR", args.data_root, args.device, args.seed)
    start = time.perf_counter()
    gaussians = fit_latent_gaussians(generator, splits.train, args.strength, class_list(generator, args.classes),
                                     args.batch_size)
    print(f"D3HR: {gaussians.images} real images inverted at strength {args.strength:g} in "
          f"{time.perf_counter() - start:.1f} s")
    return D3HR(gaussians, args.groups)


def progress(runs, total: int):
    """The runs, counted on a progress bar of images (stderr; silent when not a terminal)."""
    from tqdm.auto import tqdm

    with tqdm(total=total, unit="img", desc="sampling", disable=None) as bar:
        for run in runs:
            yield run
            bar.update(len(run[1]))


@command("sample", help="draw INPC images per class from a generator (ImageFolder PNGs or a condensed set file)",
         add_arguments=add_arguments)
def run(args: argparse.Namespace) -> None:
    generator = load_generator(args.checkpoint or default_checkpoint(), resolve_device(args.device))
    generator = generator.truncated(args.truncation)
    generator = generator.with_sampler(args.sampler, args.sampling_steps, args.guidance_scale, args.mixed_precision,
                                     args.ddim_clip)
    check_inpc(args.inpc)
    check_candidates(args.candidates, args.rule, None, need_selector=False)
    if args.latents == "d3hr" and args.candidates > 1:
        raise GencondError("--latents d3hr and --candidates both choose the fixed set: use one of them")
    if args.latents != "d3hr" and (args.strength is not None or args.groups is not None):
        raise GencondError("--strength and --groups are D3HR's: add --latents d3hr")
    args.strength = D3HR_STRENGTH if args.strength is None else args.strength
    args.groups = D3HR_GROUPS if args.groups is None else args.groups
    for name, value, least in (("selector epochs", args.selector_epochs, 0), ("teacher epochs", args.teacher_epochs, 0),
                               ("batch size", args.batch_size, 1), ("shard size", args.shard_size, 1),
                               ("groups", args.groups, 1)):
        if value < least:
            raise GencondError(f"--{name.replace(' ', '-')}: {name} must be {'positive' if least else '>= 0'}, got {value}")
    if args.soft_labels and args.format == "png":
        raise GencondError("--soft-labels needs a condensed set file (--format safetensors, npz or pt): "
                           "PNG folders cannot hold them")
    classes = len(class_list(generator, args.classes))
    total = classes * args.inpc
    out = args.out or Path("samples") / f"inpc{args.inpc}"
    run_images = args.inpc * args.candidates if args.candidates > 1 or args.latents == "d3hr" \
        else min(total, args.shard_size)
    check_fits(generator.info, total, args.format, output_path(out, args.format, total, args.shard_size),
               args.soft_labels, run_images)
    selector = real_data_reference(generator, "selection network", args.selector_epochs, args.data_root, args.device,
                                   args.seed) if args.candidates > 1 else None
    teacher = real_data_reference(generator, "teacher", args.teacher_epochs, args.data_root, args.device,
                                  args.seed) if args.soft_labels else None
    d3hr = d3hr_latents(generator, args) if args.latents == "d3hr" else None
    start = time.perf_counter()
    runs = stream_set(generator, args.inpc, args.seed, args.classes, args.batch_size, args.candidates, args.rule,
                      selector, teacher, chunk=min(args.shard_size, 10_000), d3hr=d3hr)
    config = set_config(generator, args.inpc, args.seed, args.candidates, args.rule, selector, teacher, d3hr)
    path = write_stream(progress(runs, total), generator.info, f"{generator.architecture} sample", config, out,
                        args.format, total, args.shard_size)
    seconds = time.perf_counter() - start
    kept = f", kept by {args.rule} from {args.candidates}x as many" if args.candidates > 1 else ""
    kept += f", latents truncated at {args.truncation:g}" if args.truncation else ""
    kept += f", D3HR latents from {args.groups} groups" if d3hr is not None else ""
    kept += ", with the teacher's soft labels" if teacher is not None else ""
    print(f"{total} images ({args.inpc} per class, {classes} classes{kept}) generated and written in {seconds:.2f} s "
          f"({total / max(seconds, 1e-9):.0f} images/s) to {path}")
