"""Random-mask control for one NLSR run: same modules and entry counts per tensor, random entries."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821

from neuronkit.realign import realign_random_control  # noqa: E402
from neuronkit.variants import poisoned_variant  # noqa: E402

sm = snakemake  # noqa: F821
summary = realign_random_control(sm.input.attacked, sm.input.reference, sm.input.nlsr, sm.output.ckpt,
                                 masks_path=sm.input.masks, seed=sm.params.seed,
                                 name=poisoned_variant("nlsr_random", sm.wildcards.p))
print({k: v for k, v in summary.items() if not isinstance(v, (dict, list))})
