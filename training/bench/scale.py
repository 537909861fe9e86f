"""Training past one process: steps/s and renewal seconds at 1 and 2 torchrun processes, and peak
RSS and renewal seconds as the dataset grows to 2M transitions. Writes docs/bench/scale.{json,md}.

Every run is `torchrun` (gloo, one torch thread per process) of this module's `worker` on a synthetic
Hopper-shaped dataset (obs 11, act 3, episodes of 100–1000 steps; timing and memory do not depend on the
values), with the default network and M = 16. The 1-vs-2-process rows use an *eager* renewal, so their
renewal time is that of drawing and scoring every state's support set, the cost that grows with the dataset
and that ranks split. The dataset-size rows (200k and 2M, one process) use the default *lazy* renewal, as a
user's run does: the renewal itself is the temperature probe, and the support sets are drawn inside the
improvement steps (their steps/s carry that cost), so neither depends on the dataset size. An eager renewal of
2M states would take over an hour on one core (linear in states: 10× the 200k one) and is not run. Peak RSS
is each process's `ru_maxrss` over loading, construction, all three phases and the renewal.

    python scripts/bench_scale.py                # 50k eager at 1 and 2 processes, 200k and 2M lazy at 1
    python scripts/bench_scale.py --quick        # small sizes and few steps: proves the pipeline
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
OBS, ACT = 11, 3  # Hopper
GIB = 1024**3


def hopper_shaped(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """n transitions in episodes of 100–1000 steps, float32 arrays, s'ᵢ = sᵢ₊₁ inside an episode, the last
    episode cut by a timeout and the others terminating (as Hopper's falls do)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(100, 1001, size=n // 100 + 1)
    ends = np.cumsum(lengths)
    ends = np.append(ends[ends < n], n)
    obs = np.empty((n, OBS), np.float32)
    nxt = np.empty((n, OBS), np.float32)
    start = 0
    for end in ends:  # a random walk per episode: s' follows s
        walk = np.cumsum(rng.standard_normal((end - start + 1, OBS), dtype=np.float32) * 0.05, axis=0)
        obs[start:end], nxt[start:end] = walk[:-1], walk[1:]
        start = int(end)
    terminals = np.zeros(n, bool)
    terminals[ends[:-1] - 1] = True
    timeouts = np.zeros(n, bool)
    timeouts[n - 1] = True
    return {
        "observations": obs,
        "next_observations": nxt,
        "actions": rng.uniform(-1, 1, (n, ACT)).astype(np.float32),
        "rewards": rng.standard_normal(n).astype(np.float32),
        "terminals": terminals,
        "timeouts": timeouts,
        "action_low": -np.ones(ACT, np.float32),
        "action_high": np.ones(ACT, np.float32),
    }


def dataset_file(cache: Path, n: int) -> Path:
    path = cache / f"hopper-synthetic-{n}.npz"
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        arrays: dict[str, Any] = {**hopper_shaped(n), "meta": json.dumps({"name": f"hopper-synthetic-{n}"})}
        np.savez(tmp, **arrays)
        tmp.replace(path)
    return path


def bench_config(steps: int, improve: int, renewal: str = "eager") -> dict[str, Any]:
    return {
        "behavior_steps": steps,
        "critic_steps": steps,
        "improve_steps": improve,
        "renew_every": improve,  # one renewal, at the start of improvement
        "renewal": renewal,
        "log_every": 10**9,
    }


# ----- the measured process (one per rank, under torchrun) ------------------------------------------
def worker(data: Path, config: Path, result_dir: Path) -> None:
    import torch

    from training import distributed
    from training.config import QIPOConfig
    from training.data import load_dataset
    from training.qipo import QIPOTrainer

    torch.set_num_threads(1)
    cluster = distributed.env_cluster()
    distributed.init(cluster, torch.device("cpu"))
    cfg = QIPOConfig.model_validate(json.loads(config.read_text()))
    started = time.perf_counter()
    trainer = QIPOTrainer(load_dataset(str(data)), cfg, progress=False)
    out: dict[str, Any] = {"rank": cluster.rank, "build_s": time.perf_counter() - started}
    for phase, end in (("behavior", trainer.k1), ("critic", trainer.k1 + trainer.k2), ("improve", None)):
        first, started = trainer.step, time.perf_counter()
        trainer.fit(until=end)
        seconds = time.perf_counter() - started
        if phase == "improve":
            out["renewal_s"] = trainer.renewal_log[0]["seconds"]
            seconds -= out["renewal_s"]
        out[f"{phase}_steps_per_s"] = (trainer.step - first) / seconds
    assert trainer.supports is not None
    out["support_bytes"] = trainer.supports.nbytes
    out["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out["sample_dtype"] = str(trainer.sample_dtype).removeprefix("torch.")
    (result_dir / f"rank{cluster.rank}.json").write_text(json.dumps(out))
    distributed.shutdown()


# ----- the driver --------------------------------------------------------------------------------------
def run(data: Path, cfg: dict[str, Any], procs: int) -> dict[str, Any]:
    """One torchrun job; rank 0's rates and renewal time, the largest process's peak RSS."""
    from training.distributed import loopback_torchrun

    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.json"
        config.write_text(json.dumps(cfg))
        cmd = loopback_torchrun(procs, "-m", "training.bench.scale", "worker", str(data), str(config), tmp)
        env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
        started = time.perf_counter()
        subprocess.run(cmd, env=env, cwd=ROOT, check=True)
        wall = time.perf_counter() - started
        ranks = [json.loads((Path(tmp) / f"rank{r}.json").read_text()) for r in range(procs)]
    head = ranks[0]
    return {
        "processes": procs,
        "behavior_steps_per_s": round(head["behavior_steps_per_s"], 1),
        "critic_steps_per_s": round(head["critic_steps_per_s"], 1),
        "improve_steps_per_s": round(head["improve_steps_per_s"], 1),
        "renewal_s": round(max(r["renewal_s"] for r in ranks), 2),
        "build_s": round(head["build_s"], 2),
        "peak_rss_gib": round(max(r["peak_rss_bytes"] for r in ranks) / GIB, 3),
        "support_gib": round(head["support_bytes"] / GIB, 3),
        "sample_dtype": head["sample_dtype"],
        "wall_s": round(wall, 1),
    }


def plan(quick: bool) -> tuple[int, list[int], int, int]:
    """(transitions of the 1-vs-2-process rows, the dataset sizes, steps per phase, improvement steps)."""
    scaling_n, sizes = (4_000, [4_000, 20_000]) if quick else (50_000, [200_000, 2_000_000])
    steps, improve = (20, 10) if quick else (300, 100)
    return scaling_n, sizes, steps, improve


def measure(argv: list[str]) -> None:
    """Every run, then scale.{json,md} under --out."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "bench")
    parser.add_argument("--quick", action="store_true", help="small sizes, few steps (a smoke run)")
    parser.add_argument(
        "--cache", type=Path, default=ROOT / "build" / "bench-scale", help="synthetic datasets"
    )
    args = parser.parse_args(argv)
    import torch

    from training.bench import cpu_model

    scaling_n, sizes, steps, improve = plan(args.quick)
    cfg = bench_config(steps, improve)
    lazy = bench_config(steps, improve, "lazy")
    load_start = os.getloadavg()
    scaling = {p: run(dataset_file(args.cache, scaling_n), cfg, p) for p in (1, 2)}
    by_size = {n: run(dataset_file(args.cache, n), lazy, 1) for n in sizes}
    ratio = scaling[2]["renewal_s"] / scaling[1]["renewal_s"]
    result = {
        "quick": args.quick,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {cpu_model()}, torch {torch.__version__}",
        "load_average": {
            "start": [round(x, 2) for x in load_start],
            "end": [round(x, 2) for x in os.getloadavg()],
        },
        "config": cfg | {"note": "defaults otherwise: IQL critic, M = 16, batch 256, improve batch 64"},
        "sizes_renewal": "lazy",
        "scaling_transitions": scaling_n,
        "scaling": [scaling[1], scaling[2]],
        "renewal_ratio_2_to_1": round(ratio, 3),
        "renewal_target_met": ratio <= 0.6,
        "sizes": [{"transitions": n} | r for n, r in sorted(by_size.items())],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scale.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "scale.md").write_text(markdown(result))
    print(markdown(result))


def markdown(r: dict[str, Any]) -> str:
    one, two = r["scaling"]
    load = r["load_average"]
    lines = [
        "# Training at scale"
        + (" (quick smoke run: small sizes, not the real measurement)" if r["quick"] else ""),
        "",
        f"Machine: {r['machine']}. 1-minute load average {load['start'][0]} at the start, "
        f"{load['end'][0]} at the end (other work on the box slows every number; 2 processes need 2 idle "
        "cores).",
        "Every run: `torchrun`, gloo, one torch thread per process, synthetic Hopper-shaped data, "
        f"{r['config']['behavior_steps']} behaviour + {r['config']['critic_steps']} critic + "
        f"{r['config']['improve_steps']} improvement steps, one renewal: eager (every state's support set) "
        f"for 1 vs 2 processes, {r.get('sizes_renewal', 'eager')} for the dataset sizes.",
        "",
        f"## 1 vs 2 processes ({r['scaling_transitions']:,} transitions, same global batch)",
        "",
        "| processes | behaviour steps/s | critic steps/s | improvement steps/s | renewal s "
        "| peak RSS / process |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in (one, two):
        lines.append(
            f"| {row['processes']} | {row['behavior_steps_per_s']} | {row['critic_steps_per_s']} | "
            f"{row['improve_steps_per_s']} | {row['renewal_s']} | {row['peak_rss_gib']} GiB |"
        )
    verdict = "meets" if r["renewal_target_met"] else "misses"
    lines += [
        "",
        f"Renewal at 2 processes / 1 process: **{r['renewal_ratio_2_to_1']}** ({verdict} the ≤ 0.6 target).",
        "",
        f"## Dataset size (1 process, {r.get('sizes_renewal', 'eager')} renewal)",
        "",
        "| transitions | peak RSS | support sets held | renewal s | trainer build s | improvement steps/s |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in r["sizes"]:
        lines.append(
            f"| {row['transitions']:,} | {row['peak_rss_gib']} GiB | {row['support_gib']} GiB | "
            f"{row['renewal_s']} | {row['build_s']} | {row['improve_steps_per_s']} |"
        )
    small, large = r["sizes"][0], r["sizes"][-1]
    per = (
        (large["peak_rss_gib"] - small["peak_rss_gib"]) * GIB / (large["transitions"] - small["transitions"])
    )
    fits = (
        f"{int((24 * GIB - small['peak_rss_gib'] * GIB) / per + small['transitions']):,}"
        if per > 0
        else "n/a"
    )
    lines += [
        "",
        f"Peak RSS grows by **{per:,.0f} bytes a transition** between the two sizes, so 24 GiB holds about "
        f"{fits} transitions at this setting. What it is made of: the dataset as float32 (observations and "
        "next observations, their normalised copies, actions, rewards; index and return arrays beside them) "
        "and the support sets, (M + 1)·(act + 1) float32 a state — every state after an eager renewal, only "
        "the states one renewal period touches under lazy renewal (the default), divided by the world size. "
        "Renewal time is linear in the states drawn: eager draws all of them at once (the 1-vs-2 rows), lazy "
        "spreads the states a period touches (improvement steps × 64) over its steps, whatever the dataset "
        "size (the size rows: renewal s is the temperature probe alone).",
        "",
    ]
    return "\n".join(lines)


def render(source: Path) -> Path:
    """scale.json → scale.md beside it, without measuring again."""
    target = source.with_suffix(".md")
    target.write_text(markdown(json.loads(source.read_text())))
    return target


def main(argv: list[str] | None = None) -> None:
    """`worker DATA CONFIG RESULTS` (one rank, under torchrun), `render scale.json`, or the benchmark."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["worker"]:
        worker(Path(argv[1]), Path(argv[2]), Path(argv[3]))
    elif len(argv) > 1 and argv[0] == "render":
        render(Path(argv[1]))
    else:
        measure(argv)


if __name__ == "__main__":
    main()
