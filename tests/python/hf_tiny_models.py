"""The tiny random Hugging Face models the interoperability tests build with transformers itself, one
definition for every test: GPT-2; Llama with grouped-query attention, untied, theta 500000, with and
without Llama 3 rope scaling; Qwen 2 (q/k/v bias); Qwen 3 (q/k norm, tied, head_dim != hidden/heads);
Mistral; and with experts (4 of width EF, top-2; 4 heads in 2 query groups): Mixtral (every layer MoE), Qwen 3
MoE with norm_topk_prob (its last layer dense, through mlp_only_layers) and without (every layer MoE).
Vocabulary V, hidden C, H heads in G query groups, MLP FF, P positions."""
from transformers import (GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, MistralConfig,
                          MistralForCausalLM, MixtralConfig, MixtralForCausalLM, Qwen2Config, Qwen2ForCausalLM,
                          Qwen3Config, Qwen3ForCausalLM, Qwen3MoeConfig, Qwen3MoeForCausalLM)

V, C, H, G, FF, P = 300, 64, 8, 2, 96, 64
E, TOPK, EF = 4, 2, 32
LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 8192, "rope_theta": 500000.0}


def common(num_layers=2, **overrides):
    """The Llama family's shared config arguments."""
    return dict(dict(vocab_size=V, hidden_size=C, intermediate_size=FF, num_hidden_layers=num_layers,
                     num_attention_heads=H, num_key_value_heads=G, max_position_embeddings=P), **overrides)


def moe(num_layers=2, **overrides):
    """The MoE families' shared config arguments: 4 heads of 16 in 2 query groups."""
    return common(num_layers, **dict(dict(num_attention_heads=4, num_experts_per_tok=TOPK), **overrides))


BUILDERS = {
    "gpt2": lambda L: GPT2LMHeadModel(GPT2Config(vocab_size=V, n_positions=P, n_embd=C, n_layer=L, n_head=4,
                                                 resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)),
    "llama_gqa_untied": lambda L: LlamaForCausalLM(LlamaConfig(**common(L), rope_theta=500000.0,
                                                               tie_word_embeddings=False)),
    "llama31_scaling": lambda L: LlamaForCausalLM(LlamaConfig(**common(L), rope_parameters=LLAMA3,
                                                              tie_word_embeddings=False)),
    "qwen2_qkv_bias": lambda L: Qwen2ForCausalLM(Qwen2Config(**common(L), tie_word_embeddings=True)),
    "qwen3_qk_norm_tied": lambda L: Qwen3ForCausalLM(Qwen3Config(**common(L), head_dim=16, tie_word_embeddings=True)),
    "mistral": lambda L: MistralForCausalLM(MistralConfig(**common(L), tie_word_embeddings=False)),
    "mixtral": lambda L: MixtralForCausalLM(MixtralConfig(**moe(L, intermediate_size=EF), num_local_experts=E,
                                                          tie_word_embeddings=False)),
    "qwen3_moe_dense_last": lambda L: Qwen3MoeForCausalLM(Qwen3MoeConfig(
        **moe(L), moe_intermediate_size=EF, num_experts=E, norm_topk_prob=True, mlp_only_layers=[L - 1],
        tie_word_embeddings=False)),
    "qwen3_moe_no_norm_topk": lambda L: Qwen3MoeForCausalLM(Qwen3MoeConfig(
        **moe(L), moe_intermediate_size=EF, num_experts=E, norm_topk_prob=False, tie_word_embeddings=True)),
}


def tiny_hf_model(name, num_layers=2):
    """A freshly initialised model (seed it first for reproducible weights)."""
    return BUILDERS[name](num_layers)
