#pragma once
// The trainer's side of checkpointing (--save/--load and friends): which pieces of the model
// and optimizer go into a checkpoint, the small common state (iteration, consumed samples, loss
// scaler, optimizer step, seed, arguments), and restoring them. The format itself (sharded,
// reshardable, atomic, checksummed) is src/checkpoint/.
//
// Saved pieces, by global name, so a checkpoint saved under any TP/DP layout, with or without the
// distributed optimizer, loads under any other:
//   <param name>                     the model weights (model dtype)
//   optimizer.exp_avg.<param name>   Adam's m (fp32)
//   optimizer.exp_avg_sq.<param>     Adam's v (fp32)
//   optimizer.master.<param name>    fp32 master weights, only when separate (bf16/fp16 models)
// Vocabulary-padded tensors (the word embeddings, an untied output layer, and their optimizer
// state) are stored without the padding rows, global shape [vocab, hidden]: the padding depends
// on the tensor-parallel size (make-vocab-size-divisible-by x TP), so this is what lets a
// checkpoint load under a TP size whose padded vocabulary differs. Padding rows are zero at
// init and stay zero (masked out of the loss, no gradient, no decay), and loading sets them so.
// A checkpoint written before, with the padding stored, still loads (the extra rows are skipped).
// Dropout masks derive from the seed and the global microbatch counter, the LR from the
// iteration, the data order from the consumed samples: nothing else needs saving to continue
// bit for bit.
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "checkpoint/checkpoint_location.h"
#include "core/file_lock.h"
#include "model/transformer_config.h"
#include "train/arguments.h"

namespace mt {

class ProcessGroups;
class ParamAndGradBuffer;
class MegatronOptimizer;
class GradScaler;

struct TrainProgress {
  int64_t iteration = 0;
  int64_t consumed_train_samples = 0, consumed_valid_samples = 0;
  uint64_t seed = 0;  // the dropout seed
};

// The arguments as JSON (saved as common.json "args"), with the model sizes the run resolved
// (ffn_hidden_size, max_position_embeddings, vocab_size, padded_vocab_size) from `cfg`.
nlohmann::json args_to_json(const TrainingArgs& a, const TransformerConfig& cfg);

// One flat buffer and the optimizer over it (a model's dense parameters; an MoE model's experts,
// whose copies are the expert-data-parallel ranks), and which data-parallel replica this rank is.
struct CheckpointPart {
  ParamAndGradBuffer* buf = nullptr;
  MegatronOptimizer* opt = nullptr;
  int dp_rank = 0;
};

// The fields of a checkpoint's common.json that --load reads, checked for type and range (one
// UserError naming `path` and the field): iteration and consumed samples (integers >= 0), rng,
// optimizer and grad_scaler state, and the recorded architecture ("args"). `megatron checkpoint
// inspect --verify` runs the same check, so what it passes, --load reads.
void validate_common_json(const nlohmann::json& common, const std::string& path);

// --load [--ckpt-step]: the checkpoint to load (found: true), or none (false). No checkpoint
// there is a UserError unless nothing is lost by training from scratch: no --save, a --save
// holding no checkpoint, --finetune or --allow-start-from-scratch (a warning on `warn`, if any).
bool resolve_load(const TrainingArgs& a, CheckpointLocation& where, std::FILE* warn);

// --save on the world's rank 0 (null elsewhere, or without --save): the directory locked against a
// second trainer for the life of the result, and the temporaries of killed saves removed (said on
// `log0`). UserError when another process holds the lock.
std::unique_ptr<DirectoryLock> prepare_save_directory(const TrainingArgs& a, bool world_rank0, std::FILE* log0);

class TrainCheckpointer {
 public:
  // parts: the dense buffer first. persistent: non-parameter state saved with the model (the MoE
  // routers' expert biases), replicated on every rank that holds it.
  TrainCheckpointer(const TrainingArgs& args, const TransformerConfig& cfg, ProcessGroups& groups,
                    std::vector<CheckpointPart> parts, std::vector<std::pair<std::string, Tensor>> persistent,
                    GradScaler& scaler, std::FILE* log0);
  ~TrainCheckpointer();

  // --load: restores weights (and, unless --finetune/--no-load-optim, optimizer state and
  // scaler) into the live buffers and returns where training continues. Without --load, or
  // when resolve_load allows starting from scratch (a warning), `fresh` unchanged.
  TrainProgress load(const TrainProgress& fresh);
  // A checkpoint of the current state at p.iteration into --save (async with --async-save).
  void save(const TrainProgress& p);
  // --async-save: complete a save in flight (collective). No-op otherwise.
  void finalize();
  // --async-save, once per iteration (collective): completes a save in flight as soon as every
  // rank's writer is done, so the tracker names it without waiting for the next save.
  void maybe_finalize();
  int64_t last_saved_iteration() const { return last_saved_; }

 private:
  std::vector<ShardedTensor> model_pieces(const std::string& prefix) const;
  std::vector<ShardedTensor> optimizer_pieces() const;

  const TrainingArgs& args_;
  TransformerConfig cfg_;
  ProcessGroups& groups_;
  struct Part : CheckpointPart {
    std::vector<FlatTensorLayout> layout;
  };
  std::vector<Part> parts_;
  std::vector<std::pair<std::string, Tensor>> persistent_;
  GradScaler& scaler_;
  std::FILE* log0_;
  std::unique_ptr<AsyncCheckpointSaver> async_;
  int64_t last_saved_ = -1;
  std::string async_dir_;
};

}  // namespace mt
