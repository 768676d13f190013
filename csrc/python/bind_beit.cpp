// Python bindings of models/beit (BeitForMaskedImageModeling, BeitModel).
#include "bindings.h"
#include "family_binding.h"
#include "outputs.h"
#include "tessera/models/beit/beit_model.h"

namespace tessera::python {

void bind_beit(py::module_& m) {
  using namespace models;
  bind_resolve_config<BeitOptions>(m);
  m.def("relative_position_index", &beit_relative_position_index, py::arg("grid_h"), py::arg("grid_w"));
  bind_family_module<BeitForMaskedImageModelingImpl, BeitOptions>(m, "BeitForMaskedImageModeling")
      .def(
          "forward",
          [](BeitForMaskedImageModelingImpl& self, const at::Tensor& px, const std::optional<at::Tensor>& mask,
             const std::optional<at::Tensor>& labels, bool hidden) {
            return output_to_dict(without_gil([&] { return self.forward(px, opt(mask), opt(labels), hidden); }));
          },
          py::arg("pixel_values"), py::arg("bool_masked_pos") = py::none(), py::arg("labels") = py::none(),
          py::arg("output_hidden_states") = false);
  bind_module<BeitModelImpl>(m, "BeitModel")
      .def(py::init([](const std::string& cfg, bool pooling) {
             return std::make_shared<BeitModelImpl>(BeitOptions::from_json(nlohmann::json::parse(cfg), "config"),
                                                    pooling);
           }),
           py::arg("config_json"), py::arg("add_pooling_layer") = true)
      .def("config_json", [](BeitModelImpl& self) {
        auto j = self.options.to_json();
        j["architectures"] = {"BeitModel"};
        return j.dump();
      })
      .def("set_gradient_checkpointing", &BeitModelImpl::set_gradient_checkpointing, py::arg("enable"))
      .def(
          "forward",
          [](BeitModelImpl& self, const at::Tensor& px, const std::optional<at::Tensor>& mask, bool hidden) {
            return output_to_dict(without_gil([&] { return self.forward(px, opt(mask), hidden); }));
          },
          py::arg("pixel_values"), py::arg("bool_masked_pos") = py::none(), py::arg("output_hidden_states") = false);
}

namespace {
const bool registered = register_submodule("beit", "BEiT (BeitForMaskedImageModeling) and its encoder", &bind_beit, 10);
}  // namespace

}  // namespace tessera::python
