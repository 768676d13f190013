// Threaded batch loader after torch.utils.data.DataLoader (workers, prefetch_factor,
// pin_memory, drop_last) fed by DistributedSampler's order, with the worker processes replaced
// by C++ threads that write straight into the batch tensor.
#include "tessera/data/loader.h"

#include "tessera/data/buffer_pool.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <exception>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_set>

#include "tessera/data/sampler.h"

namespace tessera::data {
namespace {

std::string message_of(const std::exception& e) {
  // c10 errors carry a C++ backtrace in what(); the report wants the message alone.
  if (const auto* c10e = dynamic_cast<const c10::Error*>(&e)) return c10e->what_without_backtrace();
  return e.what();
}

}  // namespace

struct Loader::Impl {
  struct Result {
    Batch batch;
    std::exception_ptr error;
  };

  Impl(std::shared_ptr<const Dataset> ds, vision::TransformOptions t, LoaderOptions o)
      : dataset(std::move(ds)),
        transform(std::move(t)),
        opt(o),
        pool(static_cast<size_t>(o.prefetch() + 2 * o.num_workers() + 4)) {}

  std::shared_ptr<const Dataset> dataset;
  vision::ImageTransform transform;
  LoaderOptions opt;
  BufferPool pool;
  bool pinned = false;

  int64_t epoch = 0, pos = 0;  // the consumer's position: batches received this epoch
  std::vector<int64_t> order;  // this rank's indices for `order_epoch`
  int64_t order_epoch = -1;

  std::mutex mu;  // guards next_claim, ready, pos while workers run
  std::condition_variable cv;
  std::vector<std::thread> workers;
  std::atomic<bool> stopping{false};
  int64_t next_claim = 0;
  std::map<int64_t, Result> ready;

  std::mutex bad_mu;  // guards the failure records
  std::unordered_set<int64_t> bad;  // indices that failed this epoch
  int64_t skipped = 0;
  std::vector<std::string> errors;

  int64_t per_rank() const {
    return (dataset->size() + opt.world_size() - 1) / opt.world_size();
  }
  int64_t num_batches() const {
    const int64_t n = per_rank(), b = opt.batch_size();
    return opt.drop_last() ? n / b : (n + b - 1) / b;
  }

  void prepare_order() {
    if (order_epoch == epoch) return;
    order = shard_indices(dataset->size(), opt.shuffle(), opt.seed(), epoch, opt.rank(), opt.world_size());
    order_epoch = epoch;
    std::lock_guard<std::mutex> lock(bad_mu);
    bad.clear();
  }

  // Records a failed sample once per epoch; true when it was already known to fail.
  bool known_bad(int64_t index) {
    std::lock_guard<std::mutex> lock(bad_mu);
    return bad.count(index) > 0;
  }
  void record_bad(int64_t index, const std::string& message) {
    std::lock_guard<std::mutex> lock(bad_mu);
    if (!bad.insert(index).second) return;
    ++skipped;
    if (static_cast<int64_t>(errors.size()) < opt.max_errors())
      errors.push_back("index " + std::to_string(index) + " (" + dataset->source(index) + "): " + message);
  }

  at::Tensor allocate(at::IntArrayRef sizes) {
    return pinned ? at::empty(sizes, at::TensorOptions().dtype(at::kFloat).pinned_memory(true))
                  : pool.acquire(sizes);
  }

  // Loads dataset[index] into row `row` of the batch; false (recorded) when it fails.
  bool load_into(int64_t index, int64_t row, int64_t rows, Batch& out) {
    if (known_bad(index)) return false;
    try {
      Sample s = dataset->get(index);
      TORCH_CHECK_VALUE(s.image.defined() && s.image.dim() == 3, "expected a uint8 [H, W, C] ",
                        "image, got ", s.image.defined() ? s.image.sizes() : at::IntArrayRef{});
      at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(sample_seed(opt.seed(), epoch, index));
      if (!out.pixel_values.defined()) {
        const int64_t S = transform.options().image_size();
        out.pixel_values = allocate({rows, transform.output_channels(s.image.size(2)), S, S});
      }
      transform.apply_into(s.image, gen, out.pixel_values[row]);
      out.labels.data_ptr<int64_t>()[row] = s.label;
      out.indices.data_ptr<int64_t>()[row] = index;
      if (dataset->has_captions()) out.captions.push_back(std::move(s.caption));
      return true;
    } catch (const std::exception& e) {
      record_bad(index, message_of(e));
      return false;
    }
  }

  // Batch b: positions [b*B, b*B + rows) of `order`; a failed sample's row is refilled from
  // the positions after the batch (wrapping), never from the batch itself.
  Result build(int64_t b) {
    Result r;
    try {
      const auto n = static_cast<int64_t>(order.size());
      const int64_t begin = b * opt.batch_size(), rows = std::min(opt.batch_size(), n - begin);
      Batch& out = r.batch;
      out.labels = at::empty({rows}, at::kLong);
      out.indices = at::empty({rows}, at::kLong);
      int64_t filled = 0, spare = begin + rows;
      const int64_t last_spare = begin + n;  // positions past it would repeat this batch
      for (int64_t k = 0; k < rows; ++k) {
        int64_t p = begin + k;
        bool ok;
        while (!(ok = load_into(order[static_cast<size_t>(p % n)], filled, rows, out)) &&
               spare < last_spare) {
          if (stopping) return r;
          p = spare++;
        }
        filled += ok;  // when the spares ran out the row stays empty; later rows still try
        if (stopping) return r;
      }
      TORCH_CHECK(filled > 0, "Loader: every sample of batch ", b, " (epoch ", epoch, ", rank ",
                  opt.rank(), ") and every spare failed to load; first errors: ", first_errors());
      if (filled < rows) {
        out.pixel_values = out.pixel_values.narrow(0, 0, filled);
        out.labels = out.labels.narrow(0, 0, filled);
        out.indices = out.indices.narrow(0, 0, filled);
      }
    } catch (...) {
      r.error = std::current_exception();
    }
    return r;
  }

  std::string first_errors() {
    std::lock_guard<std::mutex> lock(bad_mu);
    std::string s;
    for (size_t i = 0; i < errors.size() && i < 3; ++i) s += "\n  " + errors[i];
    return s.empty() ? "(none kept)" : s;
  }

  void worker_loop() {
    std::unique_lock<std::mutex> lock(mu);
    const int64_t end = num_batches();
    while (true) {
      cv.wait(lock, [&] { return stopping || (next_claim < end && next_claim < pos + opt.prefetch()); });
      if (stopping) return;
      const int64_t b = next_claim++;
      lock.unlock();
      Result r = build(b);
      lock.lock();
      if (stopping) return;
      ready.emplace(b, std::move(r));
      cv.notify_all();
    }
  }

  void start() {
    if (!workers.empty() || opt.num_workers() == 0) return;
    prepare_order();
    next_claim = pos;
    stopping = false;
    for (int64_t i = 0; i < opt.num_workers(); ++i) workers.emplace_back([this] { worker_loop(); });
  }

  void stop() {
    {
      std::lock_guard<std::mutex> lock(mu);
      stopping = true;
    }
    cv.notify_all();
    for (std::thread& t : workers) t.join();
    workers.clear();
    ready.clear();
    stopping = false;
  }

  std::optional<Batch> next() {
    if (pos >= num_batches()) {
      stop();
      return std::nullopt;
    }
    Result r;
    if (opt.num_workers() == 0) {
      prepare_order();
      r = build(pos++);
    } else {
      start();
      std::unique_lock<std::mutex> lock(mu);
      cv.wait(lock, [&] { return ready.count(pos) > 0; });
      auto it = ready.find(pos);
      r = std::move(it->second);
      ready.erase(it);
      ++pos;
      lock.unlock();
      cv.notify_all();  // a worker may claim the batch the consumer just made room for
    }
    if (r.error) std::rethrow_exception(r.error);
    return std::move(r.batch);
  }
};

Loader::Loader(std::shared_ptr<const Dataset> dataset, vision::TransformOptions transform,
               LoaderOptions options) {
  TORCH_CHECK_VALUE(dataset, "Loader: dataset is null");
  TORCH_CHECK_VALUE(dataset->size() > 0, "Loader: the dataset is empty");
  TORCH_CHECK_VALUE(options.batch_size() > 0, "Loader: batch_size must be positive, got ",
                    options.batch_size());
  TORCH_CHECK_VALUE(options.world_size() > 0 && options.rank() >= 0 && options.rank() < options.world_size(),
                    "Loader: rank ", options.rank(), " is not in [0, world_size = ",
                    options.world_size(), ")");
  TORCH_CHECK_VALUE(options.num_workers() >= 0, "Loader: num_workers must be >= 0, got ",
                    options.num_workers());
  TORCH_CHECK_VALUE(options.prefetch() >= 1, "Loader: prefetch must be >= 1, got ", options.prefetch());
  TORCH_CHECK_VALUE(options.max_errors() >= 0, "Loader: max_errors must be >= 0");
  impl_ = std::make_unique<Impl>(std::move(dataset), std::move(transform), options);
  TORCH_CHECK_VALUE(impl_->num_batches() > 0, "Loader: ", impl_->per_rank(), " samples per rank ",
                    "make no full batch of ", options.batch_size(), " (drop_last); lower ",
                    "batch_size or set drop_last=false");
  impl_->pinned = options.pin_memory() && at::globalContext().hasCUDA();
}

Loader::~Loader() {
  if (impl_) impl_->stop();
}

int64_t Loader::size() const { return impl_->num_batches(); }
int64_t Loader::samples_per_rank() const { return impl_->per_rank(); }
int64_t Loader::epoch() const { return impl_->epoch; }

void Loader::set_epoch(int64_t epoch) {
  TORCH_CHECK_VALUE(epoch >= 0, "Loader::set_epoch: epoch must be >= 0, got ", epoch);
  if (epoch == impl_->epoch) return;
  impl_->stop();
  impl_->epoch = epoch;
  impl_->pos = 0;
}

std::optional<Batch> Loader::next() { return impl_->next(); }
void Loader::stop() { impl_->stop(); }

void Loader::rewind() {
  impl_->stop();
  impl_->pos = 0;
}

LoaderState Loader::state() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return {impl_->epoch, impl_->pos};
}

void Loader::load_state(const LoaderState& state) {
  TORCH_CHECK_VALUE(state.epoch >= 0 && state.batches >= 0 && state.batches <= size(),
                    "Loader::load_state: (epoch ", state.epoch, ", batches ", state.batches,
                    ") is outside this loader's ", size(), " batches per epoch");
  impl_->stop();
  impl_->epoch = state.epoch;
  impl_->pos = state.batches;
}

int64_t Loader::skipped() const {
  std::lock_guard<std::mutex> lock(impl_->bad_mu);
  return impl_->skipped;
}

std::vector<std::string> Loader::errors() const {
  std::lock_guard<std::mutex> lock(impl_->bad_mu);
  return impl_->errors;
}

const LoaderOptions& Loader::options() const { return impl_->opt; }
const Dataset& Loader::dataset() const { return *impl_->dataset; }

}  // namespace tessera::data
