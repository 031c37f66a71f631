"""Frozen LLM backbones behind one interface (`Backbone`: one `start`, one `advance`).

    base.py          the interface, `Placement` (device, dtype), `on_host`, `steady_host_memory`
    hf.py            transformers: `HFBackbone`, prefixes shared through a slot pool
    kv_pool.py       that pool: keys, values and hidden states per prefix position
    hf_cache.py      the transformers cache that reads and writes the pool inside attention
    llamacpp.py      llama.cpp: `LlamaCppBackbone`, prefixes as sequence ids in one KV cache
    llamacpp_api.py  llama.cpp's ctypes layer: library, model, context, vocabulary
"""
