"""Benchmark provisiond against a private slapd; run it as `bench/run [--quick] [--keep]`.

Phases, in order, against one private slapd (scenarios.py):
1. latency, sync mode persist: a daemon subprocess; entries written one every `gap` seconds;
2. latency, sync mode poll (interval 0.05 s): a fresh daemon, the same;
3. throughput: a fresh daemon started on entries loaded before it (slapadd); then, with that
   daemon idle, its CPU over `idle` seconds and its peak RSS;
4. `scope: all`: entries already provisioned plus a queued burst, a fresh daemon without the
   aggregate render step, then one with it;
5. the bound (bound.py): the throughput run's minimal LDAP operations and process spawns, in
   as many processes as the daemon used, while no daemon runs.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
import time
from pathlib import Path

from bench.harness import BenchError, Cleanup, remove_tree
from bench.report import report
from bench.scenarios import Bench, Plan

# gap: 40 ms (25 writes/s) keeps the offered load well under what the engine sustains on two
# cores (about 65 entries/s), so the figure is the path of one entry, not a queue.
FULL = Plan(latency_entries=500, warmup=10, gap=0.040, poll_interval=0.05, queued=5000,
            settle=2.0, idle=10.0, provisioned=3000, burst=1000)
QUICK = Plan(latency_entries=100, warmup=5, gap=0.040, poll_interval=0.05, queued=500,
             settle=1.0, idle=3.0, provisioned=600, burst=200)


# Storage kinds' scenarios: bench/<name>.py, each with
# `run(quick: bool, workdir: Path, cleanup: Cleanup) -> str` returning its report (METRIC lines
# included). They need root (loop devices, a private tgtd) and are run one at a time.
STORAGE_SCENARIOS = ("disks", "iscsi")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="developer loop: 100 latency entries per mode, 500 queued, "
                             "600 provisioned + a burst of 200, 3 s idle")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work directory (configs, daemon logs, slapd)")
    parser.add_argument("--storage", choices=STORAGE_SCENARIOS, metavar="NAME",
                        help="run only a storage kind's scenario instead of the engine phases: "
                             + ", ".join(STORAGE_SCENARIOS))
    parser.add_argument("--bound-processes", type=int, metavar="N",
                        help="run the bound in N processes (default: as many as the daemon "
                             "used in the throughput run)")
    args = parser.parse_args(argv)
    if args.bound_processes is not None and args.bound_processes < 1:
        parser.error("--bound-processes must be at least 1")
    plan = QUICK if args.quick else FULL

    began, load_before = time.monotonic(), os.getloadavg()[0]
    cleanup = Cleanup()
    cleanup.install()
    workdir = Path(tempfile.mkdtemp(prefix="pvb-", dir="/tmp"))  # short: ldapi path limit
    if args.keep:
        print(f"bench: keeping {workdir}", file=sys.stderr)
    else:
        cleanup.add("work directory", lambda: remove_tree(workdir))
    try:
        if args.storage:
            scenario = importlib.import_module(f"bench.{args.storage}")
            print(scenario.run(args.quick, workdir, cleanup), flush=True)
            return 0
        bench = Bench(plan, workdir, cleanup, keep=args.keep)
        latencies = [bench.latency("persist"), bench.latency("poll")]
        tp = bench.throughput()
        bursts = [bench.burst(aggregate=False), bench.burst(aggregate=True)]
        bound = bench.bound(args.bound_processes or tp.drain.processes)
        print(report(plan, args.quick, latencies, tp, bursts, bound,
                     time.monotonic() - began, load_before), flush=True)
        return 0
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, SystemExit):
        print("bench: interrupted; stopping the daemon and slapd", file=sys.stderr)
        raise
    finally:
        cleanup.run()
