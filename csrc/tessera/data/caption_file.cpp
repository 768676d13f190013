// Caption lists after open_clip's CsvDataset (image and caption columns named by keys) and the
// JSON Lines convention (one object per line); CSV parsing follows RFC 4180.
#include "tessera/data/caption_file.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "tessera/vision/image_decode.h"

namespace fs = std::filesystem;

namespace tessera::data {
namespace {

std::string extension_of(const std::string& path) {
  std::string e = fs::path(path).extension().string();
  std::transform(e.begin(), e.end(), e.begin(), [](unsigned char c) { return std::tolower(c); });
  return e;
}

std::string resolve(const fs::path& folder, const std::string& image) {
  const fs::path p(image);
  return p.is_absolute() ? image : (folder / p).string();
}

std::vector<CaptionEntry> read_jsonl(const std::string& text, const std::string& path,
                                     const std::string& image_key, const std::string& caption_key) {
  std::vector<CaptionEntry> out;
  const fs::path folder = fs::path(path).parent_path();
  size_t begin = 0;
  for (int64_t line_no = 1; begin < text.size(); ++line_no) {
    size_t end = text.find('\n', begin);
    if (end == std::string::npos) end = text.size();
    const std::string line = text.substr(begin, end - begin);
    begin = end + 1;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      TORCH_CHECK_VALUE(false, "caption file '", path, "' line ", line_no, ": invalid JSON (", e.what(), ")");
    }
    TORCH_CHECK_VALUE(j.is_object() && j.contains(image_key) && j[image_key].is_string() &&
                          j.contains(caption_key) && j[caption_key].is_string(),
                      "caption file '", path, "' line ", line_no, ": expected an object with ",
                      "string fields \"", image_key, "\" and \"", caption_key, "\"");
    out.push_back({resolve(folder, j[image_key].get<std::string>()), j[caption_key].get<std::string>()});
  }
  return out;
}

std::vector<CaptionEntry> read_csv(const std::string& text, const std::string& path, char delimiter,
                                   const std::string& image_key, const std::string& caption_key) {
  // Excel's "CSV UTF-8" and pandas' utf-8-sig start with a byte-order mark, which would join the
  // first column's name; the JSON reader skips it too.
  const bool bom = text.compare(0, 3, "\xEF\xBB\xBF") == 0;
  auto records = parse_csv(bom ? text.substr(3) : text, path, delimiter);
  TORCH_CHECK_VALUE(!records.empty(), "caption file '", path, "' is empty (expected a header row ",
                    "with columns ", image_key, " and ", caption_key, ")");
  const auto& header = records.front().second;
  auto column = [&](const std::string& key) {
    auto it = std::find(header.begin(), header.end(), key);
    TORCH_CHECK_VALUE(it != header.end(), "caption file '", path, "': the header row has no \"",
                      key, "\" column");
    return static_cast<size_t>(it - header.begin());
  };
  const size_t ic = column(image_key), cc = column(caption_key);
  const fs::path folder = fs::path(path).parent_path();
  std::vector<CaptionEntry> out;
  for (size_t r = 1; r < records.size(); ++r) {
    const auto& [line_no, fields] = records[r];
    if (fields.size() == 1 && fields[0].empty()) continue;  // blank line
    TORCH_CHECK_VALUE(fields.size() > std::max(ic, cc), "caption file '", path, "' line ", line_no,
                      ": ", fields.size(), " fields, the header has ", header.size());
    // More fields than the header (pandas refuses them too): an unquoted delimiter in a caption
    // cut it short, or shifted caption text into the image column.
    TORCH_CHECK_VALUE(fields.size() <= header.size(), "caption file '", path, "' line ", line_no, ": ",
                      fields.size(), " fields, the header has ", header.size(),
                      " (a delimiter inside a caption? quote the field: \"a dog, running\")");
    out.push_back({resolve(folder, fields[ic]), fields[cc]});
  }
  return out;
}

}  // namespace

std::vector<std::pair<int64_t, std::vector<std::string>>> parse_csv(const std::string& text,
                                                                     const std::string& source,
                                                                     char delimiter) {
  std::vector<std::pair<int64_t, std::vector<std::string>>> records;
  std::vector<std::string> fields(1);
  bool quoted = false;
  int64_t line = 1, record_line = 1, quote_line = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (quoted) {
      if (c == '"' && i + 1 < text.size() && text[i + 1] == '"') {
        fields.back() += '"';  // "" inside quotes is one quote
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        line += c == '\n';
        fields.back() += c;
      }
    } else if (c == '"' && fields.back().empty()) {
      quoted = true;
      quote_line = line;
    } else if (c == delimiter) {
      fields.emplace_back();
    } else if (c == '\n' || c == '\r') {
      if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') ++i;
      records.emplace_back(record_line, std::move(fields));
      fields.assign(1, std::string());
      record_line = ++line;
    } else {
      fields.back() += c;
    }
  }
  TORCH_CHECK_VALUE(!quoted, "caption file '", source, "' line ", quote_line,
                    ": quoted field never closed");
  if (fields.size() > 1 || !fields[0].empty()) records.emplace_back(record_line, std::move(fields));
  return records;
}

std::vector<CaptionEntry> parse_caption_list(const std::string& text, const std::string& path,
                                             const std::string& image_key, const std::string& caption_key) {
  const std::string ext = extension_of(path);
  if (ext == ".jsonl" || ext == ".ndjson") return read_jsonl(text, path, image_key, caption_key);
  if (ext == ".csv" || ext == ".tsv")
    return read_csv(text, path, ext == ".tsv" ? '\t' : ',', image_key, caption_key);
  TORCH_CHECK_VALUE(false, "caption file '", path, "': unknown extension '", ext,
                    "', expected .jsonl, .ndjson, .csv or .tsv");
}

CaptionDataset::CaptionDataset(const std::string& path, const std::string& image_key,
                               const std::string& caption_key) {
  entries_ = parse_caption_list(vision::read_file_bytes(path), path, image_key, caption_key);
  TORCH_CHECK_VALUE(!entries_.empty(), "caption file '", path, "' lists no image-caption pairs");
}

Sample CaptionDataset::get(int64_t index) const {
  TORCH_CHECK_INDEX(index >= 0 && index < size(), "CaptionDataset: index ", index,
                    " out of range for ", size(), " samples");
  const CaptionEntry& e = entries_[static_cast<size_t>(index)];
  return {vision::read_image(e.image), -1, e.caption};
}

std::string CaptionDataset::source(int64_t index) const {
  return index >= 0 && index < size() ? entries_[static_cast<size_t>(index)].image
                                      : Dataset::source(index);
}

}  // namespace tessera::data
