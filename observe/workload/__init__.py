"""The bundled reference MoE workload: model, data, trainer and inference path.

Written as a user's own code would be: no hooks and no monitoring session inside. Like any
instrumented library it emits its own figures (training loss, tokens/s, latency, cache
hits) through the OpenTelemetry API, to the meter provider the application hands it.
Attributes load on first use; `job_config` is torch-free.
"""

from typing import TYPE_CHECKING

from observe.lazy import lazy_attributes

_WHERE = {
    "Checkpoint": "observe.workload.checkpoint",
    "load_checkpoint": "observe.workload.checkpoint",
    "save_checkpoint": "observe.workload.checkpoint",
    "CONFIGS": "observe.workload.config",
    "MoEConfig": "observe.workload.config",
    "get_config": "observe.workload.config",
    "ModelOutput": "observe.workload.model",
    "MoETransformer": "observe.workload.model",
    "Router": "observe.workload.router",
    "ByteTokenizer": "observe.workload.tokenizer",
}
__getattr__, __dir__ = lazy_attributes(__name__, _WHERE)

if TYPE_CHECKING:
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
