// The word -> BPE ids cache of open_clip's SimpleTokenizer.bpe (`self.cache`), made bounded
// and thread-safe; laid out flat after the open-addressing tables of abseil's SwissTable.
#pragma once
#include <cstdint>
#include <memory>
#include <mutex>
#include <string_view>
#include <vector>

namespace tessera::text {

/// Bounded, thread-safe map from a word's bytes to its token ids.
///
/// Why not std::unordered_map: a lookup there chases a bucket, a node and the key, three
/// cache misses per word; here a probe reads one 16-byte slot (the full hash, so a wrong
/// key is rejected without touching it) and then one arena spot holding the key and its ids
/// together. 64 independently locked shards keep threads from queueing on one lock.
///
///     BpeWordCache cache;
///     const uint64_t h = BpeWordCache::hash("cat");
///     std::vector<int32_t> ids;
///     if (!cache.lookup("cat", h, ids)) { ids = {2368}; cache.insert("cat", h, ids); }
class BpeWordCache {
 public:
  /// At most about `max_words` words and `max_bytes` of keys and ids; a shard that would
  /// pass its share is emptied, so memory stays bounded on adversarial input.
  explicit BpeWordCache(size_t max_words = size_t(1) << 20, size_t max_bytes = size_t(64) << 20);
  ~BpeWordCache();

  /// The hash both `lookup` and `insert` take (computed once per word by the caller).
  static uint64_t hash(std::string_view word);

  /// Appends the cached ids of `word` to `out`; false (and `out` untouched) on a miss.
  bool lookup(std::string_view word, uint64_t hash, std::vector<int32_t>& out) const;

  /// Caches `ids` for `word` (a no-op for words too long to be worth keeping).
  void insert(std::string_view word, uint64_t hash, const std::vector<int32_t>& ids);

  /// Words cached now.
  size_t size() const;

 private:
  struct Slot {
    uint64_t hash;
    uint32_t offset;  // into the arena; kEmpty marks a free slot
    uint16_t key_len;
    uint16_t num_ids;
  };
  struct Shard {
    mutable std::mutex mu;
    std::vector<Slot> slots;
    std::vector<char> arena;  // key bytes, then the ids as int32 (unaligned)
    size_t count = 0;
  };
  static constexpr size_t kShards = 64;
  static constexpr uint32_t kEmpty = UINT32_MAX;

  static const Slot* find(const Shard& s, std::string_view word, uint64_t hash);
  static void place(Shard& s, const Slot& slot);
  Shard& shard(uint64_t hash) const { return shards_[hash >> 58]; }

  size_t max_words_per_shard_, max_bytes_per_shard_;
  std::unique_ptr<Shard[]> shards_;
};

}  // namespace tessera::text
