"""pipeline/proctree.py on a small real process tree like Airflow's: a leader with a child that ignores SIGTERM, a child that
moves into a process group of its own (as Airflow's task supervisor puts its tasks) with a grandchild, and an orphan whose parent
has exited. `stop` and `supervise` (on SIGINT, as Ctrl-C) must leave none of them; nothing else is touched. A few seconds."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

psutil = pytest.importorskip("psutil")
from pipeline import proctree  # noqa: E402 - needs psutil

TREE = textwrap.dedent("""
    import os, signal, subprocess, sys, time
    out = sys.argv[1]
    sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
    stubborn = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
    grouped = subprocess.Popen([sys.executable, "-c", "import os, subprocess, sys, time; os.setpgid(0, 0); "
                                "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); time.sleep(600)"])
    middle = subprocess.Popen([sys.executable, "-c", "import subprocess, sys; "
                               "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'], stdout=subprocess.DEVNULL); print(p.pid)"],
                              stdout=subprocess.PIPE, text=True)
    orphan = int(middle.communicate()[0])  # its parent has exited: it now belongs to init, still in our session
    with open(out + ".tmp", "w") as f:
        f.write(" ".join(map(str, [os.getpid(), stubborn.pid, grouped.pid, orphan])))
    os.rename(out + ".tmp", out)
    time.sleep(600)
""")

SUPERVISE = textwrap.dedent("""
    import sys
    from pipeline import proctree
    leader = proctree.start([sys.executable, "-c", sys.argv[1], sys.argv[2]], dict(__import__("os").environ))
    sys.exit(proctree.supervise([leader], grace_s=1.0))
""")


def _wait_for(path, timeout=60):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, "the process tree did not start"
        time.sleep(0.1)
    return [int(pid) for pid in path.read_text().split()]


def _alive(pids):
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.Error:
            pass
    return out


def _session(sid):
    out = []
    for pid in psutil.pids():
        try:
            if os.getsid(pid) == sid and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except (OSError, psutil.Error):
            pass
    return out


def test_stop_ends_the_whole_session_even_a_process_ignoring_sigterm_and_an_orphan(tmp_path):
    from pipeline import proctree

    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])  # not ours to stop
    leader = proctree.start([sys.executable, "-c", TREE, str(tmp_path / "pids")], dict(os.environ))
    try:
        pids = _wait_for(tmp_path / "pids")
        members = {p.pid for p in proctree.members([leader.pid])}
        assert set(pids) <= members and bystander.pid not in members
        started = time.monotonic()
        assert proctree.stop([leader.pid], grace_s=1.0) == []
        assert time.monotonic() - started < 15
        leader.wait(timeout=5)
        assert _alive([*pids, *members]) == []
        assert proctree.members([leader.pid]) == []
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()
        if leader.poll() is None:
            proctree.stop([leader.pid], grace_s=0)


def test_supervise_stops_everything_on_sigint_and_exits_130(tmp_path):
    from pipeline import config

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(config.PROJECT_ROOT), os.environ.get("PYTHONPATH")]))}
    sup = subprocess.Popen([sys.executable, "-c", SUPERVISE, TREE, str(tmp_path / "pids")], env=env, start_new_session=True)
    try:
        pids = _wait_for(tmp_path / "pids")
        session = _session(pids[0])  # the tree's leader leads a session of its own, below the supervisor's
        assert set(pids) <= set(session) and sup.pid not in session
        sup.send_signal(signal.SIGINT)
        assert sup.wait(timeout=30) == 128 + signal.SIGINT
        assert _alive(session) == [] and _session(pids[0]) == []
    finally:  # on a failure: the supervisor, its tree and that tree's session
        if sup.poll() is None:
            from pipeline import proctree

            tree = [c.pid for c in psutil.Process(sup.pid).children()]
            os.killpg(sup.pid, signal.SIGKILL)
            proctree.stop(tree, grace_s=0)
            sup.wait()


def test_a_process_keeps_its_identity_when_the_boot_time_moves(monkeypatch):
    """Linux recomputes /proc/stat's boot time from the current clock on every read, in whole seconds: psutil's wall-clock start
    time moves with it. A starting api-server once looked dead to `cluster up` that way (CI, an AVX2 machine)."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        started = proctree.create_time(child.pid)
        assert proctree.is_alive(child.pid, started)
        moved = psutil.boot_time() + 1.0
        monkeypatch.setattr(psutil._pslinux, "boot_time", lambda: moved)
        assert abs(psutil.Process(child.pid).create_time() - (started + moved)) < 0.05  # the wall-clock time did move
        assert proctree.is_alive(child.pid, started)
        assert proctree.create_time(child.pid) == started
        assert not proctree.is_alive(child.pid, started + 0.01)  # a later process with the pid is not ours
    finally:
        child.kill()
        child.wait()
    assert not proctree.is_alive(child.pid, started)


def test_the_cluster_knows_its_processes_by_their_start_since_boot_and_older_records_by_pid(tmp_path, monkeypatch):
    from pipeline import airflow_cluster, paths
    from pipeline.fsutil import write_json

    monkeypatch.setenv("CLOUDTUNE_HOME", str(tmp_path))
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        since_boot = proctree.create_time(child.pid)
        records = [{"role": "ours", "started_boot_s": since_boot}, {"role": "older", "started": 1.7e9},  # a record of before
                   {"role": "reused", "started_boot_s": since_boot - 1.0}]  # the pid now belongs to another process
        write_json(paths.airflow_cluster_state(), {"processes": [{**r, "queue": None, "pid": child.pid, "log": ""} for r in records]})
        assert [p["alive"] for p in airflow_cluster.status()] == [True, True, False]
        assert airflow_cluster._leaders(airflow_cluster.read_state()) == [child.pid, child.pid]  # the reused pid is left alone
    finally:
        child.kill()
        child.wait()
