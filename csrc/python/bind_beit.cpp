// Python bindings of models/beit (BeitForMaskedImageModeling, BeitModel).
#include "bindings.h"
#include "family_binding.h"
#include "node_address.h"
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
      .def_static("config_fields", [] { return core::field_docs_json<BeitOptions>().dump(); })
      .def("set_gradient_checkpointing", &BeitModelImpl::set_gradient_checkpointing, py::arg("enable"))
      .def("init_weights", &BeitModelImpl::init_weights, py::call_guard<py::gil_scoped_release>())
      .def(
          "forward",
          [](BeitModelImpl& self, const at::Tensor& px, const std::optional<at::Tensor>& mask, bool hidden) {
            return output_to_dict(without_gil([&] { return self.forward(px, opt(mask), hidden); }));
          },
          py::arg("pixel_values"), py::arg("bool_masked_pos") = py::none(), py::arg("output_hidden_states") = false);
  // timm's feature API on the encoder wherever it sits (BeitModel's root, BeitForMaskedImageModeling.beit).
  // interpolate_pos_encoding is taken as the other towers take it and ignored: BEiT always resizes.
  m.def(
      "forward_intermediates",
      [](uintptr_t node, const at::Tensor& px, const FeatureIndices& indices, bool norm, bool stop_early, bool) {
        auto& self = node_as<BeitModelImpl>(node, "a BEiT encoder");
        const auto take = feature_indices(indices, self.encoder->num_layers);
        return output_to_dict(without_gil([&] { return self.forward_intermediates(px, take, norm, stop_early); }));
      },
      py::arg("node"), py::arg("pixel_values"), py::arg("indices") = py::none(), py::arg("norm") = false,
      py::arg("stop_early") = false, py::arg("interpolate_pos_encoding") = false);
  def_image_head<BeitModelImpl>(m, "forward_head", "a BEiT encoder");
}

namespace {
const bool registered = register_submodule("beit", "BEiT (BeitForMaskedImageModeling) and its encoder", &bind_beit, 10);
}  // namespace

}  // namespace tessera::python
