"""`tessera plan RECIPE --measure --json` in a fresh process (the measured peak is the process's
RSS), and the check every plan test makes: measured within 20 % of planned."""
import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def assert_plan_within_20_percent(name: str, recipe: str, overrides, processes: int = 1, timeout: int = 1200) -> None:
    launch = [sys.executable] if processes == 1 else [sys.executable, "-m", "torch.distributed.run",
                                                      "--standalone", "--nproc_per_node", str(processes)]
    cmd = [*launch, "-m", "tessera.cli", "plan", str(recipe), "--measure", "--json"]
    for o in overrides:
        cmd += ["--set", o]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                         env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout)
    planned, measured = out["plan"]["peak"], out["measured"]["peak"]
    print(f"\n{name}: planned {planned / 2**20:.1f} MiB, measured {measured / 2**20:.1f} MiB "
          f"({out['measured']['how']}), measured/planned {measured / planned:.2f}")
    assert 0.8 <= measured / planned <= 1.2
