"""A run's checkpoint on disk: one file of tensors and plain data (loadable with `weights_only=True`), with
a format number so a file this trainer cannot read is refused in one line, and the policy rebuilt from it
alone (export and eval need no dataset).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from training.config import QIPOConfig
from training.networks import TwinQ, VelocityNet
from training.paths import make_path
from training.policy import BestOfNPolicy, FlowPolicy, Normalizer

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint this trainer cannot read; the message says what to do."""


def save_checkpoint(state: dict[str, Any], cfg: QIPOConfig, run_dir: Path) -> Path:
    """Write atomically (a crash leaves the previous checkpoint), with the config beside it as JSON."""
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / f".{CHECKPOINT}.tmp"
    torch.save(state, tmp)
    tmp.replace(run_dir / CHECKPOINT)
    (run_dir / "config.json").write_text(cfg.model_dump_json(indent=2) + "\n")
    return run_dir / CHECKPOINT


def load_checkpoint(path: Path) -> dict[str, Any]:
    path = path / CHECKPOINT if path.is_dir() else path
    if not path.exists():
        raise FileNotFoundError(f"{path} not found; train first with `qipo train`")
    state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} has checkpoint format {state.get('format')!r}, and this trainer reads format "
            f"{CHECKPOINT_FORMAT}; train the run again with this version (`qipo train`)"
        )
    return state


def policy_from_checkpoint(path: Path) -> tuple[FlowPolicy, QIPOConfig, dict[str, Any]]:
    """Rebuild the exported/evaluated policy from a checkpoint alone (no dataset needed); a chunked run
    (action_horizon H > 1) gives a policy answering [B, H, A]."""
    state = load_checkpoint(path)
    cfg = QIPOConfig.model_validate(state["config"])
    norm_state = state["normalizer"]
    normalizer = Normalizer(
        norm_state["obs_mean"].numpy(),
        norm_state["obs_std"].numpy(),
        norm_state["act_low"].numpy(),
        norm_state["act_high"].numpy(),
    )
    normalizer.load_state_dict(norm_state)
    horizon = cfg.action_horizon  # a chunked policy's flow and critic act on H·A dimensions
    obs_dim, act_dim = normalizer.obs_dim, normalizer.act_dim * horizon
    n = cfg.network
    net = VelocityNet(obs_dim, act_dim, n.hidden, n.blocks, n.time_dim)
    net.load_state_dict(state["net"])
    path_ = make_path(cfg.variant, cfg.solver)
    if cfg.action_selection == "best-of-n":
        q = TwinQ(obs_dim, act_dim, n.critic_hidden, n.critic_layers)
        q.load_state_dict(state["critic"]["q"])
        best = BestOfNPolicy(net, normalizer, path_, cfg.steps, q, cfg.best_of_n, horizon=horizon)
        return best.eval(), cfg, state
    return FlowPolicy(net, normalizer, path_, cfg.steps, cfg.action_noise, horizon).eval(), cfg, state
