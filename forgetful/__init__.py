"""forgetful: fine-tune a language model with PEFT and measure what it learned and forgot.

The library the DVC stages in `stages/` call, in layers; a layer imports only the layers
above it in this list, never one below (tests/test_layout.py checks it):

- `forgetful.core`: the plumbing: params validation, atomic artifacts, MLflow tracking,
  the stage entry point.
- `forgetful.data`: tasks and their sources, record formats, templates, built-in tasks,
  hygiene (dedup, contamination), answer metrics, mixing, tokenizing with label masks.
- `forgetful.evaluate`: scoring a model: log-likelihoods, multiple choice (prefix-tree
  packing), generation, benchmarks, the lm-eval bridge.
- `forgetful.train`: PEFT methods by name, the completion-only loss, Trainer, callbacks,
  checkpoints, processes, merging.
- `forgetful.report`: the forgetting report: base vs tuned, paired bootstrap, figures.

Package `__init__` files hold docstrings only: importing a module loads no other code.
The calls meant for users are shown in the README ("Use it from Python").
"""
