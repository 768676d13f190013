// Python bindings of models/llama (LlamaForCausalLM).
#include "bindings.h"
#include "family_binding.h"
#include "generation_stream.h"
#include "node_address.h"
#include "outputs.h"
#include "tessera/models/llama/llama_generate.h"
#include "tessera/models/llama/llama_model.h"

namespace tessera::python {

namespace {

// A Python callable as a generation hook, where C++ runs without the GIL. C++ holds only a weak
// reference: the Python options object keeps the callable (its `_hooks`), where the garbage
// collector sees it, so a hook that refers back to its own stream is still collected. The GIL is
// taken to call it and to drop the reference; a Python exception reaches the caller as is.
models::StepHook python_hook(const py::object& fn, const char* name) {
  if (fn.is_none()) return {};
  if (!PyCallable_Check(fn.ptr()))
    throw py::type_error(std::string(name) + " must be callable (ids, scores), got " +
                         py::str(py::type::of(fn).attr("__name__")).cast<std::string>());
  std::shared_ptr<py::weakref> held(new py::weakref(fn), [](py::weakref* f) {
    py::gil_scoped_acquire gil;
    delete f;
  });
  const std::string what = name;
  return [held, what](const at::Tensor& ids, const at::Tensor& scores) {
    py::gil_scoped_acquire gil;
    py::object fn = (*held)();
    if (fn.is_none()) throw py::value_error(what + ": the callable was freed before generation ended");
    return fn(ids, scores.defined() ? py::cast(scores) : py::none()).cast<at::Tensor>();
  };
}

}  // namespace

void bind_llama(py::module_& m) {
  using namespace models;
  bind_resolve_config<LlamaOptions>(m);
  m.def(
      "rope_inv_freq",
      [](const std::string& config_json, int64_t seq_len) {
        auto o = LlamaOptions::from_json(nlohmann::json::parse(config_json), "config");
        return nn::rope_inv_freq(o.rope(), o.dim_per_head(), o.max_position_embeddings(), seq_len, at::kCPU);
      },
      py::arg("config_json"), py::arg("seq_len") = 0, "The rotary inverse frequencies of a LLaMA config.");
  m.def(
      "set_vocabulary",
      [](uintptr_t node, const at::Tensor& embed, const std::optional<at::Tensor>& head) {
        node_as<ResizableVocabulary>(node, "a model with a LLaMA language model")
            .set_vocabulary(embed, head.value_or(at::Tensor()));
      },
      py::arg("node"), py::arg("embed"), py::arg("head") = py::none(),
      "Installs resized token tables (resize_token_embeddings) and the sizes that follow them.");
  py::class_<GenerationRecord, std::shared_ptr<GenerationRecord>>(
      m, "GenerationRecord", "What generate returns beside the ids (transformers' return_dict_in_generate).")
      .def(py::init<>())
      .def_readwrite("keep_scores", &GenerationRecord::keep_scores)
      .def_readwrite("keep_logits", &GenerationRecord::keep_logits)
      .def_readonly("scores", &GenerationRecord::scores)
      .def_readonly("logits", &GenerationRecord::logits)
      .def_readonly("sequences_scores", &GenerationRecord::sequences_scores)
      .def_readonly("beam_indices", &GenerationRecord::beam_indices);
  py::class_<GenerationOptions>(m, "GenerationOptions", py::dynamic_attr(), "transformers' GenerationConfig fields.")
      .def(py::init<>())
      .def_readwrite("max_new_tokens", &GenerationOptions::max_new_tokens)
      .def_readwrite("do_sample", &GenerationOptions::do_sample)
      .def_readwrite("temperature", &GenerationOptions::temperature)
      .def_readwrite("top_k", &GenerationOptions::top_k)
      .def_readwrite("top_p", &GenerationOptions::top_p)
      .def_readwrite("min_p", &GenerationOptions::min_p)
      .def_readwrite("typical_p", &GenerationOptions::typical_p)
      .def_readwrite("epsilon_cutoff", &GenerationOptions::epsilon_cutoff)
      .def_readwrite("eta_cutoff", &GenerationOptions::eta_cutoff)
      .def_readwrite("repetition_penalty", &GenerationOptions::repetition_penalty)
      .def_readwrite("no_repeat_ngram_size", &GenerationOptions::no_repeat_ngram_size)
      .def_readwrite("eos_token_ids", &GenerationOptions::eos_token_ids)
      .def_readwrite("pad_token_id", &GenerationOptions::pad_token_id)
      .def_readwrite("pad_rows_without_stop_ids", &GenerationOptions::pad_rows_without_stop_ids)
      .def_readwrite("use_cache", &GenerationOptions::use_cache)
      .def_readwrite("num_beams", &GenerationOptions::num_beams)
      .def_readwrite("length_penalty", &GenerationOptions::length_penalty)
      .def_property(
          "early_stopping",
          [](const GenerationOptions& o) -> py::object {
            if (o.early_stopping == EarlyStopping::kNever) return py::str("never");
            return py::bool_(o.early_stopping == EarlyStopping::kFirst);
          },
          [](GenerationOptions& o, const py::object& value) {
            if (py::isinstance<py::bool_>(value)) {
              o.early_stopping = value.cast<bool>() ? EarlyStopping::kFirst : EarlyStopping::kHeuristic;
            } else if (py::isinstance<py::str>(value) && value.cast<std::string>() == "never") {
              o.early_stopping = EarlyStopping::kNever;
            } else {
              throw py::value_error("early_stopping: expected True, False or 'never', got " +
                                    py::repr(value).cast<std::string>());
            }
          })
      .def_readwrite("num_return_sequences", &GenerationOptions::num_return_sequences)
      .def_readwrite("min_new_tokens", &GenerationOptions::min_new_tokens)
      .def_readwrite("sequence_bias", &GenerationOptions::sequence_bias)
      .def_readwrite("bad_words_ids", &GenerationOptions::bad_words_ids)
      .def_readwrite("forced_bos_token_id", &GenerationOptions::forced_bos_token_id)
      .def_readwrite("forced_eos_token_ids", &GenerationOptions::forced_eos_token_ids)
      .def_readwrite("exponential_decay_length_penalty", &GenerationOptions::exponential_decay_length_penalty)
      .def_readwrite("suppress_tokens", &GenerationOptions::suppress_tokens)
      .def_readwrite("begin_suppress_tokens", &GenerationOptions::begin_suppress_tokens)
      .def_readwrite("direct_layer_calls", &GenerationOptions::direct_layer_calls)
      .def_readwrite("record", &GenerationOptions::record)
      .def_property(
          "prefix_constraint", [](const GenerationOptions& o) { return static_cast<bool>(o.prefix_constraint); },
          [](GenerationOptions& o, const py::object& fn) {
            o.prefix_constraint = python_hook(fn, "prefix_allowed_tokens_fn");
          })
      .def_property(
          "logits_processor", [](const GenerationOptions& o) { return static_cast<bool>(o.logits_processor); },
          [](GenerationOptions& o, const py::object& fn) { o.logits_processor = python_hook(fn, "logits_processor"); })
      .def_property(
          "stopping_criteria", [](const GenerationOptions& o) { return static_cast<bool>(o.stopping_criteria); },
          [](GenerationOptions& o, const py::object& fn) { o.stopping_criteria = python_hook(fn, "stopping_criteria"); });
  py::class_<Stream>(m, "TextGeneration", "Token-by-token generation (the streaming iterator's engine).")
      .def("next", [](Stream& s) {
        return without_gil([&] { return s.gen->next(); });
      })
      .def("done", [](const Stream& s) { return s.gen->done(); })
      .def("sequences", [](const Stream& s) { return s.gen->sequences(); });
  bind_family_module<LlamaForCausalLMImpl, LlamaOptions>(m, "LlamaForCausalLM")
      .def(
          "generate",
          [](LlamaForCausalLMImpl& self, const at::Tensor& ids, const std::optional<at::Tensor>& mask,
             const GenerationOptions& options, std::optional<at::Generator> generator,
             const std::optional<at::Tensor>& embeds) {
            return without_gil([&] { return generate(self, ids, opt(mask), options, generator, opt(embeds)); });
          },
          py::arg("input_ids"), py::arg("attention_mask") = py::none(), py::arg("options") = GenerationOptions(),
          py::arg("generator") = py::none(), py::arg("inputs_embeds") = py::none())
      .def(
          "stream",
          [](std::shared_ptr<LlamaForCausalLMImpl> self, const at::Tensor& ids, const std::optional<at::Tensor>& mask,
             const GenerationOptions& options, std::optional<at::Generator> generator,
             const std::optional<at::Tensor>& embeds) {
            Stream s{self, nullptr};
            s.gen = std::make_unique<TextGeneration>(*self, ids, opt(mask), options, generator, opt(embeds));
            return s;
          },
          py::arg("input_ids"), py::arg("attention_mask") = py::none(), py::arg("options") = GenerationOptions(),
          py::arg("generator") = py::none(), py::arg("inputs_embeds") = py::none())
      .def(
          "forward",
          [](LlamaForCausalLMImpl& self, const std::optional<at::Tensor>& ids, const std::optional<at::Tensor>& mask,
             const std::optional<at::Tensor>& pos, const std::optional<at::Tensor>& embeds,
             const std::optional<at::Tensor>& labels, bool hidden, int64_t keep) {
            return output_to_dict(without_gil([&] {
              return self.forward(opt(ids), opt(mask), opt(pos), opt(embeds), opt(labels), hidden, nullptr, keep);
            }));
          },
          py::arg("input_ids") = py::none(), py::arg("attention_mask") = py::none(),
          py::arg("position_ids") = py::none(), py::arg("inputs_embeds") = py::none(), py::arg("labels") = py::none(),
          py::arg("output_hidden_states") = false, py::arg("logits_to_keep") = 0);
}

namespace {
const bool registered = register_submodule("llama", "LLaMA (LlamaForCausalLM) and its decoder", &bind_llama, 10);
}  // namespace

}  // namespace tessera::python
