// Flat sharded word cache for CLIP BPE (see bpe_word_cache.h; open_clip's SimpleTokenizer
// keeps the same mapping in an unbounded dict).
#include "tessera/text/bpe_word_cache.h"

#include <algorithm>
#include <cstring>

namespace tessera::text {
namespace {
constexpr size_t kInitialSlots = 256;
constexpr size_t kMaxLen = 0xFFFF;  // key_len and num_ids are 16-bit
}  // namespace

BpeWordCache::BpeWordCache(size_t max_words, size_t max_bytes)
    : max_words_per_shard_(std::max<size_t>(1, max_words / kShards)),
      // offsets are 32-bit, so one shard's arena must stay below 4 GiB
      max_bytes_per_shard_(std::min<size_t>(std::max<size_t>(1024, max_bytes / kShards),
                                            size_t(UINT32_MAX) - 2 * kMaxLen * 5)),
      shards_(new Shard[kShards]) {
  for (size_t i = 0; i < kShards; ++i)
    shards_[i].slots.assign(kInitialSlots, Slot{0, kEmpty, 0, 0});
}

BpeWordCache::~BpeWordCache() = default;

uint64_t BpeWordCache::hash(std::string_view word) {
  // Eight bytes at a time with a multiply-xorshift round each, then a murmur3-style
  // finalizer: words are short, so this beats byte-wise hashes and mixes all 64 bits (the
  // top six pick the shard, the low ones the slot).
  const char* p = word.data();
  const size_t n = word.size();
  uint64_t h = 0x9E3779B97F4A7C15ULL * (n + 1);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    h = (h ^ w) * 0xff51afd7ed558ccdULL;
    h ^= h >> 29;
  }
  if (i < n) {
    uint64_t w = 0;
    std::memcpy(&w, p + i, n - i);
    h = (h ^ w) * 0xff51afd7ed558ccdULL;
    h ^= h >> 29;
  }
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ULL;
  h ^= h >> 33;
  return h;
}

const BpeWordCache::Slot* BpeWordCache::find(const Shard& s, std::string_view word,
                                             uint64_t hash) {
  const size_t mask = s.slots.size() - 1;
  for (size_t i = hash & mask;; i = (i + 1) & mask) {
    const Slot& slot = s.slots[i];
    if (slot.offset == kEmpty) return nullptr;
    if (slot.hash == hash && slot.key_len == word.size() &&
        std::memcmp(s.arena.data() + slot.offset, word.data(), word.size()) == 0)
      return &slot;
  }
}

void BpeWordCache::place(Shard& s, const Slot& slot) {
  const size_t mask = s.slots.size() - 1;
  size_t i = slot.hash & mask;
  while (s.slots[i].offset != kEmpty) i = (i + 1) & mask;
  s.slots[i] = slot;
}

bool BpeWordCache::lookup(std::string_view word, uint64_t hash,
                          std::vector<int32_t>& out) const {
  const Shard& s = shard(hash);
  std::lock_guard<std::mutex> lock(s.mu);
  const Slot* slot = find(s, word, hash);
  if (slot == nullptr) return false;
  const size_t old = out.size();
  out.resize(old + slot->num_ids);
  std::memcpy(out.data() + old, s.arena.data() + slot->offset + slot->key_len,
              slot->num_ids * sizeof(int32_t));
  return true;
}

void BpeWordCache::insert(std::string_view word, uint64_t hash,
                          const std::vector<int32_t>& ids) {
  if (word.empty() || word.size() > kMaxLen || ids.size() > kMaxLen) return;
  Shard& s = shard(hash);
  const size_t bytes = word.size() + ids.size() * sizeof(int32_t);
  std::lock_guard<std::mutex> lock(s.mu);
  if (find(s, word, hash) != nullptr) return;  // another thread got there first
  if (s.count + 1 > max_words_per_shard_ || s.arena.size() + bytes > max_bytes_per_shard_) {
    // Full: start the shard afresh rather than track recency; hot words come back at once.
    s.slots.assign(kInitialSlots, Slot{0, kEmpty, 0, 0});
    s.arena.clear();
    s.count = 0;
  }
  if ((s.count + 1) * 2 > s.slots.size()) {  // keep the load factor under 1/2
    std::vector<Slot> old(s.slots.size() * 2, Slot{0, kEmpty, 0, 0});
    old.swap(s.slots);
    for (const Slot& slot : old)
      if (slot.offset != kEmpty) place(s, slot);
  }
  const auto offset = static_cast<uint32_t>(s.arena.size());
  s.arena.insert(s.arena.end(), word.begin(), word.end());
  const char* id_bytes = reinterpret_cast<const char*>(ids.data());
  s.arena.insert(s.arena.end(), id_bytes, id_bytes + ids.size() * sizeof(int32_t));
  place(s, Slot{hash, offset, static_cast<uint16_t>(word.size()),
                static_cast<uint16_t>(ids.size())});
  ++s.count;
}

size_t BpeWordCache::size() const {
  size_t n = 0;
  for (size_t i = 0; i < kShards; ++i) {
    std::lock_guard<std::mutex> lock(shards_[i].mu);
    n += shards_[i].count;
  }
  return n;
}

}  // namespace tessera::text
