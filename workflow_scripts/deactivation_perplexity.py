"""Benign-text perplexity intact, with the PLND safety neurons zeroed, and with each control's neurons zeroed."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821

from neuronkit import runtime  # noqa: E402
from neuronkit.deactivate import SELECTIONS, deactivation_perplexity_file  # noqa: E402

sm = snakemake  # noqa: F821
runtime.setup(seed=sm.params.seed, threads=sm.threads)
print(deactivation_perplexity_file(sm.input.ckpt, {s: sm.input[s] for s in SELECTIONS}, sm.input.text,
                                   sm.output.json))
