"""SN-Tune (or RSN-Tune) of the unaligned model on harmful prompts + refusals."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821

from neuronkit import runtime  # noqa: E402
from neuronkit.atomic import write_json  # noqa: E402
from neuronkit.sntune import RUN_ONLY_KEYS, SNTuneConfig, sntune_stage, without_timing  # noqa: E402

sm = snakemake  # noqa: F821
runtime.setup(seed=sm.params.seed, threads=sm.threads)
p = dict(sm.params.sntune)
p.pop("variant"), p.pop("dataset"), p.pop("benign_dataset")
cfg = SNTuneConfig.from_config(dict(p, seed=sm.params.seed))
summary = sntune_stage(sm.input.parent, sm.input.index, sm.input.prompts, sm.output.ckpt, cfg,
                       model_name=sm.wildcards.model, foundation_path=sm.input.foundation or None,
                       benign_answers_parquet=sm.input.benign_answers or None)
print("run:", {k: summary[k] for k in RUN_ONLY_KEYS})
write_json(without_timing(summary), sm.output.summary)
