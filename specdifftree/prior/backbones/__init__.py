"""Frozen LLM backbones behind one interface (`Backbone`): transformers and llama.cpp."""
