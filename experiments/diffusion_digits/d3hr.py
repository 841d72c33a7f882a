"""Do D3HR's chosen latents make better fixed sets than plain noise for the digits diffusion
generator, and at which inversion strength? Fixed sets of one generator trained with a
validation split held out (``gencond sweep``'s plain variant), their latents chosen by D3HR
(fitted to DDIM inversions of that generator's own training images), scored on the validation
split only (ConvNet-3, DSA, final accuracy); the test split is not read. Plain noise at the
same serving settings is the guidance study's row (``guidance.json``: same generator, seeds and
recipe).

    python -m experiments.diffusion_digits.d3hr --generator runs/sweep_diffusion_digits/plain/generator \\
        --json experiments/diffusion_digits/d3hr.json
"""

from __future__ import annotations

import time

from experiments.diffusion_digits._validation import arguments, held_out_generator, score_and_write
from gencond.engine import IndexedData
from gencond.engine.d3hr import D3HR, D3HR_GROUPS, fit_latent_gaussians
from gencond.evaluate.protocol import TrainingSet
from gencond.serve import sample_set


def main() -> None:
    parser = arguments(__doc__.splitlines()[0])
    parser.add_argument("--strength", type=float, nargs="+", default=[0.6, 1.0])
    parser.add_argument("--groups", type=int, default=D3HR_GROUPS)
    args = parser.parse_args()
    generator, held_out = held_out_generator(args)
    rows, fitted = [], {}
    for strength in args.strength:
        start = time.perf_counter()
        d3hr = D3HR(fit_latent_gaussians(generator, held_out.train, strength), args.groups)
        seconds = round(time.perf_counter() - start, 1)
        fitted[str(strength)] = {"inversion_seconds": seconds, "latent_std_mean": round(float(d3hr.gaussians.std.mean()), 4)}
        print(f"strength {strength:g}: {d3hr.gaussians.images} images inverted in {seconds} s")
        rows += [TrainingSet(f"D3HR, strength {strength:g}", n, lambda seed, d=d3hr, n=n:
                             IndexedData.from_condensed(sample_set(generator, n, seed, d3hr=d))) for n in args.inpc]
    score_and_write("diffusion_d3hr", args, generator, held_out, rows, fitted=fitted,
                    sampling=generator.sampling_description())


if __name__ == "__main__":
    main()
