// A threaded image loader after torch.utils.data.DataLoader + DistributedSampler (shuffle,
// sharding, drop_last, prefetch, pin_memory), with decoding and transforms in C++ threads.
#pragma once
#include <ATen/core/Tensor.h>
#include <torch/arg.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tessera/data/dataset.h"
#include "tessera/vision/image_transform.h"

namespace tessera::data {

struct LoaderOptions {
  TORCH_ARG(int64_t, batch_size) = 64;
  /// A new random order every epoch (seeded `seed + epoch`), else dataset order.
  TORCH_ARG(bool, shuffle) = true;
  TORCH_ARG(uint64_t, seed) = 0;
  /// This process's shard: rank of world_size (DistributedSampler's split).
  TORCH_ARG(int64_t, rank) = 0;
  TORCH_ARG(int64_t, world_size) = 1;
  /// Threads that read, decode and transform; 0 loads on the calling thread.
  TORCH_ARG(int64_t, num_workers) = 2;
  /// Batches being loaded or waiting ahead of the consumer, at most.
  TORCH_ARG(int64_t, prefetch) = 4;
  /// Leave out the last batch of an epoch when it would be smaller than batch_size.
  TORCH_ARG(bool, drop_last) = true;
  /// Put pixel_values in page-locked memory (only when a CUDA device is present).
  TORCH_ARG(bool, pin_memory) = true;
  /// How many error messages of skipped samples to keep for the report.
  TORCH_ARG(int64_t, max_errors) = 20;
};

/// One batch, named as Hugging Face models take it.
struct Batch {
  at::Tensor pixel_values;            ///< float [B, C, S, S]
  at::Tensor labels;                  ///< int64 [B] (-1 for datasets without classes)
  at::Tensor indices;                 ///< int64 [B], dataset index of each row
  std::vector<std::string> captions;  ///< B captions when the dataset has them, else empty
};

/// Where a loader is: the epoch and how many of its batches the consumer has received.
struct LoaderState {
  int64_t epoch = 0;
  int64_t batches = 0;
};

/// Batches of transformed images from a Dataset, loaded by worker threads ahead of use.
///
/// Order: the epoch's order is shard_indices(seed, epoch, rank, world_size) (identical to
/// DistributedSampler's), cut into batches; batch b, and every augmentation in it (each
/// sample has its own generator seeded sample_seed(seed, epoch, index)), depend on nothing
/// else - not on num_workers, prefetch or timing - so a run can resume mid-epoch exactly.
///
/// Bad samples: when Dataset::get or the transform throws for a sample, the sample is
/// skipped, counted once per epoch, its message kept (the first max_errors), and its slot is
/// filled from the positions after the batch in this rank's order (wrapping around), so
/// batches keep their size - DDP collectives need equal shapes - and the replacement is
/// deterministic too; the replacement sample also appears in its own batch, as
/// DistributedSampler's padding repeats samples. A batch only comes out smaller when the
/// whole shard has too few good samples; one with none raises.
///
///     Loader loader(dataset, vision::TransformOptions().train(true),
///                   LoaderOptions().batch_size(256).rank(rank).world_size(world));
///     for (int64_t epoch = 0; epoch < epochs; ++epoch) {
///       loader.set_epoch(epoch);
///       while (auto batch = loader.next()) train_step(batch->pixel_values, batch->labels);
///     }
class Loader {
 public:
  Loader(std::shared_ptr<const Dataset> dataset, vision::TransformOptions transform,
         LoaderOptions options = {});
  /// Stops and joins the workers; batches still loading are dropped.
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  /// Batches per epoch on this rank.
  int64_t size() const;
  /// Samples per epoch on this rank: ceil(dataset size / world_size).
  int64_t samples_per_rank() const;

  /// Moves to `epoch`, from its first batch; setting the current epoch again keeps the
  /// position (so set_epoch after load_state resumes where the state says).
  void set_epoch(int64_t epoch);
  int64_t epoch() const;

  /// The next batch of the epoch, or nullopt once the epoch is over (until set_epoch or
  /// rewind). Blocks while the batch is loading; call from one thread. Rethrows an error
  /// that is not a sample's (say, every sample of a batch failed).
  std::optional<Batch> next();

  /// Stops loading ahead; the position stays, and the next call to next() continues there.
  /// Call it when a consumer stops early and the workers should go idle.
  void stop();

  /// Back to the first batch of the current epoch (what iterating a finished epoch again does).
  void rewind();

  LoaderState state() const;
  /// Continues from `state`: the next batch is batch `state.batches` of `state.epoch`.
  void load_state(const LoaderState& state);

  /// Samples skipped because they failed to load, over the loader's life.
  int64_t skipped() const;
  /// "index 17 (/data/x.jpg): decode_image(...): ..." for the first max_errors failures.
  std::vector<std::string> errors() const;

  const LoaderOptions& options() const;
  const Dataset& dataset() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tessera::data
