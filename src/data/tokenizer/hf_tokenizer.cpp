// Loaders for the byte-level BPE files: a Hugging Face tokenizer.json, and GPT-2's
// vocab.json + merges.txt. The JSON is untrusted input: every field is checked and any
// problem is a UserError naming the file and the field.
#include "data/tokenizer/hf_tokenizer.h"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "core/file_io.h"
#include "core/json_depth.h"

namespace mt {
namespace {

using json = nlohmann::json;

std::string read_text_file(const std::string& path, const char* flag) { return read_regular_file(path, flag); }

json parse_json(const std::string& text, const std::string& source) {
  check_json_depth(text, source);
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) MT_USER_ERROR("{}: not valid JSON", source);
  return j;
}

const json* member(const json& obj, const char* key) {
  if (!obj.is_object()) return nullptr;
  auto it = obj.find(key);
  return it == obj.end() || it->is_null() ? nullptr : &*it;
}

bool get_bool(const json& obj, const char* key, bool dflt, const std::string& source, const char* where) {
  const json* v = member(obj, key);
  if (!v) return dflt;
  if (!v->is_boolean()) MT_USER_ERROR("{}: {}.{} must be true or false", source, where, key);
  return v->get<bool>();
}

std::string get_string(const json& obj, const char* key, const std::string& source, const char* where) {
  const json* v = member(obj, key);
  if (!v || !v->is_string()) MT_USER_ERROR("{}: {}.{} must be a string", source, where, key);
  return v->get<std::string>();
}

int32_t get_id(const json& v, const std::string& source, const std::string& what) {
  if (!v.is_number_integer()) MT_USER_ERROR("{}: {} must be an integer id", source, what);
  int64_t id = v.get<int64_t>();
  if (id < 0 || id > (int64_t(1) << 30)) MT_USER_ERROR("{}: {} = {} is out of range", source, what, id);
  return int32_t(id);
}

void read_vocab(const json& vocab, const std::string& source, ByteLevelBPEConfig& c) {
  if (!vocab.is_object()) MT_USER_ERROR("{}: the vocabulary must be an object of token: id", source);
  c.vocab.reserve(vocab.size());
  for (auto it = vocab.begin(); it != vocab.end(); ++it)
    c.vocab.emplace_back(it.key(), get_id(it.value(), source, "the id of token \"" + it.key() + "\""));
}

std::pair<std::string, std::string> split_merge(std::string_view line, const std::string& source, size_t n) {
  size_t sp = line.find(' ');
  if (sp == std::string_view::npos || sp == 0 || sp + 1 >= line.size() || line.find(' ', sp + 1) != std::string_view::npos)
    MT_USER_ERROR("{}: merge {} \"{}\" is not two tokens separated by one space", source, n, line);
  return {std::string(line.substr(0, sp)), std::string(line.substr(sp + 1))};
}

void read_pre_tokenizer(const json& p, const std::string& source, ByteLevelBPEConfig& c, bool& byte_level) {
  if (!p.is_object()) MT_USER_ERROR("{}: pre_tokenizer must be an object", source);
  std::string type = get_string(p, "type", source, "pre_tokenizer");
  if (type == "Sequence") {
    const json* list = member(p, "pretokenizers");
    if (!list || !list->is_array()) MT_USER_ERROR("{}: pre_tokenizer Sequence needs a pretokenizers list", source);
    for (const json& q : *list) read_pre_tokenizer(q, source, c, byte_level);
  } else if (type == "ByteLevel") {
    byte_level = true;
    c.add_prefix_space = get_bool(p, "add_prefix_space", false, source, "ByteLevel");
    if (get_bool(p, "use_regex", true, source, "ByteLevel")) c.splits.push_back({kGPT2SplitPattern, false});
  } else if (type == "Split") {
    const json* pat = member(p, "pattern");
    std::string behavior = get_string(p, "behavior", source, "Split");
    if (behavior != "Isolated")
      MT_USER_ERROR("{}: Split behavior \"{}\" is not supported (only Isolated)", source, behavior);
    if (get_bool(p, "invert", false, source, "Split")) MT_USER_ERROR("{}: Split with invert=true is not supported", source);
    if (pat && member(*pat, "Regex") && (*pat)["Regex"].is_string())
      c.splits.push_back({(*pat)["Regex"].get<std::string>(), false});
    else if (pat && member(*pat, "String") && (*pat)["String"].is_string())
      c.splits.push_back({(*pat)["String"].get<std::string>(), true});
    else
      MT_USER_ERROR("{}: Split.pattern must be {{\"Regex\": ...}} or {{\"String\": ...}}", source);
  } else {
    MT_USER_ERROR("{}: pre_tokenizer \"{}\" is not supported (ByteLevel, Split and Sequence are)", source, type);
  }
}

// tokenizer_config.json beside tokenizer.json names eos/bos/pad as a string or {"content": ...}.
std::string config_token(const json& cfg, const char* key) {
  const json* v = member(cfg, key);
  if (v && v->is_string()) return v->get<std::string>();
  if (v && v->is_object() && member(*v, "content") && (*v)["content"].is_string()) return (*v)["content"].get<std::string>();
  return {};
}

}  // namespace

ByteLevelBPEConfig parse_hf_tokenizer_json(const std::string& text, const std::string& source) {
  ByteLevelBPEConfig c;
  c.source = source;
  json j = parse_json(text, source);
  if (!j.is_object()) MT_USER_ERROR("{}: a tokenizer.json must be a JSON object", source);
  const json* model = member(j, "model");
  if (!model || !model->is_object()) MT_USER_ERROR("{}: no \"model\" object", source);
  if (const json* t = member(*model, "type"); t && (!t->is_string() || t->get<std::string>() != "BPE"))
    MT_USER_ERROR("{}: model type {} is not supported (only BPE)", source, t->dump());
  for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (const json* v = member(*model, k); v && !(v->is_string() && v->get<std::string>().empty()))
      MT_USER_ERROR("{}: model.{} is not supported", source, k);
  if (get_bool(*model, "byte_fallback", false, source, "model"))
    MT_USER_ERROR("{}: model.byte_fallback is not supported (byte-level BPE needs none)", source);
  c.ignore_merges = get_bool(*model, "ignore_merges", false, source, "model");
  const json* vocab = member(*model, "vocab");
  if (!vocab) MT_USER_ERROR("{}: no model.vocab", source);
  read_vocab(*vocab, source, c);
  const json* merges = member(*model, "merges");
  if (!merges || !merges->is_array()) MT_USER_ERROR("{}: model.merges must be a list", source);
  c.merges.reserve(merges->size());
  for (size_t r = 0; r < merges->size(); ++r) {
    const json& m = (*merges)[r];
    if (m.is_string()) {
      c.merges.push_back(split_merge(m.get_ref<const std::string&>(), source, r + 1));
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      c.merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
    } else {
      MT_USER_ERROR("{}: merge {} must be \"a b\" or [\"a\", \"b\"]", source, r + 1);
    }
  }
  if (const json* norm = member(j, "normalizer")) {
    bool empty_seq = member(*norm, "type") && (*norm)["type"] == "Sequence" && member(*norm, "normalizers") &&
                     (*norm)["normalizers"].is_array() && (*norm)["normalizers"].empty();
    if (!empty_seq) MT_USER_ERROR("{}: normalizer {} is not supported (byte-level BPE has none)", source, norm->dump().substr(0, 80));
  }
  bool byte_level = false;
  if (const json* pre = member(j, "pre_tokenizer")) read_pre_tokenizer(*pre, source, c, byte_level);
  if (!byte_level)
    MT_USER_ERROR("{}: only byte-level BPE is supported (the pre_tokenizer must include ByteLevel)", source);
  if (const json* added = member(j, "added_tokens")) {
    if (!added->is_array()) MT_USER_ERROR("{}: added_tokens must be a list", source);
    for (const json& a : *added) {
      ByteLevelBPEConfig::Added t;
      t.content = get_string(a, "content", source, "added_tokens[]");
      const json* id = member(a, "id");
      if (!id) MT_USER_ERROR("{}: added token \"{}\" has no id", source, t.content);
      t.id = get_id(*id, source, "the id of added token \"" + t.content + "\"");
      c.added.push_back(std::move(t));
    }
  }
  return c;
}

std::unique_ptr<ByteLevelBPETokenizer> load_hf_tokenizer(const std::string& path_or_dir) {
  namespace fs = std::filesystem;
  std::string path = path_or_dir;
  if (fs::is_directory(path)) path = (fs::path(path) / "tokenizer.json").string();
  auto tok = std::make_unique<ByteLevelBPETokenizer>("HuggingFaceTokenizer",
                                                     parse_hf_tokenizer_json(read_text_file(path, "--tokenizer-model"), path));
  // Megatron takes eos/bos/pad from the Hugging Face tokenizer; tokenizer_config.json holds
  // them. Without it, the usual end-of-text names are tried in order.
  std::string eos, bos, pad;
  fs::path cfg_path = fs::path(path).parent_path() / "tokenizer_config.json";
  if (fs::exists(cfg_path)) {
    json cfg = parse_json(read_text_file(cfg_path.string(), "--tokenizer-model"), cfg_path.string());
    eos = config_token(cfg, "eos_token");
    bos = config_token(cfg, "bos_token");
    pad = config_token(cfg, "pad_token");
  }
  auto first_of = [&](std::initializer_list<const char*> names) {
    for (const char* n : names)
      if (int32_t id = tok->token_id(n); id >= 0) return id;
    return int32_t(-1);
  };
  int32_t eod = eos.empty() ? first_of({"<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "<|im_end|>"}) : tok->token_id(eos);
  int32_t b = bos.empty() ? first_of({"<|begin_of_text|>", "<s>", "<bos>"}) : tok->token_id(bos);
  int32_t p = pad.empty() ? first_of({"<pad>", "<|pad|>"}) : tok->token_id(pad);
  tok->set_special_ids(eod, b, p);
  return tok;
}

std::unique_ptr<ByteLevelBPETokenizer> load_gpt2_tokenizer(const std::string& vocab_file, const std::string& merge_file) {
  ByteLevelBPEConfig c;
  c.source = vocab_file;
  read_vocab(parse_json(read_text_file(vocab_file, "--vocab-file"), vocab_file), vocab_file, c);
  c.source = merge_file;
  std::string merges = read_text_file(merge_file, "--merge-file");
  std::istringstream in(merges);
  std::string line;
  size_t n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line.rfind("#version", 0) == 0) continue;
    c.merges.push_back(split_merge(line, merge_file, n));
  }
  c.source = vocab_file + " + " + merge_file;
  c.splits.push_back({kGPT2SplitPattern, false});
  auto tok = std::make_unique<ByteLevelBPETokenizer>("GPT2BPETokenizer", c);
  tok->set_special_ids(tok->token_id("<|endoftext|>"), -1, -1);
  if (tok->eod() < 0) MT_USER_ERROR("{}: no <|endoftext|> token (GPT2BPETokenizer's end of document)", vocab_file);
  return tok;
}

}  // namespace mt
