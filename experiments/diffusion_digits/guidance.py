"""Which classifier-free guidance scale (and sampler steps) should the digits diffusion
generator serve with? Fixed sets of one generator trained with a validation split carved from
the training data (``gencond sweep``'s plain variant), drawn at each setting and scored on that
validation split only (ConvNet-3, DSA, final accuracy); the test split is not read.

    python -m experiments.diffusion_digits.guidance --generator runs/sweep_diffusion_digits/plain/generator \\
        --json experiments/diffusion_digits/guidance.json
"""

from __future__ import annotations

from experiments.diffusion_digits._validation import arguments, held_out_generator, score_and_write
from gencond.engine import IndexedData
from gencond.evaluate.protocol import TrainingSet
from gencond.models.diffusion import DDIM_CLIPS
from gencond.serve import sample_set


def main() -> None:
    parser = arguments(__doc__.splitlines()[0])
    parser.add_argument("--guidance", type=float, nargs="+", default=[1.0, 2.0, 4.0])
    parser.add_argument("--steps", type=int, nargs="+", default=[25])
    parser.add_argument("--mixed-precision", default="no", help="the UNet's precision while sampling")
    parser.add_argument("--ddim-clip", choices=DDIM_CLIPS, help="DDIM's clipping rule (default: the model's)")
    args = parser.parse_args()
    generator, held_out = held_out_generator(args)
    rows = []
    for steps in args.steps:
        for guidance in args.guidance:
            served = generator.with_sampler(steps=steps, guidance_scale=guidance, mixed_precision=args.mixed_precision,
                                            ddim_clip=args.ddim_clip)
            precision = f", {args.mixed_precision}" if args.mixed_precision != "no" else ""
            clip = f", clip {args.ddim_clip}" if args.ddim_clip else ""
            rows += [TrainingSet(f"guidance {guidance:g}, {steps} steps{precision}{clip}", n, lambda seed, g=served, n=n:
                                 IndexedData.from_condensed(sample_set(g, n, seed))) for n in args.inpc]
    score_and_write("diffusion_guidance", args, generator, held_out, rows)


if __name__ == "__main__":
    main()
