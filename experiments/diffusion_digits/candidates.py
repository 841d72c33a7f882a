"""Does candidate selection lift a diffusion generator's fixed sets: M x INPC draws per class,
INPC of them kept by herding (or k-center) in the embedding of a ConvNet-3 trained on the
generator's own training images? Fixed sets of one generator trained with a validation split
held out, scored on that split only (ConvNet-3, DSA, final accuracy); the test split is not read.
M = 1 is the plain draw at the same serving settings.

    python -m experiments.diffusion_digits.candidates --generator runs/diffusion_mnist_subset/generator \\
        --validation-per-class 100 --candidates 1 5 --json experiments/diffusion_mnist_subset/candidates.json
"""

from __future__ import annotations

import time

from experiments.diffusion_digits._validation import arguments, held_out_generator, score_and_write
from gencond.engine import IndexedData
from gencond.engine.networks import ReferenceNetwork, real_data_network
from gencond.evaluate.protocol import TrainingSet
from gencond.serve import sample_set


def main() -> None:
    parser = arguments(__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--rule", default="herding", choices=("herding", "kcenter"))
    parser.add_argument("--selector-epochs", type=int, default=1, help="as gencond bench's selector_epochs")
    parser.add_argument("--guidance", type=float, help="the guidance scale (default: as saved)")
    parser.add_argument("--mixed-precision", default="no", help="the UNet's precision while sampling")
    args = parser.parse_args()
    generator, held_out = held_out_generator(args)
    generator = generator.with_sampler(guidance_scale=args.guidance, mixed_precision=args.mixed_precision)
    start = time.perf_counter()
    net = real_data_network(held_out.train, "convnet3", args.selector_epochs, generator.device, seed=0)
    selector = ReferenceNetwork(net, {"network": "convnet3", "epochs": args.selector_epochs, "seed": 0,
                                      "images": len(held_out.train)})
    print(f"selection network: {len(held_out.train)} images, {time.perf_counter() - start:.1f} s")
    rows = [TrainingSet(f"{args.rule} of {m}x" if m > 1 else "plain draw", n, lambda seed, m=m, n=n:
                        IndexedData.from_condensed(sample_set(generator, n, seed, candidates=m, rule=args.rule,
                                                              selector=selector if m > 1 else None)))
            for m in args.candidates for n in args.inpc]
    score_and_write("diffusion_candidates", args, generator, held_out, rows, selector=selector.description,
                    sampling=generator.sampling_description())


if __name__ == "__main__":
    main()
