// The tessera._C extension: one submodule per family, each bound in its own bind_<family>.cpp.
#include "bindings.h"

PYBIND11_MODULE(_C, m) {
  m.doc() = "tessera C++ core (LibTorch modules, tokenizers, safetensors I/O)";
  auto core = m.def_submodule("core", "safetensors, configs, registry");
  auto text = m.def_submodule("text", "CLIP BPE and sentencepiece tokenizers");
  auto clip = m.def_submodule("clip", "CLIP and its vision/text towers");
  tessera::python::bind_core(core);
  tessera::python::bind_text(text);
  tessera::python::bind_clip(clip);
  auto losses = m.def_submodule("losses", "CLIP InfoNCE and SigLIP sigmoid losses (math; gathering in Python)");
  tessera::python::bind_losses(losses);
  auto data = m.def_submodule("data", "image decoding, transforms, datasets and the threaded loader");
  tessera::python::bind_data(data);
}
