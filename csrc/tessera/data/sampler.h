// Epoch orders and per-sample seeds: torch.utils.data.distributed.DistributedSampler's
// shuffle-pad-stride sharding, and a SplitMix64 hash (Steele et al., 2014) for seeds.
#pragma once
#include <cstdint>
#include <vector>

namespace tessera::data {

/// The dataset indices rank `rank` of `world_size` visits in `epoch`, exactly as
/// DistributedSampler(shuffle, seed, drop_last=False) yields them: torch.randperm(n) from a
/// generator seeded `seed + epoch` (or 0..n-1 unshuffled), padded by repeating its start to a
/// multiple of world_size, then every world_size-th index from `rank`. Every rank gets
/// ceil(n / world_size) indices; the ranks together cover the dataset.
///
///     auto mine = shard_indices(50000, true, /*seed=*/0, /*epoch=*/3, rank, world_size);
std::vector<int64_t> shard_indices(int64_t dataset_size, bool shuffle, uint64_t seed, int64_t epoch,
                                   int64_t rank, int64_t world_size);

/// Seed of the generator that sample `index` is augmented with in `epoch`: a hash of all
/// three, so augmentations do not depend on which worker or rank loads the sample.
uint64_t sample_seed(uint64_t seed, int64_t epoch, int64_t index);

}  // namespace tessera::data
