"""Trains a tiny tessera CLIP for a few AdamW steps, in one process or under FSDP2 on 2 Gloo
ranks (same batch on every rank), and writes the losses and final weights for the test to compare.

    python _fsdp_worker.py OUT single|fsdp|fsdp_ckpt|fsdp_meta     (fsdp*: launched by torchrun)

fsdp_meta builds the model as torchtitan does: under `with torch.device("meta")` (no memory),
shards it, `to_empty`, and loads the full weights from rank 0 with torch's set_model_state_dict.
"""
import os
import sys

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(__file__))
import tessera  # noqa: E402
from tessera.train.distributed import shutdown_distributed  # noqa: E402
from _clip_reference import pixel_batch, text_batch, tiny_config  # noqa: E402

STEPS = 5


def main(out: str, mode: str) -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    config = tiny_config()
    model = tessera.CLIPModel(config)
    full = model.state_dict()  # the weights every mode starts from
    if mode == "fsdp_meta":
        with torch.device("meta"):
            model = tessera.CLIPModel(config)
        assert all(p.is_meta for p in model.parameters())
    model.train()
    ids, mask = text_batch(config["text_config"], batch=4, seq_len=config["text_config"]["max_position_embeddings"])
    px = pixel_batch(config["vision_config"], batch=4)
    initial = {k: v.detach().clone() for k, v in full.items()}
    rank = 0
    if mode != "single":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        dist.init_process_group("gloo")
        rank = dist.get_rank()
        mesh = init_device_mesh("cpu", (dist.get_world_size(),))
        layers = [m for m in model.modules() if isinstance(m, tessera.models.clip.CLIPEncoderLayer)]
        assert len(layers) >= 2, len(layers)
        if mode == "fsdp_ckpt":
            from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import apply_activation_checkpointing
            apply_activation_checkpointing(model, check_fn=lambda m: isinstance(m, tessera.models.clip.CLIPEncoderLayer))
        for layer in layers:
            fully_shard(layer, mesh=mesh)
        # FSDP2 shards no scalar parameter (CLIP's logit_scale, a scalar in HF too): it stays
        # replicated and its gradient is averaged by hand below.
        fully_shard(model, mesh=mesh, ignored_params={model.logit_scale})
        if mode == "fsdp_meta":
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

            model.to_empty(device="cpu")
            set_model_state_dict(model, full if rank == 0 else {},
                                 options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(STEPS):
        opt.zero_grad()
        loss = model(input_ids=ids, pixel_values=px, attention_mask=mask, return_loss=True).loss
        loss.backward()
        if mode != "single":
            dist.all_reduce(model.logit_scale.grad, op=dist.ReduceOp.AVG)
        opt.step()
        losses.append(loss.item())
    refusals = {}
    if mode == "fsdp":  # what cannot work on a sharded model is refused, nothing written
        target = os.path.join(os.path.dirname(out), f"sharded-save-{rank}")
        try:
            model.save_pretrained(target)  # its DTensors crashed the C++ writer (SIGSEGV)
        except ValueError as e:
            refusals["save_pretrained"] = (str(e), os.path.exists(target))
        try:  # accelerate's FSDP2 plugin makes the input embeddings a unit of their own
            fully_shard(model.text_model.embeddings.token_embedding, mesh=mesh)
        except RuntimeError as e:
            refusals["fully_shard_leaf"] = str(e)
    state = model.state_dict()
    if mode != "single":
        state = {k: v.full_tensor() if hasattr(v, "full_tensor") else v for k, v in state.items()}
    # Checkpoint wrappers insert a prefix into the keys; compare under the plain names.
    state = {k.replace("_checkpoint_wrapped_module.", ""): v.detach().clone() for k, v in state.items()}
    changed = {k: not torch.equal(state[k], v) for k, v in initial.items()}
    if rank == 0:
        torch.save({"losses": losses, "state": state, "changed": changed, "refusals": refusals}, out)
    shutdown_distributed()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
