"""The neurons a deactivation control zeroes (equal-count random, or magnitude-matched), drawn once per model."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821

from neuronkit import runtime  # noqa: E402
from neuronkit.deactivate import control_index_file, controls_from_params  # noqa: E402

sm = snakemake  # noqa: F821
runtime.setup(seed=sm.params.seed, threads=sm.threads)
print(control_index_file(sm.input.ckpt, sm.input.index, sm.output.index, sm.wildcards.control,
                         controls_from_params(sm.params.deactivation, sm.params.plnd, sm.input.plnd_docs)))
