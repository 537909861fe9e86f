"""Replacement against soft-mask inpainting on Pendulum with H = 4 under a simulated delay
(training/bench/inpainting.py; writes docs/bench/inpainting_pendulum.json)."""

from training.bench.inpainting import main

if __name__ == "__main__":
    main()
