// What every family's model class binding has: construction from a config JSON string,
// config_json(), config_fields(), set_gradient_checkpointing, and the node protocol of
// tessera/python/module_binding.h.
#pragma once
#include "bindings.h"
#include "tessera/core/config_fields.h"
#include "tessera/python/module_binding.h"

#include <nlohmann/json.hpp>

#include <memory>
#include <string>

namespace tessera::python {

/// An optional tensor argument (None from Python) as an undefined tensor.
inline at::Tensor opt(const std::optional<at::Tensor>& t) { return t ? *t : at::Tensor(); }

/// The static `config_fields()` of a bound class: JSON text of Options' declared fields
/// ([{key, default, meaning}], core::field_docs), which Python's `config_fields()` reads.
template <class Options, class Class>
Class& def_config_fields(Class& c) {
  c.def_static("config_fields", [] { return core::field_docs_json<Options>().dump(); });
  return c;
}

template <class T, class Options>
py::class_<T, std::shared_ptr<T>> bind_family_module(py::module_& m, const char* name) {
  auto c = bind_module<T>(m, name);
  def_config_fields<Options>(c);
  return c.def(py::init([](const std::string& cfg) {
             return std::make_shared<T>(Options::from_json(nlohmann::json::parse(cfg), "config"));
           }),
           py::arg("config_json"))
      .def("config_json", [](T& self) { return self.options.to_json().dump(); })
      .def("set_gradient_checkpointing", &T::set_gradient_checkpointing, py::arg("enable"))
      .def("init_weights", &T::init_weights, py::call_guard<py::gil_scoped_release>());
}

/// `resolve_config(json)`: the family's full config (defaults filled in, checked) without a model.
template <class Options>
void bind_resolve_config(py::module_& m) {
  m.def(
      "resolve_config",
      [](const std::string& cfg) { return Options::from_json(nlohmann::json::parse(cfg), "config").to_json().dump(); },
      py::arg("config_json"), "The full config (defaults filled in, checked) without building a model.");
}

}  // namespace tessera::python
