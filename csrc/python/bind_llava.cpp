// Python bindings of models/llava (LlavaForConditionalGeneration, the projector registry).
#include "bindings.h"
#include "family_binding.h"
#include "generation_stream.h"
#include "outputs.h"
#include "tessera/models/llava/llava_model.h"
#include "tessera/models/llava/projector.h"

namespace tessera::python {

void bind_llava(py::module_& m) {
  using namespace models;
  bind_resolve_config<LlavaOptions>(m);
  m.def("list_projectors", &list_projectors, "Names of the registered projectors (C++ extensions add theirs).");
  bind_family_module<LlavaForConditionalGenerationImpl, LlavaOptions>(m, "LlavaForConditionalGeneration")
      .def(
          "forward",
          [](LlavaForConditionalGenerationImpl& self, const at::Tensor& ids, const std::optional<at::Tensor>& px,
             const std::optional<at::Tensor>& mask, const std::optional<at::Tensor>& labels, bool hidden) {
            return output_to_dict(
                without_gil([&] { return self.forward(ids, opt(px), opt(mask), opt(labels), hidden); }));
          },
          py::arg("input_ids"), py::arg("pixel_values") = py::none(), py::arg("attention_mask") = py::none(),
          py::arg("labels") = py::none(), py::arg("output_hidden_states") = false)
      .def(
          "embed",
          [](LlavaForConditionalGenerationImpl& self, const at::Tensor& ids, const std::optional<at::Tensor>& px) {
            return without_gil([&] { return self.embed(ids, opt(px)); });
          },
          py::arg("input_ids"), py::arg("pixel_values") = py::none())
      .def(
          "reads_normed_features",
          [](const LlavaForConditionalGenerationImpl& self) {
            return dynamic_cast<const Projector&>(*self.multi_modal_projector).reads_normed_features();
          },
          "Whether the projector reads the tower's post-normed features (its post_layernorm is used).")
      .def(
          "generate",
          [](LlavaForConditionalGenerationImpl& self, const at::Tensor& ids, const std::optional<at::Tensor>& px,
             const std::optional<at::Tensor>& mask, const GenerationOptions& options,
             std::optional<at::Generator> generator) {
            return without_gil([&] { return self.generate(ids, opt(px), opt(mask), options, generator); });
          },
          py::arg("input_ids"), py::arg("pixel_values") = py::none(), py::arg("attention_mask") = py::none(),
          py::arg("options") = GenerationOptions(), py::arg("generator") = py::none())
      .def(
          "stream",
          [](LlavaForConditionalGenerationImpl& self, const at::Tensor& ids, const std::optional<at::Tensor>& px,
             const std::optional<at::Tensor>& mask, const GenerationOptions& options,
             std::optional<at::Generator> generator) {
            Stream s{self.language_model.ptr(), nullptr};
            at::Tensor embeds = without_gil([&] { return self.embed(ids, opt(px)); });
            s.gen = std::make_unique<TextGeneration>(*s.model, ids, opt(mask), options, generator, embeds);
            return s;
          },
          py::arg("input_ids"), py::arg("pixel_values") = py::none(), py::arg("attention_mask") = py::none(),
          py::arg("options") = GenerationOptions(), py::arg("generator") = py::none());
}

namespace {
const bool registered = register_submodule("llava", "LLaVA (LlavaForConditionalGeneration) and the projector registry", &bind_llava, 11);
}  // namespace

}  // namespace tessera::python
