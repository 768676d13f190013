"""Cost of calling each transformer layer through Python's nn.Module.__call__ (hooks, FSDP2,
checkpoint wrappers) instead of straight from the C++ layer loop: a CLIP ViT-B/16 image tower,
batch 8, fp32, forward under no_grad, both ways round-robin in one run; prints the ratio."""
import time

import torch

import tessera
from tessera import _C


def main(reps: int = 5) -> None:
    torch.manual_seed(0)
    config = tessera.get_model_config("ViT-B-16")["vision_config"]
    model = tessera.CLIPVisionModel(config).eval()
    px = torch.randn(8, 3, 224, 224)
    encoder_addr = model.encoder.layers[0]._encoder_addr

    def python_calls():
        tessera.cpp_module.CppModule._mirror(model, model.cpp)  # reinstalls the Python layer caller

    def cpp_calls():
        _C.nn.set_layer_caller(encoder_addr, None)

    times = {"python": [], "cpp": []}
    with torch.no_grad():
        model(px)  # warm-up
        for _ in range(reps):
            for name, setup in (("python", python_calls), ("cpp", cpp_calls)):
                setup()
                t0 = time.perf_counter()
                model(px)
                times[name].append(time.perf_counter() - t0)
    py, cpp = min(times["python"]), min(times["cpp"])
    print(f"threads={torch.get_num_threads()}  ViT-B/16 batch 8 forward: layers via Python {py * 1e3:.1f} ms, "
          f"C++ loop {cpp * 1e3:.1f} ms, overhead {100 * (py / cpp - 1):+.2f} %")


if __name__ == "__main__":
    main()
