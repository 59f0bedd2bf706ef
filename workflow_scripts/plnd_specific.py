"""Our extension: the harmful-specific ranking of PLND importance, as many neurons per module as the intersection."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821

from neuronkit import runtime  # noqa: E402
from neuronkit.scores.plnd import PLNDConfig, specific_file  # noqa: E402

sm = snakemake  # noqa: F821
runtime.setup(seed=sm.params.seed, threads=sm.threads)
p = sm.params.plnd
cfg = PLNDConfig.from_stage(p)
try:
    specific_file(sm.input.ckpt, sm.input.harmful, sm.input.benign, sm.input.intersection, sm.output.index, cfg,
                  n_docs=p["n_docs"], meta={"model": sm.wildcards.model, "variant": p["variant"],
                                            "dataset": p["dataset"], "foundation_dataset": p["foundation_dataset"],
                                            "params": cfg.to_meta()})
except ValueError as err:
    raise SystemExit(str(err)) from None
