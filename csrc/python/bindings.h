// Declarations of the per-family binding functions that module.cpp calls. Only files in
// csrc/python include pybind11; the C++ library never does.
#pragma once
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/csrc/utils/pybind.h>

#include <c10/util/Exception.h>

#include <stdexcept>

namespace tessera::python {
namespace py = pybind11;

/// Runs f, turning c10 errors into the Python type torch would raise (TORCH_CHECK_VALUE ->
/// ValueError, ...) with the message alone: Python users need no C++ backtrace.
template <class F>
auto translate_errors(F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const c10::ValueError& e) {
    throw py::value_error(e.what_without_backtrace());
  } catch (const c10::IndexError& e) {
    throw py::index_error(e.what_without_backtrace());
  } catch (const c10::TypeError& e) {
    throw py::type_error(e.what_without_backtrace());
  } catch (const c10::Error& e) {
    throw std::runtime_error(e.what_without_backtrace());
  }
}

void bind_core(py::module_& m);
void bind_text(py::module_& m);
void bind_clip(py::module_& m);
void bind_losses(py::module_& m);
void bind_data(py::module_& m);

}  // namespace tessera::python
