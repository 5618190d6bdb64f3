"""Sweeps on a local Ray cluster (2 CPUs, started and stopped here): the merged reports and
``heads.parquet`` equal the in-process sweep's exactly; a worker killed mid-sweep costs only the
unit it was running; a sweep stopped altogether resumes without recomputing a finished unit.

Skipped, visibly, where Ray is not installed (``pip install 'interp[ray]'``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
from wired_models import tiny_llama_folder

from interp.cli import main
from interp.heads.sweep import EXECUTIONS
from interp.results.folders import CHECKPOINT

ray = pytest.importorskip("ray", reason="needs interp[ray]")
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

SMALL = ["--lengths", "4,8", "--samples", "4", "--text-tokens", "32", "--text-samples", "2", "--quiet",
         "--window", "16", "--streaming-tokens", "48",
         "--retrieval-lengths", "100", "--retrieval-depths", "0,1", "--mask-k", "2"]
CLI = "import sys; from interp.cli import main; sys.exit(main(sys.argv[1:]))"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return [str(tiny_llama_folder(root / name, n_ctx=256, seed=seed)) for name, seed in (("tiny-a", 0), ("tiny-b", 1))]


@pytest.fixture(scope="module")
def in_process(folders, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "r"
    assert main(["heads", *folders, "--out", str(out), *SMALL]) == 0
    return out


def executions(log) -> Counter:
    return Counter(tuple(line.split("\t")[:2]) for line in log.read_text().splitlines()) if log.exists() else Counter()


def stop_inside_a_unit(pid: int, log, out) -> None:
    """Freeze worker ``pid`` (SIGSTOP) at a moment when every unit it logged as finished is in the
    sweep's store, so it is inside a unit it has not finished. A unit logged but not yet returned
    to the driver would otherwise be killed on its way back and rightly run again."""
    for _ in range(200):
        os.kill(pid, signal.SIGSTOP)
        for _ in range(20):  # results already on their way land while the worker is frozen
            logged = [line.split("\t") for line in log.read_text().splitlines()]
            if all(list((out / CHECKPOINT / model).glob(f"{key}.*")) for model, key, who in logged if int(who) == pid):
                return
            time.sleep(0.05)
        os.kill(pid, signal.SIGCONT)
        time.sleep(0.01)


def same_reports(a, b) -> None:
    for name in ("tiny-a", "tiny-b"):
        assert (a / name / "head_scores.json").read_bytes() == (b / name / "head_scores.json").read_bytes(), name
    assert (a / "heads.parquet").read_bytes() == (b / "heads.parquet").read_bytes()


def test_ray_sweep_equals_the_in_process_sweep_and_survives_a_killed_worker(folders, in_process, tmp_path,
                                                                           monkeypatch):
    log = tmp_path / "executions.tsv"
    monkeypatch.setenv(EXECUTIONS, str(log))
    out = tmp_path / "r"
    run = subprocess.Popen([sys.executable, "-c", CLI, "heads", *folders, "--out", str(out), *SMALL, "--ray", "auto"],
                           start_new_session=True)
    try:
        # Kill one worker process once both have finished a unit: Ray restarts it and retries
        # the unit it was running; every finished unit still runs exactly once.
        deadline = time.time() + 300
        while time.time() < deadline and len({m for m, _ in executions(log)}) < 2 and run.poll() is None:
            time.sleep(0.2)
        pids = {int(line.split("\t")[2]) for line in log.read_text().splitlines()} if log.exists() else set()
        victim = max(pids) if pids else None
        if victim is not None and run.poll() is None:
            stop_inside_a_unit(victim, log, out)
            os.kill(victim, signal.SIGKILL)
        assert run.wait(timeout=600) == 0
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    counts = executions(log)
    assert counts and max(counts.values()) == 1, [k for k, n in counts.items() if n > 1]
    same_reports(in_process, out)


def test_a_stopped_ray_sweep_resumes_without_recomputing(folders, in_process, tmp_path, monkeypatch):
    log = tmp_path / "executions.tsv"
    monkeypatch.setenv(EXECUTIONS, str(log))
    out = tmp_path / "r"
    argv = [sys.executable, "-c", CLI, "heads", *folders, "--out", str(out), *SMALL, "--ray", "auto"]
    run = subprocess.Popen(argv, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and sum(executions(log).values()) < 4 and run.poll() is None:
        time.sleep(0.2)
    os.killpg(run.pid, signal.SIGKILL)  # the whole sweep: driver, cluster and workers
    run.wait()
    subprocess.run([os.path.join(os.path.dirname(sys.executable), "ray"), "stop", "--force"], capture_output=True,
                   check=False)  # the cluster the killed driver started
    # (model, unit) pairs: both models have units of the same names, each in its own subfolder
    ckpt = out / ".interp-checkpoint"
    stored = {(p.relative_to(ckpt).parts[0], p.stem) for p in [*ckpt.rglob("*.safetensors"), *ckpt.rglob("check-*.json")]}
    assert stored, "the first run stored nothing before it was stopped"
    first = executions(log)
    log.unlink()
    assert subprocess.run(argv, check=False).returncode == 0
    second = executions(log)
    assert not set(second) & stored  # nothing stored was computed again
    assert max(second.values()) == 1
    assert sum(first.values()) >= len(stored)
    same_reports(in_process, out)


def test_ray_missing_or_unreachable_is_a_clear_error_before_any_work(folders, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["heads", folders[0], "--out", str(out), *SMALL, "--ray", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert "cannot reach the Ray cluster at '127.0.0.1:1'" in err
    assert not out.exists()
