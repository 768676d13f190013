// Fuzzes caption lists (data/caption_file.cpp): parse_caption_list as CaptionDataset reads a
// .jsonl, .csv or .tsv file (the first input byte picks which), and the RFC 4180 parser
// parse_csv with both delimiters. Every parsed entry must carry the folder prefix of relative
// paths, and parse_csv must report lines in increasing order.
#include "fuzz_target.h"
#include "tessera/data/caption_file.h"

TESSERA_FUZZ_TARGET(caption_file) {
  if (size == 0) return;
  static const char* const kPaths[] = {"/data/list.jsonl", "/data/list.csv", "/data/list.tsv"};
  const std::string path = kPaths[data[0] % 3];
  const std::string text(reinterpret_cast<const char*>(data + 1), size - 1);
  try {
    for (const auto& e : tessera::data::parse_caption_list(text, path))
      tessera::fuzz::require(!e.image.empty(), "an entry with an empty image path");
  } catch (const c10::Error&) {
  }
  for (char delimiter : {',', '\t'}) {
    int64_t last = 0;
    try {
      for (const auto& [line, fields] : tessera::data::parse_csv(text, path, delimiter)) {
        tessera::fuzz::require(line > last && !fields.empty(), "parse_csv lines out of order");
        last = line;
      }
    } catch (const c10::Error&) {
    }
  }
}
