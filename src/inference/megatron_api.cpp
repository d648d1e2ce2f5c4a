#include "inference/megatron_api.h"

#include <fmt/format.h>

#include <string>
#include <vector>

#include "data/tokenizer/utf8.h"
#include "inference/completion_text.h"
#include "inference/generate.h"
#include "inference/request_fields.h"
#include "inference/scoring.h"
#include "inference/served_prompts.h"

namespace mt {
namespace {

using nlohmann::json;

struct ApiRequest {
  std::vector<std::string> prompts;
  int64_t tokens_to_generate = 64;
  bool logprobs = false, add_bos = false;
  std::vector<std::string> stops;  // stop_on_eol: "\n"; stop_on_double_eol: "\n\n"
  SamplingParams sampling;
};

// Megatron's checks, in its order and with its messages (every failure is an HTTP 400 here).
ApiRequest parse_request(const json& j, uint64_t fresh_seed) {
  if (!j.is_object()) throw BadRequest("", "the request body must be a JSON object");
  if (!j.contains("prompts")) throw BadRequest("prompts", "prompts argument required");
  if (j.contains("max_len")) throw BadRequest("max_len", "max_len is no longer used.  Replace with tokens_to_generate");
  if (j.contains("sentences")) throw BadRequest("sentences", "sentences is no longer used.  Replace with prompts");
  ApiRequest r;
  const json& prompts = j.at("prompts");
  if (!prompts.is_array()) throw BadRequest("prompts", "prompts is not a list of strings");
  for (const json& p : prompts) {
    if (!p.is_string()) throw BadRequest("prompts", "prompts is not a list of strings");
    r.prompts.push_back(p.get<std::string>());
  }
  if (r.prompts.empty()) throw BadRequest("prompts", "prompts is empty");
  if (r.prompts.size() > 128) throw BadRequest("prompts", "Maximum number of prompts is 128");
  r.tokens_to_generate = int_field(j, "tokens_to_generate", 64, 0, INT32_MAX,
                                   "tokens_to_generate must be an integer greater than or equal to 0");
  r.logprobs = bool_field(j, "logprobs", false, "logprobs must be a boolean value");
  if (r.tokens_to_generate == 0 && !r.logprobs)
    throw BadRequest("tokens_to_generate", "tokens_to_generate=0 implies logprobs should be True");
  const double temperature = number_field(j, "temperature", 1.0, 0.0, 100.0, true,
                                          "temperature must be a positive number less than or equal to 100.0");
  const int64_t top_k = int_field(j, "top_k", 0, 0, 1000,
                                  "top_k must be an integer equal to or greater than 0 and less than or equal to 1000");
  const double top_p = number_field(j, "top_p", 0.0, 0.0, 1.0, false, "top_p must be a float from 0.0 to 1.0");
  if (top_p > 0.0 && top_k > 0) throw BadRequest("top_p", "cannot set both top-k and top-p samplings.");
  for (const char* name : {"top_p_decay", "top_p_bound"})
    if (number_field(j, name, 0.0, 0.0, 1.0, false, fmt::format("{} must be a float from 0.0 to 1.0", name)) != 0.0)
      throw BadRequest(name, fmt::format("{} is not supported by megatron serve", name));
  r.add_bos = bool_field(j, "add_BOS", false, "add_BOS must be a boolean value");
  for (const std::string& p : r.prompts)
    if (p.empty() && !r.add_bos) throw BadRequest("prompts", "Empty prompts require add_BOS=true");
  if (bool_field(j, "stop_on_double_eol", false, "stop_on_double_eol must be a boolean value")) r.stops = {"\n\n"};
  if (bool_field(j, "stop_on_eol", false, "stop_on_eol must be a boolean value")) r.stops = {"\n"};
  if (bool_field(j, "prevent_newline_after_colon", false, "prevent_newline_after_colon must be a boolean value"))
    throw BadRequest("prevent_newline_after_colon", "prevent_newline_after_colon is not supported by megatron serve");
  const int64_t seed = int_field(j, "random_seed", -1, 0, INT64_MAX, "random_seed must be a non-negative integer");
  bool_field(j, "no_log", false, "no_log must be a boolean value");
  if (has_field(j, "beam_width"))
    throw BadRequest("beam_width", "beam_width: beam search is not supported by megatron serve");
  // Megatron's top_p 0 means no top-p filter, ours 1.
  r.sampling = SamplingParams{float(temperature), top_k, top_p > 0.0 ? float(top_p) : 1.0f,
                              seed >= 0 ? uint64_t(seed) : fresh_seed};
  return r;
}

json concat(std::vector<float> a, const std::vector<float>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return json(a);
}

}  // namespace

json megatron_generate_api(const json& request, const LoadedModel& m, uint64_t fresh_seed) {
  const ApiRequest r = parse_request(request, fresh_seed);
  const Tokenizer& tok = *m.tokenizer;
  std::vector<std::vector<int32_t>> ids;
  for (size_t i = 0; i < r.prompts.size(); ++i) {
    std::vector<int32_t> p;
    if (r.add_bos) {
      if (m.bos_id < 0) throw BadRequest("add_BOS", "add_BOS: the model names no beginning-of-sequence id");
      p.push_back(m.bos_id);
    }
    tok.encode(r.prompts[i], p);
    check_prompt(m, p, i, "prompts", r.tokens_to_generate, "tokens_to_generate");
    ids.push_back(std::move(p));
  }
  const size_t B = ids.size();
  std::vector<std::vector<float>> prompt_log_probs = r.logprobs ? score_prompts(*m.model, ids)
                                                                 : std::vector<std::vector<float>>(B);
  std::vector<CompletionText> texts;
  for (size_t b = 0; b < B; ++b) texts.emplace_back(tok, ids[b], r.stops);
  GenerationResult g;
  g.tokens.resize(B);
  g.log_probs.resize(B);
  if (r.tokens_to_generate > 0) {
    GenerationOptions go;
    go.max_new_tokens = r.tokens_to_generate;
    go.sampling = r.sampling;
    go.eos_ids = m.eos_ids;
    go.return_log_probs = r.logprobs;
    if (!r.stops.empty())
      go.stop = [&](size_t b, const std::vector<int32_t>&) { return texts[b].stop_at() != std::string::npos; };
    g = generate(*m.model, ids, go, [&](size_t b, int32_t id) { texts[b].push(id); });
  }
  json text = json::array(), segments = json::array(), tokens = json::array(), logprobs = json::array();
  for (size_t b = 0; b < B; ++b) {
    texts[b].finish();
    text.push_back(r.prompts[b] + texts[b].text());
    std::vector<int32_t> all = ids[b];
    all.insert(all.end(), g.tokens[b].begin(), g.tokens[b].end());
    json seg = json::array();
    for (int32_t id : all) seg.push_back(sanitize_utf8(tok.decode(std::span<const int32_t>(&id, 1))));
    segments.push_back(std::move(seg));
    tokens.push_back(all);
    if (r.logprobs) logprobs.push_back(concat(prompt_log_probs[b], g.log_probs[b]));
  }
  return json{{"text", text}, {"segments", segments}, {"tokens", tokens},
              {"logprobs", r.logprobs ? logprobs : json(nullptr)}};
}

}  // namespace mt
