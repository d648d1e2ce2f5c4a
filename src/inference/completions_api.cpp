#include "inference/completions_api.h"

#include <fmt/format.h>

#include <algorithm>
#include <optional>
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

struct Prompt {
  std::string text;  // as given, or the decoded token ids
  std::vector<int32_t> ids;
  bool from_text = true;
};

struct CompletionsRequest {
  std::vector<Prompt> prompts;
  int64_t max_tokens = 16;
  bool echo = false, add_bos = false;
  std::optional<int64_t> logprobs;  // absent: no logprobs
  std::vector<std::string> stops;
  SamplingParams sampling;
};

bool is_token_ids(const json& v) {
  return v.is_array() && !v.empty() && std::all_of(v.begin(), v.end(), [](const json& x) { return x.is_number_integer(); });
}

std::vector<int32_t> token_ids(const json& v) {
  std::vector<int32_t> ids;
  for (const json& x : v) {
    if (x.is_number_unsigned() ? x.get<uint64_t>() > uint64_t(INT32_MAX) : x.get<int64_t>() < 0)
      throw BadRequest("prompt", fmt::format("prompt: token id {} is not a vocabulary id", x.dump()));
    ids.push_back(int32_t(x.get<int64_t>()));
  }
  return ids;
}

CompletionsRequest parse_request(const json& j, uint64_t fresh_seed) {
  if (!j.is_object()) throw BadRequest("", "the request body must be a JSON object");
  if (!has_field(j, "prompt")) throw BadRequest("prompt", "prompt is required");
  CompletionsRequest r;
  const json& p = j.at("prompt");
  const char* shape = "prompt must be a string, a list of strings, a list of token ids or a list of lists of token ids";
  if (p.is_string()) {
    r.prompts.push_back({p.get<std::string>(), {}, true});
  } else if (!p.is_array()) {
    throw BadRequest("prompt", shape);
  } else if (p.empty()) {
    throw BadRequest("prompt", "prompt contains no items");
  } else if (is_token_ids(p)) {
    r.prompts.push_back({"", token_ids(p), false});
  } else {
    for (const json& x : p) {
      if (x.is_string())
        r.prompts.push_back({x.get<std::string>(), {}, true});
      else if (is_token_ids(x))
        r.prompts.push_back({"", token_ids(x), false});
      else
        throw BadRequest("prompt", shape);
    }
  }
  if (r.prompts.size() > 128) throw BadRequest("prompt", "prompt: at most 128 prompts per request");
  r.max_tokens = int_field(j, "max_tokens", 16, 0, INT32_MAX, "max_tokens must be an integer >= 0");
  r.echo = bool_field(j, "echo", false, "echo must be a boolean value");
  if (r.max_tokens == 0 && !r.echo) throw BadRequest("max_tokens", "max_tokens=0 needs echo=true (nothing to return)");
  r.add_bos = bool_field(j, "add_BOS", false, "add_BOS must be a boolean value");
  const double temperature = number_field(j, "temperature", 1.0, 0.0, 100.0, false,
                                          "temperature must be a number from 0 to 100 (0: greedy)");
  const double top_p = number_field(j, "top_p", 1.0, 0.0, 1.0, true, "top_p must be a number in (0, 1]");
  const int64_t top_k = int_field(j, "top_k", 0, -1, INT32_MAX, "top_k must be an integer >= 0 (0 or -1: no top-k filter)");
  const int64_t seed = int_field(j, "seed", -1, 0, INT64_MAX, "seed must be a non-negative integer");
  if (has_field(j, "logprobs"))
    r.logprobs = int_field(j, "logprobs", 0, 0, 20, "logprobs must be an integer from 0 to 20");
  if (has_field(j, "stop")) {
    const json& s = j.at("stop");
    const bool strings = s.is_array() && std::all_of(s.begin(), s.end(), [](const json& x) { return x.is_string(); });
    if (!s.is_string() && !strings) throw BadRequest("stop", "stop must be a string or a list of strings");
    if (s.is_string())
      r.stops.push_back(s.get<std::string>());
    else
      for (const json& x : s) r.stops.push_back(x.get<std::string>());
  }
  for (const char* name : {"n", "best_of"})
    int_field(j, name, 1, 1, 1, fmt::format("{} must be 1 (one completion per prompt)", name));
  if (bool_field(j, "stream", false, "stream must be a boolean value"))
    throw BadRequest("stream", "stream=true is not supported by megatron serve");
  for (const char* name : {"presence_penalty", "frequency_penalty"})
    if (number_field(j, name, 0.0, -2.0, 2.0, false, fmt::format("{} must be a number from -2 to 2", name)) != 0.0)
      throw BadRequest(name, fmt::format("{} is not supported by megatron serve", name));
  if (has_field(j, "logit_bias") && !(j.at("logit_bias").is_object() && j.at("logit_bias").empty()))
    throw BadRequest("logit_bias", "logit_bias is not supported by megatron serve");
  r.sampling = SamplingParams{float(temperature), std::max<int64_t>(top_k, 0), float(top_p),
                              seed >= 0 ? uint64_t(seed) : fresh_seed};
  return r;
}

std::string token_text(const Tokenizer& tok, int32_t id) { return sanitize_utf8(tok.decode(std::span<const int32_t>(&id, 1))); }

json top_alternatives(const Tokenizer& tok, const std::vector<TokenLogProb>& top) {
  json d = json::object();
  for (const TokenLogProb& t : top) {
    const std::string s = token_text(tok, t.id);
    if (!d.contains(s)) d[s] = t.log_prob;  // two ids of one text: the more likely one's
  }
  return d;
}

}  // namespace

json completions_api(const json& request, const LoadedModel& m, const CompletionsContext& c) {
  CompletionsRequest r = parse_request(request, c.fresh_seed);
  const Tokenizer& tok = *m.tokenizer;
  std::vector<std::vector<int32_t>> ids;
  for (size_t i = 0; i < r.prompts.size(); ++i) {
    Prompt& p = r.prompts[i];
    std::vector<int32_t> v;
    if (r.add_bos) {
      if (m.bos_id < 0) throw BadRequest("add_BOS", "add_BOS: the model names no beginning-of-sequence id");
      v.push_back(m.bos_id);
    }
    if (p.from_text) {
      tok.encode(p.text, v);
    } else {
      v.insert(v.end(), p.ids.begin(), p.ids.end());
    }
    check_prompt(m, v, i, "prompt", r.max_tokens, "max_tokens");
    if (!p.from_text) p.text = sanitize_utf8(tok.decode(p.ids));
    ids.push_back(std::move(v));
  }
  const size_t B = ids.size();
  const bool want_log_probs = r.logprobs.has_value();
  const int64_t top_k = r.logprobs.value_or(0);
  const std::vector<std::vector<float>> prompt_log_probs =
      want_log_probs && r.echo ? score_prompts(*m.model, ids) : std::vector<std::vector<float>>(B);

  std::vector<CompletionText> texts;
  for (size_t b = 0; b < B; ++b) texts.emplace_back(tok, ids[b], r.stops);
  GenerationResult g;
  g.tokens.resize(B);
  g.finish.resize(B, FinishReason::kLength);
  if (r.max_tokens > 0) {
    GenerationOptions go;
    go.max_new_tokens = r.max_tokens;
    go.sampling = r.sampling;
    go.eos_ids = m.eos_ids;
    go.return_log_probs = want_log_probs;
    go.top_log_probs = top_k;
    if (!r.stops.empty())
      go.stop = [&](size_t b, const std::vector<int32_t>&) { return texts[b].stop_at() != std::string::npos; };
    g = generate(*m.model, ids, go, [&](size_t b, int32_t id) { texts[b].push(id); });
  }

  json choices = json::array();
  int64_t prompt_tokens = 0, completion_tokens = 0;
  for (size_t b = 0; b < B; ++b) {
    CompletionText& t = texts[b];
    t.finish();
    const std::vector<int32_t>& gen = g.tokens[b];
    prompt_tokens += int64_t(ids[b].size());
    completion_tokens += int64_t(gen.size());
    // The completion ends before an end-of-sequence token's text and before a stop string.
    size_t keep = gen.size(), end = t.text().size();
    if (g.finish[b] == FinishReason::kEndOfSequence) end = t.token_offsets()[--keep];
    const bool stopped = t.stop_at() != std::string::npos && t.stop_at() < end;
    if (stopped) {
      end = t.stop_at();
      while (keep > 0 && t.token_offsets()[keep - 1] >= end) --keep;
    }
    const std::string completion = t.text().substr(0, end);
    const std::string& prompt = r.prompts[b].text;
    json choice = {{"text", r.echo ? prompt + completion : completion},
                   {"index", b},
                   {"logprobs", nullptr},
                   {"finish_reason", stopped || g.finish[b] == FinishReason::kEndOfSequence ? "stop" : "length"}};
    if (want_log_probs) {
      json tokens = json::array(), token_log_probs = json::array(), top = json::array(), offsets = json::array();
      if (r.echo) {  // the prompt's tokens: offsets within its decoded text, no alternatives
        CompletionText pt(tok, {});
        for (int32_t id : ids[b]) pt.push(id);
        for (size_t i = 0; i < ids[b].size(); ++i) {
          tokens.push_back(token_text(tok, ids[b][i]));
          token_log_probs.push_back(i == 0 ? json(nullptr) : json(prompt_log_probs[b][i - 1]));
          top.push_back(nullptr);
          offsets.push_back(utf8_chars(pt.text(), pt.token_offsets()[i]));
        }
      }
      const size_t base = utf8_chars(prompt, prompt.size());
      for (size_t i = 0; i < keep; ++i) {
        tokens.push_back(token_text(tok, gen[i]));
        token_log_probs.push_back(g.log_probs[b][i]);
        if (top_k > 0) top.push_back(top_alternatives(tok, g.top_log_probs[b][i]));
        offsets.push_back(base + utf8_chars(t.text(), t.token_offsets()[i]));
      }
      choice["logprobs"] = {{"tokens", tokens},
                            {"token_logprobs", token_log_probs},
                            {"top_logprobs", top_k > 0 ? top : json(nullptr)},
                            {"text_offset", offsets}};
    }
    choices.push_back(std::move(choice));
  }
  return json{{"id", c.id},
              {"object", "text_completion"},
              {"created", c.created},
              {"model", c.model_name},
              {"choices", choices},
              {"usage",
               {{"prompt_tokens", prompt_tokens},
                {"completion_tokens", completion_tokens},
                {"total_tokens", prompt_tokens + completion_tokens}}}};
}

}  // namespace mt
