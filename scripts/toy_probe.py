"""One toy cell, EFM alone, at the bench's own seeds and reference (training/toy/probe.py; `--help` for the
options)."""

from training.toy.probe import main

if __name__ == "__main__":
    main()
