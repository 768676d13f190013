"""Runs open_clip's own training script (`open_clip_train.main`) with a model config from a JSON
file, for benchmarks/clip_train_cpu.py: `python open_clip_train_entry.py CONFIG.json ARGS.json`
(the arguments travel in a file: torchrun's parser would take `--logs` for its own `--logs-specs`)."""
import json
import sys

import open_clip
import torch


class _CpuDDP(torch.nn.parallel.DistributedDataParallel):
    """open_clip_train passes device_ids=[cpu], which DDP rejects; on CPU it must be None."""

    def __init__(self, module, device_ids=None, **kwargs):
        if device_ids and all(getattr(d, "type", d) == "cpu" for d in device_ids):
            device_ids = None
        super().__init__(module, device_ids=device_ids, **kwargs)


if __name__ == "__main__":
    torch.nn.parallel.DistributedDataParallel = _CpuDDP
    open_clip.add_model_config(sys.argv[1])
    from open_clip_train.main import main

    with open(sys.argv[2]) as f:
        main(json.load(f))
