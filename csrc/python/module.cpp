// The tessera._C extension: one submodule per family, each bound in its own bind_<family>.cpp.
#include "bindings.h"

#include <c10/util/Exception.h>

namespace tessera::python {

void register_error_translator(py::module_&) {
  py::register_local_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const c10::ValueError& e) {
      PyErr_SetString(PyExc_ValueError, e.what_without_backtrace());
    } catch (const c10::IndexError& e) {
      PyErr_SetString(PyExc_IndexError, e.what_without_backtrace());
    } catch (const c10::TypeError& e) {
      PyErr_SetString(PyExc_TypeError, e.what_without_backtrace());
    } catch (const c10::Error& e) {
      PyErr_SetString(PyExc_RuntimeError, e.what_without_backtrace());
    }
  });
}

}  // namespace tessera::python

PYBIND11_MODULE(_C, m) {
  using namespace tessera::python;
  m.doc() = "tessera C++ core (LibTorch modules, tokenizers, safetensors I/O)";
  register_error_translator(m);
  auto core = m.def_submodule("core", "safetensors, configs, registry");
  bind_core(core);
  auto nn = m.def_submodule("nn", "layer arguments and the node protocol of the Python module tree");
  bind_nn(nn);
  auto text = m.def_submodule("text", "CLIP BPE and sentencepiece tokenizers");
  bind_text(text);
  auto clip = m.def_submodule("clip", "CLIP and its vision/text towers");
  bind_clip(clip);
  auto mae = m.def_submodule("mae", "MAE (ViTMAEForPreTraining) and its encoder");
  bind_mae(mae);
  auto beit = m.def_submodule("beit", "BEiT (BeitForMaskedImageModeling) and its encoder");
  bind_beit(beit);
  auto llama = m.def_submodule("llama", "LLaMA (LlamaForCausalLM) and its decoder");
  bind_llama(llama);
  auto llava = m.def_submodule("llava", "LLaVA (LlavaForConditionalGeneration) and the projector registry");
  bind_llava(llava);
  auto losses = m.def_submodule("losses", "CLIP InfoNCE and SigLIP sigmoid losses (math; gathering in Python)");
  bind_losses(losses);
  auto data = m.def_submodule("data", "image decoding, transforms, datasets and the threaded loader");
  bind_data(data);
}
