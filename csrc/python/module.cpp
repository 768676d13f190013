// The tessera._C extension: one submodule per family and per core area, each bound in its own
// bind_<name>.cpp, which registers itself (bindings.h).
#include "bindings.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

namespace tessera::python {
namespace {

struct Submodule {
  int order;
  std::string name, doc;
  BindFunction bind;
};

std::vector<Submodule>& submodules() {
  static std::vector<Submodule> all;  // filled by static initialisers before the module loads
  return all;
}

}  // namespace

bool register_submodule(const char* name, const char* doc, BindFunction bind, int order) {
  for (const auto& s : submodules()) {
    if (s.name == name) throw std::logic_error(std::string("tessera._C: submodule '") + name + "' registered twice");
  }
  submodules().push_back({order, name, doc, bind});
  return true;
}

void bind_submodules(py::module_& m) {
  auto all = submodules();
  std::sort(all.begin(), all.end(),
            [](const Submodule& a, const Submodule& b) { return std::tie(a.order, a.name) < std::tie(b.order, b.name); });
  for (const auto& s : all) {
    auto sub = m.def_submodule(s.name.c_str(), s.doc.c_str());
    s.bind(sub);
  }
}

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
  bind_submodules(m);
}
