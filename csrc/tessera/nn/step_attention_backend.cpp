#include "tessera/nn/step_attention_backend.h"

#include <ATen/Context.h>
#include <ATen/core/grad_mode.h>

#include <atomic>
#include <mutex>

namespace tessera::nn {
namespace {
std::atomic<bool> avoid_cudnn{true};
std::mutex guard_mutex;
int active = 0;            // guards alive (under guard_mutex)
bool user_setting = true;  // cuDNN's attention switch before the first of them
}  // namespace

bool step_avoids_cudnn_attention(const at::Tensor& q, const at::Tensor& k) {
  if (!avoid_cudnn.load(std::memory_order_relaxed) || !q.is_cuda() || at::GradMode::is_enabled()) return false;
  const int64_t q_len = q.size(2), k_len = k.size(2);
  return q_len <= 8 && k_len > q_len && at::globalContext().userEnabledCuDNNSDP();
}

NoCudnnAttention::NoCudnnAttention() {
  std::lock_guard<std::mutex> lock(guard_mutex);
  if (active++ == 0) {
    user_setting = at::globalContext().userEnabledCuDNNSDP();
    at::globalContext().setSDPUseCuDNN(false);
  }
}

NoCudnnAttention::~NoCudnnAttention() {
  std::lock_guard<std::mutex> lock(guard_mutex);
  if (--active == 0) at::globalContext().setSDPUseCuDNN(user_setting);
}

void set_step_attention_avoids_cudnn(bool on) { avoid_cudnn.store(on); }
bool step_attention_avoids_cudnn() { return avoid_cudnn.load(); }

}  // namespace tessera::nn
