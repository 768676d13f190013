"""Building a LLaMA-2-7B-sized model under `with torch.device("meta")` (torchtitan's and FSDP2's way
to build what one process cannot hold): wall time and peak memory added, tessera vs transformers'
LlamaForCausalLM with the same config, each in a fresh process. Then the same model's
`to_empty(device="cpu")` + `init_weights()` at a smaller size (LLaMA 50M), where both libraries
initialise every parameter in place.

    .venv/bin/python benchmarks/meta_build.py
"""
import json
import os
import subprocess
import sys
import time

SEVEN_B = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 32000, "hidden_size": 4096,
           "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
           "num_key_value_heads": 32, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5,
           "tie_word_embeddings": False}


def _peak_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def _measure(lib: str, what: str) -> None:
    import torch

    if lib == "tessera":
        import tessera

        cls, config = tessera.LlamaForCausalLM, dict(SEVEN_B)
        small = tessera.get_model_config("llama-50m")
    else:
        import transformers

        cls = transformers.LlamaForCausalLM
        config = transformers.LlamaConfig(**{k: v for k, v in SEVEN_B.items() if k not in ("model_type", "architectures")})
        import tessera

        small = transformers.LlamaConfig(**{k: v for k, v in tessera.get_model_config("llama-50m").items()
                                            if k not in ("model_type", "architectures")})
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = _peak_mb()
    t0 = time.perf_counter()
    with torch.device("meta"):
        model = cls(config if what == "meta" else small)
    built = time.perf_counter() - t0
    assert all(p.is_meta for p in model.parameters())
    init = 0.0
    if what == "init":
        model.to_empty(device="cpu")
        t0 = time.perf_counter()
        model.init_weights()
        init = time.perf_counter() - t0
    params = sum(p.numel() for p in model.parameters())
    print(json.dumps({"build_s": built, "init_s": init, "peak_mb": _peak_mb() - base, "params": params}))


def _run(lib: str, what: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", str(os.cpu_count())))
    out = subprocess.run([sys.executable, __file__, "--one", lib, what], capture_output=True, text=True, env=env,
                         timeout=1200)
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    for what, label in (("meta", "7B built on meta"), ("init", "50M: to_empty + init_weights")):
        got = {lib: _run(lib, what) for lib in ("tessera", "transformers")}
        t, h = got["tessera"], got["transformers"]
        assert t["params"] == h["params"], (t["params"], h["params"])
        key = "build_s" if what == "meta" else "init_s"
        print(f"{label}: {t['params'] / 1e9:.2f}B params | tessera {t[key]:.3f} s, +{t['peak_mb']:.0f} MiB | "
              f"transformers {h[key]:.3f} s, +{h['peak_mb']:.0f} MiB | time ratio {h[key] / max(t[key], 1e-9):.2f}x")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--one"]:
        _measure(sys.argv[2], sys.argv[3])
    else:
        main()
