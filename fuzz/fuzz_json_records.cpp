// Fuzzes the JSON record scanner (data/json_records.cpp) that indexes LLaVA-style data files.
// Every record returned must lie inside the input, in order, start with '{' and end with '}'.
#include "fuzz_target.h"
#include "tessera/data/json_records.h"

#include <string_view>

TESSERA_FUZZ_TARGET(json_records) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  tessera::data::JsonScanLimits limits;
  limits.max_record_bytes = 1 << 12;
  limits.max_depth = 32;
  const auto r = tessera::data::scan_json_records_bytes(bytes, "fuzz.json", limits);
  int64_t end = 0;
  for (size_t i = 0; i < r.offsets.size(); ++i) {
    const int64_t off = r.offsets[i], len = r.lengths[i];
    tessera::fuzz::require(off >= end && len >= 2 && off + len <= static_cast<int64_t>(size), "a record out of range");
    tessera::fuzz::require(bytes[off] == '{' && bytes[off + len - 1] == '}', "a record that is not an object");
    end = off + len;
  }
}
