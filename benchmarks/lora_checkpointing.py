"""LoRA fine-tuning of a LLaMA with and without gradient checkpointing, tessera against
transformers + peft on the same weights, each configuration in a fresh process: step time
(forward + backward + AdamW on the adapters) and the peak memory a step adds. Before stop 38,
tessera's checkpointing gave a frozen base's layers no gradient path (LoRA failed in backward);
transformers needs `enable_input_require_grads` or the non-reentrant checkpoint for the same.

    .venv/bin/python benchmarks/lora_checkpointing.py [--steps 5] [--batch 4] [--seq 512]
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

from load_pretrained import _status_mb  # /proc/self/status in MiB (this folder is on sys.path)

SIZES = dict(vocab_size=8000, hidden_size=512, intermediate_size=1408, num_hidden_layers=8, num_attention_heads=8,
             num_key_value_heads=8, max_position_embeddings=1024)


def _run(lib: str, folder: str, checkpointing: bool, steps: int, batch: int, seq: int) -> None:
    import torch

    torch.manual_seed(0)
    if lib == "tessera":
        import tessera

        model = tessera.from_pretrained(folder).train()
        tessera.lora.apply_lora(model, ["q_proj", "v_proj"], r=8, lora_alpha=16)
        if checkpointing:
            model.gradient_checkpointing_enable()
    else:
        import peft
        import transformers

        model = transformers.LlamaForCausalLM.from_pretrained(folder, attn_implementation="sdpa").train()
        model = peft.get_peft_model(model, peft.LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                                           lora_dropout=0.0))
        if checkpointing:  # transformers' recommendation for adapters on a frozen base
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-4)
    ids = torch.randint(3, SIZES["vocab_size"], (batch, seq), generator=torch.Generator().manual_seed(1))

    def step():
        opt.zero_grad(set_to_none=True)
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()

    step()  # warm-up: allocator, oneDNN primitives, optimizer state (and lora_B leaves zero)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = _status_mb("VmRSS")
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = (time.perf_counter() - t0) / steps
    moved = all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in trainable)
    print(f"{seconds:.3f} {_status_mb('VmHWM') - base:.1f} {len(trainable)} {int(moved)}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--_run", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._run:
        lib, folder, ckpt = args._run
        _run(lib, folder, ckpt == "1", args.steps, args.batch, args.seq)
        return
    import torch
    import transformers

    from tessera.train.hardware import cpu_flags

    print(f"{os.cpu_count()} cores, avx512_bf16={'avx512_bf16' in cpu_flags()}, torch threads {torch.get_num_threads()}")
    print(f"LLaMA {SIZES['num_hidden_layers']}x{SIZES['hidden_size']}, LoRA r=8 on q/v, batch {args.batch} x {args.seq} "
          f"tokens, fp32, {args.steps} timed steps")
    with tempfile.TemporaryDirectory() as folder:
        torch.manual_seed(0)
        transformers.LlamaForCausalLM(transformers.LlamaConfig(**SIZES)).save_pretrained(folder)
        results = {}
        for ckpt in (False, True):
            for lib in ("tessera", "transformers+peft"):
                out = subprocess.run([sys.executable, __file__, "--steps", str(args.steps), "--batch", str(args.batch),
                                      "--seq", str(args.seq), "--_run", lib, folder, str(int(ckpt))],
                                     capture_output=True, text=True, check=True)
                seconds, peak, n, moved = out.stdout.split()[-4:]
                results[lib, ckpt] = (float(seconds), float(peak))
                print(f"{lib:18s} checkpointing={str(ckpt):5s}  {float(seconds):6.3f} s/step  peak +{float(peak):7.1f} MiB  "
                      f"{n} trainable tensors, all with gradients: {moved == '1'}")
        for ckpt in (False, True):
            t, r = results["tessera", ckpt], results["transformers+peft", ckpt]
            print(f"checkpointing={ckpt}: tessera / transformers+peft: time {t[0] / r[0]:.2f}x, peak memory "
                  f"{t[1] / max(r[1], 0.1):.2f}x")


if __name__ == "__main__":
    main()
