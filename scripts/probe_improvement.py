"""The improvement phase probed from one shared BC + critic checkpoint (training/bench/probe.py; `--help`
for the options)."""

from training.bench.probe import main

if __name__ == "__main__":
    main()
