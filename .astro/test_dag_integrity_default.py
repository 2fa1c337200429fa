"""The parse test of ``astro dev parse`` (and of ``astro deploy``, which parses first).

The Astro CLI runs this file with pytest inside the project image, from the project root. It checks
what a deploy must not break: every DAG file in ``dags/`` imports without errors and at least one
DAG is found. The full DAG checks (graph, retries, nothing heavy at parse time) are in
``tests/dags/``. Files listed in ``.astro/dag_integrity_exceptions.txt`` (one path per line, e.g.
``dags/<file>.py``) are exempt, as in the test ``astro dev init`` writes.
"""

from __future__ import annotations

from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
DAGS = PROJECT / "dags"
EXCEPTIONS = PROJECT / ".astro" / "dag_integrity_exceptions.txt"


def _exempt() -> set[Path]:
    if not EXCEPTIONS.is_file():
        return set()
    lines = (line.strip() for line in EXCEPTIONS.read_text().splitlines())
    return {(PROJECT / line).resolve() for line in lines if line and not line.startswith("#")}


def test_every_dag_file_imports():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    exempt = _exempt()
    errors = {path: error for path, error in bag.import_errors.items() if Path(path).resolve() not in exempt}
    assert errors == {}, "DAG files that do not import:\n" + "\n".join(f"{p}: {e}" for p, e in errors.items())
    assert bag.dags, f"no DAG found in {DAGS}"
