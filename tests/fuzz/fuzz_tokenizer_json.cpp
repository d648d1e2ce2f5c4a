// libFuzzer target: any bytes as a tokenizer.json either load as a byte-level BPE tokenizer
// that encodes and decodes text, or fail with a UserError — never crash.
#include <cstdint>
#include <string>

#include "core/error.h"
#include "data/tokenizer/byte_level_bpe.h"
#include "data/tokenizer/hf_tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  try {
    mt::ByteLevelBPEConfig c = mt::parse_hf_tokenizer_json(text, "fuzz.json");
    mt::ByteLevelBPETokenizer tok("HuggingFaceTokenizer", c);
    for (std::string s : {std::string("Hello world, it's 123 日本 \xff <|endoftext|>  "), text.substr(0, 256)}) {
      auto ids = tok.encode(s);
      (void)tok.decode(ids);
    }
  } catch (const mt::UserError&) {
  }
  return 0;
}
