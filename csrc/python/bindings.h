// Declarations of the per-family binding functions that module.cpp calls. Only files in
// csrc/python include pybind11; the C++ library never does.
#pragma once
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/csrc/utils/pybind.h>

namespace tessera::python {
namespace py = pybind11;

/// The one error-translation path of tessera._C: c10 errors become the Python type torch would
/// raise (TORCH_CHECK_VALUE -> ValueError, ...) with the message alone, no C++ backtrace.
void register_error_translator(py::module_& m);

/// Runs f with the GIL released (C++ forwards take it back only to call Python layers).
template <class F>
auto without_gil(F&& f) -> decltype(f()) {
  py::gil_scoped_release nogil;
  return f();
}

/// A submodule of tessera._C: each bind_<name>.cpp registers its own from a static initialiser,
///   namespace { const bool registered = register_submodule("foo", "doc", &bind_foo, 10); }
/// and the extension binds them in (order, name) when it loads, so a new family edits no shared
/// list. Order: 0 core, 1 nn, 2 text, 10 model families, a larger number for bindings that use
/// another family's types at definition time (LLaVA's defaults are LLaMA's GenerationOptions),
/// 20 losses and data. Registering a name twice is an error.
using BindFunction = void (*)(py::module_&);
bool register_submodule(const char* name, const char* doc, BindFunction bind, int order);
/// Creates and binds every registered submodule of `m` (module.cpp).
void bind_submodules(py::module_& m);

}  // namespace tessera::python
