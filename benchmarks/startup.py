"""Speed: start-up wall time of `lccore plugins` vs `python -c "import torch, transformers"`.

`lccore plugins` discovers every installed plugin and prints the components they register; it is
meant to answer without importing torch or transformers. The baseline is the bare cost of
importing them, which any command that needs them pays first. `python -c pass` is shown as the
interpreter's floor. Each command runs in a fresh process; after one untimed warm-up of each
(so the files are in the page cache), the commands are run in interleaved rounds (order rotated
every round) and the median wall time is reported with its ratio to the baseline.

    python benchmarks/startup.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import BUSY_CORES, children_cpu_seconds, machine_cpu_seconds

BASELINE = "import torch, transformers"

def lccore_command() -> list[str]:
    """The `lccore` console script next to this interpreter, else `python -m lccore.cli`."""
    script = Path(sys.executable).parent / "lccore"
    if script.exists():
        return [str(script), "plugins"]
    found = shutil.which("lccore")
    return [found, "plugins"] if found else [sys.executable, "-m", "lccore.cli", "plugins"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7, help="rounds; each round runs every command once; default 7")
    parser.add_argument("--module-form", action="store_true", help="time `python -m lccore.cli plugins` instead of the console script")
    args = parser.parse_args()

    commands = {
        "lccore plugins": [sys.executable, "-m", "lccore.cli", "plugins"] if args.module_form else lccore_command(),
        BASELINE: [sys.executable, "-c", "import torch, transformers"],
        "python -c pass": [sys.executable, "-c", "pass"],
    }
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}

    def run(command: list[str]) -> float:
        started = time.perf_counter()
        completed = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        seconds = time.perf_counter() - started
        if completed.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed:\n{completed.stderr.decode(errors='replace')[-2000:]}")
        return seconds

    for name, command in commands.items():
        print(f"{name:<28} = {' '.join(command)}")
        run(command)  # warm-up, untimed
    names = list(commands)
    times: dict[str, list[float]] = {name: [] for name in names}
    busy_rounds = 0
    for round_number in range(args.repeats):
        shift = round_number % len(names)
        machine_before, own_before, started = machine_cpu_seconds(), children_cpu_seconds(), time.perf_counter()
        for name in names[shift:] + names[:shift]:
            times[name].append(run(commands[name]))
        wall, machine_after = time.perf_counter() - started, machine_cpu_seconds()
        note = ""
        if machine_before is not None and machine_after is not None:  # CPU that other processes took meanwhile
            others = max(0.0, (machine_after - machine_before) - (children_cpu_seconds() - own_before)) / wall
            busy_rounds += others > BUSY_CORES
            note = f" (other processes used {others:.2f} cores" + (" - BUSY)" if others > BUSY_CORES else ")")
        print(f"round {round_number + 1}/{args.repeats}: " + ", ".join(f"{n} {times[n][-1]:.3f} s" for n in names) + note, flush=True)

    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"\nStart-up wall time, median of {args.repeats} interleaved rounds")
    print(f"{'command':<28} {'median s':>9} {'min s':>7} {'max s':>7} {'vs ' + BASELINE:>32}")
    for name in names:
        print(f"{name:<28} {median[name]:>9.3f} {min(times[name]):>7.3f} {max(times[name]):>7.3f} {median[name] / median[BASELINE]:>31.2f}x")
    print(f"lccore plugins / {BASELINE}: {median['lccore plugins'] / median[BASELINE]:.2f}x")
    if busy_rounds:
        print(f"warning: other processes used more than {BUSY_CORES} cores during {busy_rounds} of {args.repeats} rounds (marked BUSY)")


if __name__ == "__main__":
    main()
