"""Train any generator method. Single process, or data parallel through Accelerate / torchrun:

    accelerate launch scripts/train.py codebook --config configs/codebook/cifar10.yaml [--flag value ...]
    torchrun --nproc_per_node 2 scripts/train.py codebook --config configs/codebook/digits.yaml
    python scripts/train.py dim --config configs/dim/digits.yaml

Same code as ``gencond train METHOD``; see ``scripts/train.py METHOD --help`` for every field.
"""

from gencond.cli.train_cmd import script_main

if __name__ == "__main__":
    script_main(None, "train.py")
