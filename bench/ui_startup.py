"""`medlora ui` before and after: seconds until the UI answers, processes and memory, what stopping it leaves.

    .venv/bin/python bench/ui_startup.py [--rounds 2] [--settle 8]

In one invocation, on one fresh MLflow store, alternately (a then b, `--rounds` times):
  (a) before: `medlora ui` as it was before issue 15 (its cli.py taken from git, commit BEFORE), which ran
      `mlflow ui` with MLflow 3's defaults: 4 uvicorn workers, the job runner, telemetry on;
  (b) after: `medlora ui`.
"Ready" is the first 200 from /health. After `--settle` seconds (MLflow's job runner starts its workers
after the server answers) the launched process and all its descendants are counted and their memory summed
(RSS, and PSS, which splits shared pages between processes). Then the launched process gets SIGTERM, as
`kill` sends it, and whatever still runs 10 s later in the sessions and process groups those processes
were in is counted (and killed). Linux only (/proc). The last lines are the ratios after/before.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEFORE = "2bc7d48"  # the last commit before issue 15


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def processes() -> dict[int, tuple[int, int, int]]:
    """pid -> (parent pid, process group, session) of every live process."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            table[int(stat.parent.name)] = (int(fields[1]), int(fields[2]), int(fields[3]))
    return table


def tree(root: int) -> list[int]:
    table, found = processes(), [root]
    for pid in found:
        found += [child for child, (parent, _, _) in table.items() if parent == pid]
    return [pid for pid in found if pid in table]


def memory_mb(pids: list[int]) -> tuple[float, float]:
    """(summed RSS, summed PSS) in MB."""
    rss = pss = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except OSError:
            continue
    return rss / 1024, pss / 1024


def measure(command: list[str], port: int, settle: float, cwd: Path) -> dict:
    tic = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=cwd,
                            start_new_session=True)
    ready = None
    while time.perf_counter() - tic < 180:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as answer:
                if answer.status == 200:
                    ready = time.perf_counter() - tic
                    break
        except OSError:
            time.sleep(0.05)
    time.sleep(settle)
    pids = tree(proc.pid)
    rss, pss = memory_mb(pids)
    groups = {processes()[pid][1:] for pid in pids if pid in processes()}
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    time.sleep(10)
    left = [pid for pid, (_, group, session) in processes().items()
            if any(group == g or session == s for g, s in groups)]
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    return {"ready_s": ready, "processes": len(pids), "rss_mb": rss, "pss_mb": pss, "left_after_stop": len(left)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--settle", type=float, default=8.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="medlora-ui-bench-") as tmp:
        work = Path(tmp)
        uri = f"sqlite:///{work / 'mlruns' / 'mlflow.db'}"
        (work / "mlruns").mkdir()
        subprocess.run([sys.executable, "-c", "import mlflow; mlflow.set_tracking_uri(%r); "
                        "mlflow.MlflowClient().search_experiments()" % uri], check=True, capture_output=True)
        old_cli = work / "medlora_cli_before.py"
        old_cli.write_bytes(subprocess.run(["git", "show", f"{BEFORE}:src/medlora/cli.py"], cwd=ROOT,
                                           check=True, capture_output=True).stdout)
        results = {"a": [], "b": []}
        for _ in range(args.rounds):
            port = free_port()
            results["a"].append(measure([sys.executable, str(old_cli), "ui", "--port", str(port),
                                         f"paths.mlruns={work / 'mlruns'}"], port, args.settle, work))
            port = free_port()
            results["b"].append(measure([sys.executable, "-m", "medlora.cli", "ui", "--port", str(port),
                                         f"paths.mlruns={work / 'mlruns'}"], port, args.settle, work))
            for key in "ab":
                print(f"({key}) {results[key][-1]}", flush=True)
    med = {k: {m: statistics.median(r[m] for r in v) for m in v[0]} for k, v in results.items()}
    print(f"{'':4} {'ready s':>8} {'processes':>9} {'RSS MB':>8} {'PSS MB':>8} {'left after SIGTERM':>18}")
    for key, label in (("a", f"medlora ui before ({BEFORE})"), ("b", "medlora ui now")):
        m = med[key]
        print(f"({key}) {m['ready_s']:8.1f} {m['processes']:9.0f} {m['rss_mb']:8.0f} {m['pss_mb']:8.0f} "
              f"{m['left_after_stop']:18.0f}   {label}")
    print(f"after/before: ready {med['b']['ready_s'] / med['a']['ready_s']:.2f}x, "
          f"RSS {med['b']['rss_mb'] / med['a']['rss_mb']:.2f}x, PSS {med['b']['pss_mb'] / med['a']['pss_mb']:.2f}x "
          f"(medians of {args.rounds} rounds; load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
