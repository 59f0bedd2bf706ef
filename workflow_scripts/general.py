"""General ability of one checkpoint variant through lm-evaluation-harness."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821

from neuronkit import runtime  # noqa: E402
from neuronkit.atomic import write_json  # noqa: E402
from neuronkit.general import GeneralConfig, general_ability  # noqa: E402

sm = snakemake  # noqa: F821
runtime.setup(seed=sm.params.seed, threads=sm.threads)
cfg = GeneralConfig.from_config(sm.params.general, seed=sm.params.seed)
write_json(general_ability(sm.input.ckpt, cfg, variant=sm.wildcards.variant), sm.output.json)
