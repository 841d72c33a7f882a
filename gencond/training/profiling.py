"""What a generator method's training step costs: its FLOPs (counted by torch's own formulas),
its seconds and the seconds it spends reading real images. Used by ``gencond doctor`` and by
the cost studies under ``experiments/``."""

from __future__ import annotations

import contextlib
import dataclasses
import time

from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from gencond.data.base import LazyImageSet, TensorImageSet
from gencond.data.prepared import PreparedImageSet
from gencond.runtime import synchronize
from gencond.training.trainer import run_trainer


class FlopCounter(TorchDispatchMode):
    """Total FLOPs of the operators run inside it, by torch's own formulas
    (``torch.utils.flop_counter``). ``FlopCounterMode`` itself tracks modules with
    backward hooks, which the critic's gradient penalty (``autograd.grad`` with
    ``create_graph``) does not support; counting at the dispatcher needs no hooks."""

    def __init__(self):
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.flops += formula(*args, **kwargs, out_val=out)
        return out


def step_config(cfg, steps: int, output_dir: str):
    """``cfg`` cut to one epoch per phase (DiM has two: GAN, then matching) of ``steps`` + 1
    steps, without sample grids, kept epochs or validation, writing to ``output_dir``: what
    :func:`measure_steps` runs (at the config's precision and compile setting)."""
    return dataclasses.replace(cfg.one_epoch_per_phase(), output_dir=output_dir, steps_per_epoch=steps + 1,
                               sample_every=0, keep_every=0, select_by="last")


@contextlib.contextmanager
def timed_reads(reading: list[float]):
    """Add the time spent reading real images (decoding JPEGs, or indexing in-memory
    pixels) to ``reading[0]`` and their number to ``reading[1]``: the two leaf readers
    every image set ends in."""
    originals = {(cls, "pixels_within"): cls.pixels_within for cls in (LazyImageSet, TensorImageSet, PreparedImageSet)}

    def timed(read):
        def wrapper(self, indices, *args):
            start = time.perf_counter()
            try:
                return read(self, indices, *args)
            finally:
                reading[0] += time.perf_counter() - start
                reading[1] += len(indices)
        return wrapper

    for (cls, name), read in originals.items():
        setattr(cls, name, timed(read))
    try:
        yield
    finally:
        for (cls, name), read in originals.items():
            setattr(cls, name, read)


def measure_steps(trainer_class, cfg, count: bool = True) -> tuple[dict, object, dict]:
    """Run ``cfg`` with the trainer's ``train_step`` wrapped: per phase, the FLOPs of its
    first step (with ``count``; otherwise that step is a warm-up, where compilation happens),
    the precision it ran in (``no`` or ``bf16``, ``auto`` resolved), the seconds of the others
    and the seconds they spent reading real images (with ``loader_workers: 0`` all of it is
    time the step waits for data; a step's real batch is read just before it and counted in
    its seconds); the model states of the synchronised modules (parameters that learn); and
    the run's dataset description."""
    original, phases, states, reading = trainer_class.train_step, {}, {}, [0.0, 0]

    def train_step(self, ctx, item):
        if self.reads_real_batches and self.cfg.loader_workers:
            reading[1] += len(item[1])  # read by a worker process: counted, its time is the log's data_wait_s
        record = phases.setdefault(getattr(ctx, "phase", 1),
                                   {"flops": None, "seconds": [], "data_seconds": [], "images_read": [], "first": True})
        if record.pop("first", False):
            with FlopCounter() if count else contextlib.nullcontext() as counter:
                out = original(self, ctx, item)
            record["flops"], record["precision"] = counter.flops if count else None, self.precision
        else:
            synchronize(self.device)  # a GPU's queued work is timed with the step that queued it
            start, before = time.perf_counter(), reading[0]
            out = original(self, ctx, item)
            synchronize(self.device)
            record["seconds"].append(time.perf_counter() - start + before)
            record["data_seconds"].append(reading[0])
            record["images_read"].append(reading[1])
        reading[:] = [0.0, 0]  # the next step's reads start with its batch, read before it
        if not states:
            states["info"] = self.info
            for name in self.module_names:
                module = self.accelerator.unwrap_model(getattr(self, name))
                states[name] = sum(p.numel() for p in module.parameters() if p.requires_grad)
        return out

    trainer_class.train_step = train_step
    try:
        with timed_reads(reading):
            run_trainer(trainer_class, cfg)
    finally:
        trainer_class.train_step = original
    return phases, states.pop("info"), states
