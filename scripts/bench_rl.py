"""`make bench-rl`: BC vs QIPO-OT vs QIPO-Diff, several seeds, on Pendulum `mixed` or MuJoCo datasets
(training/bench/pendulum.py; `--help` for the options)."""

from training.bench.pendulum import main

if __name__ == "__main__":
    main()
