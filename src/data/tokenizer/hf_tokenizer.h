#pragma once
// Byte-level BPE from files: Hugging Face tokenizer.json and GPT-2's vocab.json + merges.txt.
#include <memory>
#include <string>

#include "data/tokenizer/byte_level_bpe.h"

namespace mt {

// Parses the text of a tokenizer.json (BPE model, ByteLevel / Split / Sequence pre-tokenizer,
// no normalizer). `source` names it in errors. UserError on anything malformed or unsupported.
ByteLevelBPEConfig parse_hf_tokenizer_json(const std::string& text, const std::string& source);

// HuggingFaceTokenizer: `path` is a tokenizer.json or a folder holding one; eod/bos/pad come
// from tokenizer_config.json beside it when present, else from the usual token names.
std::unique_ptr<ByteLevelBPETokenizer> load_hf_tokenizer(const std::string& path);

// GPT2BPETokenizer (Megatron's): eod = <|endoftext|>; special tokens in the text are not
// matched (Megatron's GPT-2 tokenizer encodes "<|endoftext|>" in the text as plain text).
std::unique_ptr<ByteLevelBPETokenizer> load_gpt2_tokenizer(const std::string& vocab_file, const std::string& merge_file);

}  // namespace mt
