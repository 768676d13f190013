"""One training step (forward, loss, backward, AdamW) of tessera's model and the reference's with
the same weights, timed in the same run; fp32, and bf16 autocast where the CPU has native bf16."""
import torch

from tessera.train.hardware import cpu_has_native_bf16
from vit_cpu import timed


def compare_steps(models, loss_of, batch: int, iters: int) -> None:
    """`models`: {"tessera": m, "transformers": m}; `loss_of(model)` runs a forward, returns the loss."""
    for prec in ["fp32"] + (["bf16"] if cpu_has_native_bf16() else []):
        rates = {}
        for name, model in models.items():
            opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

            def step():
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=prec == "bf16"):
                    loss = loss_of(model)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            rates[name] = batch / timed(step, iters, warmup=1)
            print(f"{name:12s} {prec}: {rates[name]:6.2f} samples/s")
        print(f"ratio tessera / transformers, {prec}: {rates['tessera'] / rates['transformers']:.2f}x (goal >= 1.0x)")
