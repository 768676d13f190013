// The base of every tessera module: a LibTorch module whose parameters are read at call
// time. A forward reads `param(slot)` — the tensor registered under that name *now* — so Python
// can point a slot at another tensor (FSDP2's unsharded parameters, functional_call,
// parametrizations, load_state_dict(assign=True)) and C++ computes with it. See docs/design.md.
#pragma once
#include <ATen/core/Tensor.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace tessera::nn {

/// A parameter's position in its module's registry (stable: LibTorch never reorders it).
struct Slot {
  int64_t index = -1;
  bool defined() const { return index >= 0; }
};

/// While alive, models skip their random initialisation (weights are about to be loaded).
class NoInitGuard {
 public:
  NoInitGuard();
  ~NoInitGuard();
  NoInitGuard(const NoInitGuard&) = delete;
  NoInitGuard& operator=(const NoInitGuard&) = delete;

 private:
  bool previous_;
};
/// False inside a NoInitGuard.
bool init_enabled();
/// Sets the flag NoInitGuard scopes (for Python's context manager); returns the previous value.
bool set_init_enabled(bool enabled);

/// Whether parameters are made on the meta device (no memory), as Python's
/// `with torch.device("meta")` asks: a model built to be sharded, then materialised with
/// `to_empty` and initialised or loaded. Per thread; set_meta_parameters returns the previous value.
bool meta_parameters();
bool set_meta_parameters(bool on);

/// While alive (outermost guard), the bytes of every parameter registered on this thread are
/// summed, and a model whose parameters would outgrow this machine's memory (or
/// TESSERA_MAX_PARAMETER_BYTES) is refused by name before its weights are initialised, which is
/// when the memory would really be touched (a config asking for 10^9 hidden units).
class ParameterBudget {
 public:
  ParameterBudget();
  ~ParameterBudget();
  ParameterBudget(const ParameterBudget&) = delete;
  ParameterBudget& operator=(const ParameterBudget&) = delete;
};
/// Counts `bytes` of parameter `what` against the active budget (no-op without a guard).
void charge_parameter_bytes(const std::string& what, c10::IntArrayRef shape, double bytes);

/// What Python needs from any tessera module, whatever its type (reached by dynamic_cast).
class ModuleBase {
 public:
  virtual ~ModuleBase() = default;
  /// Points direct parameter `name` at `tensor` (same shape); forwards use it from then on.
  virtual void rebind_parameter(const std::string& name, const at::Tensor& tensor) = 0;
  /// Repeats on this module what was added to `original` after construction (LoRA adapters), so
  /// a clone rebuilt from options has every parameter of the original.
  virtual void adopt_structure(const ModuleBase& /*original*/) {}
  /// Class name of the mirrored Python node: Hugging Face's (e.g. "CLIPEncoderLayer").
  const std::string& class_name() const { return class_name_; }

 protected:
  std::string class_name_;
};

/// Derive from this instead of torch::nn::Cloneable<Derived>. `reset()` builds the whole subtree
/// (children, their children, parameters); `clone()` rebuilds it with `reset()` and copies every
/// tensor by its dotted name, so a module may keep handles to grandchildren (layout paths).
/// Tessera modules keep no buffers: constants are computed where they are used.
///   class MyImpl : public tessera::nn::Module<MyImpl> {
///     void reset() override { w_ = add_parameter("weight", at::empty({4, 4})); }
///     at::Tensor forward(const at::Tensor& x) { return x.matmul(param(w_)); }
///     tessera::nn::Slot w_;
///   };
template <class Derived>
class Module : public torch::nn::Module, public ModuleBase {
 public:
  /// `class_name` is also torch's name(): the key of the family's weight-loading rules
  /// (core/weight_loading.h) and what printing the module shows.
  explicit Module(std::string class_name) : torch::nn::Module(class_name) { class_name_ = std::move(class_name); }

  /// Builds (or rebuilds) every child and parameter from the options.
  virtual void reset() = 0;

  std::shared_ptr<torch::nn::Module> clone(const std::optional<at::Device>& device = std::nullopt) const override {
    at::NoGradGuard no_grad;
    TORCH_CHECK(named_buffers(/*recurse=*/true).is_empty(), class_name_,
                ": tessera modules keep no buffers (compute constants where they are used)");
    auto copy = std::make_shared<Derived>(static_cast<const Derived&>(*this));
    copy->parameters_.clear();
    for (const auto& child : copy->named_children()) copy->unregister_module(child.key());
    {
      NoInitGuard no_init;  // every tensor is overwritten below
      copy->reset();
      auto built = copy->named_modules("", /*include_self=*/false);
      for (const auto& src : named_modules("", /*include_self=*/false)) {
        auto* dst = built.find(src.key());
        const auto* from = dynamic_cast<const ModuleBase*>(src.value().get());
        if (dst && from)
          if (auto* to = dynamic_cast<ModuleBase*>(dst->get())) to->adopt_structure(*from);
      }
    }
    auto dst = copy->named_parameters(/*recurse=*/true);
    for (const auto& src : named_parameters(/*recurse=*/true)) {
      at::Tensor* t = dst.find(src.key());
      TORCH_CHECK(t != nullptr, class_name_, ".reset() did not rebuild parameter ", src.key());
      at::Tensor data = device && src->device() != *device ? src->to(*device) : src->clone();
      t->set_data(data);
      t->set_requires_grad(src->requires_grad());
    }
    TORCH_CHECK(dst.size() == named_parameters(true).size(), class_name_, ".reset() built extra parameters");
    copy->train(is_training());
    return copy;
  }

  void rebind_parameter(const std::string& name, const at::Tensor& tensor) override {
    at::Tensor* slot = this->parameters_.find(name);
    TORCH_CHECK_VALUE(slot != nullptr, class_name_, " has no parameter '", name, "'");
    TORCH_CHECK_VALUE(tensor.defined() && tensor.sizes() == slot->sizes(), class_name_, ".", name,
                      ": cannot rebind a parameter of shape ", slot->sizes(), " to a tensor of shape ",
                      tensor.defined() ? tensor.sizes() : c10::IntArrayRef{});
    *slot = tensor;
  }

 protected:
  /// Registers a parameter and returns its slot; an undefined tensor gives an undefined slot
  /// (an absent bias).
  Slot add_parameter(const std::string& name, at::Tensor tensor, bool requires_grad = true) {
    if (!tensor.defined()) return {};
    if (meta_parameters()) return register_slot(name, tensor.to(at::kMeta), requires_grad);
    charge_parameter_bytes(class_name_ + "." + name, tensor.sizes(), static_cast<double>(tensor.nbytes()));
    return register_slot(name, std::move(tensor), requires_grad);
  }
  /// An uninitialised float parameter of `shape`, charged against the ParameterBudget before it is
  /// allocated (large weights: linears, embeddings).
  Slot add_parameter(const std::string& name, std::vector<int64_t> shape, bool requires_grad = true) {
    if (meta_parameters()) return register_slot(name, at::empty(shape, at::device(at::kMeta)), requires_grad);
    double numel = 1;
    for (int64_t n : shape) numel *= static_cast<double>(n);  // in double: absurd sizes must not wrap
    charge_parameter_bytes(class_name_ + "." + name, shape, numel * sizeof(float));
    return register_slot(name, at::empty(shape), requires_grad);
  }
  Slot register_slot(const std::string& name, at::Tensor tensor, bool requires_grad) {
    Slot s{static_cast<int64_t>(this->parameters_.size())};
    this->register_parameter(name, std::move(tensor), requires_grad);
    return s;
  }
  /// The tensor registered in `s` now (undefined for an undefined slot).
  const at::Tensor& param(Slot s) const {
    static const at::Tensor undefined;
    return s.defined() ? this->parameters_[s.index].value() : undefined;
  }
};

/// How a family model is built: every child and parameter without random init, then the
/// family's init_weights() once (skipped inside a NoInitGuard, when weights are loaded next).
template <class Model>
void build_then_init(Model& model) {
  {
    NoInitGuard no_init;
    model.reset();
  }
  if (init_enabled()) model.init_weights();
}

/// An interior node of a layout path (e.g. `attention` in `attention.attention.query`): it only
/// groups children under the Hugging Face name and class.
class ContainerImpl : public Module<ContainerImpl> {
 public:
  explicit ContainerImpl(std::string class_name = "Container") : Module(std::move(class_name)) {}
  void reset() override {}  // its owner registers the children
  std::shared_ptr<torch::nn::Module> clone(const std::optional<at::Device>& = std::nullopt) const override {
    TORCH_CHECK(false, class_name_, " is part of its owner's layout: clone the owner");
  }
};
TORCH_MODULE(Container);

/// Registers `child` under a dotted `path` of `owner`, creating Containers on the way; each
/// container's Python class is looked up in `classes` (path prefix -> class name).
std::shared_ptr<torch::nn::Module> register_at(torch::nn::Module& owner, const std::string& path,
                                               std::shared_ptr<torch::nn::Module> child,
                                               const std::vector<std::pair<std::string, std::string>>& classes = {});


}  // namespace tessera::nn
