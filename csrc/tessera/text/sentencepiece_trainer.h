// Training a SentencePiece model (google/sentencepiece's trainer) from sentences in memory: the
// tokenizer of a small language model trained on tessera's embedded text.
#pragma once
#include <map>
#include <string>
#include <vector>

namespace tessera::text {

/// The serialized model (`tokenizer.model` bytes) trained on `sentences`; `options` are
/// spm_train's flags without dashes ({"vocab_size", "512"}, {"model_type", "bpe"}, ...).
/// Throws c10::Error with the trainer's message for a bad flag or too small a corpus.
std::string train_sentencepiece(const std::vector<std::string>& sentences,
                                const std::map<std::string, std::string>& options);

}  // namespace tessera::text
