"""torch.compile over tessera modules: each is one opaque call (its math is C++, which Dynamo
cannot trace), so compiling a model, compiling each layer as torchtitan does, or compiling a
training step that calls a model gives eager's numbers without a single recompilation (tracing
the glue had specialised on every layer's index and recompiled until Dynamo's limit)."""
import os
import subprocess
import sys

import pytest
import torch
import torch._dynamo

import tessera
from test_contract import EXAMPLES


@pytest.fixture
def no_recompiles():
    """Any recompilation fails the test (one compilation per code object and input shapes)."""
    torch._dynamo.reset()
    with torch._dynamo.config.patch(recompile_limit=1, fail_on_recompile_limit_hit=True):
        yield
    torch._dynamo.reset()


def test_compiled_model_equals_eager_without_recompiling(no_recompiles):
    config, inputs, _ = EXAMPLES["CLIPModel"][:3]
    model = tessera.CLIPModel(config).eval()
    x = inputs(model.config)
    eager = model(**x).logits_per_image
    compiled = torch.compile(model)
    for _ in range(3):
        torch.testing.assert_close(compiled(**x).logits_per_image, eager, rtol=0, atol=0)


def test_per_layer_compile_trains_as_eager(no_recompiles):
    """torchtitan's pattern: every decoder layer compiled; a training step equals eager's."""
    config, inputs, loss_of = EXAMPLES["LlamaForCausalLM"][:3]
    eager, compiled = tessera.LlamaForCausalLM(config), tessera.LlamaForCausalLM(config)
    compiled.load_state_dict(eager.state_dict())
    for layer in compiled.model.layers:
        layer.compile()
    x = inputs(config)

    @torch.compile
    def step(model):
        return loss_of(model(**x)) * 2.0  # traced around the opaque model call

    for model, run in ((eager, lambda m: loss_of(m(**x)) * 2.0), (compiled, step)):
        run(model).backward()
    torch.testing.assert_close(step(compiled), loss_of(eager(**x)) * 2.0, rtol=0, atol=0)
    for (name, a), b in zip(eager.named_parameters(), compiled.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=0, atol=0, msg=name)


class ScaledClip(tessera.CLIPModel):
    """A user's subclass whose forward adds Python around tessera's: that part compiles."""

    def forward(self, **kwargs):
        return super().forward(**kwargs).logits_per_image.softmax(-1) * 3.0


def test_a_users_subclass_compiles_its_own_code(no_recompiles):
    config, inputs, _ = EXAMPLES["CLIPModel"][:3]
    model = ScaledClip(config).eval()
    assert not hasattr(ScaledClip.forward, "__wrapped__") and hasattr(tessera.CLIPModel.forward, "__wrapped__")
    x = inputs(model.config)
    eager = model(**x)
    compiled = torch.compile(model)
    for _ in range(2):  # inductor fuses the softmax: its rounding, not eager's (3e-8 apart seen)
        torch.testing.assert_close(compiled(**x), eager, rtol=1e-6, atol=1e-7)


def test_import_leaves_dynamo_out_and_compile_still_sees_one_opaque_call():
    """`import tessera` no longer imports torch._dynamo (over 1 s); a process that compiles after
    importing tessera gets every tessera forward wrapped once Dynamo loads, so nothing recompiles:
    also after a lookup of Dynamo that imported nothing, and through a forward kept from before
    (accelerate keeps one), whose layer calls still stop the tracing."""
    script = """
import importlib.util, sys
import tessera
assert "torch._dynamo" not in sys.modules, "import tessera imported torch._dynamo"
from test_contract import EXAMPLES
config, inputs, _ = EXAMPLES["CLIPModel"][:3]
model = tessera.CLIPModel(config).eval()
kept = model.forward  # bound before Dynamo loads: the forward as it was then
importlib.util.find_spec("torch._dynamo")  # finds the module, imports nothing
import torch, torch._dynamo
assert model.vision_model.encoder.layers[0].forward._torchdynamo_disable
x = inputs(model.config)
eager = model(**x).logits_per_image
with torch._dynamo.config.patch(recompile_limit=1, fail_on_recompile_limit_hit=True):
    for compiled in (torch.compile(model), torch.compile(lambda **x: kept(**x))):
        for _ in range(3):
            torch.testing.assert_close(compiled(**x).logits_per_image, eager, rtol=0, atol=0)
print("ok")
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                         cwd=os.path.dirname(__file__))
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-3000:]
