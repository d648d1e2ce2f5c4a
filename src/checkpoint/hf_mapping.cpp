#include "checkpoint/hf_mapping.h"

#include <cstring>

#include "core/error.h"
#include "kernels/elementwise.h"

namespace mt {

namespace {

// Our tensor's shape, by the role it plays (C hidden, F ffn, H heads, G query groups, D head dim,
// E experts, Fe each expert's ffn).
enum class Role : uint8_t {
  Vocab, Positions, Hidden, QkvWeight, QkvBias, ProjWeight, Fc1Weight, Fc1Bias, Fc2Weight, HeadDim,
  Router, ExpertFc1, ExpertFc2
};
// When the tensor exists (the MLP ones: in which layers).
enum class Need : uint8_t {
  Always, LinearBias, QkvBias, QkNorm, Untied, LearnedPositions, NormBias, DenseMlp, MoeLayer
};

struct Rule {
  std::string ours;             // "{l}" stands for the layer number, "{e}" for the expert's
  std::vector<std::string> hf;  // likewise
  HfLayout layout;
  Role role;
  Need need = Need::Always;
  std::string alt = {};  // HfTensorMap::alt_name ("{l}"); a 3-D tensor of every expert for the expert roles
};

// GPT2LMHeadModel. Conv1D weights are [in, out]; c_attn's columns are [q | k | v] x [head, dim].
const std::vector<Rule>& gpt2_rules() {
  using L = HfLayout;
  using R = Role;
  static const std::vector<Rule> rules = {
      {"embedding.word_embeddings.weight", {"transformer.wte.weight"}, L::Same, R::Vocab},
      {"embedding.position_embeddings.weight", {"transformer.wpe.weight"}, L::Same, R::Positions},
      {"decoder.layers.{l}.input_layernorm.weight", {"transformer.h.{l}.ln_1.weight"}, L::Same, R::Hidden},
      {"decoder.layers.{l}.input_layernorm.bias", {"transformer.h.{l}.ln_1.bias"}, L::Same, R::Hidden},
      {"decoder.layers.{l}.self_attention.linear_qkv.weight", {"transformer.h.{l}.attn.c_attn.weight"},
       L::FusedQkvConv1D, R::QkvWeight},
      {"decoder.layers.{l}.self_attention.linear_qkv.bias", {"transformer.h.{l}.attn.c_attn.bias"}, L::FusedQkv,
       R::QkvBias},
      {"decoder.layers.{l}.self_attention.linear_proj.weight", {"transformer.h.{l}.attn.c_proj.weight"}, L::Conv1D,
       R::ProjWeight},
      {"decoder.layers.{l}.self_attention.linear_proj.bias", {"transformer.h.{l}.attn.c_proj.bias"}, L::Same,
       R::Hidden},
      {"decoder.layers.{l}.pre_mlp_layernorm.weight", {"transformer.h.{l}.ln_2.weight"}, L::Same, R::Hidden},
      {"decoder.layers.{l}.pre_mlp_layernorm.bias", {"transformer.h.{l}.ln_2.bias"}, L::Same, R::Hidden},
      {"decoder.layers.{l}.mlp.linear_fc1.weight", {"transformer.h.{l}.mlp.c_fc.weight"}, L::Conv1D, R::Fc1Weight},
      {"decoder.layers.{l}.mlp.linear_fc1.bias", {"transformer.h.{l}.mlp.c_fc.bias"}, L::Same, R::Fc1Bias},
      {"decoder.layers.{l}.mlp.linear_fc2.weight", {"transformer.h.{l}.mlp.c_proj.weight"}, L::Conv1D, R::Fc2Weight},
      {"decoder.layers.{l}.mlp.linear_fc2.bias", {"transformer.h.{l}.mlp.c_proj.bias"}, L::Same, R::Hidden},
      {"decoder.final_layernorm.weight", {"transformer.ln_f.weight"}, L::Same, R::Hidden},
      {"decoder.final_layernorm.bias", {"transformer.ln_f.bias"}, L::Same, R::Hidden},
      {"output_layer.weight", {"lm_head.weight"}, L::Same, R::Vocab, Need::Untied},
  };
  return rules;
}

// LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM (q/k/v bias), Qwen3ForCausalLM (q/k norm),
// and the attention and norms of MixtralForCausalLM and Qwen3MoeForCausalLM (q/k norm), whose MLPs
// (`mlp`) are their families' own.
std::vector<Rule> llama_rules(const std::vector<Rule>& mlp) {
  using L = HfLayout;
  using R = Role;
  std::vector<Rule> rules = {
      {"embedding.word_embeddings.weight", {"model.embed_tokens.weight"}, L::Same, R::Vocab},
      {"decoder.layers.{l}.input_layernorm.weight", {"model.layers.{l}.input_layernorm.weight"}, L::Same, R::Hidden},
      {"decoder.layers.{l}.self_attention.linear_qkv.weight",
       {"model.layers.{l}.self_attn.q_proj.weight", "model.layers.{l}.self_attn.k_proj.weight",
        "model.layers.{l}.self_attn.v_proj.weight"},
       L::Qkv, R::QkvWeight},
      {"decoder.layers.{l}.self_attention.linear_qkv.bias",
       {"model.layers.{l}.self_attn.q_proj.bias", "model.layers.{l}.self_attn.k_proj.bias",
        "model.layers.{l}.self_attn.v_proj.bias"},
       L::Qkv, R::QkvBias, Need::QkvBias},
      {"decoder.layers.{l}.self_attention.q_layernorm.weight", {"model.layers.{l}.self_attn.q_norm.weight"}, L::Same,
       R::HeadDim, Need::QkNorm},
      {"decoder.layers.{l}.self_attention.k_layernorm.weight", {"model.layers.{l}.self_attn.k_norm.weight"}, L::Same,
       R::HeadDim, Need::QkNorm},
      {"decoder.layers.{l}.self_attention.linear_proj.weight", {"model.layers.{l}.self_attn.o_proj.weight"}, L::Same,
       R::ProjWeight},
      {"decoder.layers.{l}.pre_mlp_layernorm.weight", {"model.layers.{l}.post_attention_layernorm.weight"}, L::Same,
       R::Hidden},
  };
  rules.insert(rules.end(), mlp.begin(), mlp.end());
  rules.push_back({"decoder.final_layernorm.weight", {"model.norm.weight"}, L::Same, R::Hidden});
  rules.push_back({"output_layer.weight", {"lm_head.weight"}, L::Same, R::Vocab, Need::Untied});
  return rules;
}

// The Llama family's dense SwiGLU MLP (Qwen 3 MoE's dense layers too).
std::vector<Rule> dense_mlp_rules() {
  return {{"decoder.layers.{l}.mlp.linear_fc1.weight",
           {"model.layers.{l}.mlp.gate_proj.weight", "model.layers.{l}.mlp.up_proj.weight"}, HfLayout::Stacked,
           Role::Fc1Weight, Need::DenseMlp},
          {"decoder.layers.{l}.mlp.linear_fc2.weight", {"model.layers.{l}.mlp.down_proj.weight"}, HfLayout::Same,
           Role::Fc2Weight, Need::DenseMlp}};
}

// An MoE layer: the router (HF's gate) and each expert's gate, up and down projections, under
// `block` ("model.layers.{l}.block_sparse_moe" for Mixtral); transformers 5 holds them (in memory)
// under "model.layers.{l}.mlp" with the experts fused.
std::vector<Rule> moe_rules(const std::string& block, const char* gate, const char* up, const char* down) {
  const std::string ours = "decoder.layers.{l}.mlp.", experts = block + ".experts.{e}.",
                    fused = "model.layers.{l}.mlp.";
  return {{ours + "router.weight", {block + ".gate.weight"}, HfLayout::Same, Role::Router, Need::MoeLayer,
           fused + "gate.weight"},
          {ours + "experts.local_experts.{e}.linear_fc1.weight",
           {experts + gate + ".weight", experts + up + ".weight"}, HfLayout::Stacked, Role::ExpertFc1,
           Need::MoeLayer, fused + "experts.gate_up_proj"},
          {ours + "experts.local_experts.{e}.linear_fc2.weight", {experts + down + ".weight"}, HfLayout::Same,
           Role::ExpertFc2, Need::MoeLayer, fused + "experts.down_proj"}};
}

const std::vector<Rule>& family_rules(HfFamily f) {
  static const std::vector<Rule> llama = llama_rules(dense_mlp_rules());
  static const std::vector<Rule> mixtral =
      llama_rules(moe_rules("model.layers.{l}.block_sparse_moe", "w1", "w3", "w2"));
  static const std::vector<Rule> qwen3_moe = [] {
    std::vector<Rule> mlp = dense_mlp_rules();
    for (Rule& r : moe_rules("model.layers.{l}.mlp", "gate_proj", "up_proj", "down_proj")) mlp.push_back(r);
    return llama_rules(mlp);
  }();
  switch (f) {
    case HfFamily::Gpt2: return gpt2_rules();
    case HfFamily::Mixtral: return mixtral;
    case HfFamily::Qwen3Moe: return qwen3_moe;
    default: return llama;
  }
}

std::string substitute(std::string s, const char* key, int value) {
  const size_t at = s.find(key);
  if (at != std::string::npos) s.replace(at, std::strlen(key), std::to_string(value));
  return s;
}

bool needed(Need n, const TransformerConfig& c, int layer) {
  switch (n) {
    case Need::Always: return true;
    case Need::LinearBias: return c.add_bias_linear;
    case Need::QkvBias: return c.has_qkv_bias();
    case Need::QkNorm: return c.qk_layernorm;
    case Need::Untied: return c.untie_embeddings_and_output_weights;
    case Need::LearnedPositions: return c.learned_positions();
    case Need::NormBias: return c.normalization == Normalization::LayerNorm;
    case Need::DenseMlp: return !c.is_moe_layer(layer);
    case Need::MoeLayer: return c.is_moe_layer(layer);
  }
  return false;
}

Shape our_shape(Role r, const TransformerConfig& c) {
  const int64_t C = c.hidden_size, F = c.ffn_hidden_size, D = c.head_dim(), H = c.num_attention_heads,
                G = c.query_groups(), E = c.num_moe_experts, Fe = c.moe_ffn_size();
  const bool gated = c.gated_linear_unit;
  switch (r) {
    case Role::Vocab: return {c.vocab_size, C};
    case Role::Positions: return {c.max_position_embeddings, C};
    case Role::Hidden: return {C};
    case Role::QkvWeight: return {(H + 2 * G) * D, C};
    case Role::QkvBias: return {(H + 2 * G) * D};
    case Role::ProjWeight: return {C, H * D};
    case Role::Fc1Weight: return gated ? Shape{2, F, C} : Shape{F, C};
    case Role::Fc1Bias: return gated ? Shape{2, F} : Shape{F};
    case Role::Fc2Weight: return {C, F};
    case Role::HeadDim: return {D};
    case Role::Router: return {E, C};
    case Role::ExpertFc1: return gated ? Shape{2, Fe, C} : Shape{Fe, C};
    case Role::ExpertFc2: return {C, Fe};
  }
  return {};
}

Shape rest_of(const Shape& s) { return Shape(s.begin() + 1, s.end()); }
Shape with_rows(int64_t rows, const Shape& rest) {
  Shape s{rows};
  s.insert(s.end(), rest.begin(), rest.end());
  return s;
}

void check_family(HfFamily f, const TransformerConfig& c) {
  auto no = [&](const std::string& what) {
    MT_USER_ERROR("a {} model ({}) cannot have {}", hf_architecture(f), describe_architecture(c), what);
  };
  if (c.is_moe() && !hf_is_moe_family(f))
    no(fmt::format("{} experts (MixtralForCausalLM and Qwen3MoeForCausalLM have them)", c.num_moe_experts));
  if (!c.is_moe() && hf_is_moe_family(f)) no("no experts (--num-experts 0)");
  if (c.is_moe()) {
    const bool qwen = f == HfFamily::Qwen3Moe;
    if (c.moe_shared_expert_intermediate_size > 0) no("shared experts");
    if (c.moe_router_score_function != MoeScoreFunction::Softmax) no("a sigmoid router");
    if (c.moe_router_enable_expert_bias) no("expert biases in the router (--moe-router-enable-expert-bias)");
    if (c.moe_router_num_groups > 0) no("group-limited routing (--moe-router-num-groups)");
    if (c.moe_router_topk_scaling_factor != 0.0f && c.moe_router_topk_scaling_factor != 1.0f)
      no("a top-k scaling factor");
    if (c.moe_router_pre_softmax && !qwen)
      no("a pre-softmax router (Qwen3MoeForCausalLM with norm_topk_prob false has it)");
    for (int l = 0; l < c.num_layers && !qwen; ++l)
      if (!c.is_moe_layer(l)) no(fmt::format("a dense MLP in layer {} (Qwen3MoeForCausalLM has mlp_only_layers)", l));
  }
  if (f == HfFamily::Gpt2) {
    if (c.normalization != Normalization::LayerNorm) no("RMSNorm");
    if (c.gated_linear_unit || c.activation != Activation::Gelu) no("a gated or SiLU MLP");
    if (!c.learned_positions()) no("rotary or no position embeddings");
    if (!c.add_bias_linear) no("linear layers without biases");
    if (c.query_groups() != c.num_attention_heads) no("grouped-query attention");
    if (c.head_dim() * c.num_attention_heads != c.hidden_size) no("a head dimension other than hidden / heads");
    if (c.qk_layernorm) no("q/k norm");
    return;
  }
  if (c.normalization != Normalization::RMSNorm) no("LayerNorm");
  if (!c.gated_linear_unit || c.activation != Activation::Silu) no("an MLP other than SwiGLU");
  if (c.position_embedding_type != PositionEmbedding::Rope) no("position embeddings other than RoPE");
  if (c.add_bias_linear) no("biases in every linear layer");
  if (c.add_qkv_bias && f != HfFamily::Qwen2) no("q/k/v biases (Qwen2ForCausalLM has them)");
  if (!c.add_qkv_bias && f == HfFamily::Qwen2) no("linear_qkv without biases");
  const bool qk_norm = f == HfFamily::Qwen3 || f == HfFamily::Qwen3Moe;
  if (c.qk_layernorm != qk_norm)
    no(c.qk_layernorm ? (c.is_moe() ? "q/k norm (Qwen3MoeForCausalLM has it)" : "q/k norm (Qwen3ForCausalLM has it)")
                      : "no q/k norm");
}

// The HF tensors' rows concatenated, cut into blocks of equal bytes; our tensor is the same blocks
// in another order: our block b is HF block perm[b].
struct BlockPlan {
  int64_t rows_per_block = 0, row_elems = 0;
  std::vector<int64_t> perm;
};

BlockPlan block_plan(const HfTensorMap& m) {
  BlockPlan p;
  const int64_t rows = m.shape[0], numel = shape_numel(m.shape);
  if (m.layout == HfLayout::Stacked) {  // ours [n, R, ...]: one block per stacked tensor
    p.rows_per_block = 1;
    p.row_elems = numel / rows;
  } else {
    p.row_elems = rows ? numel / rows : 0;
    p.rows_per_block = rows;
  }
  if (m.layout == HfLayout::Qkv || m.layout == HfLayout::FusedQkv || m.layout == HfLayout::FusedQkvConv1D) {
    // Our blocks (heads of D rows): per group g, its H/G query heads, then k, then v. HF blocks:
    // the H query heads, the G key heads, the G value heads.
    const int64_t G = m.groups, H = m.heads, per = H / G;
    p.rows_per_block = m.head_dim;
    for (int64_t g = 0; g < G; ++g) {
      for (int64_t j = 0; j < per; ++j) p.perm.push_back(g * per + j);
      p.perm.push_back(H + g);
      p.perm.push_back(H + G + g);
    }
    return p;
  }
  const int64_t blocks = m.layout == HfLayout::Stacked ? rows : 1;
  for (int64_t b = 0; b < blocks; ++b) p.perm.push_back(b);
  return p;
}

// dst [cols, rows] = src [rows, cols] transposed, elements of `es` bytes.
void transpose_bytes(const uint8_t* src, uint8_t* dst, int64_t rows, int64_t cols, size_t es) {
  constexpr int64_t T = 32;  // tiles keep both sides in cache
  for (int64_t r0 = 0; r0 < rows; r0 += T)
    for (int64_t c0 = 0; c0 < cols; c0 += T)
      for (int64_t r = r0; r < std::min(rows, r0 + T); ++r)
        for (int64_t c = c0; c < std::min(cols, c0 + T); ++c)
          std::memcpy(dst + (c * rows + r) * es, src + (r * cols + c) * es, es);
}

Tensor transposed(const Tensor& t) {
  Tensor out = Tensor::empty({t.size(1), t.size(0)}, t.dtype());
  transpose_bytes(static_cast<const uint8_t*>(t.raw()), static_cast<uint8_t*>(out.raw()), t.size(0), t.size(1),
                  dtype_size(t.dtype()));
  return out;
}

bool conv1d(HfLayout l) { return l == HfLayout::Conv1D || l == HfLayout::FusedQkvConv1D; }

// Pointers to each HF block in order, over the HF tensors' bytes (transposed ones already are).
std::vector<uint8_t*> hf_blocks(const std::vector<Tensor>& hf, size_t block_bytes) {
  std::vector<uint8_t*> blocks;
  for (const Tensor& t : hf) {
    MT_CHECK(block_bytes == 0 || t.nbytes() % block_bytes == 0, "HF tensor of {} bytes in blocks of {}", t.nbytes(),
             block_bytes);
    const size_t n = block_bytes ? t.nbytes() / block_bytes : 0;
    for (size_t i = 0; i < n; ++i) blocks.push_back(static_cast<uint8_t*>(t.raw()) + i * block_bytes);
  }
  return blocks;
}

}  // namespace

const char* hf_model_type(HfFamily f) {
  switch (f) {
    case HfFamily::Gpt2: return "gpt2";
    case HfFamily::Llama: return "llama";
    case HfFamily::Mistral: return "mistral";
    case HfFamily::Qwen2: return "qwen2";
    case HfFamily::Qwen3: return "qwen3";
    case HfFamily::Mixtral: return "mixtral";
    case HfFamily::Qwen3Moe: return "qwen3_moe";
  }
  return "?";
}

const char* hf_architecture(HfFamily f) {
  switch (f) {
    case HfFamily::Gpt2: return "GPT2LMHeadModel";
    case HfFamily::Llama: return "LlamaForCausalLM";
    case HfFamily::Mistral: return "MistralForCausalLM";
    case HfFamily::Qwen2: return "Qwen2ForCausalLM";
    case HfFamily::Qwen3: return "Qwen3ForCausalLM";
    case HfFamily::Mixtral: return "MixtralForCausalLM";
    case HfFamily::Qwen3Moe: return "Qwen3MoeForCausalLM";
  }
  return "?";
}

bool hf_family_from_model_type(const std::string& t, HfFamily& out) {
  for (HfFamily f : {HfFamily::Gpt2, HfFamily::Llama, HfFamily::Mistral, HfFamily::Qwen2, HfFamily::Qwen3,
                     HfFamily::Mixtral, HfFamily::Qwen3Moe})
    if (t == hf_model_type(f)) {
      out = f;
      return true;
    }
  return false;
}

bool hf_is_llama_family(HfFamily f) { return f != HfFamily::Gpt2; }
bool hf_is_moe_family(HfFamily f) { return f == HfFamily::Mixtral || f == HfFamily::Qwen3Moe; }

HfFamily hf_family_for(const TransformerConfig& c) {
  const HfFamily moe = c.qk_layernorm ? HfFamily::Qwen3Moe : HfFamily::Mixtral;
  const HfFamily f = c.normalization == Normalization::LayerNorm ? HfFamily::Gpt2
                     : c.is_moe()                                ? moe
                     : c.qk_layernorm                            ? HfFamily::Qwen3
                     : c.add_qkv_bias                            ? HfFamily::Qwen2
                                                                 : HfFamily::Llama;
  check_family(f, c);
  return f;
}

std::vector<HfTensorMap> hf_tensor_maps(HfFamily f, const TransformerConfig& c) {
  check_family(f, c);
  const std::vector<Rule>& rules = family_rules(f);
  std::vector<HfTensorMap> out;
  auto add = [&](const Rule& r, int layer, int expert) {
    HfTensorMap m;
    m.name = substitute(substitute(r.ours, "{l}", layer), "{e}", expert);
    m.shape = our_shape(r.role, c);
    m.vocab_rows = r.role == Role::Vocab;
    m.layout = r.layout;
    for (const std::string& h : r.hf) m.hf_names.push_back(substitute(substitute(h, "{l}", layer), "{e}", expert));
    m.groups = c.query_groups();
    m.heads = c.num_attention_heads;
    m.head_dim = c.head_dim();
    m.expert = expert >= 0;
    const Shape rest = rest_of(m.shape);
    switch (r.layout) {
      case HfLayout::Same:
      case HfLayout::FusedQkv: m.hf_shapes = {m.shape}; break;
      case HfLayout::Conv1D:
      case HfLayout::FusedQkvConv1D: m.hf_shapes = {{m.shape[1], m.shape[0]}}; break;
      case HfLayout::Qkv:
        m.hf_shapes = {with_rows(m.heads * m.head_dim, rest), with_rows(m.groups * m.head_dim, rest),
                       with_rows(m.groups * m.head_dim, rest)};
        break;
      case HfLayout::Stacked: m.hf_shapes = std::vector<Shape>(size_t(m.shape[0]), rest); break;
    }
    if (!r.alt.empty()) {
      m.alt_name = substitute(r.alt, "{l}", layer);
      if (m.expert) {  // [E, the HF tensors' rows, ...]
        int64_t rows = 0;
        for (const Shape& s : m.hf_shapes) rows += s[0];
        m.alt_shape = with_rows(rows, rest_of(m.hf_shapes[0]));
        m.alt_shape.insert(m.alt_shape.begin(), c.num_moe_experts);
        m.alt_index = expert;
      } else {
        m.alt_shape = m.hf_shapes[0];
      }
    }
    MT_CHECK(m.hf_shapes.size() == m.hf_names.size(), "{}: {} HF names for {} shapes", m.name, m.hf_names.size(),
             m.hf_shapes.size());
    out.push_back(std::move(m));
  };
  auto per_layer = [](const Rule& r) { return r.ours.find("{l}") != std::string::npos; };
  for (const Rule& r : rules)
    if (!per_layer(r) && r.ours.rfind("embedding.", 0) == 0 && needed(r.need, c, 0)) add(r, 0, -1);
  for (int l = 0; l < c.num_layers; ++l)
    for (const Rule& r : rules) {
      if (!per_layer(r) || !needed(r.need, c, l)) continue;
      if (r.ours.find("{e}") == std::string::npos) add(r, l, -1);
      else  // every expert, named by its global index (the model's expert order: all fc1, then all fc2)
        for (int e = 0; e < c.num_moe_experts; ++e) add(r, l, e);
    }
  for (const Rule& r : rules)
    if (!per_layer(r) && r.ours.rfind("embedding.", 0) != 0 && needed(r.need, c, 0)) add(r, 0, -1);
  return out;
}

Tensor hf_to_ours(const HfTensorMap& m, const std::vector<Tensor>& hf) {
  MT_CHECK(hf.size() == m.hf_names.size(), "{}: {} tensors for {} names", m.name, hf.size(), m.hf_names.size());
  const DType dt = hf[0].dtype();
  std::vector<Tensor> src;
  for (size_t i = 0; i < hf.size(); ++i) {
    MT_CHECK(hf[i].shape() == m.hf_shapes[i] && hf[i].is_contiguous() && hf[i].device().is_cpu(),
             "{}: {} is {}, expected {}", m.name, m.hf_names[i], shape_str(hf[i].shape()), shape_str(m.hf_shapes[i]));
    Tensor t = hf[i];
    if (t.dtype() != dt) {
      Tensor c = Tensor::empty(t.shape(), dt);
      cast(t, c);
      t = c;
    }
    src.push_back(conv1d(m.layout) ? transposed(t) : t);
  }
  if (m.layout == HfLayout::Same) return src[0];  // nothing moves: no copy (a large tensor stays mapped)
  const BlockPlan p = block_plan(m);
  const size_t block_bytes = size_t(p.rows_per_block * p.row_elems) * dtype_size(dt);
  const std::vector<uint8_t*> blocks = hf_blocks(src, block_bytes);
  MT_CHECK(blocks.size() == p.perm.size(), "{}: {} HF blocks for {} of ours", m.name, blocks.size(), p.perm.size());
  Tensor out = Tensor::empty(m.shape, dt);
  auto* o = static_cast<uint8_t*>(out.raw());
  for (size_t b = 0; b < p.perm.size(); ++b) std::memcpy(o + b * block_bytes, blocks[size_t(p.perm[b])], block_bytes);
  return out;
}

std::vector<Tensor> ours_to_hf(const HfTensorMap& m, const Tensor& ours) {
  MT_CHECK(ours.shape() == m.shape && ours.is_contiguous() && ours.device().is_cpu(), "{}: {} given, expected {}",
           m.name, shape_str(ours.shape()), shape_str(m.shape));
  const DType dt = ours.dtype();
  if (m.layout == HfLayout::Same) return {ours};  // nothing moves: no copy
  std::vector<Tensor> out;
  for (const Shape& s : m.hf_shapes)
    out.push_back(Tensor::empty(conv1d(m.layout) ? Shape{s[1], s[0]} : s, dt));  // transposed below
  const BlockPlan p = block_plan(m);
  const size_t block_bytes = size_t(p.rows_per_block * p.row_elems) * dtype_size(dt);
  const std::vector<uint8_t*> blocks = hf_blocks(out, block_bytes);
  MT_CHECK(blocks.size() == p.perm.size(), "{}: {} HF blocks for {} of ours", m.name, blocks.size(), p.perm.size());
  const auto* o = static_cast<const uint8_t*>(ours.raw());
  for (size_t b = 0; b < p.perm.size(); ++b) std::memcpy(blocks[size_t(p.perm[b])], o + b * block_bytes, block_bytes);
  if (conv1d(m.layout))
    for (Tensor& t : out) t = transposed(t);
  return out;
}

}  // namespace mt
