// The megatron binary: subcommands and argument parsing only; the work is in src/.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "core/error.h"
#include "comm/mpi_communicator.h"
#include "train/checkpoint_architecture.h"
#include "train/megatron_compat_flags.h"
#include "train/model_presets.h"
#include "train/trainer.h"
#include "checkpoint_cmd.h"
#include "generate_cmd.h"
#include "convert_cmd.h"
#include "finite_floats.h"
#include "preprocess.h"
#include "serve_cmd.h"
#include "train_cli.h"
#include "train_flags.h"
#include "train/rerun_state_machine.h"

namespace {

// A verdict every rank reaches alike (a bad command line): under a launcher, rank 0 says it and
// flushes before the ranks pass a barrier, so the launcher cannot kill rank 0 (once another rank
// has exited) before its message is out; every rank then exits with `code` together.
int exit_together(int code, const std::string& message) {
  const bool several = mt::dist::launched_by_mpi() && mt::dist::init();
  if (!several || mt::dist::world_rank() == 0) {
    std::fprintf(stderr, "%s\n", message.c_str());
    std::fflush(stderr);
  }
  if (several) mt::dist::world()->barrier();
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"megatron.cpp: train transformer language models, Megatron-LM style", "megatron"};
  app.require_subcommand(1);
  // `megatron --help` lists every subcommand's flags with their defaults.
  app.set_help_flag();
  app.set_help_all_flag("-h,--help", "Print this help (every subcommand and flag) and exit");
  mt::TrainingArgs args;
  CLI::App* train = app.add_subcommand("train", "Pretrain a GPT model (Megatron's pretrain_gpt.py flags)");
  mt::add_train_flags(*train, args);
  mt::PreprocessCommand preprocess = mt::add_preprocess_command(app);
  mt::MergeCommand merge = mt::add_merge_command(app);
  mt::CheckpointCommand checkpoint = mt::add_checkpoint_command(app);
  mt::GenerateCommand generate = mt::add_generate_command(app);
  mt::ConvertCommand convert = mt::add_convert_command(app);
  mt::ServeCommand serve = mt::add_serve_command(app);
  mt::require_finite_floats(app);

  if (argc > 1) {
    const std::string bad = mt::unknown_subcommand_message(app, argv[1]);
    if (!bad.empty()) return exit_together(2, "megatron: error: " + bad + " (see 'megatron --help')");
  }
  // --model-preset NAME stands for its architecture flags (ones given explicitly win).
  std::vector<std::string> words;
  try {
    std::vector<std::string> given(argv + 1, argv + argc);
    words = mt::expand_model_preset(given, &args.model_preset_flags);
    // --load DIR stands for the architecture its checkpoint records (flags given explicitly win).
    std::string from_checkpoint;
    words = mt::expand_checkpoint_architecture(words, &from_checkpoint);
    if (!from_checkpoint.empty() && mt::dist::launcher_rank() == 0)
      std::printf("> architecture from the checkpoint to load: %s\n", from_checkpoint.c_str());
    // --load-hf DIR stands for the architecture of DIR/config.json.
    std::string from_hf;
    words = mt::expand_hf_architecture(words, &from_hf);
    if (!from_hf.empty() && mt::dist::launcher_rank() == 0)
      std::printf("> architecture from the Hugging Face model to load: %s\n", from_hf.c_str());
    // Megatron's reading: the last of a repeated flag wins; unknown flags named with their values.
    const bool help = std::find_if(words.begin(), words.end(), [](const std::string& w) {
                        return w == "--help" || w == "-h";
                      }) != words.end();
    if (!words.empty() && words[0] == "train" && !help) {
      std::vector<std::string> rest = mt::megatron_argument_words(*train, {words.begin() + 1, words.end()});
      rest.insert(rest.begin(), "train");
      words = std::move(rest);
    }
  } catch (const mt::UserError& e) {
    return exit_together(2, std::string("megatron train: error: ") + e.what() + " (see 'megatron train --help')");
  }
  try {
    std::vector<std::string> reversed(words.rbegin(), words.rend());  // CLI11 takes them last to first
    app.parse(reversed);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::string where = train->parsed()        ? "megatron train"
                        : preprocess.app->parsed() ? "megatron preprocess"
                        : merge.app->parsed()      ? "megatron merge-datasets"
                        : checkpoint.app->parsed() ? "megatron checkpoint"
                        : generate.app->parsed()   ? "megatron generate"
                        : convert.app->parsed()    ? "megatron convert"
                        : serve.app->parsed()      ? "megatron serve"
                                                   : "megatron";
    // Every rank parses the same command line: rank 0 says so, then every rank exits together.
    return exit_together(2, where + ": error: " + e.what() + " (see '" + where + " --help')");
  }
  try {
    if (train->parsed()) {
      // Megatron's implied settings (e.g. --sequence-parallel off at TP=1), each with a warning.
      for (const std::string& w : mt::apply_megatron_implications(args))
        if (mt::dist::launcher_rank() == 0) std::printf("> warning: %s\n", w.c_str());
      mt::pretrain_gpt(args);
    }
    if (preprocess.app->parsed()) mt::run_preprocess(*preprocess.opts);
    if (merge.app->parsed()) mt::run_merge(merge);
    if (checkpoint.app->parsed()) mt::run_checkpoint(checkpoint);
    if (generate.app->parsed()) mt::run_generate(*generate.opts);
    if (convert.app->parsed()) mt::run_convert(convert);
    if (serve.app->parsed()) mt::run_serve(*serve.opts);
  } catch (const mt::TrainingStopped& e) {
    // NaN/Inf in the loss or grad norm (train/rerun_state_machine.h): a verdict every rank reached
    // together. Exit 1: the run failed, as opposed to 2, a rejected input.
    return exit_together(1, std::string("megatron: error: ") + e.what());
  } catch (const mt::ArgumentError& e) {
    // Found identically on every rank before any of them diverged: said once, every rank exits 2.
    return exit_together(2, std::string("megatron: error: ") + e.what());
  } catch (const std::bad_alloc&) {
    // An allocation outside our allocator (a std::vector sized from the input): this rank's alone.
    std::fprintf(stderr, "megatron: error: [rank %d] out of host memory: make the model, micro batch or sequence "
                 "smaller, or spread it over more ranks\n", mt::dist::world_rank());
    if (mt::dist::world_size() > 1) mt::dist::abort_job(2);
    return 2;
  } catch (const mt::UserError& e) {
    if (mt::dist::world_size() > 1) {
      // Possibly this rank alone (a file it cannot read): name it and take the job down now
      // rather than leave the others waiting in a collective.
      std::fprintf(stderr, "megatron: error: [rank %d] %s\n", mt::dist::world_rank(), e.what());
      mt::dist::abort_job(2);
    }
    std::fprintf(stderr, "megatron: error: %s\n", e.what());
    return 2;
  }
  return 0;
}
