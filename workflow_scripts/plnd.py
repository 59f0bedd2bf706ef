"""PLND safety (or foundation) neurons of the detected model."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821

from neuronkit import runtime  # noqa: E402
from neuronkit.scores.plnd import PLNDConfig, plnd_file  # noqa: E402

sm = snakemake  # noqa: F821
runtime.setup(seed=sm.params.seed, threads=sm.threads)
p = dict(sm.params.plnd)
variant, dataset, foundation, n_docs = p.pop("variant"), p.pop("dataset"), p.pop("foundation_dataset"), p.pop("n_docs")
cfg = PLNDConfig(**dict(p, modules=tuple(p["modules"])))
kind = sm.wildcards.kind
plnd_file(sm.input.ckpt, sm.input.prompts, sm.output.index, cfg, n_docs=n_docs,
          meta={"method": kind, "model": sm.wildcards.model, "variant": variant,
                "dataset": dataset if kind == "plnd" else foundation, "params": cfg.to_meta()})
