"""Distributed training benchmark (figures, not pass/fail): `python scripts/benchmark_distributed.py`, after
`cli.py run` (it trains on the ETL's tokens). Takes minutes; run it on a quiet machine (`flock /tmp/heavy.lock`).

Prints, for the `quick` preset (or `--preset`) at its global batch and `--iters` steps:
- tokens/s of the training steps: 2 Ray workers x 1 thread against 1 Ray worker x 1 thread (goal >= 1.7x), both
  through the job's own code (TorchTrainer, one `train()` rank per worker), and the one-process path in the run
  (1 x 1 and 1 x 2 threads) for reference;
- the validation loss of each after the same steps (goal: 2 workers within 0.02 of 1);
- the wall time of each Ray job (its workers' start-up included), and the local cluster's start-up and stop.
"""

import argparse

from benchmark import STORAGE, venv_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--iters", type=int, default=600)
    parser.add_argument("--starts", type=int, default=3, help="local cluster starts to time")
    args = parser.parse_args()
    figures = venv_json(
        "benchmark_distributed",
        *("--storage", STORAGE, "--preset", args.preset, "--iters", str(args.iters), "--starts", str(args.starts)),
    )
    runs = figures["runs"]
    one, two = runs["ray 1x1"], runs["ray 2x1"]
    print(
        f"{figures['preset']} preset, {figures['iters']} steps of {figures['global_batch_tokens']:,} tokens "
        "(the same global batch everywhere)\n"
    )
    print("| run | tokens/s | vs Ray 1x1 | validation loss | Ray job wall s |")
    print("|---|---|---|---|---|")
    for name, run in runs.items():
        job = f"{run['job_seconds']:.1f}" if run["job_seconds"] is not None else "—"
        ratio = run["tokens_per_second"] / one["tokens_per_second"]
        print(f"| {name} | {run['tokens_per_second']:,.0f} | {ratio:.2f}x | {run['validation_loss']:.4f} | {job} |")
    speedup = two["tokens_per_second"] / one["tokens_per_second"]
    gap = abs(two["validation_loss"] - one["validation_loss"])
    print(
        f"\n2 workers x 1 thread vs 1 x 1: {speedup:.2f}x tokens/s (goal >= 1.7); validation loss gap {gap:.4f} "
        f"(goal <= 0.02)\nlocal Ray cluster: starts in {figures['cluster_start_seconds']:.1f} s (median of "
        f"{len(figures['cluster_start_seconds_all'])}: "
        f"{', '.join(f'{s:.1f}' for s in figures['cluster_start_seconds_all'])}), stops in "
        f"{figures['cluster_stop_seconds']:.1f} s"
    )


if __name__ == "__main__":
    main()
