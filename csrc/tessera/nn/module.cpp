// Layout paths and the no-init switch of tessera modules.
#include "tessera/nn/module.h"

#include <utility>

namespace tessera::nn {
namespace {
thread_local bool g_init_enabled = true;

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
bool set_init_enabled(bool enabled) { return std::exchange(g_init_enabled, enabled); }

}  // namespace tessera::nn
