// Image-caption pairs listed in a JSONL or CSV file, the two layouts open_clip's data.py
// (CsvDataset) and webdataset-free LLaVA/BLIP recipes read.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "tessera/data/dataset.h"

namespace tessera::data {

/// One listed pair: the image path (already resolved) and its caption.
struct CaptionEntry {
  std::string image;
  std::string caption;
};

/// Pairs from `path`:
///   *.jsonl / *.ndjson: one JSON object per line, {"image": "a.jpg", "caption": "a cat"};
///   *.csv / *.tsv: a header row naming the `image` and `caption` columns (any order, other
///   columns ignored), RFC 4180 quoting (quoted fields may hold commas, "" and newlines).
/// Relative image paths are resolved against the folder holding `path`. Blank lines are
/// skipped. Throws c10::ValueError naming the file and line for a malformed record.
///
///     CaptionDataset ds("/data/cc3m/train.jsonl");
///     Sample s = ds.get(0);  // s.image uint8 [H, W, 3], s.caption "a dog on a beach"
class CaptionDataset : public Dataset {
 public:
  explicit CaptionDataset(const std::string& path, const std::string& image_key = "image",
                          const std::string& caption_key = "caption");

  int64_t size() const override { return static_cast<int64_t>(entries_.size()); }
  /// Reads and decodes the image; label is -1.
  Sample get(int64_t index) const override;
  bool has_captions() const override { return true; }
  std::string source(int64_t index) const override;

  const std::vector<CaptionEntry>& entries() const { return entries_; }

 private:
  std::vector<CaptionEntry> entries_;
};

/// The pairs listed in `text`, parsed as the file `path` would be (its extension picks JSONL or
/// CSV/TSV, its folder resolves relative image paths); what CaptionDataset's constructor reads.
/// Throws c10::ValueError as the constructor does, except that an empty list is returned.
std::vector<CaptionEntry> parse_caption_list(const std::string& text, const std::string& path,
                                             const std::string& image_key = "image",
                                             const std::string& caption_key = "caption");

/// The records of a CSV text (RFC 4180; `delimiter` ',' or '\t'), each with the line number
/// it starts on. Throws c10::ValueError naming `source` for an unterminated quote.
std::vector<std::pair<int64_t, std::vector<std::string>>> parse_csv(const std::string& text,
                                                                     const std::string& source,
                                                                     char delimiter = ',');

}  // namespace tessera::data
