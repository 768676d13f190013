// Batch tokenization across threads: chunks handed out as threads free up, so a batch that mixes
// one-word labels with paragraphs balances itself (at::parallel_for splits the range evenly up
// front, which leaves a thread idle). Shared by the CLIP BPE and WordPiece tokenizers.
#pragma once
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace tessera::text {

/// Texts per parallel work item: small enough to balance, large enough that scheduling is noise
/// next to tokenizing them.
constexpr int64_t kTextsPerChunk = 64;

/// Runs fn(chunk) for chunk in [0, chunks) on up to `threads` threads; the first exception is
/// rethrown after every thread has stopped.
template <class F>
void parallel_chunks(int64_t chunks, int threads, const F& fn) {
  threads = static_cast<int>(std::min<int64_t>(std::max(threads, 1), chunks));
  if (threads <= 1) {
    for (int64_t c = 0; c < chunks; ++c) fn(c);
    return;
  }
  std::atomic<int64_t> next{0};
  std::exception_ptr error;
  std::mutex error_mu;
  auto work = [&] {
    try {
      for (int64_t c; (c = next.fetch_add(1)) < chunks;) fn(c);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mu);
      if (!error) error = std::current_exception();
      next = chunks;
    }
  };
  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(threads - 1));
  for (int t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (std::thread& t : pool) t.join();
  if (error) std::rethrow_exception(error);
}

}  // namespace tessera::text
