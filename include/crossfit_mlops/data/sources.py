"""Where a raw snapshot comes from: a file the user provides, or the simulator.

Both implement :class:`RawSource`: ``write(target)`` puts an ``athletes.csv`` at ``target`` and
returns what the manifest should record about it. Ingest takes one and never looks inside it.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from crossfit_mlops.data.vocabulary import FULL_SIZE, MAX_ATHLETE_ID


class RawSourceError(ValueError):
    """The configured raw file cannot be used (missing, not a file, unreadable): refuse, never
    fall back to another source."""


class RawSource(Protocol):
    kind: str  # "provided" | "generated": recorded as the manifest's ``source``

    def write(self, target: Path) -> dict[str, Any]:
        """Write the raw file at ``target``; return the manifest's ``rows``, ``seed``, ``season_shift``."""
        ...

    def describe(self) -> str: ...


@dataclass(frozen=True)
class ProvidedFile:
    """A real ``athletes.csv`` (the Kaggle file, or a later export), copied byte for byte."""

    path: Path
    kind: str = "provided"

    def write(self, target: Path) -> dict[str, Any]:
        with self.path.open("rb") as source, open(target, "wb") as copy:  # a local file or a bucket object
            shutil.copyfileobj(source, copy, 1 << 20)
        return {"rows": None, "seed": None, "season_shift": 0.0}

    def describe(self) -> str:
        return f"the provided raw file {self.path}"


@dataclass(frozen=True)
class Simulator:
    """A generated snapshot (:mod:`crossfit_mlops.data.generate`): the same athletes for a seed,
    a few percent of profiles moved by the snapshot date, optionally a later season."""

    snapshot_id: str
    rows: int = FULL_SIZE
    seed: int = 42
    season_shift: float = 0.0
    kind: str = "generated"
    # unique ids are drawn from 1..max_athlete_id: the real file's range, or more for a scale run
    max_athlete_id: int = MAX_ATHLETE_ID

    def write(self, target: Path) -> dict[str, Any]:
        from crossfit_mlops.data.generate import write_snapshot

        write_snapshot(
            target, rows=self.rows, seed=self.seed, snapshot_id=self.snapshot_id, season_shift=self.season_shift,
            max_athlete_id=self.max_athlete_id,
        )  # fmt: skip
        return {"rows": self.rows, "seed": self.seed, "season_shift": float(self.season_shift)}

    def describe(self) -> str:
        beyond = self.max_athlete_id > MAX_ATHLETE_ID
        ids = f", ids up to {self.max_athlete_id}: beyond the real data" if beyond else ""
        return f"the simulator ({self.rows} rows, seed {self.seed}, season shift {self.season_shift}{ids})"
