#include "checkpoint_cmd.h"

#include <fmt/format.h>

#include <cstdio>
#include <filesystem>

#include "checkpoint/checkpoint.h"
#include "core/error.h"
#include "train/checkpointing.h"

namespace mt {
namespace {

std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024.0 && u < 4) {
    b /= 1024.0;
    ++u;
  }
  return u == 0 ? fmt::format("{:.0f} B", b) : fmt::format("{:.2f} {}", b, units[u]);
}

void inspect(const CheckpointCommand::Options& o) {
  namespace fs = std::filesystem;
  const bool save_dir = !fs::exists(o.dir + "/metadata.json");
  CheckpointReader r(o.dir, o.iteration, stdout);
  const CheckpointLayout l = r.layout();
  uint64_t file_bytes = 0;
  for (const auto& f : r.files()) file_bytes += f.bytes;
  fmt::print("checkpoint: {} (format version {})\n", r.path(), r.metadata().value("format_version", 0));
  fmt::print("iteration: {}\n", r.iteration());
  fmt::print("layout: tp={} pp={} dp={} cp={} ep={}{}; {} rank(s), {} shard file(s), {}\n", l.tp, l.pp, l.dp, l.cp,
             l.ep, l.distributed_optimizer ? ", distributed optimizer" : "", r.world_size(), r.files().size(),
             human_bytes(double(file_bytes)));
  if (save_dir) {
    std::string its;
    // Every iteration directory, complete or not.
    for (const auto& e : fs::directory_iterator(o.dir)) {
      const std::string n = e.path().filename().string();
      if (e.is_directory() && n.rfind("iter_", 0) == 0)
        its += fmt::format("{}{}{}", its.empty() ? "" : ", ", n,
                           fs::exists(e.path() / "metadata.json") ? "" : " (incomplete)");
    }
    fmt::print("iterations in {}: {}\n", o.dir, its);
  }
  if (r.common().is_object()) {
    fmt::print("common state:\n");
    for (const auto& [k, v] : r.common().items()) {
      if (v.is_object()) fmt::print("  {}: {{{} entries}}\n", k, v.size());
      else fmt::print("  {}: {}\n", k, v.dump());
    }
  }
  int64_t numel_total = 0;
  size_t width = 4;
  for (const auto& [name, t] : r.tensors()) width = std::max(width, name.size());
  fmt::print("tensors: {}\n", r.tensors().size());
  fmt::print("  {:<{}}  {:<5}  {:<16}  {:>11}  {}\n", "name", width, "dtype", "shape", "size", "pieces");
  for (const auto& [name, t] : r.tensors()) {
    const int64_t n = shape_numel(t.global_shape);
    numel_total += n;
    fmt::print("  {:<{}}  {:<5}  {:<16}  {:>11}  {}\n", name, width, dtype_name(t.dtype), shape_str(t.global_shape),
               human_bytes(double(n) * double(dtype_size(t.dtype))), t.pieces.size());
  }
  fmt::print("total: {} elements\n", numel_total);
  if (o.verify) {
    validate_common_json(r.common(), r.path());  // what --load reads of it
    r.verify_all();
    size_t pieces = 0;
    for (const auto& [name, t] : r.tensors()) pieces += t.pieces.size();
    fmt::print("verify: all {} file(s) and {} piece(s) match their checksums\n", r.files().size(), pieces);
  }
}

}  // namespace

CheckpointCommand add_checkpoint_command(CLI::App& app) {
  CheckpointCommand c;
  c.opts = std::make_shared<CheckpointCommand::Options>();
  c.app = app.add_subcommand("checkpoint", "Native checkpoints: inspect");
  c.app->require_subcommand(1);
  c.inspect = c.app->add_subcommand("inspect", "Print a checkpoint's iteration, layout, tensors, shapes and sizes");
  c.inspect->add_option("dir", c.opts->dir, "A --save directory (its latest complete iteration) or an iter_* directory")
      ->required();
  c.inspect->add_option("--iteration", c.opts->iteration, "Inspect this iteration instead of the latest");
  c.inspect->add_flag("--verify", c.opts->verify, "Read every file and check every checksum");
  return c;
}

void run_checkpoint(const CheckpointCommand& c) {
  if (c.inspect->parsed()) inspect(*c.opts);
}

}  // namespace mt
