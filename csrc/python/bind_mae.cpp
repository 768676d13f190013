// Python bindings of models/mae (ViTMAEForPreTraining, ViTMAEModel).
#include "bindings.h"
#include "family_binding.h"
#include "node_address.h"
#include "outputs.h"
#include "tessera/models/mae/mae_model.h"

namespace tessera::python {

void bind_mae(py::module_& m) {
  using namespace models;
  bind_resolve_config<MaeOptions>(m);
  m.def("sincos_pos_embed", &mae_sincos_pos_embed, py::arg("dim"), py::arg("grid"));
  bind_family_module<MaeForPreTrainingImpl, MaeOptions>(m, "MaeForPreTraining")
      .def(
          "forward",
          [](MaeForPreTrainingImpl& self, const at::Tensor& px, const std::optional<at::Tensor>& noise, bool hidden,
             bool interpolate) {
            return output_to_dict(without_gil([&] { return self.forward(px, opt(noise), hidden, interpolate); }));
          },
          py::arg("pixel_values"), py::arg("noise") = py::none(), py::arg("output_hidden_states") = false,
          py::arg("interpolate_pos_encoding") = false)
      .def("patchify", &MaeForPreTrainingImpl::patchify, py::arg("pixel_values"),
           py::arg("interpolate_pos_encoding") = false, py::call_guard<py::gil_scoped_release>())
      .def("unpatchify", &MaeForPreTrainingImpl::unpatchify, py::arg("patches"), py::arg("height") = 0,
           py::arg("width") = 0, py::call_guard<py::gil_scoped_release>());
  bind_family_module<MaeModelImpl, MaeOptions>(m, "MaeModel")
      .def(
          "forward",
          [](MaeModelImpl& self, const at::Tensor& px, const std::optional<at::Tensor>& noise, bool hidden,
             bool interpolate) {
            return output_to_dict(without_gil([&] { return self.forward(px, opt(noise), hidden, interpolate); }));
          },
          py::arg("pixel_values"), py::arg("noise") = py::none(), py::arg("output_hidden_states") = false,
          py::arg("interpolate_pos_encoding") = false);
  // timm's feature API on the encoder wherever it sits (ViTMAEModel's root, ViTMAEForPreTraining.vit).
  def_image_intermediates<MaeModelImpl>(m, "forward_intermediates", "an MAE encoder");
  def_image_head<MaeModelImpl>(m, "forward_head", "an MAE encoder");
}

namespace {
const bool registered = register_submodule("mae", "MAE (ViTMAEForPreTraining) and its encoder", &bind_mae, 10);
}  // namespace

}  // namespace tessera::python
