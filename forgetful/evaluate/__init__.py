"""Evaluation: log-likelihood and generation (`scoring`), the output layer at chosen
positions (`heads`), prefix-tree packing for multiple choice (`packing`), benchmarks and
text corpora (`benchmarks`), lm-evaluation-harness tasks (`harness`), and scoring a model
on tasks, the general suite and plain text (`evaluator`).

May import: forgetful.core, forgetful.data.
"""
