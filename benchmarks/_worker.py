"""Running one measurement in its own process (fresh imports, its own peak memory), shared by the benchmark scripts.

A benchmark script calls itself with ``--worker ...``; the worker prints one JSON object as the last line
of its standard output. :func:`run_worker` starts it and reads that line back.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from collections.abc import Sequence
from typing import Any, Literal

#: The repository root (the parent of ``benchmarks/``): workers import imgprof from here.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def worker_env(**extra: str) -> dict[str, str]:
    """This process's environment with the repository root first on ``PYTHONPATH``, plus ``extra`` variables."""
    return dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), **extra)


def run_worker(cmd: Sequence[str], *, what: str, env: dict[str, str] | None = None, cwd: Any = None,
               on_error: Literal["raise", "return"] = "raise") -> dict:
    """Run the worker command ``cmd`` and return the JSON object on the last line of its output.

    When it exits non-zero: ``on_error="raise"`` raises ``RuntimeError("<what> failed:")`` with the end of
    its standard error; ``"return"`` returns ``{"error": <last line of its standard error>}``.
    """
    res = subprocess.run(list(cmd), capture_output=True, text=True, env=env, cwd=cwd)
    if res.returncode != 0:
        if on_error == "raise":
            raise RuntimeError(f"{what} failed:\n{res.stderr[-3000:]}")
        return {"error": (res.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(res.stdout.strip().splitlines()[-1])


def copies_cli(worker_nargs: int) -> argparse.Namespace:
    """The command line of a script sized by copies of bundled data: ``--quick``, ``--copies N``, ``--worker ARG...``."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--copies", type=int, default=None)
    ap.add_argument("--worker", nargs=worker_nargs)
    return ap.parse_args()


def reply(result: dict) -> None:
    """A worker's answer: ``result`` as the one JSON line :func:`run_worker` reads back."""
    print(json.dumps(result))
