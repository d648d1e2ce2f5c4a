#include "inference/generate.h"

#include <algorithm>
#include <chrono>

#include "core/error.h"

namespace mt {
namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// Host int32 [B, T] from rows of ids, right-padded with id 0 (padding is never attended to);
// forward_inference takes it to the device with the step's indices.
Tensor token_grid(const std::vector<std::vector<int32_t>>& rows, size_t T) {
  Tensor t = Tensor::zeros({int64_t(rows.size()), int64_t(T)}, DType::I32);
  for (size_t b = 0; b < rows.size(); ++b) std::copy(rows[b].begin(), rows[b].end(), t.data<int32_t>() + b * T);
  return t;
}

// Tensor parallelism: each rank holds the logits of its vocabulary shard [B, Vp / TP]; every rank
// gathers all of them (host [B, Vp], rank r's columns at r Vp / TP) and samples the same tokens.
Tensor full_vocab_logits(const Tensor& local, Communicator& tp) {
  const int64_t B = local.size(0), Vl = local.size(1), n = int64_t(tp.size());
  Tensor all = Tensor::empty({n * B * Vl}, local.dtype(), local.device());
  tp.all_gather(local.view({B * Vl}), all);
  const Tensor shards = all.to(Device::cpu());
  Tensor out = Tensor::empty({B, n * Vl}, local.dtype());
  for (int64_t r = 0; r < n; ++r)
    for (int64_t b = 0; b < B; ++b)
      out.view({B * n * Vl}).flat_slice((b * n + r) * Vl, Vl, {Vl}).copy_from(shards.flat_slice((r * B + b) * Vl, Vl, {Vl}));
  return out;
}

}  // namespace

GenerationResult generate(const GPTModel& model, const std::vector<std::vector<int32_t>>& prompts,
                          const GenerationOptions& o, const std::function<void(size_t, int32_t)>& on_token) {
  MT_CHECK(!prompts.empty() && o.max_new_tokens > 0, "generate: {} prompts, {} new tokens", prompts.size(),
           o.max_new_tokens);
  const auto t0 = Clock::now();
  const size_t B = prompts.size();
  size_t T = 0;
  for (const auto& p : prompts) {
    MT_CHECK(!p.empty(), "generate: an empty prompt");
    T = std::max(T, p.size());
  }
  const int64_t vocab = model.config().vocab_size;
  Communicator* tp = model.parallel().tp_size() > 1 ? model.parallel().tp : nullptr;
  GenerationResult r;
  r.tokens.resize(B);
  r.finish.resize(B, FinishReason::kLength);
  if (o.return_log_probs) r.log_probs.resize(B);
  if (o.top_log_probs > 0) r.top_log_probs.resize(B);
  std::vector<char> done(B, 0);
  // The next token of every sequence, with its log-probabilities when asked for (a finished
  // sequence's are computed with the batch and dropped).
  auto next_tokens = [&](const Tensor& local_logits, int64_t step) {
    const Tensor logits = tp ? full_vocab_logits(local_logits, *tp) : local_logits;
    std::vector<int32_t> next = sample_next_tokens(logits, vocab, o.sampling, step);
    if (o.return_log_probs) {
      const std::vector<float> lp = token_log_probs(logits, vocab, next);
      for (size_t b = 0; b < B; ++b)
        if (!done[b]) r.log_probs[b].push_back(lp[b]);
    }
    if (o.top_log_probs > 0) {
      auto top = top_token_log_probs(logits, vocab, o.top_log_probs);
      for (size_t b = 0; b < B; ++b)
        if (!done[b]) r.top_log_probs[b].push_back(std::move(top[b]));
    }
    return next;
  };
  KVCache cache = model.allocate_kv_cache(int64_t(B), int64_t(T) + o.max_new_tokens);

  r.timing.batch = int64_t(B);
  r.timing.prompt_tokens = int64_t(T);
  size_t active = B;
  // Records each sequence's new token; a sequence ends at an end-of-sequence id, the caller's
  // stop or its budget.
  auto take = [&](const std::vector<int32_t>& next) {
    int64_t taken = 0;
    for (size_t b = 0; b < B; ++b) {
      if (done[b]) continue;
      r.tokens[b].push_back(next[b]);
      ++taken;
      if (on_token) on_token(b, next[b]);
      const bool eos = std::find(o.eos_ids.begin(), o.eos_ids.end(), next[b]) != o.eos_ids.end();
      const bool stop = !eos && o.stop && o.stop(b, r.tokens[b]);
      if (eos || stop || int64_t(r.tokens[b].size()) >= o.max_new_tokens) {
        r.finish[b] = eos ? FinishReason::kEndOfSequence : stop ? FinishReason::kStop : FinishReason::kLength;
        done[b] = 1;
        --active;
      }
    }
    return taken;
  };

  std::vector<int32_t> counts(B);
  for (size_t b = 0; b < B; ++b) counts[b] = int32_t(prompts[b].size());
  Tensor logits = model.forward_inference(token_grid(prompts, T), counts, cache);
  take(next_tokens(logits, 0));
  r.timing.prefill_ms = ms_since(t0);

  // Decode: every sequence steps (a finished one repeats its last token, its result unused), so
  // the batch keeps its shape; the cache has room for max_new_tokens per sequence.
  const auto t1 = Clock::now();
  const std::vector<int32_t> ones(B, 1);
  std::vector<std::vector<int32_t>> last(B, std::vector<int32_t>(1));
  for (int64_t step = 1; active > 0; ++step) {
    for (size_t b = 0; b < B; ++b) last[b][0] = r.tokens[b].back();
    logits = model.forward_inference(token_grid(last, 1), ones, cache);
    r.timing.decode_tokens += take(next_tokens(logits, step));
    ++r.timing.decode_steps;
  }
  r.timing.decode_ms = ms_since(t1);
  return r;
}

}  // namespace mt
