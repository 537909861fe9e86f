"""qipo-client: the robot side of a QIPO policy server (wire contract, codec, `Policy`, clients).

Imports numpy, msgpack, httpx and pydantic only; the websocket clients (`qipo_client.ws`) need the `ws`
extra and are imported from their module.
"""

from __future__ import annotations

from qipo_client._ops import ActReply
from qipo_client.codec import CodecError
from qipo_client.errors import NoAction, ServerError
from qipo_client.http import AsyncPolicyClient, PolicyClient
from qipo_client.policy import Noise, Policy, PolicyMetadata, Seeds, seeded_noise, step_seed
from qipo_client.remote import RemotePolicy
from qipo_client.wire import ActRequest, ActResponse, Timing
from qipo_client.wrappers import Recording, Seeded, Wrapper

__version__ = "0.1.0"
__all__ = [
    "ActReply",
    "ActRequest",
    "ActResponse",
    "AsyncPolicyClient",
    "CodecError",
    "NoAction",
    "Noise",
    "Policy",
    "PolicyClient",
    "PolicyMetadata",
    "Recording",
    "RemotePolicy",
    "Seeded",
    "Seeds",
    "ServerError",
    "Timing",
    "Wrapper",
    "__version__",
    "seeded_noise",
    "step_seed",
]
