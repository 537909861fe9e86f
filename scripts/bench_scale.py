"""`make bench-scale`: steps/s and renewal seconds at 1 and 2 torchrun processes, peak RSS as the dataset
grows (training/bench/scale.py; `--help` for the options, `render scale.json` redraws scale.md)."""

from training.bench.scale import main

if __name__ == "__main__":
    main()
