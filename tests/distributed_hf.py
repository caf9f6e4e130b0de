"""One rank of `ObserveCallback` under torchrun (tests/test_distributed.py starts it):
a tiny random Mixtral trained with DDP over gloo, each rank on its own shard of the data.

torchrun --standalone --nproc-per-node 2 tests/distributed_hf.py OUT_DIR DB_URL
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import transformers
from test_integration_hf import (
    ACCUMULATION,
    BATCH,
    STEPS,
    RandomTokens,
    tiny_mixtral,
    training_args,
)

from observe.integrations.hf import ObserveCallback
from observe.settings import Settings


def main() -> None:
    out, db_url = Path(sys.argv[1]), sys.argv[2]
    rank = int(os.environ["RANK"])
    settings = Settings(
        db_url=db_url, prometheus_port=0, prometheus_linger_s=0, spool_dir=out / f"spool{rank}"
    )
    callback = ObserveCallback(settings=settings)
    model = tiny_mixtral()
    args = training_args(
        out / "trainer",
        ddp_backend="gloo",
        # Experts no token chose this step have no gradient.
        ddp_find_unused_parameters=True,
    )
    world = int(os.environ["WORLD_SIZE"])
    dataset = RandomTokens(STEPS * ACCUMULATION * BATCH * world, model.config.vocab_size)
    transformers.Trainer(
        model=model, args=args, train_dataset=dataset, callbacks=[callback]
    ).train()
    assert callback.run is not None and callback.last_snapshot is not None
    tokens = [layer.tokens for layer in callback.last_snapshot.layers]
    result = {"run_id": callback.run.run_id, "tokens": tokens, "model": callback.run.model}
    (out / f"rank{rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
