// Binding helper for C++ modules (ours and users'): exposes what tessera.CppModule needs to
// mirror a torch::nn::Module as a Python torch.nn.Module over the very same tensors, node by node.
// Include only from a pybind11 extension (it pulls in pybind11 and torch's Python headers).
//
/// Example (a user extension):
///   PYBIND11_MODULE(my_ext, m) {
///     tessera::python::bind_module<MyBlockImpl>(m, "MyBlock")
///         .def(py::init<int64_t>())
///         .def("forward", &MyBlockImpl::forward, py::call_guard<py::gil_scoped_release>());
///   }
///   # Python: block = tessera.CppModule(my_ext.MyBlock(64))
#pragma once
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/csrc/utils/pybind.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>

#include "tessera/nn/encoder.h"
#include "tessera/nn/module.h"

#include <cstdint>
#include <memory>
#include <sstream>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace tessera::python {

namespace detail {
inline std::vector<std::pair<std::string, at::Tensor>> items(const torch::OrderedDict<std::string, at::Tensor>& d) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& kv : d) out.emplace_back(kv.key(), kv.value());
  return out;
}

/// (path, Python class name, kind, address) of every module: kind is "encoder" (an nn::Encoder,
/// whose layers Python calls), "layer" (an nn::Layer), "list" (a ModuleList), "module" (another
/// tessera module) or "torch" (a LibTorch module: its parameters cannot be rebound).
inline std::vector<std::tuple<std::string, std::string, std::string, uintptr_t>> nodes(torch::nn::Module& root) {
  std::vector<std::tuple<std::string, std::string, std::string, uintptr_t>> out;
  for (const auto& item : root.named_modules("", /*include_self=*/true)) {
    torch::nn::Module* m = item.value().get();
    const auto* base = dynamic_cast<const nn::ModuleBase*>(m);
    std::string kind = dynamic_cast<nn::EncoderImpl*>(m)                ? "encoder"
                       : dynamic_cast<nn::Layer*>(m)                    ? "layer"
                       : dynamic_cast<torch::nn::ModuleListImpl*>(m)    ? "list"
                       : base                                           ? "module"
                                                                        : "torch";
    std::string cls = base ? base->class_name() : m->name();
    out.emplace_back(item.key(), cls, kind, reinterpret_cast<uintptr_t>(m));
  }
  return out;
}
}  // namespace detail

/// Binds `T` (a torch::nn::Module subclass, held by shared_ptr) with the module protocol that
/// tessera.CppModule uses: named_parameters, named_buffers, nodes, train, is_training, clone.
template <typename T>
pybind11::class_<T, std::shared_ptr<T>> bind_module(pybind11::module_& m, const char* name) {
  namespace py = pybind11;
  return py::class_<T, std::shared_ptr<T>>(m, name, py::module_local())
      .def("named_parameters", [](T& self) { return detail::items(self.named_parameters(true)); })
      .def("named_buffers", [](T& self) { return detail::items(self.named_buffers(true)); })
      .def("nodes", [](T& self) { return detail::nodes(self); })
      .def("train", [](T& self, bool mode) { self.train(mode); }, py::arg("mode") = true)
      .def("is_training", [](T& self) { return self.is_training(); })
      .def("clone", [](T& self) { return std::dynamic_pointer_cast<T>(self.clone()); })
      .def("__repr__", [](T& self) {
        std::ostringstream ss;
        self.pretty_print(ss);
        return ss.str();
      });
}

}  // namespace tessera::python
