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

void bind_core(py::module_& m);
void bind_nn(py::module_& m);
void bind_text(py::module_& m);
void bind_clip(py::module_& m);
void bind_mae(py::module_& m);
void bind_beit(py::module_& m);
void bind_llama(py::module_& m);
void bind_llava(py::module_& m);
void bind_losses(py::module_& m);
void bind_data(py::module_& m);

}  // namespace tessera::python
