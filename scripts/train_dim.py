"""Train DiM. Single process, or data parallel through Accelerate / torchrun:

    accelerate launch scripts/train_dim.py --config configs/dim/cifar10.yaml [--flag value ...]
    torchrun --nproc_per_node 2 scripts/train_dim.py --config configs/dim/digits.yaml

Same code as ``gencond train dim``; see ``--help`` for every config field.
"""

from gencond.cli.train_cmd import script_main

if __name__ == "__main__":
    script_main("dim", "train_dim.py")
