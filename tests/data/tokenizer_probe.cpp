// Helper for tests/python/test_tokenizer*.py (not a ctest test): loads a tokenizer from
// Megatron's flags and encodes a file of texts, each given as "<byte count>\n<bytes>".
// Prints, per text, one line "ids: 1 2 3" and one line "decoded: <hex of decode(ids)>";
// first a line "info: vocab_size eod bos pad". Exit 2 with one line on a user error.
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include "core/error.h"
#include "data/tokenizer/tokenizer.h"

int main(int argc, char** argv) {
  mt::TokenizerOptions o;
  std::string input;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--tokenizer-type") o.type = v;
    else if (k == "--vocab-file") o.vocab_file = v;
    else if (k == "--merge-file") o.merge_file = v;
    else if (k == "--tokenizer-model") o.model = v;
    else if (k == "--vocab-size") o.vocab_size = std::stoll(v);
    else if (k == "--input") input = v;
  }
  try {
    auto tok = mt::build_tokenizer(o);
    std::printf("info: %lld %d %d %d\n", (long long)tok->vocab_size(), tok->eod(), tok->bos(), tok->pad());
    if (input.empty()) return 0;
    std::ifstream f(input, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    std::string all = ss.str();
    size_t pos = 0;
    std::string line;
    while (pos < all.size()) {
      size_t nl = all.find('\n', pos);
      size_t n = std::stoull(all.substr(pos, nl - pos));
      std::string text = all.substr(nl + 1, n);
      pos = nl + 1 + n;
      auto ids = tok->encode(text);
      line = "ids:";
      for (int32_t t : ids) {
        line += ' ';
        line += std::to_string(t);
      }
      std::printf("%s\n", line.c_str());
      std::string d = tok->decode(ids);
      line = "decoded: ";
      static const char* hex = "0123456789abcdef";
      for (unsigned char c : d) {
        line += hex[c >> 4];
        line += hex[c & 15];
      }
      std::printf("%s\n", line.c_str());
    }
  } catch (const mt::UserError& e) {
    std::fprintf(stderr, "tokenizer_probe: error: %s\n", e.what());
    return 2;
  }
  return 0;
}
