"""`make bench-train` (see `training.bench.throughput`): steps/s per phase, reference path and peers."""

from training.bench.throughput import main

if __name__ == "__main__":
    main()
