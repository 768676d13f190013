// DistributedSampler.__iter__ (torch/utils/data/distributed.py) reproduced with the same
// randperm draw, plus SplitMix64 finalisation for per-sample seeds.
#include "tessera/data/sampler.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/ops/randperm.h>
#include <c10/util/Exception.h>

#include <numeric>

namespace tessera::data {
namespace {

uint64_t splitmix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

}  // namespace

std::vector<int64_t> shard_indices(int64_t n, bool shuffle, uint64_t seed, int64_t epoch,
                                   int64_t rank, int64_t world_size) {
  TORCH_CHECK_VALUE(n > 0, "shard_indices: the dataset is empty");
  TORCH_CHECK_VALUE(world_size > 0 && rank >= 0 && rank < world_size, "shard_indices: rank ",
                    rank, " is not in [0, world_size = ", world_size, ")");
  std::vector<int64_t> all(static_cast<size_t>(n));
  if (shuffle) {
    // Generator.manual_seed(seed + epoch), then randperm: the sampler's own two calls.
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed + static_cast<uint64_t>(epoch));
    const at::Tensor perm = at::randperm(n, gen, at::kLong);
    std::copy_n(perm.data_ptr<int64_t>(), n, all.begin());
  } else {
    std::iota(all.begin(), all.end(), int64_t(0));
  }
  const int64_t per_rank = (n + world_size - 1) / world_size, total = per_rank * world_size;
  std::vector<int64_t> mine;
  mine.reserve(static_cast<size_t>(per_rank));
  // Position p of the padded list is all[p mod n]: padding repeats the order from its start.
  for (int64_t p = rank; p < total; p += world_size) mine.push_back(all[static_cast<size_t>(p % n)]);
  return mine;
}

uint64_t sample_seed(uint64_t seed, int64_t epoch, int64_t index) {
  return splitmix64(splitmix64(splitmix64(seed) ^ static_cast<uint64_t>(epoch)) ^
                    static_cast<uint64_t>(index));
}

}  // namespace tessera::data
