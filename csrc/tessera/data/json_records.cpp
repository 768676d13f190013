#include "tessera/data/json_records.h"
#include "tessera/core/regular_file.h"

#include <c10/util/Exception.h>

#include <cstdio>
#include <fstream>
#include <memory>

namespace tessera::data {
namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

std::string shown(char c) {
  if (c >= 0x20 && c < 0x7f) return std::string("'") + c + "'";
  char hex[8];
  std::snprintf(hex, sizeof hex, "0x%02x", static_cast<unsigned char>(c));
  return hex;
}

/// A byte-at-a-time state machine, fed in chunks. Outside a record it expects the framing of
/// the format (list: '[', records separated by ',', ']'; lines: records separated by newlines);
/// inside one it follows strings and nesting until the record's '{' is closed.
class Scanner {
 public:
  Scanner(std::string name, JsonScanLimits limits) : name_(std::move(name)), limits_(limits) {}

  void feed(const char* data, size_t size) {
    for (size_t i = 0; i < size; ++i, ++pos_) {
      step(data[i]);
      if (data[i] == '\n') ++line_;
    }
  }

  JsonRecords finish() {
    if (state_ == State::kStart) fail(pos_, "the file is empty or only whitespace (no records)");
    if (state_ == State::kInRecord)
      fail(pos_, "the file ends inside record " + std::to_string(out_.offsets.size()) + " (started at byte " +
                     std::to_string(record_start_) + "): the file is truncated");
    if (out_.format == "list" && state_ != State::kAfterList)
      fail(pos_, "the file ends before the list's closing ']': the file is truncated");
    return std::move(out_);
  }

 private:
  enum class State { kStart, kListOpen, kAfterRecord, kListComma, kInRecord, kAfterList, kLines, kLineEnd };

  [[noreturn]] void fail(int64_t at, const std::string& what) const {
    TORCH_CHECK_VALUE(false, name_, ": byte ", at, ": ", what,
                      " (expected a JSON list of objects, or one JSON object per line)");
  }

  void open_record() {
    record_start_ = pos_;
    stack_.assign(1, '}');
    in_string_ = escaped_ = false;
    state_ = State::kInRecord;
  }

  void step(char c) {
    switch (state_) {
      case State::kStart:
        if (is_space(c) || (pos_ < 3 && c == "\xEF\xBB\xBF"[pos_])) return;  // a UTF-8 byte-order mark
        if (c == '[') {
          out_.format = "list";
          state_ = State::kListOpen;
        } else if (c == '{') {
          out_.format = "lines";
          open_record();
        } else {
          fail(pos_, "starts with " + shown(c));
        }
        return;
      case State::kListOpen:
      case State::kListComma:
        if (is_space(c)) return;
        if (c == '{') return open_record();
        if (c == ']' && state_ == State::kListOpen) {
          state_ = State::kAfterList;
          return;
        }
        fail(pos_, "record " + std::to_string(out_.offsets.size()) + " is not an object (it starts with " +
                       shown(c) + ")");
      case State::kAfterRecord:
        if (is_space(c)) return;
        if (c == ',') {
          state_ = State::kListComma;
          return;
        }
        if (c == ']') {
          state_ = State::kAfterList;
          return;
        }
        fail(pos_, shown(c) + " after record " + std::to_string(out_.offsets.size() - 1) + " (expected ',' or ']')");
      case State::kAfterList:
        if (!is_space(c)) fail(pos_, "data after the list's closing ']' (" + shown(c) + ")");
        return;
      case State::kLines:
        if (is_space(c)) return;
        if (c == '{') return open_record();
        fail(pos_, "line " + std::to_string(line_) + " does not start an object (" + shown(c) + ")");
      case State::kLineEnd:
        if (c == '\n') {
          state_ = State::kLines;
        } else if (!is_space(c)) {
          fail(pos_, "line " + std::to_string(line_) + " has " + shown(c) + " after its object (one object per line)");
        }
        return;
      case State::kInRecord:
        in_record(c);
        return;
    }
  }

  void in_record(char c) {
    if (pos_ - record_start_ >= limits_.max_record_bytes)
      fail(record_start_, "record " + std::to_string(out_.offsets.size()) + " is longer than " +
                              std::to_string(limits_.max_record_bytes) + " bytes");
    if (in_string_) {
      if (escaped_) {
        escaped_ = false;
      } else if (c == '\\') {
        escaped_ = true;
      } else if (c == '"') {
        in_string_ = false;
      } else if (c == '\n') {
        fail(pos_, "a line break inside a string of record " + std::to_string(out_.offsets.size()));
      }
      return;
    }
    if (c == '"') {
      in_string_ = true;
    } else if (c == '{' || c == '[') {
      if (static_cast<int>(stack_.size()) >= limits_.max_depth)
        fail(pos_, "record " + std::to_string(out_.offsets.size()) + " nests deeper than " +
                       std::to_string(limits_.max_depth) + " levels");
      stack_.push_back(c == '{' ? '}' : ']');
    } else if (c == '}' || c == ']') {
      if (c != stack_.back())
        fail(pos_, shown(c) + " closes a " + (stack_.back() == '}' ? "'{'" : "'['") + " in record " +
                       std::to_string(out_.offsets.size()));
      stack_.pop_back();
      if (stack_.empty()) {
        out_.offsets.push_back(record_start_);
        out_.lengths.push_back(pos_ + 1 - record_start_);
        state_ = out_.format == "list" ? State::kAfterRecord : State::kLineEnd;
      }
    } else if (c == '\n' && out_.format == "lines") {
      fail(pos_, "line " + std::to_string(line_) + " ends inside its object (one object per line)");
    }
  }

  std::string name_;
  JsonScanLimits limits_;
  JsonRecords out_;
  State state_ = State::kStart;
  int64_t pos_ = 0, record_start_ = 0, line_ = 1;
  std::vector<char> stack_;  // the closing bracket each open one expects
  bool in_string_ = false, escaped_ = false;
};

}  // namespace

JsonRecords scan_json_records_bytes(std::string_view bytes, const std::string& name, JsonScanLimits limits) {
  Scanner scanner(name, limits);
  scanner.feed(bytes.data(), bytes.size());
  return scanner.finish();
}

JsonRecords scan_json_records(const std::string& path, JsonScanLimits limits) {
  core::require_regular_file(path, "the data file");
  std::ifstream in(path, std::ios::binary);
  TORCH_CHECK_VALUE(in.good(), path, ": cannot open the data file");
  Scanner scanner(path, limits);
  constexpr size_t kChunk = size_t(1) << 20;
  std::unique_ptr<char[]> buffer(new char[kChunk]);
  while (in) {
    in.read(buffer.get(), kChunk);
    scanner.feed(buffer.get(), static_cast<size_t>(in.gcount()));
  }
  return scanner.finish();
}

}  // namespace tessera::data
