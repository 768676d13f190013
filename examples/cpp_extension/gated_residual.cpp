// A user-written module built on tessera's blocks (tessera::nn::Mlp) and exposed to Python with
// tessera's binding helper, so tessera.CppModule turns it into a torch.nn.Module. Deriving from
// tessera::nn::Module (parameters read at call time) lets FSDP2, functional_call and
// parametrizations rebind its parameters from Python.
#include <ATen/ATen.h>
#include <tessera/nn/mlp.h>
#include <tessera/nn/module.h>
#include <tessera/python/module_binding.h>

namespace py = pybind11;

/// y = x + sigmoid(gate) * mlp(x): a residual MLP whose contribution is learned.
class GatedResidualImpl : public tessera::nn::Module<GatedResidualImpl> {
 public:
  explicit GatedResidualImpl(int64_t dim) : Module("GatedResidual"), dim_(dim) { reset(); }
  void reset() override {
    mlp = register_module("mlp", tessera::nn::Mlp(tessera::nn::MlpOptions(dim_, 4 * dim_)));
    gate_ = add_parameter("gate", at::zeros({1}));
  }
  at::Tensor forward(const at::Tensor& x) const { return x + at::sigmoid(param(gate_)) * mlp->forward(x); }

  tessera::nn::Mlp mlp{nullptr};

 private:
  tessera::nn::Slot gate_;
  int64_t dim_;
};

PYBIND11_MODULE(gated_residual, m) {
  tessera::python::bind_module<GatedResidualImpl>(m, "GatedResidual")
      .def(py::init<int64_t>(), py::arg("dim"))
      .def("forward", &GatedResidualImpl::forward, py::call_guard<py::gil_scoped_release>());
}
