#pragma once
// Loading a Hugging Face GPT-2 checkpoint (config.json + model.safetensors, as written by
// transformers' GPT2LMHeadModel.save_pretrained) into our GPTModel. HF's Conv1D weights are
// [in, out] and its fused QKV is ordered [q|k|v] x [head, dim]; ours are [out, in] and
// [head, q/k/v, dim] (Megatron's layout), so weights are transposed and QKV rows permuted.
// Full import/export (Llama, sharded files, writing) is the conversion issue's.
#include <string>

#include "model/gpt_model.h"

namespace mt {

// Reads DIR/config.json into a TransformerConfig (dropouts from resid_pdrop/attn_pdrop/embd_pdrop are
// ignored: they are training flags here). UserError for a missing file or an unsupported model.
TransformerConfig read_hf_gpt2_config(const std::string& dir, DType params_dtype, int64_t make_vocab_size_divisible_by);

// Copies DIR/model.safetensors into model (whose config came from read_hf_gpt2_config).
// UserError naming the tensor when one is missing or has the wrong shape.
void load_hf_gpt2_weights(const std::string& dir, GPTModel& model);

}  // namespace mt
