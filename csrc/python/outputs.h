// Output structs (models/outputs.h) to Python dicts, generically: each struct's visit_fields says
// what it holds, and "__output__" names the ModelOutput class Python builds (tessera.models.outputs).
#pragma once
#include "bindings.h"

#include <type_traits>
#include <vector>

namespace tessera::python {

template <class Out>
py::dict output_to_dict(const Out& out) {
  py::dict d;
  d["__output__"] = Out::kName;
  out.visit_fields([&](const char* key, const auto& field) {
    using F = std::decay_t<decltype(field)>;
    if constexpr (std::is_same_v<F, at::Tensor>) {
      if (field.defined()) d[key] = field;
    } else if constexpr (std::is_same_v<F, std::vector<at::Tensor>>) {
      if (!field.empty()) d[key] = py::tuple(py::cast(field));
    } else {
      d[key] = output_to_dict(field);
    }
  });
  return d;
}

}  // namespace tessera::python
