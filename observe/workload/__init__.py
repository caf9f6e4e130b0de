"""The bundled reference MoE workload: model, data, trainer and inference path.

It knows nothing of observe's monitoring: the demo, the tests and the benchmarks attach
to it from outside, as a user's code would.
"""

from observe.workload.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from observe.workload.config import CONFIGS, MoEConfig, get_config
from observe.workload.model import ModelOutput, MoETransformer
from observe.workload.router import Router
from observe.workload.tokenizer import ByteTokenizer

__all__ = [
    "CONFIGS",
    "ByteTokenizer",
    "Checkpoint",
    "MoEConfig",
    "MoETransformer",
    "ModelOutput",
    "Router",
    "get_config",
    "load_checkpoint",
    "save_checkpoint",
]
