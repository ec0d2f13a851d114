"""B-scans/s of candidate SegNet widths on this CPU (the choice of the bundled default model).

Prints a table: widths, parameters, B-scans/s for one 496 x 512 B-scan (torch.inference_mode,
``--threads`` threads, batch 1, bare network without normalisation), and the load average, since a
shared machine slows every figure.

    python benchmarks/bench_model_widths.py --threads 2
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from napari_octseg.models import SegNet, SegNetConfig

CANDIDATES = [(16, 32, 64, 128, 128), (16, 24, 48, 96, 128), (12, 24, 48, 96, 96), (12, 24, 48, 64, 96)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    x = torch.rand(1, 1, 496, 512)
    print(f"{'widths':<24} {'params':>10} {'B-scans/s':>10}  (threads {args.threads})")
    for widths in CANDIDATES:
        model = SegNet(SegNetConfig(widths=widths)).eval()
        with torch.inference_mode():
            model(x)
            t0 = time.perf_counter()
            for _ in range(args.repeats):
                model(x)
            rate = args.repeats / (time.perf_counter() - t0)
        print(f"{str(widths):<24} {model.n_parameters():>10,} {rate:>10.2f}")
    print(f"1-minute load average: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
