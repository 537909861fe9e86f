"""Peer settings that decide a comparison: ReBRAC's per-dataset coefficients and the peer names."""

from __future__ import annotations

import pytest

from training.bench.peers import PEERS, REBRAC_DEFAULT_BETAS, peer_algo, rebrac_betas


def test_rebrac_takes_the_published_coefficients_by_exact_dataset_name() -> None:
    assert rebrac_betas("hopper-medium-replay") == (0.05, 0.5)
    assert rebrac_betas("halfcheetah-medium-expert") == (0.01, 0.1)  # not halfcheetah-medium's
    assert rebrac_betas("halfcheetah-medium") == (0.001, 0.01)
    assert rebrac_betas("walker2d_medium-v2") == (0.05, 0.1)


def test_rebrac_falls_back_to_its_defaults_off_the_locomotion_table() -> None:
    assert rebrac_betas("reacher-mixed") == REBRAC_DEFAULT_BETAS
    assert rebrac_betas("pendulum-mixed") == REBRAC_DEFAULT_BETAS


def test_peer_names_are_checked() -> None:
    assert {peer_algo(p) for p in PEERS} == set(PEERS)
    with pytest.raises(ValueError, match="unknown peer 'sac'"):
        peer_algo("sac")
