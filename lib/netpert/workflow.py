"""Glue for Snakemake ``script:`` entry points: logging into the rule's log file."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import traceback
from typing import Iterator

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _wildcards_text(snakemake) -> str:
    """``stratum=B_cells, chunk=0``: a job's wildcards (empty when it has none)."""
    wildcards = getattr(snakemake, "wildcards", None)
    try:
        items = list(wildcards.items()) if wildcards is not None else []
    except (AttributeError, TypeError):
        items = []
    return ", ".join(f"{k}={v}" for k, v in items)


def input_error_block(snakemake, exc: BaseException, log_path: str | None, below: bool = True) -> str:
    """The short block an :class:`netpert.InputError` is told in, first in the rule's log and on the
    console::

        netpert: input error in rule prepare_data (stratum=B_cells):
          input file 'x.h5ad' does not exist; ...
          (traceback below in results/logs/prepare_data.log)
    """
    wildcards = _wildcards_text(snakemake)
    head = f"netpert: input error in rule {snakemake.rule}" + (f" ({wildcards})" if wildcards else "") + ":"
    message = [f"  {line}" for line in (str(exc) or type(exc).__name__).splitlines()]
    where = f"  (traceback {'below ' if below else ''}in {log_path})" if log_path else "  (traceback below)"
    return "\n".join([head, *message, where]) + "\n"


def _prepend(path: str, text: str) -> None:
    """Put ``text`` at the top of the file at ``path`` (written beside it, then renamed)."""
    with open(path) as fh:
        body = fh.read()
    tmp = f"{path}.netpert-tmp"
    with open(tmp, "w") as fh:
        fh.write(text + "\n" + body)
    os.replace(tmp, path)


def _quiet_exit(exc: BaseException) -> None:
    """If ``exc`` ends the script, Python prints no second traceback on the console: the block
    said what is wrong and the log holds the traceback (the exit status is 1 all the same)."""
    previous = sys.excepthook

    def hook(kind, value, tb):
        if value is not exc:
            previous(kind, value, tb)

    sys.excepthook = hook


@contextlib.contextmanager
def script_logging(snakemake) -> Iterator[logging.Logger]:
    """Send stdout, stderr and ``logging`` of a rule's script to ``snakemake.log[0]``.

    An exception is written to the log with its traceback and re-raised so the job fails. An
    :class:`netpert.InputError` (about the user's input) is told first: a short block
    (:func:`input_error_block`: the rule, its wildcards, the message) goes to the console (the
    script's stderr) at once and to the top of the log, above what the script logged and the
    traceback (where in the run it was raised), so the first lines a user reads say what to fix.
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
    block = None
    try:
        logger.info("rule %s started (threads=%s)", snakemake.rule, getattr(snakemake, "threads", "?"))
        yield logger
        logger.info("rule %s finished", snakemake.rule)
    except BaseException as exc:
        from netpert.errors import InputError

        if isinstance(exc, InputError):
            block = input_error_block(snakemake, exc, log_path)
            old_err.write(input_error_block(snakemake, exc, log_path, below=False))
            old_err.flush()
            told = "at the top of this log" if log_path else "above"
            logger.error("input error (told %s):\n%s", told, traceback.format_exc().rstrip())
            _quiet_exit(exc)
        else:
            logger.error("failed:\n%s", traceback.format_exc())
        raise
    finally:
        root.removeHandler(handler)
        sys.stdout, sys.stderr = old_out, old_err
        if log_path:
            stream.close()
            if block is not None:
                try:
                    _prepend(log_path, block)
                except OSError:  # the log keeps the traceback; the InputError is what propagates
                    pass


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
