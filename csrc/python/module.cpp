// The tessera._C extension: one submodule per family and per core area, each bound in its own
// bind_<name>.cpp, which registers itself (bindings.h).
#include "bindings.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <cstring>
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

std::vector<std::string>& duplicates() {
  static std::vector<std::string> names;
  return names;
}

}  // namespace

// Called by static initialisers, which must not throw (that ends the process before Python can
// report it): a name registered twice is refused when the module is imported.
bool register_submodule(const char* name, const char* doc, BindFunction bind, int order) {
  for (const auto& s : submodules()) {
    if (s.name == name) {
      duplicates().push_back(name);
      return false;
    }
  }
  submodules().push_back({order, name, doc, bind});
  return true;
}

void bind_submodules(py::module_& m) {
  if (!duplicates().empty()) {  // an ImportError naming it
    throw std::logic_error("tessera._C: submodule '" + duplicates().front() + "' registered twice");
  }
  auto all = submodules();
  std::sort(all.begin(), all.end(),
            [](const Submodule& a, const Submodule& b) { return std::tie(a.order, a.name) < std::tie(b.order, b.name); });
  for (const auto& s : all) {
    auto sub = m.def_submodule(s.name.c_str(), s.doc.c_str());
    s.bind(sub);
  }
}

// Messages quote file contents and names, which need not be UTF-8: PyErr_SetString would then
// raise a UnicodeDecodeError in place of the error (and lose its message); undecodable bytes are
// shown as \xNN instead.
void set_error(PyObject* type, const char* message) {
  PyObject* text = PyUnicode_DecodeUTF8(message, static_cast<Py_ssize_t>(std::strlen(message)), "backslashreplace");
  if (!text) return;  // out of memory: that error stands
  PyErr_SetObject(type, text);
  Py_DECREF(text);
}

void register_error_translator(py::module_&) {
  py::register_local_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const c10::ValueError& e) {
      set_error(PyExc_ValueError, e.what_without_backtrace());
    } catch (const c10::IndexError& e) {
      set_error(PyExc_IndexError, e.what_without_backtrace());
    } catch (const c10::TypeError& e) {
      set_error(PyExc_TypeError, e.what_without_backtrace());
    } catch (const c10::Error& e) {
      set_error(PyExc_RuntimeError, e.what_without_backtrace());
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
