"""Write a small, untrained Pendulum-shaped artifact (obs 3, action 1 in [-2, 2]) in seconds.

For exercising the deploy stack (load tests, upgrade drills, the e2e test) without a training run: each
seed gives different weights, so two seeds make two distinguishable versions. Needs the `train` extra.

    python loadtests/tiny_artifact.py build/stack/artifacts/v1 --seed 1
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def tiny_artifact(out: Path, seed: int, name: str = "pendulum-qipo", steps: int = 4) -> Path:
    import torch

    from training.export import export_artifact
    from training.networks import VelocityNet
    from training.paths import make_path
    from training.policy import FlowPolicy, Normalizer

    torch.manual_seed(seed)
    normalizer = Normalizer(
        np.zeros(3, np.float32),
        np.ones(3, np.float32),
        np.array([-2.0], np.float32),
        np.array([2.0], np.float32),
    )
    policy = FlowPolicy(
        VelocityNet(3, 1, hidden=32, blocks=1), normalizer, make_path("qipo-ot"), steps
    ).eval()
    export_artifact(
        policy,
        out,
        name=name,
        variant="qipo-ot",
        training_config={"note": "untrained, for deploy drills", "seed": seed},
        dataset={"id": "none"},
        scores={},
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="pendulum-qipo")
    args = parser.parse_args()
    tiny_artifact(args.out, args.seed, args.name)
    print(args.out)


if __name__ == "__main__":
    main()
