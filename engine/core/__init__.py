"""What every other part of the engine builds on: errors, the recipe and its configs, the table of
string choices, inputs, outputs, data forms, labels, the layer chooser, the example batch, argument
checks, model copies, fingerprints and CPU facts. Imports nothing from the other sub-packages; the
config modules (errors, configs, quantizers, pruners, runtimes, recipe, choices) import no torch."""
