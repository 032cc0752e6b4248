"""Where read tasks report what they found in each file, keyed by run and file so that a retried
task replaces its entry instead of counting twice.

Kept apart from the data modules and light to import (Ray and numpy only): the ledger actor is
started at the beginning of the first pass, and every second its process spends importing the
data stack is a second the first read tasks may wait for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import ray


@dataclass
class FileOutcome:
    """What one task found in one file."""

    rows: int = 0
    valid: int = 0
    invalid: dict[str, int] = field(default_factory=dict)
    labels: dict[Any, int] = field(default_factory=dict)
    """Label value -> count among the valid rows."""
    sha256: str = ""
    error: str | None = None
    invalid_rows: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    """Positions of the invalid rows, so later passes drop them without checking again."""


# Restarted if its process dies, calls retried meanwhile: the job's later runs go on, and a run
# in flight at the time fails naming the files whose outcomes went with it (see validate.build_report).
@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class Ledger:
    """(run, file) -> outcome. Set, not added: a retried read task overwrites its own entry."""

    def __init__(self) -> None:
        self.runs: dict[str, dict[str, FileOutcome]] = {}

    def record(self, run: str, uri: str, outcome: FileOutcome) -> None:
        self.runs.setdefault(run, {})[uri] = outcome

    def take(self, run: str) -> dict[str, FileOutcome]:
        """Every outcome recorded for `run`, handed over once (the ledger keeps no copy)."""
        return self.runs.pop(run, {})


_LEDGERS: dict[tuple[str, str], ray.actor.ActorHandle] = {}
"""(this process's node, job) -> its ledger. Holding the handle is what keeps the actor alive: Ray
ends an actor, named or not, when the last handle to it goes."""


def job_ledger() -> ray.actor.ActorHandle:
    """This Ray job's ledger: started by its first pass over data and shared by the runs after it,
    which keep their entries apart by run id, so that only the first pays for the actor's start-up.
    Keyed by node too, since a cluster started again in the same process reuses job ids."""
    context = ray.get_runtime_context()
    key = (context.get_node_id(), context.get_job_id())
    if key not in _LEDGERS:
        _LEDGERS[key] = Ledger.remote()
    return _LEDGERS[key]
