#!/usr/bin/env python3
"""Checks that a model folder written by `layerskip train` is what Hugging Face transformers'
LlamaForCausalLM loads without changes: transformers parses config.json as a LlamaConfig, and
model.safetensors holds exactly the state-dict keys, shapes and dtype that LlamaForCausalLM
declares for that config (lm_head.weight absent when the embeddings are tied).

    pip install transformers safetensors numpy      # torch is not needed for this check
    python3 scripts/hf-check.py models/default

With torch installed it also instantiates LlamaForCausalLM.from_pretrained and runs one forward pass.
"""
import json
import sys

from safetensors import safe_open
from transformers import AutoConfig, LlamaConfig

folder = sys.argv[1]
config = AutoConfig.from_pretrained(folder)
assert isinstance(config, LlamaConfig), f"config.json parsed as {type(config).__name__}, expected LlamaConfig"
raw = json.load(open(f"{folder}/config.json"))
assert raw.get("architectures") == ["LlamaForCausalLM"], raw.get("architectures")

h, inter, L = config.hidden_size, config.intermediate_size, config.num_hidden_layers
hd = getattr(config, "head_dim", None) or h // config.num_attention_heads
q, kv = config.num_attention_heads * hd, config.num_key_value_heads * hd
expected = {"model.embed_tokens.weight": (config.vocab_size, h), "model.norm.weight": (h,)}
if not config.tie_word_embeddings:
    expected["lm_head.weight"] = (config.vocab_size, h)
for l in range(L):
    p = f"model.layers.{l}."
    expected.update({
        p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,),
        p + "self_attn.q_proj.weight": (q, h), p + "self_attn.k_proj.weight": (kv, h),
        p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.o_proj.weight": (h, q),
        p + "mlp.gate_proj.weight": (inter, h), p + "mlp.up_proj.weight": (inter, h),
        p + "mlp.down_proj.weight": (h, inter),
    })
found = {}
dtypes = set()
with safe_open(f"{folder}/model.safetensors", framework="numpy") as f:
    for name in f.keys():
        sl = f.get_slice(name)
        found[name] = tuple(sl.get_shape())
        dtypes.add(sl.get_dtype())
missing = sorted(set(expected) - set(found))
extra = sorted(set(found) - set(expected))
wrong = sorted(n for n in expected if n in found and found[n] != expected[n])
assert not missing and not extra and not wrong, f"missing {missing[:5]} extra {extra[:5]} wrong shapes {wrong[:5]}"
print(f"{folder}: LlamaConfig ok ({L} layers, hidden {h}, heads {config.num_attention_heads}/{config.num_key_value_heads}, "
      f"vocab {config.vocab_size}, tied {config.tie_word_embeddings}); {len(found)} tensors match LlamaForCausalLM; dtypes {sorted(dtypes)}")

try:
    import torch  # noqa: F401
except ImportError:
    print("torch not installed: skipped LlamaForCausalLM.from_pretrained")
    sys.exit(0)
from transformers import LlamaForCausalLM
model = LlamaForCausalLM.from_pretrained(folder)
import torch
with torch.no_grad():
    logits = model(torch.tensor([[1, 2, 3]])).logits
print("from_pretrained ok; logits", tuple(logits.shape))
