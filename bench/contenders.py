"""Each contender captures one producer run and says whether it kept every byte.

A contender is a function ``(work_dir, kind, count, expected) -> Outcome``. The measured
process is the one doing the capture (see ``measure.py``); for ``> /dev/null`` and
``> file`` there is none, so the producer itself is measured.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from bench import outspool_api, sketch, supervisor
from bench.common import Expected, Outcome, producer, program, sha256_file, sha256_of
from bench.measure import Measured, run_measured

Contender = Callable[[Path, str, int, Expected], Outcome]


def devnull(work: Path, kind: str, count: int, exp: Expected) -> Outcome:
    sample = run_measured(
        producer(kind, count), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    return Outcome(sample, exp.nbytes, note="no capture: figures are the producer's")


def to_file(work: Path, kind: str, count: int, exp: Expected) -> Outcome:
    path = work / "out"
    with path.open("wb") as f:
        sample = run_measured(producer(kind, count), stdout=f, stderr=subprocess.STDOUT)
    same = sha256_file(path) == exp.merged
    return Outcome(
        sample, exp.nbytes, same, "held (one file)" if same else "", "producer's figures"
    )


def cat_to_file(work: Path, kind: str, count: int, exp: Expected) -> Outcome:
    path = work / "out"
    read, write = os.pipe()
    with path.open("wb") as f:
        cat = Measured(["cat"], stdin=read, stdout=f)
        prod = subprocess.Popen(producer(kind, count), stdout=write, stderr=write)
        os.close(read)
        os.close(write)
        sample = cat.finish()
        prod.wait()
    same = sha256_file(path) == exp.merged
    return Outcome(sample, exp.nbytes, same, "held (2>&1, one pipe)" if same else "")


def pyloop(work: Path, kind: str, count: int, exp: Expected) -> Outcome:
    prefix = work / "loop"
    sample = run_measured(program("cap_pyloop.py", str(prefix), "--", *producer(kind, count)))
    same = (
        sha256_file(Path(f"{prefix}.out")) == exp.stdout
        and sha256_file(Path(f"{prefix}.err")) == exp.stderr
    )
    return Outcome(sample, exp.nbytes, same, "n/a (two files)")


def naive(journal: str) -> Contender:
    def run(work: Path, kind: str, count: int, exp: Expected) -> Outcome:
        db = work / "naive.db"
        sample = run_measured(
            program("cap_naive.py", str(db), journal, "--", *producer(kind, count))
        )
        conn = sqlite3.connect(db)
        same = all(
            sha256_of(
                r[0]
                for r in conn.execute(
                    "SELECT data FROM output_lines WHERE stream = ? ORDER BY id", (stream,)
                )
            )
            == digest
            for stream, digest in (("stdout", exp.stdout), ("stderr", exp.stderr))
        )
        conn.close()
        note = f"measured on {exp.lines:,} lines"
        return Outcome(sample, exp.nbytes, same, "n/a", note)

    return run


def sketch_port(literal: bool = False) -> Contender:
    def run(work: Path, kind: str, count: int, exp: Expected) -> Outcome:
        db = work / "sketch.db"
        flag = ["--literal-async"] if literal else []
        sample = run_measured(program("sketch.py", str(db), *flag, "--", *producer(kind, count)))
        conn = sqlite3.connect(db)
        out, err = sketch.read_stream(conn, "1", "stdout"), sketch.read_stream(conn, "1", "stderr")
        conn.close()
        same = sha256_of([out]) == exp.stdout and sha256_of([err]) == exp.stderr
        outcome = Outcome(sample, exp.nbytes, same, "n/a (two columns)")
        if literal:
            outcome.extra = line_damage(out + err, kind, count)
            outcome.note = (
                f"stored {outcome.extra['stored_over_expected']:.1f}x the output; "
                f"{outcome.extra['duplicated_lines']:,} duplicated, "
                f"{outcome.extra['dropped_lines']:,} dropped of {outcome.extra['lines']:,} lines"
            )
        return outcome

    return run


def line_damage(stored: bytes, kind: str, count: int) -> dict[str, float]:
    """Lines are unique in these producers: count copies beyond the first, and missing ones."""
    from bench import produce

    expected = [line for _, data in produce.chunks(kind, count) for line in data.splitlines()]
    got = stored.splitlines()
    unique = set(got)
    total = sum(len(x) + 1 for x in expected)
    return {
        "lines": len(expected),
        "duplicated_lines": len(got) - len(unique),
        "dropped_lines": len(set(expected) - unique),
        "stored_over_expected": len(stored) / total if total else 0.0,
    }


def supervisord(work: Path, kind: str, count: int, exp: Expected) -> Outcome:
    argv = supervisor.supervisord_argv(work, producer(kind, count))
    started = time.time()
    sample = run_measured(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lifetime = sample.wall_s
    exited = supervisor.exited_at(work)
    if exited is not None:
        sample.wall_s = exited - started
    out, err = supervisor.outputs(work)
    same = (
        out.exists()
        and err.exists()
        and sha256_file(out) == exp.stdout
        and sha256_file(err) == exp.stderr
    )
    note = "wall: start until it reported the exit (startup included)"
    return Outcome(sample, exp.nbytes, same, "n/a (two files)", note, {"lifetime_s": lifetime})


def outspool(work: Path, kind: str, count: int, exp: Expected) -> Outcome:
    db = work / "outspool.db"
    errfile = work / "outspool.stderr"
    with errfile.open("wb") as err:
        sample = run_measured(outspool_api.run_argv(db, producer(kind, count)), stderr=err)
    execution_id = outspool_api.parse_id(errfile.read_text(errors="replace"))
    if execution_id is None or sample.exit_code != 0:
        note = f"run failed (exit {sample.exit_code}): {errfile.read_text(errors='replace')[-300:]}"
        return Outcome(sample, exp.nbytes, False, "", note)
    same = all(
        outspool_api.stream_digest(db, execution_id, stream) == digest
        for stream, digest in (("stdout", exp.stdout), ("stderr", exp.stderr))
    )
    order = ""
    if kind == "mixed":
        order = outspool_api.mixed_order(db, execution_id)
    return Outcome(sample, exp.nbytes, same, order or "n/a")
