// Where each record of a large JSON data file starts and ends, without parsing it: LLaVA's
// instruction data is one JSON list of hundreds of thousands of objects (or JSON lines), and a
// data set index needs each object's byte range so that a sample can be read on its own later.
//
// The scan tracks strings, escapes and bracket nesting only; the records themselves are parsed
// by whoever reads them. A file that is not a list of objects or JSON lines of objects, a record
// left open at the end of the file (a truncated download), closing brackets that do not match,
// or data after the list end the scan with an error naming the file and the byte offset.
//
//     JsonRecords r = scan_json_records("llava_v1_5_mix665k.json");
//     // record i is bytes [r.offsets[i], r.offsets[i] + r.lengths[i]) of the file
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tessera::data {

struct JsonRecords {
  std::string format;            ///< "list" (one JSON array) or "lines" (one object per line)
  std::vector<int64_t> offsets;  ///< byte offset of each record's '{'
  std::vector<int64_t> lengths;  ///< bytes up to and including its closing '}'
};

struct JsonScanLimits {
  int64_t max_record_bytes = int64_t(1) << 26;  ///< a larger record is an error (64 MiB)
  int max_depth = 256;                          ///< nesting inside a record
};

/// Scans `path` in chunks (memory independent of its size); throws c10::ValueError on bad input.
JsonRecords scan_json_records(const std::string& path, JsonScanLimits limits = {});

/// The same scan over bytes in memory; `name` is used in errors.
JsonRecords scan_json_records_bytes(std::string_view bytes, const std::string& name, JsonScanLimits limits = {});

}  // namespace tessera::data
