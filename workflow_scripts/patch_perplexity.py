"""Perplexity of held-out benign text under patching, at every k of the grid."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821

from neuronkit import runtime  # noqa: E402
from neuronkit.patching import perplexity_file  # noqa: E402
from neuronkit.atomic import write_json  # noqa: E402
from neuronkit.neurons import as_k  # noqa: E402

sm = snakemake  # noqa: F821
runtime.setup(seed=sm.params.seed, threads=sm.threads)
p = sm.params.patching
ks = {label: as_k(k) for label, k in zip(sm.params.k_labels, p["k_grid"])}
result = perplexity_file(sm.input.unaligned, sm.input.aligned, sm.input.index, sm.input.text, ks=ks, mode=p["mode"],
                         seed=p["random_seed"])
write_json(dict(result, dataset=p["ppl_dataset"]), sm.output.json)
