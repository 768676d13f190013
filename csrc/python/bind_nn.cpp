// Python bindings of the node protocol (csrc/tessera/nn/module.h, layer.h, encoder.h): what
// tessera.CppModule calls on the C++ nodes it mirrors, by the addresses that bind_module's
// `nodes()` reports (the root module, held by the Python tree, keeps them alive).
#include "bindings.h"
#include "node_address.h"
#include "outputs.h"

#include "tessera/models/clip/clip_layout.h"
#include "tessera/models/llama/llama_layout.h"
#include "tessera/models/vit/vit_layout.h"
#include "tessera/nn/embedding.h"
#include "tessera/nn/encoder.h"
#include "tessera/nn/layer.h"
#include "tessera/nn/linear.h"
#include "tessera/nn/module.h"
#include "tessera/nn/norm.h"
#include "tessera/nn/patch_embed.h"

#include <torch/csrc/autograd/python_variable.h>
#include <torch/nn/module.h>

#include <cstdint>
#include <map>
#include <memory>

namespace tessera::python {
namespace {

// A Python callable held from C++: released with the GIL taken, whichever thread drops it.
std::shared_ptr<py::object> hold(py::object fn) {
  return std::shared_ptr<py::object>(new py::object(std::move(fn)), [](py::object* o) {
    py::gil_scoped_acquire gil;
    delete o;
  });
}

}  // namespace

void bind_nn(py::module_& m) {
  using nn::LayerArgs;
  py::class_<LayerArgs>(m, "LayerArgs", "What a transformer layer receives besides its hidden states.")
      .def(py::init<>())
      .def_readonly("mask", &LayerArgs::mask)
      .def_readonly("causal", &LayerArgs::causal)
      .def_readonly("position_bias", &LayerArgs::position_bias)
      .def_readonly("context", &LayerArgs::context)
      .def_readonly("context_mask", &LayerArgs::context_mask)
      .def_readonly("query_length", &LayerArgs::query_length)
      .def_readonly("grid_h", &LayerArgs::grid_h)
      .def_readonly("grid_w", &LayerArgs::grid_w)
      .def_readonly("rope_cos", &LayerArgs::rope_cos)
      .def_readonly("rope_sin", &LayerArgs::rope_sin)
      .def_readonly("layer_idx", &LayerArgs::layer_idx)
      .def("tensors", &LayerArgs::tensors, "The tensors in a fixed order (None where unused).")
      .def("with_tensors", &LayerArgs::with_tensors, py::arg("tensors"), "A copy holding these tensors.")
      .def("__repr__", [](const LayerArgs& a) {
        return "LayerArgs(layer_idx=" + std::to_string(a.layer_idx) + ", causal=" + (a.causal ? "True" : "False") +
               ", mask=" + (a.mask.defined() ? "tensor" : "None") + ")";
      });

  m.def(
      "add_lora",
      [](uintptr_t node, int64_t r, double alpha, double dropout, bool rslora) {
        nn::LoraOptions o;
        o.r = r;
        o.alpha = alpha;
        o.dropout = dropout;
        o.use_rslora = rslora;
        node_as<nn::LinearImpl>(node, "a linear layer").add_lora(o);
      },
      py::arg("node"), py::arg("r"), py::arg("alpha"), py::arg("dropout") = 0.0, py::arg("use_rslora") = false,
      "Adds a LoRA adapter (lora_A, lora_B) to a linear node.");
  m.def(
      "merge_lora",
      [](uintptr_t node, bool merge) {
        auto& lin = node_as<nn::LinearImpl>(node, "a linear layer");
        merge ? lin.merge_lora() : lin.unmerge_lora();
      },
      py::arg("node"), py::arg("merge") = true, "Folds the adapter into the weight (or takes it out again).");
  m.def(
      "set_int8_decoding",
      [](uintptr_t node, bool on) { node_as<nn::LinearImpl>(node, "a linear layer").set_int8_decoding(on); },
      py::arg("node"), py::arg("on") = true, "Decoding steps read an int8 copy of the weight (or stop to).");
  // transformers' get_input_embeddings() / get_output_embeddings() are modules users call
  // (inputs_embeds, logits from hidden states): these nodes run their own C++ forward.
  m.def(
      "run_linear",
      [](uintptr_t node, const at::Tensor& x) {
        auto& lin = node_as<nn::LinearImpl>(node, "a linear layer");
        return without_gil([&] { return lin.forward(x); });
      },
      py::arg("node"), py::arg("input"), "A linear node's forward (its LoRA adapter included).");
  m.def(
      "run_embedding",
      [](uintptr_t node, const at::Tensor& ids) {
        auto& emb = node_as<nn::EmbeddingImpl>(node, "an embedding");
        return without_gil([&] { return emb.forward(ids); });
      },
      py::arg("node"), py::arg("input"), "An embedding node's forward (ids checked against its size).");
  m.def(
      "leaf_attributes",
      [](uintptr_t node) {
        // The attributes torch.nn's class of the same name carries, for tessera's own leaves, so
        // their Python nodes can be instances of it (None for any other module).
        py::dict d;
        torch::nn::Module* m = node_at(node);
        if (auto* lin = dynamic_cast<nn::LinearImpl*>(m)) {
          d["in_features"] = lin->in_features;
          d["out_features"] = lin->out_features;
        } else if (auto* emb = dynamic_cast<nn::EmbeddingImpl*>(m)) {
          d["num_embeddings"] = emb->num_embeddings;
          d["embedding_dim"] = emb->embedding_dim;
          d["padding_idx"] = emb->padding_idx >= 0 ? py::object(py::int_(emb->padding_idx)) : py::none();
        } else if (auto* norm = dynamic_cast<nn::NormImpl*>(m)) {
          d["normalized_shape"] = py::make_tuple(norm->dim);
          d["eps"] = norm->eps;
        } else if (auto* patch = dynamic_cast<nn::PatchEmbedImpl*>(m)) {
          const int64_t p = patch->options.patch_size();
          d["in_channels"] = patch->options.in_channels();
          d["out_channels"] = patch->options.embed_dim();
          d["kernel_size"] = py::make_tuple(p, p);
          d["stride"] = py::make_tuple(p, p);
        } else {
          return py::object(py::none());
        }
        return py::object(d);
      },
      py::arg("node"), "The torch.nn attributes of a tessera leaf (Linear, Embedding, LayerNorm/RMSNorm, Conv2d).");
  m.def(
      "node_module",
      [](uintptr_t node) {
        // The bound Python class of the node's most-derived C++ class (pybind resolves it through
        // RTTI), referring to the node without copying it: a tower inside a parent is called with
        // the forward its own model class binds.
        torch::nn::Module* m = node_at(node);
        if (py::detail::get_type_info(typeid(*m)) == nullptr)  // else pybind answers a bound base class
          throw py::type_error("this C++ module (" + m->name() + ") has no Python binding of its own");
        return py::cast(m, py::return_value_policy::reference);
      },
      py::arg("node"), "The C++ module at `node` as its bound Python class (for a part's own forward).");
  m.def(
      "rebind_parameter",
      [](uintptr_t node, const std::string& name, const at::Tensor& tensor) {
        node_as<nn::ModuleBase>(node, "a tessera module (derive from tessera::nn::Module to let Python rebind its "
                                      "parameters)")
            .rebind_parameter(name, tensor);
      },
      py::arg("node"), py::arg("name"), py::arg("tensor"),
      "Points a node's parameter slot at `tensor`; its forward uses it from then on.");
  m.def(
      "set_training", [](uintptr_t node, bool mode) { node_at(node)->train(mode); }, py::arg("node"),
      py::arg("mode"), "Sets a node's training flag and its children's (dropout, drop path, batch norms).");
  m.def(
      "run_layer",
      [](uintptr_t encoder, int64_t index, const at::Tensor& x, const LayerArgs& args) {
        auto& enc = node_as<nn::EncoderImpl>(encoder, "an encoder");
        return without_gil([&] { return enc.run_layer(index, x, args); });
      },
      py::arg("encoder"), py::arg("index"), py::arg("hidden_states"), py::arg("args"),
      "Runs one layer of an encoder in C++ (checkpointed when gradient checkpointing is on).");
  m.def(
      "set_layer_caller",
      [](uintptr_t encoder, py::object fn) {
        auto& enc = node_as<nn::EncoderImpl>(encoder, "an encoder");
        if (fn.is_none()) return enc.set_layer_caller(nullptr);
        auto held = hold(std::move(fn));
        enc.set_layer_caller([held](int64_t i, const at::Tensor& x, const LayerArgs& args) {
          py::gil_scoped_acquire gil;
          py::object y = (*held)(i, x, args);
          TORCH_CHECK_TYPE(THPVariable_Check(y.ptr()), "layer ", i, " returned ", py::str(py::type::of(y)).cast<std::string>(),
                           ", expected a tensor of hidden states");
          return y.cast<at::Tensor>();
        });
      },
      py::arg("encoder"), py::arg("caller"),
      "Routes an encoder's layer calls through caller(index, hidden_states, args) (None: C++ again).");
  m.def(
      "layer_parameter_shapes",
      [](const std::string& layout, int64_t hidden, int64_t heads, int64_t kv_heads, int64_t intermediate) {
        nn::TransformerBlockOptions o(hidden, heads, intermediate);
        nn::BlockLayout l;
        if (layout == "clip") {
          l = models::clip_layer_layout();
        } else if (layout == "vit") {
          l = models::vit_layer_layout();
        } else if (layout == "llama") {
          o = models::llama_block_options(hidden, heads, kv_heads, intermediate, 1e-6);
          l = models::llama_layer_layout();
        } else {
          TORCH_CHECK_VALUE(false, "unknown layout '", layout, "' (clip, vit, llama)");
        }
        std::map<std::string, std::vector<int64_t>> shapes;
        for (const auto& p : nn::TransformerBlock(o, l)->named_parameters()) shapes[p.key()] = p->sizes().vec();
        return shapes;
      },
      py::arg("layout"), py::arg("hidden_size"), py::arg("num_heads"), py::arg("num_kv_heads"),
      py::arg("intermediate_size"), "{name: shape} of one layer in a family's layout (tests against transformers).");
  m.def("init_enabled", &nn::init_enabled, "False while models skip their random initialisation.");
  m.def("set_init_enabled", &nn::set_init_enabled, py::arg("enabled"), "Returns the previous value.");
  m.def("set_meta_parameters", &nn::set_meta_parameters, py::arg("on"),
        "Whether models built on this thread make their parameters on the meta device; returns the previous value.");
  // A context manager: `with _C.nn.ParameterBudget(): Model(config)` refuses a model too large for
  // this machine before its weights are initialised.
  struct BudgetScope {
    std::unique_ptr<nn::ParameterBudget> guard;
  };
  py::class_<BudgetScope>(m, "ParameterBudget")
      .def(py::init<>())
      .def("__enter__", [](BudgetScope& s) { s.guard = std::make_unique<nn::ParameterBudget>(); })
      .def("__exit__", [](BudgetScope& s, py::args) { s.guard.reset(); });
}

namespace {
const bool registered = register_submodule("nn", "layer arguments and the node protocol of the Python module tree", &bind_nn, 1);
}  // namespace

}  // namespace tessera::python
