// Declarations of the per-family binding functions that module.cpp calls. Only files in
// csrc/python include pybind11; the C++ library never does.
#pragma once
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/csrc/utils/pybind.h>

namespace tessera::python {
namespace py = pybind11;

void bind_core(py::module_& m);
void bind_text(py::module_& m);
void bind_clip(py::module_& m);
void bind_losses(py::module_& m);
void bind_data(py::module_& m);

}  // namespace tessera::python
