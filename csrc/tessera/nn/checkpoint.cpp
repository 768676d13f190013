// Reentrant activation checkpointing as a custom autograd function, with the RNG and autocast
// state of the forward replayed in backward (as torch.utils.checkpoint's preserve_rng_state).
#include "tessera/nn/checkpoint.h"

#include "tessera/nn/attention_precision.h"

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <ATen/core/Generator.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/autograd/engine.h>

#include <algorithm>
#include <mutex>
#include <optional>

namespace tessera::nn {
namespace {

// Random and autocast state to restore for the recomputation.
struct ReplayState {
  at::Tensor cpu_rng;
  std::vector<std::pair<at::Generator, at::Tensor>> device_rng;
  bool cpu_autocast = false, cuda_autocast = false;
  at::ScalarType cpu_dtype = at::kBFloat16, cuda_dtype = at::kHalf;

  static at::Tensor state_of(at::Generator gen) {
    std::lock_guard<std::mutex> lock(gen.mutex());
    return gen.get_state();
  }
  static void set_state(at::Generator gen, const at::Tensor& s) {
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(s);
  }

  static ReplayState capture(const std::vector<at::Tensor>& inputs) {
    ReplayState r;
    r.cpu_rng = state_of(at::detail::getDefaultCPUGenerator());
    for (const auto& t : inputs) {
      if (!t.defined() || !t.is_cuda()) continue;
      at::Generator gen = at::globalContext().defaultGenerator(t.device());
      bool seen = false;
      for (const auto& [g, _] : r.device_rng) seen = seen || g == gen;
      if (!seen) r.device_rng.emplace_back(gen, state_of(gen));
    }
    r.cpu_autocast = at::autocast::is_autocast_enabled(at::kCPU);
    r.cpu_dtype = at::autocast::get_autocast_dtype(at::kCPU);
    r.cuda_autocast = at::autocast::is_autocast_enabled(at::kCUDA);
    r.cuda_dtype = at::autocast::get_autocast_dtype(at::kCUDA);
    return r;
  }

  // Makes this state current; the returned object restores what was current before.
  ReplayState apply() const {
    ReplayState now;
    now.cpu_rng = state_of(at::detail::getDefaultCPUGenerator());
    set_state(at::detail::getDefaultCPUGenerator(), cpu_rng);
    for (const auto& [g, s] : device_rng) {
      now.device_rng.emplace_back(g, state_of(g));
      set_state(g, s);
    }
    now.cpu_autocast = at::autocast::is_autocast_enabled(at::kCPU);
    now.cpu_dtype = at::autocast::get_autocast_dtype(at::kCPU);
    now.cuda_autocast = at::autocast::is_autocast_enabled(at::kCUDA);
    now.cuda_dtype = at::autocast::get_autocast_dtype(at::kCUDA);
    set_autocast();
    return now;
  }
  void restore() const {
    set_state(at::detail::getDefaultCPUGenerator(), cpu_rng);
    for (const auto& [g, s] : device_rng) set_state(g, s);
    set_autocast();
  }
  void set_autocast() const {
    at::autocast::set_autocast_enabled(at::kCPU, cpu_autocast);
    at::autocast::set_autocast_dtype(at::kCPU, cpu_dtype);
    at::autocast::set_autocast_enabled(at::kCUDA, cuda_autocast);
    at::autocast::set_autocast_dtype(at::kCUDA, cuda_dtype);
  }
};

// Puts the state back when the recomputation ends, however it ends.
struct RestoreOnExit {
  ReplayState state;
  ~RestoreOnExit() {
    try {
      state.restore();
    } catch (...) {  // a destructor must not throw; setting a state it read cannot fail in practice
    }
  }
};

struct Holder : torch::CustomClassHolder {
  CheckpointFn fn;
  ReplayState state;
  std::vector<bool> present;  // which of fn's inputs are defined (autograd takes only those)

  // fn's input list from the defined tensors, undefined where absent.
  std::vector<at::Tensor> expand(const std::vector<at::Tensor>& defined) const {
    std::vector<at::Tensor> all;
    size_t k = 0;
    for (bool p : present) all.push_back(p ? defined[k++] : at::Tensor());
    return all;
  }
};

struct CheckpointFunction : torch::autograd::Function<CheckpointFunction> {
  // `inputs` as a TensorList: autograd counts each tensor as an input (a std::vector would not be).
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, at::TensorList input_list,
                            c10::intrusive_ptr<Holder> holder) {
    std::vector<at::Tensor> inputs = input_list.vec();
    ctx->save_for_backward(inputs);
    holder->state = ReplayState::capture(inputs);
    ctx->saved_data["fn"] = c10::IValue::make_capsule(c10::static_intrusive_pointer_cast<torch::CustomClassHolder>(holder));
    at::NoGradGuard no_grad;
    // The recomputation runs with grad when an input needs one: the same kernels both times.
    const bool recomputed =
        std::any_of(inputs.begin(), inputs.end(), [](const at::Tensor& t) { return t.requires_grad(); });
    std::optional<ForwardForBackward> recorded_later;
    if (recomputed) recorded_later.emplace();
    return holder->fn(holder->expand(inputs));
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    // A nested backward cannot deliver gradients to autograd.grad()'s outputs or backward(inputs=):
    // they would be lost (and written into .grad). torch's reentrant checkpoint refuses it too.
    TORCH_CHECK(torch::autograd::Engine::get_default_engine().is_checkpoint_valid(),
                "gradient checkpointing (tessera's is reentrant, as torch.utils.checkpoint with "
                "use_reentrant=True) does not work with torch.autograd.grad() or backward(inputs=...): "
                "call backward() without inputs, or turn checkpointing off for this model "
                "(gradient_checkpointing_disable())");
    auto holder = c10::static_intrusive_pointer_cast<Holder>(ctx->saved_data["fn"].toCapsule());
    std::vector<at::Tensor> inputs;
    for (const auto& saved : ctx->get_saved_variables()) {
      at::Tensor t = saved.detach();
      if (saved.requires_grad()) t.requires_grad_(true);
      inputs.push_back(t);
    }
    at::Tensor y;
    {
      RestoreOnExit previous{holder->state.apply()};  // also when fn throws (a caught OOM)
      at::AutoGradMode enable(true);
      y = holder->fn(holder->expand(inputs));
    }
    // One backward: the parameters' .grad accumulate and the detached inputs (leaves here)
    // receive their gradients, which go upstream. Nothing to do when nothing fn used needs one.
    if (y.requires_grad()) torch::autograd::backward({y}, {grads[0]});
    torch::autograd::variable_list out;
    for (const auto& t : inputs) out.push_back(t.requires_grad() ? t.grad() : at::Tensor());
    out.emplace_back();  // the holder
    return out;
  }
};

}  // namespace

at::Tensor checkpoint(CheckpointFn fn, const std::vector<at::Tensor>& inputs, bool parameters_need_grad) {
  auto holder = c10::make_intrusive<Holder>();
  holder->fn = std::move(fn);
  std::vector<at::Tensor> defined;
  for (const auto& t : inputs) {
    holder->present.push_back(t.defined());
    if (t.defined()) defined.push_back(t);
  }
  const bool joined = std::any_of(defined.begin(), defined.end(), [](const at::Tensor& t) { return t.requires_grad(); });
  if (parameters_need_grad && !joined)  // past `present`: fn never sees it (Holder::expand)
    defined.push_back(at::empty({0}, defined.empty() ? at::TensorOptions() : defined[0].options()).requires_grad_(true));
  return CheckpointFunction::apply(at::TensorList(defined), holder);
}

}  // namespace tessera::nn
