#pragma once
// Megatron's (argparse's) reading of a `megatron train` command line, before CLI11 parses it:
// the last of a repeated flag wins, and unknown flags are named once each, with their values and
// the closest known flag.
#include <CLI/CLI.hpp>

#include <string>
#include <vector>

namespace mt {

// `words` (a subcommand's arguments, without its name) with every earlier occurrence of an option
// given again later dropped, values included (aliases count as one option). Throws UserError
// "unrecognized arguments: --x V (did you mean --y?), ..." when a word names no option of `app`.
std::vector<std::string> megatron_argument_words(const CLI::App& app, const std::vector<std::string>& words);

// The option of `app` whose long name is closest to `flag` (edit distance), or "" if none is close.
std::string closest_flag(const CLI::App& app, const std::string& flag);

// "" when `word` names a subcommand of `app` (or is a flag), else the error to print:
// "unknown subcommand 'trian' (did you mean 'train'?); the subcommands are: train, preprocess, ...".
std::string unknown_subcommand_message(const CLI::App& app, const std::string& word);

}  // namespace mt
