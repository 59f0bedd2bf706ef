"""Report plots drawn from the sections: scores per variant, safety neurons per layer."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821

from neuronkit.artifacts import read_json  # noqa: E402
from neuronkit.report import plot_neurons_per_layer, plot_variant_scores  # noqa: E402

sm = snakemake  # noqa: F821
sections = {name: read_json(sm.input[name]) for name in ("evaluation", "neurons", "sntune")}
plot_variant_scores(sections["evaluation"], sm.output.variant_scores)
plot_neurons_per_layer(sections, sm.output.neurons_per_layer)
print("wrote", sm.output.variant_scores, sm.output.neurons_per_layer)
