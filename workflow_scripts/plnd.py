"""PLND safety (or foundation) neurons of the detected model."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821

from neuronkit import runtime  # noqa: E402
from neuronkit.scores.plnd import PLNDConfig, plnd_file  # noqa: E402

sm = snakemake  # noqa: F821
runtime.setup(seed=sm.params.seed, threads=sm.threads)
p = sm.params.plnd
cfg = PLNDConfig.from_stage(p)
kind = sm.wildcards.kind
plnd_file(sm.input.ckpt, sm.input.prompts, sm.output.index, cfg, n_docs=p["n_docs"],
          meta={"method": kind, "model": sm.wildcards.model, "variant": p["variant"],
                "dataset": p["dataset"] if kind == "plnd" else p["foundation_dataset"], "params": cfg.to_meta()})
