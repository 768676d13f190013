// The murmur3 64-bit finalizer, for open-addressing tables keyed by small, dense integers (ids,
// packed id pairs, hashes of short strings): it spreads them over the slots.
#pragma once
#include <cstdint>

namespace tessera::text {

inline uint64_t hash_mix(uint64_t h) {
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  return h;
}

}  // namespace tessera::text
