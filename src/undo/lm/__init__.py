"""One inference layer for teacher and student.

models.py   resolve a model spec (offline name, folder, hub id, saved student), load it
generate.py our batched decode loop on transformers
engines.py  the registered engines (transformers, vLLM) and their lifecycle (the pool)
"""
