"""Realign one attacked adapter by neuron transplant from the reference."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821

from neuronkit.realign import RealignConfig, realign  # noqa: E402

from neuronkit.variants import poisoned_variant  # noqa: E402

sm = snakemake  # noqa: F821
n = sm.params.nlsr
cfg = RealignConfig(mode=n["mode"], rate=n["rate"], epsilon=n["epsilon"], ordering=n["ordering"], tau=n["tau"],
                    layers=tuple(n["layers"]), seed=sm.params.seed)
summary = realign(sm.input.attacked, sm.input.reference, sm.output.ckpt, cfg, masks_path=sm.input.masks,
                  name=poisoned_variant("nlsr", sm.wildcards.p))
print({k: v for k, v in summary.items() if not isinstance(v, (dict, list))})
