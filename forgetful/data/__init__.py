"""Data: task sources and record formats (`sources`, `formats`), built-in tasks
(`builtin_tasks`), prompt templates (`templates`), formatting into splits (`formatting`),
hygiene (`hygiene`: dedup, contamination), answer metrics (`metrics`), mixing strategies
(`mixing`), and tokenizing records with completion-only labels (`batches`).

May import: forgetful.core.
"""
