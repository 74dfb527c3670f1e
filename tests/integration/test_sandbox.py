"""Hostile jobs, run through submit + worker in the sandbox, on both backends.

Each probe is refused or contained, the worker is unharmed and nothing is left
running. Probes that would harm this machine without a sandbox (``kill(-1)``
as root, a fork bomb) run only after a harmless job has confirmed, through the
same worker path, that jobs get their own PID namespace and a non-root user.
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import outspool
from outspool import Outspool, sandbox
from outspool.jobs import Job
from tests.conftest import RunCli
from tests.helpers import alive, cli_env

pytestmark = pytest.mark.skipif(
    sandbox.problem() is not None, reason=f"no sandbox here: {sandbox.problem()}"
)

SANDBOXED = {
    "OUTSPOOL_SANDBOX": "bwrap",
    "OUTSPOOL_KILL_GRACE": "0.5",
    "OUTSPOOL_DRAIN_GRACE": "0.5",
}

#: Reports whether the job is isolated: its PID (1 is bwrap's init), its user IDs.
ISOLATION_PROBE = """
import os
uids = open("/proc/self/status").read().split("Uid:")[1].split()[:4]
print(json.dumps({"pid": os.getpid(), "uids": uids, "pids_seen": len(os.listdir("/proc"))}))
"""


def run_worker(db: str, jobs: list[Job], run_cli: RunCli, **env: str) -> list[dict[str, object]]:
    """Queue ``jobs``, run one sandboxed worker until the queue is empty; their records."""
    with Outspool(db) as spool:
        ids = [spool.submit(job).id for job in jobs]
    done = run_cli("worker", "--db", db, "--burst", "-c", "4", env={**SANDBOXED, **env})
    assert done.rc == 0, done.stderr.decode()
    with Outspool(db) as spool:
        records = [spool.get(i).to_json() | {"output": spool.read(i).decode()} for i in ids]
    assert_nothing_left(ids)
    return records


def assert_nothing_left(ids: list[str]) -> None:
    """No process anywhere carries one of these executions' IDs."""
    markers = [f"OUTSPOOL_EXECUTION_ID={i}".encode() for i in ids]
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            environ = Path(f"/proc/{name}/environ").read_bytes()
        except OSError:
            continue
        found = [m for m in markers if m in environ.split(b"\0")]
        assert not (found and alive(int(name))), f"process {name} outlived {found}"


def python(code: str, **limits: float) -> Job:
    """A Python job (the system's python3 in the sandbox); ``limits``: timeout, cpu_time, ..."""
    code = "import json, os, socket, sys\n" + code
    return Job(
        language="python",
        code=code,
        timeout=limits.get("timeout"),
        cpu_time=limits.get("cpu_time"),
        memory=None if "memory" not in limits else int(limits["memory"]),
        max_processes=None if "max_processes" not in limits else int(limits["max_processes"]),
    )


@pytest.fixture
def isolated(db_url: str, run_cli: RunCli) -> None:
    """Confirm, with a harmless job, that jobs are isolated; fail (never run the harmful
    probes) otherwise."""
    (record,) = run_worker(db_url, [python(ISOLATION_PROBE)], run_cli)
    try:
        seen = json.loads(str(record["output"]))
    except ValueError:
        pytest.fail(f"the isolation probe did not report: {record}")
    if seen["pid"] > 10 or "0" in seen["uids"] or seen["pids_seen"] > 60:
        pytest.fail(f"jobs are not isolated here ({seen}): refusing to run harmful probes")


@pytest.fixture
def web_server() -> Iterator[int]:
    """A web server on 127.0.0.1 that jobs must not reach; its port."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def attempts(*tries: str) -> str:
    """A program that runs each attempt and prints ALLOWED or the error that refused it."""
    body = "\n".join(
        f"try:\n    {t}\n    print('ALLOWED:', {t!r})\nexcept Exception as e:\n"
        f"    print('refused:', {t!r}, type(e).__name__)"
        for t in tries
    )
    return body


def test_hostile_jobs_are_refused_or_contained(
    db_url: str, db_path: Path, tmp_path: Path, isolated: None, web_server: int, run_cli: RunCli
) -> None:
    other = tmp_path / "other-job"
    other.mkdir()
    (other / "result.txt").write_text("another job's file")
    store_files = [str(db_path), f"{db_path}-wal", f"{db_path}-chunks"]
    probes = attempts(
        *(f"open({p!r}, 'rb').read(1)" for p in store_files),
        f"open({str(db_path)!r}, 'ab').write(b'x')",
        f"open({str(other / 'result.txt')!r}).read()",
        "open('/usr/bin/outspool-was-here', 'w')",
        "open('/etc/passwd', 'a').write('x')",
        "open(os.path.expanduser('~root/.bashrc')).read()",
        f"open('/proc/{os.getpid()}/environ', 'rb').read()",
        "socket.create_connection(('127.0.0.1', 5432), timeout=2)",
        f"socket.create_connection(('127.0.0.1', {web_server}), timeout=2)",
    )
    killers = (
        "import signal, subprocess\n"
        "child = subprocess.Popen(['sleep', '60'])\n"
        "os.kill(os.getppid(), signal.SIGKILL)\n"
        "os.kill(-1, signal.SIGKILL)\n"
        "print('still here; my child got', child.wait())"
    )
    # each process forks until refused, then sleeps: bounded by the process limit
    bomb = "import time\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n"
    bomb += "        break\ntime.sleep(60)"
    hog = "x = bytearray(400 << 20)\nprint('allocated', len(x))"
    spin = "while True:\n    pass"
    jobs = [
        python(probes),
        python(killers),
        python(bomb, timeout=10, max_processes=32),
        python(hog, memory=100 << 20),
        python(spin, timeout=30, cpu_time=1),
        python("print('after the others: fine')"),
    ]
    records = run_worker(db_url, jobs, run_cli)
    probe, killer, bombed, hogged, spun, fine = records
    assert "ALLOWED" not in str(probe["output"]), probe["output"]
    assert str(probe["output"]).count("refused:") == 11
    assert (killer["status"], killer["output"]) == ("succeeded", "still here; my child got -9\n")
    assert (bombed["status"], bombed["reason"]) == ("timed_out", "process limit")
    assert (hogged["status"], hogged["reason"]) == ("failed", "memory limit")
    assert (spun["status"], spun["reason"]) == ("failed", "cpu time limit")
    assert (fine["status"], fine["output"]) == ("succeeded", "after the others: fine\n")


def test_outspool_run_leaves_no_daemon_behind(tmp_path: Path, run_cli: RunCli) -> None:
    pids = tmp_path / "pids"
    script = (
        f"setsid sleep 300 & echo $! > {pids}; "
        f"env -i setsid sh -c 'echo $$ >> {pids}; sleep 301' & "
        f"while [ $(wc -l < {pids}) -lt 2 ]; do :; done"
    )
    done = run_cli("run", "--db", str(tmp_path / "o.db"), "--", "sh", "-c", script)
    assert done.rc == 0, done.stderr
    for pid in map(int, pids.read_text().split()):
        assert not alive(pid), f"process {pid} outlived its execution"


def test_secrets_are_masked_in_echo_and_store_and_never_stored(
    tmp_path: Path, run_cli: RunCli
) -> None:
    db = str(tmp_path / "o.db")
    program = (  # the second secret arrives in two writes, 50 ms apart
        'echo "token=$API_TOKEN"; printf "split: %s" "$(echo $OTHER | cut -c1-8)"; '
        'sleep 0.05; echo "$OTHER" | cut -c9-'
    )
    for extra in ([], ["--sandbox"]):
        done = run_cli(
            "run",
            "--db",
            db,
            *extra,
            "--secret",
            "API_TOKEN",
            "--secret",
            "OTHER=hunter2-and-more",
            "--",
            "sh",
            "-c",
            program,
            env={"API_TOKEN": "s3cr3t-value-42"},
        )
        assert done.rc == 0, done.stderr
        assert done.stdout == b"token=[MASKED]\nsplit: [MASKED]\n"
    with Outspool(db) as spool:
        for ex in spool.list():
            assert spool.read(ex.id) == b"token=[MASKED]\nsplit: [MASKED]\n"
            assert "hunter2" not in json.dumps(ex.to_json())
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert b"s3cr3t-value-42" not in raw and b"hunter2-and-more" not in raw


def test_a_short_secret_is_refused_in_one_line(tmp_path: Path, run_cli: RunCli) -> None:
    done = run_cli("run", "--db", str(tmp_path / "o.db"), "--secret", "A=short", "--", "true")
    assert done.rc == 2
    assert done.err_lines == [
        "outspool: secret A is too short to be masked: values need at least 8 bytes"
    ]


def test_worker_refuses_to_start_without_bubblewrap(tmp_path: Path, run_cli: RunCli) -> None:
    env = {**SANDBOXED, "PATH": str(tmp_path)}  # no bwrap on this PATH
    done = run_cli("worker", "--db", str(tmp_path / "o.db"), "--burst", env=env)
    assert done.rc == 2
    assert len(done.err_lines) == 1
    assert "apt-get install bubblewrap" in done.stderr.decode()
    assert "OUTSPOOL_SANDBOX=none" in done.stderr.decode()


def test_secrets_through_the_queue_are_masked_shown_nowhere_and_forgotten(
    db_url: str, tmp_path: Path, run_cli: RunCli
) -> None:
    value = "s3cr3t-value-42"
    submitted = run_cli(
        "submit",
        "--db",
        db_url,
        "--secret",
        "API_TOKEN",
        "--",
        "sh",
        "-c",
        'echo "t=$API_TOKEN"',
        env={"API_TOKEN": value},
    )
    assert submitted.rc == 0, submitted.stderr
    execution_id = submitted.stdout.decode().strip()
    shown = run_cli("show", "--db", db_url, execution_id, "--json")
    listed = run_cli("ls", "--db", db_url, "--json")
    assert value not in (shown.stdout + listed.stdout).decode()
    worker = run_cli("worker", "--db", db_url, "--burst", env=SANDBOXED)
    assert worker.rc == 0 and value.encode() not in worker.stderr
    with Outspool(db_url) as spool:
        assert spool.read(execution_id) == b"t=[MASKED]\n"
        assert spool.get(execution_id).secrets == {}  # wiped once it ended
    if "://" not in db_url:  # SQLite: not in the database file, its WAL or its segments
        files = [p for p in tmp_path.rglob("*") if p.is_file()]
        assert files and not any(value.encode() in p.read_bytes() for p in files)


def test_a_job_asking_above_a_ceiling_is_refused_and_a_worker_clamps(
    db_url: str, run_cli: RunCli
) -> None:
    ceiling = {"OUTSPOOL_LIMIT_MEMORY": str(64 << 20)}
    asked = ("--memory", str(1 << 30))
    refused = run_cli("submit", "--db", db_url, *asked, "--", "true", env=ceiling)
    assert refused.rc == 2
    assert refused.err_lines == [
        f"outspool: --memory {1 << 30} is above this machine's ceiling ({64 << 20})"
    ]
    hog = ("--", "python3", "-c", "x = bytearray(300 << 20)")
    queued = run_cli("submit", "--db", db_url, *asked, *hog)  # no ceiling where submitted
    assert queued.rc == 0
    assert run_cli("worker", "--db", db_url, "--burst", env={**SANDBOXED, **ceiling}).rc == 0
    with Outspool(db_url) as spool:
        ex = spool.get(queued.stdout.decode().strip())
    assert (ex.status.value, ex.reason) == ("failed", "memory limit")


@pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists("/usr/bin/python3"),
    reason="needs root (to become an unprivileged user) and a system python3",
)
def test_without_a_cgroup_the_subreaper_kills_the_daemons() -> None:
    """As ``nobody``, ``outspool run`` can make no cgroup: its subreaper sweep does the job."""
    import shutil
    import tempfile

    where = Path(tempfile.mkdtemp(prefix="outspool-nobody-"))
    try:
        where.chmod(0o777)
        pids = where / "pids"
        script = (
            f"setsid sleep 300 & echo $! > {pids}; "
            f"env -i setsid sh -c 'echo $$ >> {pids}; sleep 301' & "
            f"while [ $(wc -l < {pids}) -lt 2 ]; do :; done"
        )
        # the system's python3 with our packages: this interpreter may live where nobody can go
        path = os.pathsep.join([str(Path(outspool.__file__).parents[1]), *sys.path])
        cli = ["/usr/bin/python3", "-m", "outspool.cli"]
        done = subprocess.run(
            [*cli, "run", "--db", str(where / "o.db"), "--", "sh", "-c", script],
            env=cli_env({"PYTHONPATH": path}),
            cwd=where,
            capture_output=True,
            timeout=60,
            user=65534,
            group=65534,
            extra_groups=[],
            check=False,
        )
        assert done.returncode == 0, done.stderr
        for pid in map(int, pids.read_text().split()):
            assert not alive(pid), f"process {pid} outlived its execution"
    finally:
        shutil.rmtree(where, ignore_errors=True)


#: What a sandboxed program sees of its file system: one line per check.
FILE_SYSTEM_PROBE = r"""
for p in / /etc /etc/passwd /usr /dev /tmp /job /dev/shm "$PWD" "$HOME"; do
    if ( : >> "$p/.probe" ) 2>/dev/null || ( : >> "$p" ) 2>/dev/null; then echo "writable $p"
    else echo "read-only $p"; fi
done
cksum /etc/passwd /etc/hosts
ls /proc/self/fd | tr '\n' ' '; echo
echo "home $HOME; cwd $PWD"
"""


def test_the_sandbox_is_read_only_but_tmp_and_job_and_shows_etc_as_on_the_host(
    tmp_path: Path,
) -> None:
    """/, /etc and /dev are read-only (bwrap's unbounded tmpfs too: only the bounded /tmp,
    /job and /dev/shm are writable), /etc's files are the host's, the
    descriptors they were copied from are closed, and HOME is the writable /job also when
    the working directory is a read-only --cwd."""
    import shutil
    import tempfile

    host = subprocess.run(["cksum", "/etc/passwd", "/etc/hosts"], capture_output=True, check=True)
    where = Path(tempfile.mkdtemp(prefix="outspool-cwd-"))  # nobody must reach it
    try:
        where.chmod(0o755)
        with Outspool(str(tmp_path / "o.db")) as spool:
            plain = spool.run(["sh", "-c", FILE_SYSTEM_PROBE], sandbox=True)
            in_cwd = spool.run(["sh", "-c", FILE_SYSTEM_PROBE], sandbox=True, cwd=str(where))
            plain_out, cwd_out = spool.read(plain.id).decode(), spool.read(in_cwd.id).decode()
    finally:
        shutil.rmtree(where, ignore_errors=True)
    for out in (plain_out, cwd_out):
        for path in ("/", "/etc", "/etc/passwd", "/usr", "/dev"):
            assert f"read-only {path}\n" in out, out
        for path in ("/tmp", "/job", "/dev/shm"):  # the bounded tmpfs
            assert f"writable {path}\n" in out, out
        assert host.stdout.decode() in out, out  # the same bytes as on the host
        assert "\n0 1 2 3 \n" in out, out  # 3: ls's own directory; no /etc descriptor left
    assert "home /job; cwd /job\n" in plain_out, plain_out
    assert f"read-only {where}\n" in cwd_out and f"home /job; cwd {where}\n" in cwd_out, cwd_out


#: What a job can see of how it was started (its execution ID aside).
START_PROBE = (
    "import os, resource, sys\n"
    "env = sorted((k, v) for k, v in os.environ.items() if k != 'OUTSPOOL_EXECUTION_ID')\n"
    "limits = [resource.getrlimit(r) for r in (resource.RLIMIT_CPU, resource.RLIMIT_FSIZE)]\n"
    "print(env, os.getcwd(), os.getuid(), os.getgid(), limits, sys.argv[1:])\n"
    "print('stdin', os.readlink('/proc/self/fd/0'))\n"
)


@pytest.mark.parametrize("warm", [True, False], ids=["warm", "cold"])
def test_a_warm_sandbox_starts_a_job_as_a_cold_one_does(tmp_path: Path, warm: bool) -> None:
    """Built before the claim or for the job: the same environment, user, directory,
    rlimits, arguments (quotes and spaces kept), exit status, a missing program refused
    as outside a sandbox; RLIMIT_FSIZE binds the program, not bwrap's copies of /etc's
    files (larger than the limit)."""
    from outspool import Settings
    from outspool.worker import Worker

    settings = Settings.load(sandbox="bwrap", sandbox_warm=warm, kill_grace=0.5, drain_grace=0.5)
    db = str(tmp_path / "o.db")
    jobs = [
        Job(
            command=("python3", "-c", START_PROBE, "a b", "it's", "$HOME"),
            env={"ODD": 'x\'y "z" $(no) `no`\n2nd line'},
            cpu_time=3,
            max_file_size=1000,
        ),
        Job(command=("sh", "-c", "kill -TERM $$")),
        Job(command=("sh", "-c", "exec head -c 5000 /dev/zero > /tmp/big"), max_file_size=1000),
        Job(command=("sh", "-c", "echo out; echo err >&2; exit 7")),
        Job(command=("no-such-program-xyz", "arg")),
        Job(command=("/usr/bin/no-such-program-xyz",)),
    ]
    with Outspool(db, settings) as spool:
        ids = [spool.submit(job).id for job in jobs]
    worker = Worker(db, settings, concurrency=2, burst=True)
    worker.run()
    assert (worker.warm_starts > 0) == warm
    with Outspool(db) as spool:
        ended = [spool.get(i) for i in ids]
        outputs = [spool.read(i).decode() for i in ids]
    probe, termed, too_big, plain, missing, missing_path = ended
    env = "('HOME', '/job'), ('LANG', 'C.UTF-8')"
    assert env in outputs[0] and "('ODD', 'x\\'y \"z\" $(no) `no`\\n2nd line')" in outputs[0]
    assert "/job 65534 65534 [(3, 4), (1000, 1000)] ['a b', \"it's\", '$HOME']" in outputs[0]
    assert "('PWD', '/job')" in outputs[0]  # bwrap's, in both
    assert "\nstdin /dev/null\n" in outputs[0]
    assert (probe.status.value, probe.exit_code) == ("succeeded", 0)
    assert (termed.status.value, termed.exit_code) == ("failed", 128 + 15)
    assert (too_big.status.value, too_big.reason) == ("failed", "file size limit")
    assert (plain.exit_code, outputs[3]) == (7, "out\nerr\n")
    for gone, name in (
        (missing, "no-such-program-xyz"),
        (missing_path, "/usr/bin/no-such-program-xyz"),
    ):
        assert (gone.status.value, gone.exit_code) == ("failed", None)
        assert gone.reason == f"command not found: {name}"  # as unsandboxed


@pytest.mark.parametrize(("slots", "spares"), [(2, 2), (40, "handlers")])
def test_a_worker_keeps_no_more_warm_sandboxes_than_it_starts_at_once(
    tmp_path: Path, slots: int, spares: int | str
) -> None:
    """One warm sandbox per slot, at most as many as the start pool runs at once: a worker
    with a thousand slots built (and threw away) up to a thousand spares while its
    programs ran."""
    from outspool import Settings
    from outspool.client import HANDLERS
    from outspool.worker import Worker

    settings = Settings.load(sandbox="bwrap", sandbox_warm=True)
    worker = Worker(str(tmp_path / "o.db"), settings, concurrency=slots)
    pool = worker._warm_pool()
    assert pool is not None
    try:
        assert pool.size == (HANDLERS if spares == "handlers" else spares)
    finally:
        pool.close()
