import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def driver(module: str, *args) -> list[str]:
    """The command line of an experiment driver, ``python -m experiments.STUDY.DRIVER ARGS``
    (run it with :func:`driver_env`, so it imports from any working folder)."""
    return [sys.executable, "-m", module, *map(str, args)]


def driver_env(**extra) -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), **extra}

# Two CPU threads per test; under pytest-xdist (``-n 2``, README's command) each worker takes its
# share of them, and so do the processes its tests start, so the workers do not oversubscribe
# the cores (a test that sets OMP_NUM_THREADS for a child keeps its own).
THREADS = max(1, min(2, os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
torch.set_num_threads(THREADS)
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "MNIST" / "raw").is_dir():
        pytest.skip("../shared/data is not beside the project")
    return SHARED_DATA


@pytest.fixture(scope="session")
def digits():
    from gencond.data import load_dataset

    return load_dataset("digits")


@pytest.fixture
def cli_error(capsys):
    """``cli_error(argv, message)`` runs the CLI and checks that it ends with exit status 2
    and exactly one line on stderr, no traceback, containing ``message``; returns that line."""
    from gencond.cli import main

    def check(argv, message: str) -> str:
        code = main([str(a) for a in argv])
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and "Traceback" not in err, (argv, code, err)
        assert message in lines[0], (argv, lines[0])
        return lines[0]

    return check
