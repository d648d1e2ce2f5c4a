#pragma once
// Registers `megatron generate`: text generation with the key/value cache from a Hugging Face
// directory (--load-hf) or one of our checkpoints (--load), greedy or sampled, streaming tokens
// to stdout as they are made; tensor parallel under mpirun (--tensor-model-parallel-size = the
// number of processes; rank 0 prints).
#include <CLI/CLI.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "model_source.h"

namespace mt {

struct GenerateCommand {
  CLI::App* app = nullptr;
  struct Options {
    ModelSourceOptions model;
    std::vector<std::string> prompts, prompt_token_ids;
    std::string prompts_file;
    bool output_token_ids = false;
    int64_t max_new_tokens = 64;
    float temperature = 0.0f;
    int64_t top_k = 0;
    float top_p = 1.0f;
    uint64_t seed = 1234;
    std::vector<int32_t> eos_token_ids;
    bool ignore_eos = false, add_bos = false;
    bool timing = false;
    int64_t warmup = 0;
    int tensor_model_parallel_size = 1;
  };
  std::shared_ptr<Options> opts;
};
GenerateCommand add_generate_command(CLI::App& app);
void run_generate(const GenerateCommand::Options& o);  // UserError on a bad flag, file or prompt

}  // namespace mt
