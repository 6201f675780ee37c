"""Engines and the models they serve: specs (backends/<engine>/spec.yaml), generated model presets, GGUF export, the llama.cpp server wrapper, host CPU facts."""
