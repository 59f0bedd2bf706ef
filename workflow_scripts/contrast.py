"""Contrast A and U activations on the generator's completions; write the neuron index and statistics."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821

from neuronkit import runtime  # noqa: E402
from neuronkit.scores.contrast import ContrastConfig, contrast_files  # noqa: E402

sm = snakemake  # noqa: F821
runtime.setup(seed=sm.params.seed, threads=sm.threads)
p = dict(sm.params.contrast)
variants = {"aligned": p.pop("aligned"), "unaligned": p.pop("unaligned")}
generator, dataset = p.pop("generator"), p.pop("dataset")
contrast_files(sm.input.aligned, sm.input.unaligned, sm.input.prompts, ContrastConfig(**p), generator=generator,
               out_index=sm.output.index, out_stats=sm.output.stats,
               meta={"model": sm.wildcards.model, "variants": variants, "dataset": dataset, "params": p})
