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
                    # No optimisation: parsing LibTorch's headers is most of the build, and -O3 adds a third.
                    "-DCMAKE_BUILD_TYPE="], check=True, capture_output=True, env=env)
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


def test_an_extension_builds_on_meta_through_build_cpp(gated_residual):
    """A user's C++ module honours `with torch.device("meta")` when built through tessera's
    build_cpp (its add_parameter reads the switch); built directly it is refused, not silently
    allocated."""
    from tessera.cpp_build import build_cpp

    with torch.device("meta"):
        block = tessera.CppModule(build_cpp(gated_residual.GatedResidual, 16))
        assert all(p.is_meta for p in block.parameters())
        with pytest.raises(RuntimeError, match="build_cpp\\(GatedResidual"):
            tessera.CppModule(gated_residual.GatedResidual(16))


def test_projector_registered_from_an_extension_drives_llava(gated_residual):
    import swiglu_projector  # built by the fixture next to gated_residual

    assert swiglu_projector.projector_type in tessera.models.llava.list_projectors()
    text = dict(vocab_size=100, hidden_size=32, intermediate_size=40, num_hidden_layers=1, num_attention_heads=4,
                max_position_embeddings=64)
    vision = dict(hidden_size=24, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2, image_size=16,
                  patch_size=8)
    llava = tessera.LlavaForConditionalGeneration(dict(text_config=text, vision_config=vision, image_token_index=90,
                                                       projector_type="swiglu", vision_feature_layer=-1))
    p = {k.removeprefix("multi_modal_projector."): v for k, v in llava.named_parameters() if "projector" in k}
    assert sorted(p) == sorted(f"{n}_proj.{w}" for n in ("gate", "up", "down") for w in ("weight", "bias"))
    # The projector's output, in plain PyTorch from the same tensors, is what the LM receives.
    px = torch.randn(2, 3, 16, 16)
    tower = tessera.CLIPVisionModel(vision)
    tower.load_state_dict({"vision_model." + k.removeprefix("vision_tower."): v
                           for k, v in llava.state_dict().items() if k.startswith("vision_tower.")})
    feats = tower(pixel_values=px, output_hidden_states=True).hidden_states[-1][:, 1:]
    lin = torch.nn.functional.linear
    want = lin(torch.nn.functional.silu(lin(feats, p["gate_proj.weight"], p["gate_proj.bias"]))
               * lin(feats, p["up_proj.weight"], p["up_proj.bias"]), p["down_proj.weight"], p["down_proj.bias"])
    ids = torch.cat([torch.randint(3, 80, (2, 2)), torch.full((2, 4), 90), torch.randint(3, 80, (2, 3))], 1)
    embeds = llava._cpp.embed(ids, px)
    torch.testing.assert_close(embeds[:, 2:6], want, atol=1e-5, rtol=1e-5)
    # It trains: every projector parameter gets a gradient and moves.
    before = {k: v.detach().clone() for k, v in p.items()}
    opt = torch.optim.SGD([v for v in p.values()], lr=0.1)
    llava(ids, pixel_values=px, labels=ids).loss.backward()
    opt.step()
    assert all(not torch.equal(before[k], v) for k, v in p.items())


def test_the_package_refuses_another_libtorch(tmp_path):
    """LibTorch's C++ ABI changes between releases: a consumer that found another torch linked and
    then failed at run time. The installed package names both versions at configure time."""
    cmake = shutil.which("cmake", path=os.path.dirname(sys.executable)) or shutil.which("cmake")
    (tmp_path / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.22)\nproject(other_torch LANGUAGES NONE)\n"
        "set(Torch_FOUND TRUE)\nset(Torch_VERSION 2.0.0)\nfind_package(tessera REQUIRED)\n")
    done = subprocess.run([cmake, "-S", str(tmp_path), "-B", str(tmp_path / "build"),
                           f"-DCMAKE_PREFIX_PATH={tessera.cmake_prefix_path}"], capture_output=True, text=True)
    assert done.returncode != 0
    assert "tessera was built against LibTorch" in done.stderr and "found 2.0.0" in done.stderr
    assert "tessera::tessera" not in done.stderr  # refused before its targets are imported
