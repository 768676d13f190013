"""A module written outside tessera, built against the installed CMake package and trained
from Python (examples/cpp_extension)."""
import os
import pathlib
import shutil
import subprocess
import sys

import pytest
import torch

import tessera

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def gated_residual(tmp_path_factory):
    cmake = shutil.which("cmake", path=os.path.dirname(sys.executable)) or shutil.which("cmake")
    build = tmp_path_factory.mktemp("ext")
    env = dict(os.environ)
    subprocess.run([cmake, "-S", str(ROOT / "examples" / "cpp_extension"), "-B", str(build), "-G", "Ninja",
                    f"-DPython3_EXECUTABLE={sys.executable}", f"-DCMAKE_PREFIX_PATH={tessera.cmake_prefix_path}",
                    "-DCMAKE_BUILD_TYPE=Release"], check=True, capture_output=True, env=env)
    subprocess.run([cmake, "--build", str(build)], check=True, capture_output=True, env=env)
    sys.path.insert(0, str(build))
    try:
        import gated_residual as ext
        yield ext
    finally:
        sys.path.remove(str(build))


def test_extension_is_a_trainable_module(gated_residual):
    block = tessera.CppModule(gated_residual.GatedResidual(16))
    assert isinstance(block, torch.nn.Module)
    assert set(block.state_dict()) == {"mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias", "gate"}
    x = torch.randn(32, 16)
    target = x.flip(-1)
    # Reference computation in plain PyTorch from the same tensors.
    p = dict(block.named_parameters())
    h = torch.nn.functional.gelu(x @ p["mlp.fc1.weight"].T + p["mlp.fc1.bias"]) @ p["mlp.fc2.weight"].T + p["mlp.fc2.bias"]
    torch.testing.assert_close(block(x), x + torch.sigmoid(p["gate"]) * h)
    opt = torch.optim.Adam(block.parameters(), lr=1e-2)
    first = None
    for _ in range(30):
        loss = (block(x) - target).pow(2).mean()
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.7 * first
