"""What every other part of the engine builds on: errors, recipes and their configs, inputs, outputs,
data forms, labels, layer choice, argument checks and model copies. Imports nothing from the other
sub-packages, and (apart from the layer chooser and copies) no torch."""
