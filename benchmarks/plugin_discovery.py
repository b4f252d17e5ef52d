"""Speed: `lccore plugins` with 100 extra installed plugin distributions vs with none.

Each dummy is a real distribution as pip leaves it (a module and a `.dist-info` with an entry
point in the `lccore` group) in a site folder put on PYTHONPATH; each registers a task and a head.
Baseline: the same command without that folder, measured in the same run. Each command runs in a
fresh process, one untimed warm-up each, then interleaved rounds; medians and their ratio are
printed, and the output is checked to list every dummy as loaded.

    python benchmarks/plugin_discovery.py [--plugins 100] [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import BUSY_CORES, children_cpu_seconds, machine_cpu_seconds

DUMMY = '''import lccore


@lccore.hookimpl
def register_tasks(register):
    register("dummy_task_{n}", lambda: None, description="a dummy task")


@lccore.hookimpl
def register_heads(register):
    register("dummy_head_{n}", lambda: None, description="a dummy head")
'''


def install_dummies(site: Path, count: int) -> None:
    for n in range(count):
        module = f"lccore_dummy_{n:03d}"
        (site / f"{module}.py").write_text(DUMMY.format(n=n), encoding="utf-8")
        info = site / f"lccore_dummy_{n:03d}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: lccore-dummy-{n:03d}\nVersion: 1.0\n", encoding="utf-8")
        (info / "entry_points.txt").write_text(f"[lccore]\ndummy_{n:03d} = {module}\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plugins", type=int, default=100, help="dummy distributions to install (default 100)")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved rounds (default 7)")
    args = parser.parse_args()

    command = [sys.executable, "-m", "lccore", "plugins"]
    with tempfile.TemporaryDirectory(prefix="lccore-dummies-") as folder:
        site = Path(folder)
        install_dummies(site, args.plugins)
        path = os.environ.get("PYTHONPATH", "")
        setups = {
            "no extra plugins (baseline)": {**os.environ, "HF_HUB_OFFLINE": "1"},
            f"{args.plugins} extra plugins": {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(p for p in (str(site), path) if p)},
        }

        def run(env: dict) -> tuple[float, str]:
            started = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True, env=env)
            if done.returncode != 0:
                raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
            return time.perf_counter() - started, done.stdout

        # The dummies must all be found and loaded, or the comparison means nothing.
        _, listing = run(setups[f"{args.plugins} extra plugins"])
        loaded = sum(f"lccore_dummy_{n:03d}  [loaded]" in listing or f"dummy_{n:03d}  [loaded]" in listing for n in range(args.plugins))
        if loaded != args.plugins:
            raise SystemExit(f"only {loaded} of {args.plugins} dummy plugins reported as loaded:\n{listing[:2000]}")
        run(setups["no extra plugins (baseline)"])  # warm-up

        times: dict[str, list[float]] = {name: [] for name in setups}
        busy = []
        for round_ in range(args.repeats):
            for name in list(setups)[:: 1 if round_ % 2 == 0 else -1]:
                cpu_before, children_before, started = machine_cpu_seconds(), children_cpu_seconds(), time.perf_counter()
                seconds, _ = run(setups[name])
                if cpu_before is not None:
                    other = (machine_cpu_seconds() - cpu_before - (children_cpu_seconds() - children_before)) / (time.perf_counter() - started)
                    busy.append(other > BUSY_CORES)
                times[name].append(seconds)

    medians = {name: statistics.median(values) for name, values in times.items()}
    baseline = medians["no extra plugins (baseline)"]
    print(f"`{' '.join(command[1:])}`, median of {args.repeats} rounds")
    for name, median in medians.items():
        print(f"  {name:<28} {median * 1000:8.1f} ms   {median / baseline:5.2f}x")
    extra = medians[f"{args.plugins} extra plugins"] - baseline
    print(f"  cost per extra plugin: {extra / args.plugins * 1000:.2f} ms")
    if any(busy):
        print(f"WARNING: in {sum(busy)} of {len(busy)} timings other processes used more than {BUSY_CORES} of a core")
    out = Path(__file__).parent / "out"
    out.mkdir(exist_ok=True)
    (out / "plugin_discovery.json").write_text(json.dumps({"medians_s": medians, "per_plugin_ms": extra / args.plugins * 1000}, indent=2))


if __name__ == "__main__":
    main()
