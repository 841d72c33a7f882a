"""The generator trainer every generator method runs on (DiM, the codebook generator).

The loop of the diffusers/accelerate training examples, written once: setup under
Accelerate (data parallel through ``accelerate launch`` or ``torchrun``), an optional EMA
of the generator's weights, the epoch loop with a progress bar, Accelerate's
``save_state`` swapped in atomically after every epoch, exact resume, sample grids,
``log.jsonl``, and at the end the generator folder and ``summary.json``; only the main
process writes. With ``save_every_steps`` the state is also saved within an epoch, with
the epoch's context (its random streams, the parts that learn within it: see
:meth:`~GeneratorTrainer.context_state`), so a resumed run continues mid-epoch exactly.
A method subclasses :class:`GeneratorTrainer` and fills in small hooks:

- :meth:`~GeneratorTrainer.build`: its modules and optimisers (``"gen"`` is the generator
  that is exported; everything returned is passed through ``accelerator.prepare``);
- :meth:`~GeneratorTrainer.start_epoch`: the epoch's context (random stream, helpers)
  and the items its steps consume;
- :meth:`~GeneratorTrainer.train_step`: one step, returning its losses;
- optionally :meth:`~GeneratorTrainer.header`, :meth:`~GeneratorTrainer.before_training`,
  :meth:`~GeneratorTrainer.after_epoch`, :meth:`~GeneratorTrainer.selection_points`.

With ``select_by: validation`` every epoch's generator is scored on a validation split
carved from the training data (:mod:`gencond.training.validation`); the best state is
kept in ``selected/``, training continues from it at the method's selection points (DiM:
the end of the GAN phase, where matching starts) and it is the exported generator. The
test split is never read by training or selection.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gencond.config import check_reused
from gencond.data import DataConfig
from gencond.data.loader import read_batches
from gencond.engine.parallel import convert_global_batchnorm
from gencond.errors import GencondError
from gencond.files import fsync_tree, output_lock, write_json
from gencond.models.generators import WEIGHTS, read_generator_config
from gencond.runtime import (
    check_precision,
    cuda_settings,
    keep_freed_memory,
    optimizer_options,
    resolve_precision,
    slow_precision_warning,
)
from gencond.training.validation import draw_fixed_set, validation_score

STATE_DIR, GENERATOR_DIR, SELECTED_DIR, KEPT_DIR = "state", "generator", "selected", "epochs"


def saved_state(output_dir: str | Path) -> Path | None:
    """The training state a run left in ``output_dir`` (``state``, or ``state.old`` when a
    kill came between the two renames of a save), or None."""
    out = Path(output_dir)
    return next((out / name for name in (STATE_DIR, f"{STATE_DIR}.old") if (out / name).is_dir()), None)


def trained_generator(output_dir: str | Path) -> Path | None:
    """The generator folder a finished run left in ``output_dir``, or None (benchmarks that
    reuse earlier runs)."""
    folder = Path(output_dir) / GENERATOR_DIR
    return folder if (folder / WEIGHTS).is_file() else None


def reusable_generator(method: str, cfg: GeneratorConfig, ignore: tuple[str, ...] = ()) -> Path | None:
    """The generator a finished run of ``method`` with this very config (up to the fields in
    ``ignore``) left in ``cfg.output_dir``, or None when no run finished there (benchmarks that
    reuse earlier runs); one trained by another method or config ends with one line naming what
    differs."""
    folder = trained_generator(cfg.output_dir)
    if folder is not None:
        check_reused(read_generator_config(folder).get("_training"), cfg, str(folder), ("output_dir", *ignore),
                     method=method)
    return folder


SELECT_BY = ("last", "validation")
ON_NONFINITE = ("stop", "rollback")


@dataclass
class GeneratorConfig(DataConfig):
    """What every generator-training run has; a method's config extends it and says how
    many epochs the run has (a field or a property named ``epochs``). A method whose
    ``epochs`` is a property (several phases, as DiM) overrides ``phase_epochs`` and
    ``one_epoch_per_phase``."""

    output_dir: str = field(default="runs/generator", metadata={"help": "checkpoints, sample grids, log, generator"})
    steps_per_epoch: int = field(default=0, metadata={"help": "cap on steps per epoch (0 = the method's full epoch)"})
    ema_decay: float = field(default=0.0, metadata={"help": "EMA of the generator weights (diffusers EMAModel); 0 = off"})
    mixed_precision: str = field(default="no", metadata={"help": "no, bf16 (autocast), or auto: bf16 where the "
                                                                 "device runs it natively (a GPU, a CPU with AVX-512 "
                                                                 "BF16 or AMX), no elsewhere; fp16 is refused here"})
    compile: str = field(default="no", metadata={"help": "no, or a torch.compile backend (inductor: generated "
                                                         "kernels; aot_eager: the traced graph, no code "
                                                         "generation) for the generator's forward and backward"})
    save_every_steps: int = field(default=0, metadata={"help": "also save the training state every N steps within an "
                                                                "epoch (0 = at the end of every epoch only)"})
    keep_every: int = field(default=0, metadata={"help": "also export the generator every N epochs to "
                                                         "epochs/epoch_NNNN/ (0 = never)"})
    sample_every: int = field(default=1, metadata={"help": "save a class-by-row sample grid every N epochs (0 = never)"})
    select_by: str = field(default="last", metadata={"help": "last: export the last state; validation: the state "
                                                               "with the best validation score (needs "
                                                               "validation_per_class)"})
    validation_inpc: int = field(default=10, metadata={"help": "images per class drawn for the validation score"})
    validation_epochs: int = field(default=100, metadata={"help": "epochs the validation score's ConvNet-3 trains"})
    on_nonfinite: str = field(default="stop", metadata={"help": "a NaN or Inf loss: stop (one line naming the step "
                                                                 "and the last good state) or rollback (reload "
                                                                 "that state and lower the learning rates)"})
    rollback_lr_factor: float = field(default=0.5, metadata={"help": "rollback: learning rates times this"})
    max_rollbacks: int = field(default=3, metadata={"help": "rollback: stop after this many"})
    collective_timeout_s: int = field(default=600, metadata={"help": "data parallel runs: seconds a process waits "
                                                                     "for the others in a collective before the "
                                                                     "run ends with one line (a dead or hung rank)"})
    tf32: bool = field(default=True, metadata={"help": "CUDA: TF32 for fp32 matrix products and convolutions "
                                                       "(no effect on a CPU)"})
    fused_optimizer: bool = field(default=True, metadata={"help": "CUDA: fused Adam/AdamW/SGD kernels (a CPU keeps "
                                                                  "the default implementation)"})
    channels_last: bool = field(default=False, metadata={"help": "NHWC weights for the modules that train (faster "
                                                                 "convolutions on GPU tensor cores)"})
    loader_workers: int = field(default=0, metadata={"help": "DataLoader worker processes reading an epoch's real "
                                                             "batches ahead of the steps (DiM, diffusion; 0 = read "
                                                             "in the training process)"})
    prefetch_batches: int = field(default=2, metadata={"help": "batches each loader worker reads ahead"})
    sync_batchnorm: bool = field(default=False, metadata={"help": "data parallel runs: batch-norm statistics over "
                                                                  "the global batch (every process's share), so N "
                                                                  "processes at batch B/N take the steps of one at "
                                                                  "B; off: each process normalises its own share"})

    def phase_epochs(self) -> dict[int, int]:
        """Epochs of each training phase by phase number: one phase, unless the method has more."""
        return {1: self.epochs}

    def one_epoch_per_phase(self) -> GeneratorConfig:
        """This config with every phase cut to one epoch."""
        return replace(self, epochs=1)

    def check(self) -> None:
        check_precision("mixed_precision", self.mixed_precision)
        if self.mixed_precision == "fp16":
            raise GencondError("mixed_precision fp16 is for evaluation networks and DM's real forward: a generator "
                               "step also trains pool or feature networks and fits codes without loss scaling, "
                               "which fp16 needs; use bf16 or auto")
        if min(self.steps_per_epoch, self.save_every_steps, self.keep_every) < 0 or not 0.0 <= self.ema_decay < 1.0:
            raise GencondError("steps_per_epoch, save_every_steps and keep_every must be >= 0 and ema_decay in [0, 1)")
        if self.select_by not in SELECT_BY:
            raise GencondError(f"select_by must be last or validation, got {self.select_by!r}")
        if self.select_by == "validation" and self.validation_per_class <= 0:
            raise GencondError("select_by: validation needs a validation split (validation_per_class > 0)")
        if self.validation_inpc <= 0 or self.validation_epochs <= 0:
            raise GencondError("validation_inpc and validation_epochs must be positive")
        if self.on_nonfinite not in ON_NONFINITE:
            raise GencondError(f"on_nonfinite must be stop or rollback, got {self.on_nonfinite!r}")
        if not 0.0 < self.rollback_lr_factor < 1.0 or self.max_rollbacks < 0:
            raise GencondError("rollback_lr_factor must be in (0, 1) and max_rollbacks >= 0")
        if self.collective_timeout_s <= 0:
            raise GencondError("collective_timeout_s must be positive")
        if self.loader_workers < 0 or self.prefetch_batches <= 0:
            raise GencondError("loader_workers must be >= 0 and prefetch_batches positive")
        if self.compile != "no" and self.compile not in compile_backends():
            raise GencondError(f"compile must be no or a torch.compile backend ({', '.join(compile_backends())}), "
                               f"got {self.compile!r}")


def compile_backends() -> list[str]:
    import torch._dynamo

    return sorted(torch._dynamo.list_backends(exclude_tags=()))


def epoch_batches(num_items: int, batch: int, rank: int, world: int, seed: int, epoch: int, cap: int) -> list[torch.Tensor]:
    """This process's real batches of an epoch: one permutation shared by every process
    (seeded by seed and epoch, so a resumed run sees the same order), split by rank."""
    perm = torch.randperm(num_items, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    steps = num_items // (batch * world)
    if cap:
        steps = min(steps, cap)
    if steps == 0:
        raise GencondError(f"{num_items} training images are fewer than one batch of {batch} x {world} process(es)")
    mine = perm[rank::world]
    return [mine[i * batch:(i + 1) * batch] for i in range(steps)]


class Progress:
    """The epoch counter, the validation scores so far (the best epoch and score, every
    epoch's score), the rollbacks after non-finite losses (how many, and the factor on
    every learning rate they left) and, in a state saved within an epoch, the steps done,
    their loss sums and the epoch context's state; saved and restored with Accelerate's
    training state."""

    def __init__(self):
        self.epoch, self.best_epoch, self.best_score = 0, 0, float("-inf")
        self.scores: dict[str, float] = {}
        self.rollbacks, self.lr_scale = 0, 1.0
        self.step, self.totals, self.context = 0, {}, {}

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "best_epoch": self.best_epoch, "best_score": self.best_score,
                "scores": dict(self.scores), "rollbacks": self.rollbacks, "lr_scale": self.lr_scale,
                "step": self.step, "totals": dict(self.totals), "context": self.context}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = int(state["epoch"])
        self.best_epoch = int(state.get("best_epoch", 0))
        self.best_score = float(state.get("best_score", float("-inf")))
        self.scores = {str(k): float(v) for k, v in state.get("scores", {}).items()}
        self.rollbacks, self.lr_scale = int(state.get("rollbacks", 0)), float(state.get("lr_scale", 1.0))
        self.step, self.totals = int(state.get("step", 0)), dict(state.get("totals", {}))
        self.context = state.get("context", {})

    def mid_epoch(self, step: int, totals: dict[str, float], context: dict) -> None:
        self.step, self.totals, self.context = step, dict(totals), context


class NonFiniteLoss(Exception):
    """A loss of the current step is NaN or Inf (on any process)."""

    def __init__(self, epoch: int, step: int, losses: dict[str, float]):
        bad = ", ".join(f"{k} = {v}" for k, v in losses.items() if not math.isfinite(v)) or "on another process"
        super().__init__(f"non-finite loss at epoch {epoch + 1}, step {step + 1}: {bad}")


def save_sample_grid(gen: nn.Module, path: Path, columns: int = 10, seed: int = 0) -> None:
    """One row per class (at most 20 classes shown), columns = the first ``columns`` slots
    of each class (a codebook's codes; fixed noise for DiM), eval-mode generator."""
    from torchvision.utils import save_image

    images, _ = draw_fixed_set(gen, min(gen.num_classes, 20), columns, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(gen.info.denormalize(images).clamp(0, 1), str(path), nrow=columns)


def distinct_parts(ctx: Any) -> list[tuple[str, Any]]:
    """(name, value) of a context's fields, a value held under two names (one process's DiM
    streams) only under the first."""
    parts = {}
    for name, value in vars(ctx).items():
        parts.setdefault(id(value), (name, value))
    return list(parts.values())


def fingerprint(module: nn.Module) -> int:
    """The first 60 bits of the SHA-256 of every parameter's bytes: equal on two processes
    only if their weights are bitwise equal (to a 2^-60 chance). Buffers are left out:
    batch-norm running statistics are rank 0's, broadcast by DDP before every forward, and
    each rank's last forward updates its own copy."""
    digest = hashlib.sha256()
    for name, tensor in module.named_parameters():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return int(digest.hexdigest()[:15], 16)


class GeneratorTrainer:
    """The shared loop; see the module docstring for the hooks a method fills in."""

    method = "generator"
    # A method whose epoch items are index batches of the training split (epoch_batches) sets
    # this: its steps then get (normalized images, labels) on the device, read ahead by
    # ``loader_workers`` processes, and the epoch's log records the time steps waited for them.
    reads_real_batches = False

    def __init__(self, cfg: GeneratorConfig):
        from accelerate import Accelerator
        from accelerate.state import AcceleratorState
        from accelerate.utils import InitProcessGroupKwargs, set_seed

        cfg.check()
        # Accelerate keeps one state per process and refuses a second run's other precision;
        # the process group (its partial state) stays.
        AcceleratorState._reset_state()
        keep_freed_memory()
        self.cfg = cfg
        # Without a GPU, cpu=True lets Accelerate pick gloo data parallelism under torchrun.
        self.precision = resolve_precision(cfg.mixed_precision, torch.device("cuda" if torch.cuda.is_available() else "cpu"))
        self.accelerator = Accelerator(
            mixed_precision=self.precision, cpu=not torch.cuda.is_available(),
            kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(seconds=cfg.collective_timeout_s))])
        set_seed(cfg.seed)
        self.out = Path(cfg.output_dir)
        splits = cfg.load_splits()  # the test split is never read below
        self.train, self.validation, self.info = splits.train, splits.validation, splits.info
        self.device = self.accelerator.device
        cuda_settings(self.device, cfg.tf32)
        self.optimizer_options = optimizer_options(self.device, cfg.fused_optimizer)
        self.rank, self.world = self.accelerator.process_index, self.accelerator.num_processes
        parts = self.build()
        if cfg.channels_last:
            for module in parts.values():
                if isinstance(module, nn.Module):
                    module.to(memory_format=torch.channels_last)
        if cfg.sync_batchnorm and self.world > 1:
            parts = {name: convert_global_batchnorm(obj) if isinstance(obj, nn.Module) else obj
                     for name, obj in parts.items()}
        prepared = self.accelerator.prepare(*parts.values())
        for name, obj in zip(parts, prepared if len(parts) > 1 else (prepared,)):
            setattr(self, name, obj)
        self.optimizers = [obj for obj in (getattr(self, name) for name in parts)
                           if isinstance(obj, torch.optim.Optimizer)]
        self.module_names = [name for name, obj in parts.items() if isinstance(obj, nn.Module)]
        self.raw_gen = self.accelerator.unwrap_model(self.gen)
        # Steps call the generator through ``generate``: compiled when asked, the generator
        # alone (the critic's gradient penalty differentiates twice, which compiled graphs
        # do not support); the prepared module stays what is saved, so states load either way.
        self.generate = self.gen if cfg.compile == "no" else torch.compile(self.gen, backend=cfg.compile)
        self.progress = Progress()
        self.accelerator.register_for_checkpointing(self.progress)
        self.ema = None
        if cfg.ema_decay > 0:
            from diffusers.training_utils import EMAModel

            self.ema = EMAModel(self.raw_gen.parameters(), decay=cfg.ema_decay)
            self.accelerator.register_for_checkpointing(self.ema)

    # --- hooks ---

    def build(self) -> dict[str, Any]:
        """Modules and optimisers by attribute name, in preparation order; ``gen`` is required."""
        raise NotImplementedError

    def start_epoch(self, epoch: int) -> tuple[Any, list]:
        """(context, items): what the epoch's steps share, and one item per step."""
        raise NotImplementedError

    def train_step(self, ctx: Any, item: Any) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def describe(self, ctx: Any) -> dict:
        """Fields of the epoch's log record besides timing and losses."""
        return {}

    def header(self) -> str:
        return f"{self.method} on {self.info.name}: {len(self.train)} images, {self.info.num_classes} classes"

    def before_training(self) -> None:
        """Every process, once, before the first step of a run that starts afresh (a resumed
        run has its effect in the loaded state). Deterministic work only: every process must
        end it with the same weights."""

    def after_epoch(self, epoch: int) -> None:
        """Main process only, after the state and the sample grid are written."""

    def selection_points(self) -> list[int]:
        """Epochs after which training continues from the best-scored state so far
        (``select_by: validation`` only)."""
        return []

    def context_state(self, ctx: Any) -> dict:
        """What a run resumed mid-epoch needs of the epoch's context besides what
        :meth:`start_epoch` rebuilds from (seed, epoch): the state of every random stream
        and every part with a ``state_dict`` among the context's fields (a DiM pool network
        and its optimiser), and the global random streams, since rebuilding the context may
        draw from them. A method with more per-epoch state extends both methods. A part held
        under two names (one process's DiM streams) is saved once, under the first."""
        state = {"torch_rng": torch.get_rng_state()}
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        for name, value in distinct_parts(ctx):
            if isinstance(value, torch.Generator):
                state[name] = value.get_state()
            elif hasattr(value, "state_dict"):
                state[name] = value.state_dict()
        return state

    def load_context_state(self, ctx: Any, state: dict) -> None:
        for name, value in distinct_parts(ctx):
            if isinstance(value, torch.Generator):
                value.set_state(state[name])
            elif hasattr(value, "load_state_dict"):
                value.load_state_dict(state[name])
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state:
            torch.cuda.set_rng_state_all(state["cuda_rng"])

    def every_rank_context_state(self, ctx: Any) -> dict[int, dict]:
        """Every process's :meth:`context_state` by rank: Accelerate saves the progress
        (where this goes) from the main process only, and each process's streams differ."""
        state = self.context_state(ctx)
        if self.world == 1:
            return {0: state}
        from accelerate.utils import gather_object

        return dict(enumerate(gather_object([state])))

    def global_draw(self, draw, n: int) -> torch.Tensor:
        """This process's share of random values drawn for the global batch of a step: every
        process calls ``draw(n * world)`` on a stream they share and keeps the positions of
        its real images in :func:`epoch_batches`'s split (rank, rank + world, ...), so each
        value stays paired with the same real image however the batch is split."""
        return draw(n * self.world)[self.rank::self.world]

    # --- the loop ---

    def ema_step(self) -> None:
        if self.ema is not None:
            self.ema.step(self.raw_gen.parameters())

    def resume(self) -> None:
        state = self.last_good_state()
        if state is None:
            raise GencondError(f"--resume: no saved training state under {self.out}")
        self.accelerator.load_state(str(state))
        within = f", step {self.progress.step}" if self.progress.step else ""
        self.accelerator.print(f"resumed from {state} at epoch {self.progress.epoch}{within}")

    def save_state(self) -> None:
        """Accelerate writes into a fresh folder; the main process flushes it to the disk and
        then swaps it in, so a kill (or a crash) at any moment leaves ``state`` or
        ``state.old`` whole."""
        acc, out = self.accelerator, self.out
        tmp, final, old = out / f"{STATE_DIR}.tmp", out / STATE_DIR, out / f"{STATE_DIR}.old"
        if acc.is_main_process and tmp.exists():
            shutil.rmtree(tmp)
        acc.wait_for_everyone()
        try:
            acc.save_state(str(tmp))
        except OSError as err:  # disk full, read-only folder: the swap below never happens
            shutil.rmtree(tmp, ignore_errors=True)
            kept = f"the previous state {final} is intact" if final.exists() else "no state was saved before"
            raise GencondError(f"cannot write the training state to {tmp} ({err.strerror or err}); {kept}") from None
        acc.wait_for_everyone()
        if acc.is_main_process:
            fsync_tree(tmp)
            if final.exists():
                final.rename(old)
            tmp.rename(final)
            fsync_tree(out, recursive=False)
            shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()

    def run_epoch(self, epoch: int) -> dict:
        """The epoch's steps from the first one not done yet (a state saved within the
        epoch records how many were done, their loss sums and the context's state)."""
        from tqdm.auto import tqdm

        ctx, items = self.start_epoch(epoch)
        progress, every = self.progress, self.cfg.save_every_steps
        if progress.step:
            # by rank; a state written before contexts were kept per rank holds one flat dict
            self.load_context_state(ctx, progress.context.get(self.rank, progress.context))
        for opt in self.optimizers:  # after a rollback: the method's learning rates, lowered
            for group in opt.param_groups:
                group["lr"] *= progress.lr_scale
        totals, done = dict(progress.totals), progress.step
        start = first_step_done = time.perf_counter()
        extra = self.describe(ctx)
        desc = f"epoch {epoch + 1}/{self.cfg.epochs}" + (f" ({', '.join(f'{k} {v}' for k, v in extra.items())})"
                                                        if extra else "")
        bar = tqdm(items, desc=desc, disable=not self.accelerator.is_local_main_process, leave=False, initial=done)
        reader, waited = self.read_items(items, done), 0.0
        for step in range(done, len(items)):
            before = time.perf_counter()
            item = next(reader)
            waited += time.perf_counter() - before
            losses = {k: float(v) for k, v in self.train_step(ctx, item).items()}
            self.check_finite(epoch, step, losses)
            for k, v in losses.items():
                totals[k] = totals.get(k, 0.0) + v
            bar.update()
            bar.set_postfix({k: f"{v:.3f}" for k, v in losses.items()})
            if first_step_done == start:
                first_step_done = time.perf_counter()
            if every and (step + 1) % every == 0 and step + 1 < len(items):
                progress.mid_epoch(step + 1, totals, self.every_rank_context_state(ctx))
                self.save_state()
        bar.close()
        progress.mid_epoch(0, {}, {})
        end = time.perf_counter()
        resumed = {"resumed_at_step": done} if done else {}
        if self.reads_real_batches:  # the seconds steps waited for their real batches, in all and per step
            resumed.update(data_wait_s=round(waited, 3), data_wait_s_per_step=round(waited / max(1, len(items) - done), 5))
        return {"epoch": epoch + 1, **extra, "steps": len(items), **resumed, "seconds": round(end - start, 2),
                "seconds_per_step": round((end - start) / max(1, len(items) - done), 4),
                "seconds_after_first_step": round(end - first_step_done, 3), "rank": self.rank,
                **{k: round(v / len(items), 5) for k, v in totals.items()}}

    def read_items(self, items, start: int):
        """The epoch's items from ``start`` on; index batches read as (images, labels) on the
        device where the method :attr:`reads_real_batches`."""
        if not self.reads_real_batches:
            return iter(items[start:])
        cfg = self.cfg
        batches = read_batches(self.train, items, start, self.device, cfg.loader_workers, cfg.prefetch_batches)
        return ((self.info.from_pixels(pixels), labels) for pixels, labels in batches)

    def check_finite(self, epoch: int, step: int, losses: dict[str, float]) -> None:
        """Raise :class:`NonFiniteLoss` on every process when any process's loss is NaN or Inf."""
        finite = all(math.isfinite(v) for v in losses.values())
        if self.world > 1:
            flag = torch.tensor([float(finite)], device=self.device)
            finite = bool(self.accelerator.reduce(flag, reduction="sum").item() == self.world)
        if not finite:
            raise NonFiniteLoss(epoch, step, losses)

    def last_good_state(self) -> Path | None:
        return saved_state(self.out)

    def recover(self, error: NonFiniteLoss) -> None:
        """``on_nonfinite: stop``: one line naming the step and the last good state.
        ``rollback``: reload that state and continue with every learning rate lowered."""
        cfg, state = self.cfg, self.last_good_state()
        where = f"the last good state is {state} (epoch {self.progress.epoch})" if state else "no state was saved yet"
        if cfg.on_nonfinite == "stop" or state is None or self.progress.rollbacks >= cfg.max_rollbacks:
            hint = "; resume with --resume and a lower learning rate" if state else ""
            raise GencondError(f"{error}; {where}{hint}")
        rollbacks, lr_scale = self.progress.rollbacks + 1, self.progress.lr_scale * cfg.rollback_lr_factor
        self.accelerator.load_state(str(state))
        self.progress.rollbacks, self.progress.lr_scale = rollbacks, lr_scale
        self.accelerator.print(f"{error}; rolled back to epoch {self.progress.epoch} ({state}), "
                               f"learning rates x {lr_scale:g}")
        if self.accelerator.is_main_process:
            with open(self.out / "log.jsonl", "a") as log:
                log.write(json.dumps({"rollback": rollbacks, "error": str(error), "to_epoch": self.progress.epoch,
                                      "lr_scale": lr_scale}) + "\n")

    @contextlib.contextmanager
    def ema_weights(self):
        """The generator holds its EMA weights (when EMA is on) inside the block."""
        if self.ema is None:
            yield
            return
        self.ema.store(self.raw_gen.parameters())
        self.ema.copy_to(self.raw_gen.parameters())
        try:
            yield
        finally:
            self.ema.restore(self.raw_gen.parameters())

    def score_and_keep(self, epoch: int) -> float:
        """Main process: the state's validation score; the best state so far (the earliest
        on ties) is written to ``selected/``."""
        cfg, progress = self.cfg, self.progress
        with self.ema_weights():
            score = validation_score(self.raw_gen, self.info, self.validation, cfg.validation_inpc,
                                     cfg.validation_epochs, cfg.seed, self.device)
            if score > progress.best_score:
                progress.best_epoch, progress.best_score = epoch, score
                self.export(self.out / SELECTED_DIR, selected_epoch=epoch, validation_score=score)
        progress.scores[str(epoch)] = score
        return score

    def load_selected(self) -> None:
        """Every process: the generator (and its EMA) takes the weights kept in ``selected/``."""
        from safetensors.torch import load_file

        self.accelerator.wait_for_everyone()
        self.raw_gen.load_state_dict(load_file(str(self.out / SELECTED_DIR / WEIGHTS), device=str(self.device)))
        self.reset_ema()

    def reset_ema(self) -> None:
        """The EMA (when on) restarts from the generator's current weights."""
        if self.ema is not None:
            self.ema.shadow_params = [p.detach().clone() for p in self.raw_gen.parameters()]

    def selection_record(self) -> dict:
        if self.cfg.select_by != "validation":
            return {"by": "last"}
        cfg, progress = self.cfg, self.progress
        return {"by": "validation", "validation_per_class": cfg.validation_per_class,
                "validation_images": len(self.validation), "inpc": cfg.validation_inpc,
                "network_epochs": cfg.validation_epochs, "selected_epoch": progress.best_epoch,
                "validation_score": progress.best_score, "scores": dict(progress.scores)}

    def end_of_epoch(self, record: dict) -> None:
        """Score (main process) and continue from the best state at a selection point, then
        checkpoint (every process takes part), then the main process writes the rest."""
        cfg, epoch = self.cfg, record["epoch"]
        if cfg.select_by == "validation":
            if self.accelerator.is_main_process:
                record["validation_score"] = round(self.score_and_keep(epoch), 3)
            if epoch in self.selection_points():
                self.load_selected()
                self.accelerator.print(f"continuing from epoch {self.progress.best_epoch} "
                                       f"(validation {self.progress.best_score:.2f} %)")
        self.progress.epoch = epoch
        self.save_state()
        if self.accelerator.is_main_process:
            with open(self.out / "log.jsonl", "a") as log:
                log.write(json.dumps(record) + "\n")
            if cfg.sample_every and epoch % cfg.sample_every == 0:
                save_sample_grid(self.raw_gen, self.out / "samples" / f"epoch_{epoch:04d}.png")
            if cfg.keep_every and epoch % cfg.keep_every == 0:
                with self.ema_weights():
                    self.export(self.out / KEPT_DIR / f"epoch_{epoch:04d}", epoch=epoch)
            self.after_epoch(epoch)
        self.accelerator.print(f"epoch {epoch}: " + ", ".join(f"{k} {v}" for k, v in record.items()
                                                               if k not in ("epoch", "rank")))

    def export(self, directory: Path, **training) -> Path:
        """The generator folder, with this run's config as its training record."""
        self.raw_gen.training_record = {"method": self.method, **training, **asdict(self.cfg)}
        return self.raw_gen.save_pretrained(directory)

    def finish(self) -> Path:
        """Save the generator (EMA weights if enabled; the selected state with ``select_by:
        validation``) and a summary with every rank's parameter fingerprints (data parallelism
        must keep them identical) and how the generator was chosen."""
        acc = self.accelerator
        acc.wait_for_everyone()
        prints = torch.tensor([fingerprint(acc.unwrap_model(getattr(self, name))) for name in self.module_names],
                              dtype=torch.int64, device=self.device)
        per_rank = acc.gather(prints.view(1, -1)).cpu().view(self.world, -1)
        fingerprints = {name: per_rank[:, i].tolist() for i, name in enumerate(self.module_names)}
        selection, chosen, weights = self.selection_record(), {}, self.ema_weights()
        if self.cfg.select_by == "validation":
            self.load_selected()  # the kept weights are already the EMA's when EMA is on
            chosen = {k: selection[k] for k in ("selected_epoch", "validation_score")}
            weights = contextlib.nullcontext()
            acc.print(f"selected epoch {chosen['selected_epoch']} (validation {chosen['validation_score']:.2f} %)")
        with weights:
            if acc.is_main_process:
                self.export(self.out / GENERATOR_DIR, **chosen)
                write_json(self.out / "summary.json", {"method": self.method, "epochs": self.cfg.epochs,
                                                       "mixed_precision": self.precision,
                                                       "processes": self.world,
                                                       "weights_fingerprint_per_rank": fingerprints,
                                                       "written_by_rank": self.rank, "selection": selection,
                                                       "rollbacks": self.progress.rollbacks,
                                                       "lr_scale": self.progress.lr_scale})
        acc.wait_for_everyone()
        acc.end_training()
        return self.out / GENERATOR_DIR

    def fit(self) -> Path:
        if self.accelerator.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            write_json(self.out / "config.json", asdict(self.cfg))
        self.accelerator.print(f"{self.header()}, {self.world} process(es), device {self.device}, "
                               f"mixed precision {self.precision}")
        warning = slow_precision_warning(self.precision, self.device)
        if warning:
            self.accelerator.print(warning)
        if self.progress.epoch == 0 and self.progress.step == 0:
            self.before_training()
            self.reset_ema()  # the average starts from the weights the steps start from
        try:
            while self.progress.epoch < self.cfg.epochs:
                try:
                    record = self.run_epoch(self.progress.epoch)
                except NonFiniteLoss as error:
                    self.recover(error)
                    continue
                self.end_of_epoch(record)
            return self.finish()
        except (torch.distributed.DistError, RuntimeError) as err:
            if not (self.world > 1 and collective_failure(err)):
                raise
            state = self.last_good_state()
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise GencondError(f"process {self.rank} of {self.world}: a collective with the other processes failed "
                               f"({first}); another process has died or hangs. The last state is "
                               f"{state or '(none saved yet)'}: fix the cause and --resume") from None


def collective_failure(err: Exception) -> bool:
    """A collective failed because a peer died (connection closed) or hangs (timed out):
    torch raises DistError, or, from DDP's gradient reduction, a RuntimeError of gloo's."""
    text = str(err).lower()
    return isinstance(err, torch.distributed.DistError) or any(
        mark in text for mark in ("gloo", "nccl", "timed out", "connection closed", "connection reset"))


def run_trainer(trainer_class: type[GeneratorTrainer], cfg: GeneratorConfig, resume: bool = False) -> Path:
    """Train; returns the folder of the saved generator."""
    trainer = trainer_class(cfg)
    if resume:
        trainer.resume()
    with output_lock(trainer.out) if trainer.accelerator.is_main_process else contextlib.nullcontext():
        return trainer.fit()
