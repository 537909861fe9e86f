"""QIPO training: datasets, energy-weighted flow matching, critic, policy improvement, export."""
