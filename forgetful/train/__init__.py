"""Training: PEFT methods by name (`methods`), Trainer and the model it trains
(`trainer`), the completion-only loss (`completion_loss`), callbacks, resumable
checkpoints, processes (`distributed`), and merging an adapter into its base (`merging`).

May import: forgetful.core, forgetful.data, forgetful.evaluate.
"""
