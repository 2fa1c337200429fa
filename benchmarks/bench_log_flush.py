"""What one flush of the prediction log costs the API's process: 1,000 ``/predict`` answers of 34
features each, written as one part file by :meth:`PredictionLogWriter.flush` (today's writer:
columns into a pyarrow table, the features' JSON through a template), against the named baseline,
the writer before 2026-12-07's change (a dict a row with ``json.dumps``, a pandas frame,
``DataFrame.to_parquet``), reproduced here. Both run in this process, interleaved, on the same
answers; the figures are the flush's thread CPU (the GIL it holds beside the answers) and wall time.

    .venv/bin/python benchmarks/bench_log_flush.py [--rounds 15] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "log_flush.json"
FEATURES = [f"feature_{i}" for i in range(34)]


def _answers(n: int, rng):
    from crossfit_mlops import prediction_log
    from crossfit_mlops.serving.log_writer import Answer

    now = time.time()
    return [
        Answer(request_id=prediction_log.new_request_id(), logged_at=now, route="/predict", status=200, athlete_ids=[i],
               feature_version="v2", columns=FEATURES, rows=(rng.random((1, len(FEATURES))) * 100).tolist(),
               model_name="crossfit_total_lift", model_version="1", predictions=[float(rng.random() * 1000)],
               latency_ms=1.0, features_at=[datetime.now(UTC)])  # fmt: skip
        for i in range(n)
    ]


def _baseline_write(root: Path, answers, seq: int) -> None:
    """The writer before: one dict a row (``json.dumps`` of the features), a pandas frame of the
    log's dtypes, ``to_parquet`` per hour, published the same way."""
    import pandas as pd

    from crossfit_mlops import prediction_log
    from crossfit_mlops.storage import publishing

    rows = []
    for a in answers:
        common = {"request_id": a.request_id, "logged_at": datetime.fromtimestamp(a.logged_at, UTC), "route": a.route,
                  "status": a.status, "error": a.error, "role": a.role, "feature_version": a.feature_version,
                  "model_name": a.model_name, "model_version": a.model_version, "latency_ms": a.latency_ms}  # fmt: skip
        for item, prediction in enumerate(a.predictions):
            features = json.dumps(dict(zip(a.columns, a.rows[item], strict=True)))
            rows.append({**common, "item": item, "athlete_id": a.athlete_ids[item], "features": features,
                         "features_at": a.features_at[item], "prediction": prediction})  # fmt: skip
    frame = pd.DataFrame.from_records(rows, columns=list(prediction_log.COLUMNS))
    for column in ("logged_at", "features_at"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    frame = frame.astype(prediction_log.COLUMNS)
    for hour, part in frame.groupby(frame["logged_at"].dt.floor("h"), sort=True):
        final = prediction_log.hour_folder(root, hour.to_pydatetime()) / f"part-baseline-{seq}.parquet"
        with publishing(final, directory=False) as tmp:
            part.to_parquet(tmp, index=False)


def main() -> None:
    import numpy as np

    from crossfit_mlops.serving.log_writer import PredictionLogWriter

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--answers", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    root = Path(tempfile.mkdtemp(prefix="bench-log-flush-"))
    writer = PredictionLogWriter(root / "now", flush_seconds=3600, batch=args.answers, queue_bound=10 * args.answers)
    figures = {"baseline": {"cpu_ms": [], "wall_ms": []}, "writer": {"cpu_ms": [], "wall_ms": []}}
    for round_ in range(args.rounds):
        answers = _answers(args.answers, rng)
        for name in ("baseline", "writer") if round_ % 2 == 0 else ("writer", "baseline"):
            wall, cpu = time.perf_counter(), time.thread_time()
            if name == "baseline":
                _baseline_write(root / "baseline", answers, round_)
            else:
                for answer in answers:
                    writer.submit(answer)
                assert writer.flush() == args.answers
            figures[name]["cpu_ms"].append((time.thread_time() - cpu) * 1000)
            figures[name]["wall_ms"].append((time.perf_counter() - wall) * 1000)
    result = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "answers_per_flush": args.answers,
        "features": len(FEATURES),
        "rounds": args.rounds,
        **{name: {k: round(statistics.median(v), 2) for k, v in f.items()} for name, f in figures.items()},
    }
    result["cpu_ratio_writer_to_baseline"] = round(result["writer"]["cpu_ms"] / result["baseline"]["cpu_ms"], 3)
    for name in ("baseline", "writer"):
        print(f"{name:<9} median flush of {args.answers} answers: CPU {result[name]['cpu_ms']:.1f} ms, wall {result[name]['wall_ms']:.1f} ms")
    print(f"writer / baseline CPU: {result['cpu_ratio_writer_to_baseline']:.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
