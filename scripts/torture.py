"""Torture the trainer's checkpoints (`make torture`; docs/reliability.md has the results).

For each strategy (ddp, fsdp2; 2 Gloo processes on CPU) a small run is SIGKILLed, process tree
and all, at seeded random moments and resumed with `--resume`, TORTURE_RUNS times (default 50).
Half of the kills wait for a checkpoint being written (a `.tmp-step-*` folder) and strike a few
milliseconds into it, the others at any moment. Whenever the run completes, its final weights
must equal, bit for bit, those of an uninterrupted run, and a new run starts. Then:
- disk full: a run into a tmpfs too small for two checkpoints (needs root; skipped otherwise)
  must fail with the checkpoint's "disk full" error and leave the previous checkpoint intact;
- two runs on one folder: the second must fail at once naming the first's pid, the first finish.

    python scripts/torture.py [--runs 50] [--strategies ddp,fsdp2] [--seed 0] [--minutes 30]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY = os.path.join(ROOT, "tests", "python")  # _toy_task: a masked least-squares task
STEPS = 24


def recipe(strategy: str, steps: int = STEPS, keep: int = 2) -> dict:
    return {"task": "toy_regression", "data": {"samples": 512, "batch_size": 8, "dim": 64, "tokens": 8},
            "optim": {"lr": 0.01, "warmup_fraction": 0.1},
            "train": {"steps": steps, "log_every": 1, "checkpoint_every": 2, "keep_checkpoints": keep, "threads": 1,
                      "strategy": strategy}}


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": TOY + os.pathsep + os.environ.get("PYTHONPATH", "")}


def launch(recipe_path: str, out: str, resume: bool = True, procs: int = 2) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs),
           "-m", "tessera.train", recipe_path, "--import", "_toy_task", "--out", out, "--quiet"]
    return subprocess.Popen(cmd + (["--resume"] if resume else []), env=env(), start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _children() -> dict:
    kids: dict = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(pid))
    return kids


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the launcher and every process under it (the workers), all of them started here."""
    kids, todo, tree = _children(), [proc.pid], []
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += kids.get(pid, [])
    for pid in tree:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.communicate()
    for pid in tree:  # wait until every worker is gone: the next launch must find the lock free
        while os.path.exists(f"/proc/{pid}") and _state(pid) not in ("Z", "X", None):
            time.sleep(0.005)


def _state(pid: int):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def in_flight(out: str) -> set:
    """Checkpoint folders being written or pruned right now."""
    try:
        return {n for n in os.listdir(os.path.join(out, "checkpoints")) if n.startswith((".tmp-step-", ".old-step-"))}
    except OSError:
        return set()


def writing(out: str) -> bool:
    return bool(in_flight(out))


def final_weights(out: str, steps: int = STEPS):
    from tessera.models.weights import load_weights

    return load_weights(os.path.join(out, "checkpoints", f"step-{steps:08d}"))


def same(a, b) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def torture(strategy: str, runs: int, rng: random.Random, work: str, deadline: float) -> dict:
    path = os.path.join(work, f"{strategy}.json")
    with open(path, "w") as f:
        json.dump(recipe(strategy), f)
    ref_out = os.path.join(work, f"{strategy}-reference")
    t = time.time()
    p = launch(path, ref_out, resume=False)
    _, err = p.communicate()
    if p.returncode:
        raise SystemExit(f"{strategy}: the uninterrupted run failed:\n{err[-3000:]}")
    full_s = time.time() - t
    reference = final_weights(ref_out)
    res = {"strategy": strategy, "uninterrupted_s": round(full_s, 1), "kills": 0, "kills_while_writing": 0,
           "kills_between": 0, "completed_runs": 0, "equal": 0, "mismatches": [], "resume_errors": []}
    cycle, out = 0, os.path.join(work, f"{strategy}-0")

    def finish(p, out):
        _, err = p.communicate()
        if p.returncode:
            res["resume_errors"].append(err.strip().splitlines()[-1] if err.strip() else f"rc {p.returncode}")
            print(f"{strategy}: resume failed: {res['resume_errors'][-1]}", flush=True)
        else:
            res["completed_runs"] += 1
            if same(final_weights(out), reference):
                res["equal"] += 1
            else:
                res["mismatches"].append(out)

    while res["kills"] < runs and time.time() < deadline:
        p = launch(path, out)
        aim_write = rng.random() < 0.5
        start, delay = time.time(), rng.uniform(0.0, full_s)
        nth, seen = rng.randint(1, 4), set()  # strike during the nth checkpoint this launch writes
        fire = False
        while p.poll() is None:
            elapsed = time.time() - start
            if aim_write:
                seen |= {n for n in in_flight(out) if n.startswith(".tmp-")}
            if aim_write and len(seen) >= nth:
                time.sleep(rng.uniform(0.0, 0.02))
                fire = True
            elif elapsed >= (3 * full_s if aim_write else delay):
                fire = True
            if fire:
                during_write = writing(out)
                kill_tree(p)
                res["kills"] += 1
                res["kills_while_writing" if during_write else "kills_between"] += 1
                break
            time.sleep(0.002)
        if fire:
            continue
        finish(p, out)
        cycle += 1
        out = os.path.join(work, f"{strategy}-{cycle}")
        print(f"{strategy}: {res['kills']} kills, {res['completed_runs']} runs completed", flush=True)
    if os.path.isdir(out):  # finish the run in progress and compare it too
        p = launch(path, out)
        p.wait()
        finish(p, out)
    return res


def disk_full(work: str) -> dict:
    """A 2-process run into a tmpfs that holds one checkpoint (plus the run's logs) but not two."""
    from tessera.checksums import verify_checkpoint

    path = os.path.join(work, "diskfull.json")
    with open(path, "w") as f:
        json.dump(recipe("ddp", steps=8, keep=1), f)
    # The size of one checkpoint, from a run on the normal disk.
    probe = os.path.join(work, "diskfull-probe")
    p = launch(path, probe, resume=False)
    p.communicate()
    ckpt = os.path.join(probe, "checkpoints", "step-00000008")
    size = sum(os.path.getsize(os.path.join(d, n)) for d, _, ns in os.walk(ckpt) for n in ns)
    mnt = os.path.join(work, "small-disk")
    os.makedirs(mnt, exist_ok=True)
    limit = (int(size * 1.6) // 4096 + 8) * 4096  # one checkpoint and the run's logs, not two checkpoints
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={limit}", "tmpfs", mnt], capture_output=True)
    if mounted.returncode:
        return {"skipped": f"cannot mount a tmpfs ({mounted.stderr.strip()}); run as root"}
    try:
        out = os.path.join(mnt, "run")
        p = launch(path, out, resume=False)
        _, err = p.communicate()
        left = sorted(os.listdir(os.path.join(out, "checkpoints")))
        message = next((line for line in err.splitlines() if "disk full while writing checkpoint" in line), None)
        intact = [c for c in left if c.startswith("step-") and verify_checkpoint(os.path.join(out, "checkpoints", c))]
        return {"checkpoint_bytes": size, "tmpfs_bytes": limit, "returncode": p.returncode, "error": message,
                "left": left, "intact": intact,
                "ok": p.returncode != 0 and message is not None and left == intact and len(intact) == 1}
    finally:
        subprocess.run(["umount", "-l", mnt])


def two_runs(work: str) -> dict:
    path = os.path.join(work, "two.json")
    with open(path, "w") as f:
        json.dump(recipe("ddp", steps=60), f)
    out = os.path.join(work, "two")
    first = launch(path, out, resume=False)
    lock = os.path.join(out, ".lock")
    while first.poll() is None and not (os.path.exists(lock) and os.path.getsize(lock)):
        time.sleep(0.01)
    with open(lock) as f:
        holder = json.load(f)["pid"]
    t = time.time()
    second = launch(path, out, resume=False)
    _, err2 = second.communicate()
    second_s = time.time() - t
    _, err1 = first.communicate()
    message = next((line for line in err2.splitlines() if "in use by another training run" in line), None)
    return {"second_returncode": second.returncode, "second_failed_after_s": round(second_s, 1),
            "error": message, "first_returncode": first.returncode,
            "ok": second.returncode != 0 and message is not None and f"(pid {holder} on " in message
            and first.returncode == 0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=int(os.environ.get("TORTURE_RUNS", "50")), help="kills per strategy")
    ap.add_argument("--strategies", default="ddp,fsdp2")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--minutes", type=float, default=float(os.environ.get("TORTURE_MINUTES", "30")),
                    help="stop killing after this long (the counts say how many fit)")
    ap.add_argument("--work", default=None, help="folder for the runs (default: a temporary one, removed)")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args()
    work = args.work or tempfile.mkdtemp(prefix="tessera-torture-")
    os.makedirs(work, exist_ok=True)
    rng = random.Random(args.seed)
    t0 = time.time()
    strategies = [s for s in args.strategies.split(",") if s]
    results = {"runs_per_strategy": args.runs, "seed": args.seed, "steps": STEPS, "strategies": []}
    for i, s in enumerate(strategies):  # an even share of what time is left for each strategy
        deadline = time.time() + (t0 + args.minutes * 60 - time.time()) / (len(strategies) - i)
        results["strategies"].append(torture(s, args.runs, rng, work, deadline))
        print(json.dumps(results["strategies"][-1]), flush=True)
    results["disk_full"] = disk_full(work)
    print("disk full:", json.dumps(results["disk_full"]), flush=True)
    results["two_runs"] = two_runs(work)
    print("two runs:", json.dumps(results["two_runs"]), flush=True)
    results["wall_s"] = round(time.time() - t0, 1)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    ok = all(not s["mismatches"] and not s["resume_errors"] and s["equal"] == s["completed_runs"] > 0
             for s in results["strategies"])
    ok = ok and results["disk_full"].get("ok", "skipped" in results["disk_full"]) and results["two_runs"]["ok"]
    print(f"torture: {'PASS' if ok else 'FAIL'} in {results['wall_s']:.0f} s", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
