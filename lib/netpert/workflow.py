"""Glue for Snakemake ``script:`` entry points: logging into the rule's log file."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import traceback
from typing import Iterator

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@contextlib.contextmanager
def script_logging(snakemake) -> Iterator[logging.Logger]:
    """Send stdout, stderr and ``logging`` of a rule's script to ``snakemake.log[0]``.

    An exception is written to the log with its traceback and re-raised so the job fails. An
    :class:`netpert.InputError` (about the user's input) is logged as its message first, a short
    block to read, then the traceback below it (where in the run it was raised).
    """
    log_path = snakemake.log[0] if len(snakemake.log) else None
    stream = open(log_path, "w", buffering=1) if log_path else sys.stderr  # noqa: SIM115
    old_out, old_err = sys.stdout, sys.stderr
    if log_path:
        sys.stdout = sys.stderr = stream
    root = logging.getLogger()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logger = logging.getLogger(f"netpert.rule.{snakemake.rule}")
    # tqdm writes progress to stderr, which is the log now; keep its updates sparse in files.
    os.environ.setdefault("TQDM_MININTERVAL", "5")
    try:
        logger.info("rule %s started (threads=%s)", snakemake.rule, getattr(snakemake, "threads", "?"))
        yield logger
        logger.info("rule %s finished", snakemake.rule)
    except BaseException as exc:
        from netpert.errors import InputError

        if isinstance(exc, InputError):
            logger.error("input error: %s\n\n%s", exc, traceback.format_exc().rstrip())
        else:
            logger.error("failed:\n%s", traceback.format_exc())
        raise
    finally:
        root.removeHandler(handler)
        sys.stdout, sys.stderr = old_out, old_err
        if log_path:
            stream.close()


def set_threads(n: int) -> None:
    """Limit numba, torch and BLAS to ``n`` threads (a rule's ``threads:``)."""
    n = max(int(n), 1)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)
    # numba only where the rule uses it: starting numba's thread pool in a torch process (two
    # OpenMP runtimes spinning on the same cores) made the ISP inference jobs 3x slower here
    if "numba" in sys.modules:
        numba = sys.modules["numba"]
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
