// The SentencePiece calls tessera makes, compiled into a library of their own
// (libtessera_sentencepiece.so, csrc/sentencepiece_shim/) that libtessera opens on first use with
// RTLD_DEEPBIND. Debian's libsentencepiece bundles an absl flag named like c10's
// `FLAGS_minloglevel`; loaded as an ordinary dependency beside LibTorch, it builds that flag over
// c10's memory (docs/design.md). Deep-bound, it binds its own. Neither side links the other's
// symbols: libtessera calls through `Api` and the virtual `Processor`, and nothing throws across
// the boundary (errors come back as messages, raised as c10::Error by the caller).
#pragma once
#include <string>
#include <unordered_map>
#include <vector>

namespace tessera::text::spm_shim {

constexpr int kVersion = 1;  // a shim from another build beside libtessera is refused

/// One loaded SentencePiece model. Methods returning std::string return "" on success, else the
/// library's message.
class Processor {
 public:
  virtual ~Processor() = default;
  virtual std::string load(const std::string& path) = 0;
  virtual std::string encode(const std::string& text, std::vector<int>* ids) const = 0;
  virtual std::string decode(const std::vector<int>& ids, std::string* text) const = 0;
  virtual int bos_id() const = 0;
  virtual int eos_id() const = 0;
  virtual int pad_id() const = 0;
  virtual int unk_id() const = 0;
  virtual int piece_size() const = 0;
  virtual std::string id_to_piece(int id) const = 0;
  virtual int piece_to_id(const std::string& piece) const = 0;
};

struct Api {
  int version;
  Processor* (*new_processor)();
  /// Trains on `sentences` with spm_train's `options`; "" and the model in `*model`, or the message.
  std::string (*train)(const std::vector<std::string>& sentences,
                       const std::unordered_map<std::string, std::string>& options, std::string* model);
};

/// The shim's entry points, opened once from libtessera's own folder. Throws c10::Error naming
/// the library when it cannot be opened. Defined in libtessera (sentencepiece_shim.cpp).
const Api& api();

}  // namespace tessera::text::spm_shim

extern "C" const tessera::text::spm_shim::Api* tessera_sentencepiece_api();
