// The state behind the Python streaming iterator of LLaMA and LLaVA generation.
#pragma once
#include <memory>

#include "tessera/models/llama/llama_generate.h"
#include "tessera/models/llama/llama_model.h"

namespace tessera::python {

/// Holds the language model alive while it generates (the Python iterator may outlive the name
/// it was created from).
struct Stream {
  std::shared_ptr<models::LlamaForCausalLMImpl> model;
  std::unique_ptr<models::TextGeneration> gen;
};

}  // namespace tessera::python
