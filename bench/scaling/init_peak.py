#!/usr/bin/env python3
"""Each rank's peak RSS when initialisation ends: runs a `levanter launch ...` command, and when rank 0 announces
the run (the line `levanter: run ...`, printed right after Trainer::initial_state) reads every rank's VmHWM, prints
them and stops the job. Linux only.

    python3 bench/scaling/init_peak.py build/levanter launch --nproc 2 -- train --config config/gpt2_small.yaml ...
"""
import os
import signal
import subprocess
import sys


def children(pid):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(d))
        except OSError:
            pass
    return sorted(out)


def vm_hwm_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM"):
                return int(line.split()[1]) // 1024
    return -1


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    p = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in p.stdout:
        if "levanter: run " in line:
            peaks = [vm_hwm_mb(c) for c in children(p.pid)]
            print("init peak RSS MB per rank:", peaks, flush=True)
            p.send_signal(signal.SIGINT)  # the launcher stops every rank
            break
        if "error" in line:
            print(line, end="")
    p.wait()
    if "peaks" not in locals():
        sys.exit("the run ended before it was announced")


if __name__ == "__main__":
    main()
