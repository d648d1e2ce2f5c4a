#include "generate_cmd.h"

#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <fstream>

#include "comm/mpi_communicator.h"
#include "comm/nccl_communicator.h"
#include "comm/process_groups.h"
#include "core/error.h"
#include "data/tokenizer/utf8.h"
#include "inference/generate.h"
#include "inference/model_loader.h"
#include "inference/text_stream.h"
#include "train/arguments.h"

namespace mt {
namespace {

using Clock = std::chrono::steady_clock;

// "1,2,3" -> {1, 2, 3}.
std::vector<int32_t> parse_ids(const std::string& s) {
  std::vector<int32_t> ids;
  size_t at = 0;
  while (at <= s.size()) {
    const size_t comma = std::min(s.find(',', at), s.size());
    const std::string item = s.substr(at, comma - at);
    size_t used = 0;
    long long v = -1;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (item.empty() || used != item.size() || v < 0 || v > INT32_MAX)
      MT_USER_ERROR("--prompt-token-ids \"{}\": expected comma-separated token ids like 1,2,3", s);
    ids.push_back(int32_t(v));
    at = comma + 1;
  }
  return ids;
}

// Flag errors are found identically on every rank: ArgumentError, printed once.
#define MT_ARG_ERROR(...) throw ArgumentError(fmt::format(__VA_ARGS__))

void check_options(const GenerateCommand::Options& o) {
  check_model_source(o.model);
  const int sources = int(!o.prompts.empty()) + int(!o.prompts_file.empty()) + int(!o.prompt_token_ids.empty());
  if (sources != 1) MT_ARG_ERROR("give one kind of prompt: --prompt TEXT, --prompts-file FILE or --prompt-token-ids IDS");
  if (o.max_new_tokens < 1) MT_ARG_ERROR("--max-new-tokens {}: must be at least 1", o.max_new_tokens);
  if (!(o.temperature >= 0.0f)) MT_ARG_ERROR("--temperature {}: must be >= 0 (0: greedy)", o.temperature);
  if (o.top_k < 0) MT_ARG_ERROR("--top-k {}: must be >= 0 (0: no top-k filter)", o.top_k);
  if (!(o.top_p > 0.0f && o.top_p <= 1.0f)) MT_ARG_ERROR("--top-p {}: must be in (0, 1] (1: no top-p filter)", o.top_p);
  if (o.warmup < 0) MT_ARG_ERROR("--warmup {}: must be >= 0", o.warmup);
  if (o.tensor_model_parallel_size < 1)
    MT_ARG_ERROR("--tensor-model-parallel-size {}: must be at least 1", o.tensor_model_parallel_size);
  if (o.tensor_model_parallel_size != dist::world_size())
    MT_ARG_ERROR("--tensor-model-parallel-size {} with {} process(es): they must be equal (generation runs one "
                 "model replica: mpirun -np N ... --tensor-model-parallel-size N)",
                 o.tensor_model_parallel_size, dist::world_size());
  try {
    for (const std::string& s : o.prompt_token_ids) parse_ids(s);  // malformed ids fail before the model loads
  } catch (const UserError& e) {
    throw ArgumentError(e.what());
  }
}

// The tensor-parallel group: every process of the job (device tensors over NCCL on GPUs).
std::unique_ptr<ProcessGroups> tensor_parallel_groups(int tp, Device dev) {
  std::unique_ptr<Communicator> world = dist::world();
  if (dev.is_cuda() && world->size() > 1 && dist::nccl_available()) {
    auto nccl = dist::nccl_communicator(*world, "world", dev.index);
    world = dist::hybrid_communicator(std::move(world), std::move(nccl));
  }
  return std::make_unique<ProcessGroups>(std::move(world), ParallelSizes{tp, 1, 1, 1});
}

struct Prompt {
  std::string text;  // as given (empty for --prompt-token-ids)
  std::vector<int32_t> ids;
};

std::vector<Prompt> read_prompts(const GenerateCommand::Options& o, const LoadedModel& m) {
  std::vector<Prompt> out;
  std::vector<std::string> texts = o.prompts;
  if (!o.prompts_file.empty()) {
    std::ifstream in(o.prompts_file);
    if (!in) MT_USER_ERROR("--prompts-file {}: cannot read", o.prompts_file);
    for (std::string line; std::getline(in, line);) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (!line.empty()) texts.push_back(line);  // blank lines separate nothing: skipped
    }
    if (texts.empty()) MT_USER_ERROR("--prompts-file {}: no prompts (one per line)", o.prompts_file);
  }
  if (!texts.empty() && !m.tokenizer)
    MT_USER_ERROR("{}: no tokenizer to encode text prompts (no tokenizer.json; give --tokenizer-model FILE or use "
                  "--prompt-token-ids)",
                  o.model.flag());
  for (const std::string& t : texts) out.push_back({t, m.tokenizer->encode(t)});
  for (const std::string& s : o.prompt_token_ids) out.push_back({"", parse_ids(s)});
  const int64_t vocab = m.model->config().vocab_size;
  for (size_t i = 0; i < out.size(); ++i) {
    Prompt& p = out[i];
    if (o.add_bos) {
      if (m.bos_id < 0) MT_USER_ERROR("--add-bos: the model names no beginning-of-sequence id");
      p.ids.insert(p.ids.begin(), m.bos_id);
    }
    if (p.ids.empty()) MT_USER_ERROR("prompt {} has no tokens", i + 1);
    for (int32_t id : p.ids)
      if (id >= vocab) MT_USER_ERROR("prompt {}: token id {} is outside the vocabulary of {}", i + 1, id, vocab);
    if (int64_t(p.ids.size()) + o.max_new_tokens > m.max_sequence_length)
      MT_USER_ERROR("prompt {}: {} tokens + --max-new-tokens {} exceed the model's {} positions", i + 1, p.ids.size(),
                    o.max_new_tokens, m.max_sequence_length);
  }
  return out;
}

std::string join_ids(const std::vector<int32_t>& ids) {
  std::string s;
  for (size_t i = 0; i < ids.size(); ++i) s += (i ? "," : "") + std::to_string(ids[i]);
  return s;
}

}  // namespace

GenerateCommand add_generate_command(CLI::App& app) {
  GenerateCommand c;
  c.opts = std::make_shared<GenerateCommand::Options>();
  GenerateCommand::Options& o = *c.opts;
  c.app = app.add_subcommand("generate", "Generate text with a key/value cache (Hugging Face directory or our checkpoint)");
  const char* g = "Model";
  add_model_source_flags(*c.app, o.model);
  c.app->add_option("--tensor-model-parallel-size", o.tensor_model_parallel_size,
                    "Tensor-parallel ranks: start this many processes with mpirun")->capture_default_str()->group(g);
  g = "Prompts";
  c.app->add_option("--prompt", o.prompts, "A text prompt (repeat for a batch)")->group(g);
  c.app->add_option("--prompts-file", o.prompts_file, "A file of text prompts, one per line (one batch)")->group(g);
  c.app->add_option("--prompt-token-ids", o.prompt_token_ids, "A prompt as token ids, e.g. 1,2,3 (repeat for a batch)")
      ->group(g);
  c.app->add_flag("--add-bos", o.add_bos, "Put the model's beginning-of-sequence id before each prompt")->group(g);
  g = "Generation";
  c.app->add_option("--max-new-tokens", o.max_new_tokens, "Tokens to generate per prompt (fewer when EOS comes)")
      ->capture_default_str()->group(g);
  c.app->add_option("--temperature", o.temperature, "Sampling temperature; 0 is greedy")->capture_default_str()->group(g);
  c.app->add_option("--top-k", o.top_k, "Sample among the k most likely tokens (0: all)")->capture_default_str()->group(g);
  c.app->add_option("--top-p", o.top_p, "Sample among the most likely tokens holding this probability (1: all)")
      ->capture_default_str()->group(g);
  c.app->add_option("--seed", o.seed, "Sampling seed (the same seed repeats a run)")->capture_default_str()->group(g);
  c.app->add_option("--eos-token-id", o.eos_token_ids, "End-of-sequence id (repeatable; default: the model's)")->group(g);
  c.app->add_flag("--ignore-eos", o.ignore_eos, "Always generate --max-new-tokens tokens")->group(g);
  g = "Output";
  c.app->add_flag("--output-token-ids", o.output_token_ids, "Print the new tokens' ids (comma-separated, a line per prompt)")
      ->group(g);
  c.app->add_flag("--timing", o.timing, "Print time to first token and decode tokens/s on stderr")->group(g);
  c.app->add_option("--warmup", o.warmup, "Generate this many times unprinted first (benchmarks: GEMM autotuning and "
                    "allocations happen there, not in the timed run)")->capture_default_str()->group(g);
  return c;
}

void run_generate(const GenerateCommand::Options& o) {
  dist::init();
  check_options(o);
  const Device device = model_source_device(o.model);
  const DType dtype = o.model.dtype();
  std::unique_ptr<ProcessGroups> groups;
  ModelParallelConfig par;
  if (o.tensor_model_parallel_size > 1) {
    groups = tensor_parallel_groups(o.tensor_model_parallel_size, device);
    par.tp = &groups->tp();
  }
  // Rank 0 prints; every rank computes the same tokens.
  const bool printer = dist::world_rank() == 0;
  const auto t0 = Clock::now();
  LoadedModel m = load_model_source(o.model, device, par);
  const double load_s = std::chrono::duration<double>(Clock::now() - t0).count();
  std::vector<Prompt> prompts;
  try {  // the same prompts, model and tokenizer on every rank: said once
    prompts = read_prompts(o, m);
    if (!o.output_token_ids && !m.tokenizer)
      MT_USER_ERROR("no tokenizer to print text with: add --output-token-ids (or --tokenizer-model FILE)");
  } catch (const ArgumentError&) {
    throw;
  } catch (const UserError& e) {
    throw ArgumentError(e.what());
  }
  const TransformerConfig& cfg = m.model->config();
  if (printer)
    fmt::print(stderr, "> generate: {} layers, hidden {}, {}, vocab {}, {} on {}{} (loaded in {:.2f} s); {} prompt(s)\n",
               cfg.num_layers, cfg.hidden_size, describe_architecture(cfg), cfg.vocab_size, dtype_name(dtype),
               device.str(), par.tp_size() > 1 ? fmt::format(", tensor parallel {}", par.tp_size()) : "", load_s,
               prompts.size());

  GenerationOptions go;
  go.max_new_tokens = o.max_new_tokens;
  go.sampling = SamplingParams{o.temperature, o.top_k, o.top_p, o.seed};
  go.eos_ids = o.ignore_eos ? std::vector<int32_t>{} : !o.eos_token_ids.empty() ? o.eos_token_ids : m.eos_ids;
  std::vector<std::vector<int32_t>> ids;
  for (const Prompt& p : prompts) ids.push_back(p.ids);

  for (int64_t i = 0; i < o.warmup; ++i) generate(*m.model, ids, go);
  // One prompt streams as its tokens come; a batch prints each completion, in prompt order, at the end.
  const bool stream = printer && prompts.size() == 1;
  std::unique_ptr<TextStream> text;
  if (stream && !o.output_token_ids) {
    text = std::make_unique<TextStream>(*m.tokenizer, ids[0]);
    const std::string shown = prompts[0].text.empty() ? sanitize_utf8(m.tokenizer->decode(ids[0])) : prompts[0].text;
    std::fwrite(shown.data(), 1, shown.size(), stdout);
    std::fflush(stdout);
  }
  size_t streamed = 0;
  auto on_token = [&](size_t, int32_t id) {
    if (!stream) return;
    const std::string s = text ? text->push(id) : (streamed++ ? "," : "") + std::to_string(id);
    std::fwrite(s.data(), 1, s.size(), stdout);
    std::fflush(stdout);
  };
  const GenerationResult r = generate(*m.model, ids, go, on_token);
  if (!printer) return;
  if (stream) {
    const std::string rest = text ? text->finish() : std::string();
    std::fwrite(rest.data(), 1, rest.size(), stdout);
    std::fputc('\n', stdout);
  } else {
    for (size_t i = 0; i < prompts.size(); ++i) {
      if (o.output_token_ids) {
        fmt::print("{}\n", join_ids(r.tokens[i]));
        continue;
      }
      TextStream t(*m.tokenizer, ids[i]);
      std::string s = prompts[i].text.empty() ? sanitize_utf8(m.tokenizer->decode(ids[i])) : prompts[i].text;
      for (int32_t id : r.tokens[i]) s += t.push(id);
      fmt::print("{}{}\n", s, t.finish());
    }
  }
  std::fflush(stdout);
  if (o.timing) {
    const GenerationTiming& t = r.timing;
    const double steps_s = t.decode_ms > 0 ? 1e3 * double(t.decode_steps) / t.decode_ms : 0.0;
    const double tokens_s = t.decode_ms > 0 ? 1e3 * double(t.decode_tokens) / t.decode_ms : 0.0;
    fmt::print(stderr,
               "timing: batch={} prompt_tokens={} ttft_ms={:.3f} decode_steps={} decode_tokens={} decode_ms={:.3f} "
               "decode_steps_per_s={:.2f} decode_tokens_per_s={:.2f}\n",
               t.batch, t.prompt_tokens, t.prefill_ms, t.decode_steps, t.decode_tokens, t.decode_ms, steps_s, tokens_s);
  }
}

}  // namespace mt
