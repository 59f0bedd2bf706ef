"""Answers with the PLND safety neurons (or a control's neurons: random, magnitude-matched) zeroed."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821

from neuronkit import runtime  # noqa: E402
from neuronkit.deactivate import deactivate_generate_file  # noqa: E402
from neuronkit.generate import GenerationConfig  # noqa: E402

sm = snakemake  # noqa: F821
runtime.setup(seed=sm.params.seed, threads=sm.threads)
print(deactivate_generate_file(sm.input.ckpt, sm.input.index, sm.input.prompts, sm.output.parquet,
                               GenerationConfig(seed=sm.params.seed, **sm.params.gen),
                               selection=sm.wildcards.selection))
