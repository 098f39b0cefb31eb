"""Training loops: fine-tuning with gradual pruning and distillation, and lottery tickets."""
