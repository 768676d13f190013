// Layout paths and the build switches (no init, meta parameters, budget) of tessera modules.
#include "tessera/nn/module.h"

#include <unistd.h>

#include <cstdlib>
#include <utility>

namespace tessera::nn {
namespace {
thread_local bool g_init_enabled = true;
thread_local bool g_meta_parameters = false;
thread_local int g_budget_depth = 0;
thread_local double g_budget_bytes = 0;

int64_t parameter_byte_limit() {
  if (const char* env = std::getenv("TESSERA_MAX_PARAMETER_BYTES")) {
    char* end = nullptr;
    const long long v = std::strtoll(env, &end, 10);
    TORCH_CHECK_VALUE(end != env && *end == '\0' && v > 0,
                      "TESSERA_MAX_PARAMETER_BYTES must be a positive integer, got '", env, "'");
    return v;
  }
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page > 0 ? static_cast<int64_t>(pages) * page : INT64_MAX;
}

std::string class_for(const std::vector<std::pair<std::string, std::string>>& classes, const std::string& path) {
  for (const auto& [p, name] : classes)
    if (p == path) return name;
  return "Container";
}
}  // namespace

std::shared_ptr<torch::nn::Module> register_at(torch::nn::Module& owner, const std::string& path,
                                               std::shared_ptr<torch::nn::Module> child,
                                               const std::vector<std::pair<std::string, std::string>>& classes) {
  TORCH_CHECK_VALUE(!path.empty(), "register_at: empty path");
  torch::nn::Module* node = &owner;
  size_t start = 0;
  for (size_t dot = path.find('.'); dot != std::string::npos; dot = path.find('.', start)) {
    const std::string part = path.substr(start, dot - start), prefix = path.substr(0, dot);
    auto children = node->named_children();
    std::shared_ptr<torch::nn::Module> next;
    if (auto* found = children.find(part)) {
      next = *found;
    } else {
      next = node->register_module(part, Container(class_for(classes, prefix)).ptr());
    }
    node = next.get();
    start = dot + 1;
  }
  return node->register_module(path.substr(start), std::move(child));
}

NoInitGuard::NoInitGuard() : previous_(g_init_enabled) { g_init_enabled = false; }
NoInitGuard::~NoInitGuard() { g_init_enabled = previous_; }
bool init_enabled() { return g_init_enabled; }

ParameterBudget::ParameterBudget() {
  if (g_budget_depth++ == 0) g_budget_bytes = 0;
}
ParameterBudget::~ParameterBudget() { --g_budget_depth; }

void charge_parameter_bytes(const std::string& what, c10::IntArrayRef shape, double bytes) {
  if (g_budget_depth == 0) return;
  g_budget_bytes += bytes;
  const int64_t limit = parameter_byte_limit();
  TORCH_CHECK_VALUE(g_budget_bytes <= static_cast<double>(limit), "the model's parameters would take at least ",
                    g_budget_bytes / double(1 << 30), " GiB (reached at ", what, " of shape ", shape,
                    "), more than the ", limit / double(1 << 30),
                    " GiB of memory this machine has: check the config's sizes (hidden_size, "
                    "intermediate_size, num_hidden_layers, vocab_size), or set TESSERA_MAX_PARAMETER_BYTES");
}
bool set_init_enabled(bool enabled) { return std::exchange(g_init_enabled, enabled); }
bool meta_parameters() { return g_meta_parameters; }
bool set_meta_parameters(bool on) { return std::exchange(g_meta_parameters, on); }

}  // namespace tessera::nn
