"""Benchmark: every family's study at once vs one family after another, on a simulated GPU cluster.

One run measures both, side by side, on the same cluster and the same tiny trials (figures only; nothing is
asserted):

* cluster: ``ray.cluster_utils.Cluster``, a ``CPU: 0`` head, 2 "GPU" nodes ``{CPU: 2, GPU: 1}`` (fake GPU
  resources: nothing touches a device) and 1 CPU node ``{CPU: 4}``;
* families (the test plug-ins, ``tests/support/dvt_test_plugins.py``): ``scripted`` as the CPU-only
  family (SIFT's place: longer trials, no GPU) and two GPU families ``scripted_gpu`` / ``scripted_gpu_b``
  (1 CPU + 1 GPU per trial); every trial sleeps ``epoch_s`` per epoch, ASHA stops the weaker ones;
* makespan: first trial start to last trial end, from the trial records (``started_at`` / ``ended_at``);
  a record's ``started_at`` is set by the driver-side callback when Tune reports the trial started, i.e.
  once the trial's process is alive (worker started, torch and Ray Tune imported, Trainable set up), not
  when its resources were reserved;
* GPU idle fraction: ``1 - GPU-seconds in GPU trials' record spans / (GPUs x window)``, at most ``GPUS``
  trials counted at once, in three windows: ``all`` (first trial start to last trial end: while some
  trial of any family is not finished), ``waiting`` (first trial start to the last GPU trial's start:
  while some GPU trial is still to start, the idle scheduling can remove) and ``tail`` (the last GPU
  trial's start to the end: nothing left to start, the ASHA tail of the last trials);
* per-GPU gaps (``gpu_gaps``): on each GPU node, every gap between one GPU trial's record end and the
  next one's start, split by the GCS's actor and placement-group tables (:func:`gpu_timeline`);
* ``-fresh`` modes: the same search with ``--no-reuse-actors`` (a new process per trial, as before);
* ``fixed`` / ``fixed-fresh``: the fixed cost per one-worker CPU trial (:func:`fixed_cost`).

    PYTHONPATH=$PWD .venv/bin/python bench/bench_concurrent.py [--trials 4] [--epochs 2]
        [--modes concurrent,concurrent-fresh,sequential,fixed,fixed-fresh] [--json OUT]

About 7-10 minutes on 2 shared cores (defaults), longer under load.

Where the GPU idle was (before actor re-use; ``--trials 3 --epochs 2 --cpu-epoch-s 8 --gpu-epoch-s 4
--modes concurrent``, load average 5-9 from other work): the gaps between GPU trials averaged 12.8 s, of
which 12.2 s were ``process`` (placement group placed -> the next trial's process alive: a new worker
importing torch and Ray Tune, ~11-13 s under that load: ``python -X importtime -c "import
dvt_search.runtime.trainable"``), 0.5 s ``handoff`` (process dead -> next group placed), 0.06 s ``stop``
and 0.01 s ``notice``. The idle run of the first figures (``--cpu-epoch-s 20 --gpu-epoch-s 10``, below)
had six such gaps of 5.7-6.9 s each (36 of its 38 idle GPU-seconds), 21.7% idle while GPU trials were
still to start and 4.8% in the tail. So the idle was trial start-up, not scheduling: Tune already keeps
the next trials PENDING with their placement groups requested (``TUNE_MAX_PENDING_TRIALS_PG`` is the
limiter's ``max_concurrent`` for a searcher under a ``ConcurrencyLimiter``; the GPU families' caps are
the whole cluster each, so no cap left a GPU free), but a process cannot start before its group holds
the GPU. The cut: a ``direct`` trial's process runs the family's next trial (Tune's ``reuse_actors``,
:mod:`dvt_search.runtime.tuning`): a same-family gap is then a ``reset`` of 0.03 s. What remains is one
process start per GPU where the GPU passes from one family to another (a Tune actor belongs to one
experiment), and the tail.

Measured after the cut, one run, side by side (``--cpu-epoch-s 20 --gpu-epoch-s 10 --modes
concurrent,concurrent-fresh,sequential``, 4 trials x 2 epochs per family; 2 shared cores, load average
7-20 from other helpers' test runs):

    mode               makespan  GPU idle: all  waiting  tail   mean gap between GPU trials
    concurrent          118.8 s       15.4 %   13.6 %   24.0 %   3.0 s (re-used: 0.07 s; new process: 8.2 s)
    concurrent-fresh    153.1 s       28.2 %   30.6 %   17.6 %  11.8 s (new process: 11.1 s)
    sequential          175.8 s       54.0 %   55.1 %   46.3 %   5.6 s
    -> 1.48x shorter concurrent than sequential; re-use: 1.29x shorter, GPU idle 28.2% -> 15.4%

That left, of the concurrent run's 36 idle GPU-seconds, ~18 at the points where a GPU passes from one
family to another (a new process: a Tune actor belongs to one experiment), ~10 in the tail (one GPU trial
left running) and the rest in the start-up. The second cut: the ``direct`` GPU families searched at once
share ONE Tune experiment (:mod:`dvt_search.runtime.group`: each family keeps its own limiter, Optuna
searcher, ASHA and records inside it), so Tune's actor re-use hands a process to the next trial of any
of them. Measured after it, one run side by side (same command; load average 2.8-3.8 from one helper's
tests):

    mode               makespan  GPU idle: all  waiting  tail   mean gap between GPU trials
    concurrent           88.9 s       17.3 %    8.2 %   47.8 %   0.03 s (every gap a re-use: ``reset``)
    concurrent-fresh    125.8 s       27.3 %   25.0 %   37.1 %   8.42 s (new process: 7.85 s)
    sequential          169.0 s       53.4 %   54.0 %   48.7 %   4.94 s
    -> 1.90x shorter concurrent than sequential

The same with ``--trials 8`` (``--modes concurrent``) showed what else could idle a GPU: 30.3 % while GPU
trials were still to start, with every gap a re-use. One GPU ran no trial for the first 98 s: the CPU-only
family's trials, started at the same moment, had taken both CPUs of that GPU node (Ray places a placement
group on any node with the CPUs; it avoids GPU nodes for CPU-only tasks, not for placement groups), and
with actor re-use they kept them for the family's whole search. The third cut: the driver starts the GPU
experiments first and the CPU-only ones once GPU trials have asked for their placement groups
(:func:`dvt_search.runtime.concurrent._gpu_groups_asked`; Ray places pending groups in the order they were
asked for). ``--trials 8 --modes concurrent`` after it: 152.9 s (191.0 s before), 4.8 % GPU idle overall
(31.3 %), 1.0 % while GPU trials were still to start (30.3 %), 29.0 % in the tail. And the side-by-side
run again (same command, load average 0.4-3; ``bench/results/bench_concurrent.json``):

    mode               makespan  GPU idle: all  waiting  tail   mean gap between GPU trials
    concurrent           86.8 s       12.3 %    1.2 %   48.6 %   0.03 s (every gap a re-use)
    concurrent-fresh    120.9 s       27.3 %   24.6 %   38.1 %   7.86 s (new process: 7.34 s)
    sequential          148.3 s       49.2 %   53.2 %   24.6 %   2.71 s
    -> 1.71x shorter concurrent than sequential

So the GPU idle while GPU trials are still to start is within the 10 % goal (1.0-1.2 %, 8.2 % under load
from other work). The ``all`` window is larger with few trials because of the tail: the last GPU trial
(2 epochs, 20 s) runs alone while nothing is left to start, which no scheduling can fill; with 8 trials per
family the whole search idles 4.8 %.

Fixed cost per one-worker CPU trial (``--modes fixed-fresh,fixed --fixed-trials 5 --epochs 2 --cpu-epoch-s
2``: 5 trials one at a time, FIFO, 4 s of training each; load average ~9): 12.38 s per trial with a new
process per trial (5 processes) -> 0.72 s re-using one process (the record span minus training, mean of
all 5 trials: 4.84 s -> 1.40 s; the first trial also opens the datasets).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SUPPORT = REPO / "tests" / "support"
FAMILIES = ("scripted", "scripted_gpu", "scripted_gpu_b")
GPUS = 2
#: concurrent / sequential: every family, at once or in turn; fixed: one-worker CPU trials one at a time
#: (the fixed cost per trial); ``-fresh``: the same with a new process per trial (``--no-reuse-actors``).
MODES = ("concurrent", "concurrent-fresh", "sequential", "sequential-fresh", "fixed", "fixed-fresh")


def _spaces(directory: Path, cpu_epoch_s: float, gpu_epoch_s: float) -> Path:
    sys.path.insert(0, str(SUPPORT))
    from dvt_testkit_runtime import write_spaces

    quality = {"quality": {"type": "float", "low": 0.0, "high": 1.0}}
    return write_spaces(
        directory,
        {
            "scripted": {"params": quality, "fixed": {"epoch_s": cpu_epoch_s}},
            "scripted_gpu": {"params": quality, "fixed": {"epoch_s": gpu_epoch_s}},
            "scripted_gpu_b": {"params": quality, "fixed": {"epoch_s": gpu_epoch_s}},
        },
    )


def _trial_pids(run: Any, family: str) -> dict[str, int]:
    """Trial id -> pid of the process that ran it (Tune's per-trial ``result.json`` records ``pid``).

    Looks in the family's own experiment and in the experiments it shares (``runtime/group.py``).
    """
    out = {}
    dirs = [run.tune_dir(family), *(run.tune_group_dir(g) for g in run.tune_groups() if family in g)]
    for path in (p for d in dirs for p in d.glob("trial_*/result.json")):
        lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
        if lines:
            out[path.parent.name.removeprefix("trial_")] = int(json.loads(lines[0])["pid"])
    return out


def _busy_seconds(spans: list[tuple[float, float]], lo: float, hi: float, gpus: int) -> float:
    """GPU-seconds in ``[lo, hi]`` covered by trial spans (at most ``gpus`` at once)."""
    edges = sorted({lo, hi, *(t for s in spans for t in s if lo < t < hi)})
    total = 0.0
    for a, b in zip(edges, edges[1:], strict=False):
        mid = (a + b) / 2
        total += min(gpus, sum(1 for s, e in spans if s <= mid < e)) * (b - a)
    return total


def idle_fractions(spans: list[tuple[float, float]], t0: float, t_end: float, gpus: int) -> dict[str, Any]:
    """GPU idle over the search and split at the last GPU trial's start (see the module docstring)."""
    last_start = max(s for s, _ in spans)
    out = {}
    for name, lo, hi in (("all", t0, t_end), ("waiting", t0, last_start), ("tail", last_start, t_end)):
        width = hi - lo
        busy = _busy_seconds(spans, lo, hi, gpus)
        out[name] = {
            "s": round(width, 1),
            "idle": round(1.0 - busy / (gpus * width), 3) if width > 0 else 0.0,
        }
    return out


def gpu_timeline(run: Any, gpu_nodes: list[str], tables: tuple[dict, dict] | None) -> dict[str, Any]:
    """Per GPU node, each gap between one GPU trial's end and the next one's start, split into phases.

    Phases (seconds): ``stop`` (record end -> the trial's process dead), ``handoff`` (dead -> the next
    trial's placement group placed), ``process`` (placed -> the next process alive: worker start, imports,
    Trainable set-up), ``notice`` (alive -> the record's start, set by the driver-side callback); a re-used
    process has only ``reset`` (record end -> the next record's start).
    """
    if tables is None:
        return {}
    actors, groups = tables
    rows = []
    for fam in FAMILIES[1:]:
        pids = _trial_pids(run, fam)
        for rec in run.trials(fam):
            pid = pids.get(rec.trial_id)
            act = actors.get(pid) if pid else None
            if act is None or rec.started_at is None or rec.ended_at is None:
                continue
            placed = groups.get(act["group"], {}).get("placed_at")
            rows.append({"node": act["node"], "pid": pid, "start": rec.started_at, "end": rec.ended_at,
                         "alive": act["alive_at"], "dead": act["dead_at"], "placed": placed})  # fmt: skip
    phases: dict[str, list[float]] = {"stop": [], "handoff": [], "process": [], "notice": [], "reset": []}
    gaps = []
    for node in gpu_nodes:
        mine = sorted((r for r in rows if r["node"] == node), key=lambda r: r["start"])
        for prev, nxt in zip(mine, mine[1:], strict=False):
            gaps.append(nxt["start"] - prev["end"])
            if prev["pid"] == nxt["pid"]:
                phases["reset"].append(nxt["start"] - prev["end"])
                continue
            for name, a, b in (
                ("stop", prev["end"], prev["dead"]),
                ("handoff", prev["dead"], nxt["placed"]),
                ("process", nxt["placed"], nxt["alive"]),
                ("notice", nxt["alive"], nxt["start"]),
            ):
                if a is not None and b is not None:
                    phases[name].append(b - a)
    mean = {k: round(statistics.mean(v), 2) for k, v in phases.items() if v}
    return {"gaps": len(gaps), "mean_gap_s": round(statistics.mean(gaps), 2) if gaps else None,
            "mean_phase_s": mean}  # fmt: skip


def measure(run_dir: Path, wall_s: float, gpu_nodes: list[str] | None = None,
            tables: tuple[dict, dict] | None = None) -> dict[str, Any]:  # fmt: skip
    """Makespan and GPU-idle fractions of one finished search, from its trial records."""
    from dvt_search.rundir import RunDir

    run = RunDir(run_dir)
    records = run.trials()
    starts = [r.started_at for r in records if r.started_at is not None]
    ends = [r.ended_at for r in records if r.ended_at is not None]
    t0, t_end = min(starts), max(ends)
    # Per trial the GPUs it reserved: the run records how each family's trials were run.
    gpus = {"scripted": 0.0, "scripted_gpu": 1.0, "scripted_gpu_b": 1.0}
    spans = [(r.started_at, r.ended_at) for r in records if gpus[r.family] and r.started_at and r.ended_at]
    idle = idle_fractions(spans, t0, t_end, GPUS)
    return {
        "trials": {f: len(run.trials(f)) for f in FAMILIES},
        "finished": sorted(run.read_info().state.finished_families),
        "makespan_s": round(t_end - t0, 1),
        "driver_wall_s": round(wall_s, 1),
        "gpu_seconds_reserved": round(sum(e - s for s, e in spans), 1),
        "gpu_idle_fraction": idle["all"]["idle"],
        "gpu_idle_while_waiting": idle["waiting"]["idle"],
        "gpu_idle_tail": idle["tail"]["idle"],
        "windows_s": {k: v["s"] for k, v in idle.items()},
        "gpu_gaps": gpu_timeline(run, gpu_nodes or [], tables),
    }


def fixed_cost(run_dir: Path, epoch_s: float) -> dict[str, Any]:
    """Fixed cost per trial of a one-at-a-time search: what each trial adds beyond its own training.

    Trials run one after another on one CPU slot, so trial ``i`` costs ``end_i - end_{i-1}`` of the search's
    time, of which ``epochs_i x epoch_s`` is its training (the plug-in sleeps exactly that): the rest is
    the fixed cost (process start and imports, or the re-used process's reset; set-up in the trial;
    reporting; the driver's turn-around). The first trial is left out (its start has no previous end).
    ``in_record_s``: the same from the record alone (``ended_at - started_at - training``: what the trial
    record sees; its ``started_at`` is set when the trial's process is already alive).
    """
    from dvt_search.rundir import RunDir

    run = RunDir(run_dir)
    recs = sorted(run.trials("scripted"), key=lambda r: r.ended_at or 0.0)
    pids = _trial_pids(run, "scripted")
    per = [b.ended_at - a.ended_at - b.epochs * epoch_s for a, b in zip(recs, recs[1:], strict=False)]
    inside = [r.ended_at - r.started_at - r.epochs * epoch_s for r in recs[1:]]
    return {
        "trials": len(recs),
        "processes": len({pids.get(r.trial_id) for r in recs}),
        "training_s": [r.epochs * epoch_s for r in recs],
        "fixed_cost_per_trial_s": round(statistics.mean(per), 2) if per else None,
        "fixed_cost_each_s": [round(x, 2) for x in per],
        "in_record_s": round(statistics.mean(inside), 2),
    }


def _gcs_tables() -> tuple[dict[int, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Every actor process and placement group Ray's GCS knows (no dashboard needed).

    Actors by pid: ``node`` (hex id), ``alive_at`` / ``dead_at`` (s since the epoch), ``group`` (hex id of
    its placement group). Groups by hex id: ``placed_at`` (its last bundle placed: its resources reserved).
    """
    from ray._private.state import state
    from ray.core.generated import gcs_pb2

    accessor = state._connect_and_get_accessor()
    actors = {}
    for blob in accessor.get_actor_table(None, None):
        a = gcs_pb2.ActorTableData.FromString(blob)
        actors[int(a.pid)] = {
            "node": a.address.node_id.hex(),
            "alive_at": a.start_time / 1000.0 if a.start_time else None,
            "dead_at": a.end_time / 1000.0 if a.end_time else None,
            "group": a.placement_group_id.hex(),
        }
    groups = {}
    for blob in accessor.get_placement_group_table():
        pg = gcs_pb2.PlacementGroupTableData.FromString(blob)
        placed = pg.placement_group_final_bundle_placement_timestamp_ms
        groups[pg.placement_group_id.hex()] = {"placed_at": placed / 1000.0 if placed else None}
    return actors, groups


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=4, help="trials per family (default 4)")
    ap.add_argument("--epochs", type=int, default=2, help="epoch budget of a full trial (default 2)")
    ap.add_argument(
        "--cpu-epoch-s", type=float, default=6.0, help="seconds per epoch, CPU family (default 6)"
    )
    ap.add_argument(
        "--gpu-epoch-s", type=float, default=3.0, help="seconds per epoch, GPU families (default 3)"
    )
    ap.add_argument(
        "--modes",
        default="concurrent,sequential",
        help=f"which searches, in order, comma-separated, of {', '.join(MODES)} (default "
        "concurrent,sequential)",
    )
    ap.add_argument(
        "--fixed-trials", type=int, default=5, help="trials of the fixed-cost searches (default 5)"
    )
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)

    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(SUPPORT), str(REPO), os.environ.get("PYTHONPATH")])
    )
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    import ray
    from ray.cluster_utils import Cluster

    from dvt_search.data.phantom import generate
    from dvt_search.runtime.driver import SearchOptions, run_search

    out = Path(tempfile.mkdtemp(prefix="bench-concurrent-"))
    manifest = generate(out / "data", patients=6, seed=0, size=64, slices_per_scan=6, preset="easy")
    spaces = _spaces(out / "spaces", args.cpu_epoch_s, args.gpu_epoch_s)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    gpu_nodes = [cluster.add_node(num_cpus=2, num_gpus=1).node_id for _ in range(GPUS)]
    cluster.add_node(num_cpus=4)
    ray.init(address=cluster.address, logging_level="WARNING")
    figures: dict[str, Any] = {
        "cluster": "CPU:0 head + 2 x {CPU: 2, GPU: 1} + 1 x {CPU: 4}",
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    try:
        for mode in args.modes.split(","):
            if mode not in MODES:
                raise SystemExit(f"--modes: unknown mode {mode!r}; expected some of {', '.join(MODES)}")
            fixed = mode.startswith("fixed")
            opts = SearchOptions(
                manifest=manifest, storage=out / "runs", name=mode, size=32, space_dir=spaces,
                families=["scripted"] if fixed else [",".join(FAMILIES)],
                trials=args.fixed_trials if fixed else args.trials, max_epochs=args.epochs,
                scheduler="fifo" if fixed else "asha", max_concurrent=1 if fixed else None,
                plugins=["dvt_test_plugins"], cpus_per_trial=1.0, gpus_per_trial=1.0, reduction_factor=2.0,
                include_dashboard=False, progress_every_s=1e9, families_sequential=(mode == "sequential"),
                reuse_actors=not mode.endswith("-fresh"),
            )  # fmt: skip
            t0 = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                run_search(opts)
            wall = time.perf_counter() - t0
            time.sleep(2.0)  # the GCS records the last processes' deaths
            if fixed:
                figures[mode] = fixed_cost(out / "runs" / mode, args.cpu_epoch_s)
            else:
                figures[mode] = measure(out / "runs" / mode, wall, gpu_nodes, _gcs_tables())
            print(mode, json.dumps(figures[mode]), flush=True)
    finally:
        ray.shutdown()
        cluster.shutdown()
    if "sequential" in figures and "concurrent" in figures:
        figures["speedup_makespan"] = round(
            figures["sequential"]["makespan_s"] / figures["concurrent"]["makespan_s"], 2
        )
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
