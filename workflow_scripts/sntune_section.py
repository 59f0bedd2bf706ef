"""Report section for PLND, deactivation and (RSN-)SN-Tune."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821

from neuronkit.evaluate import sntune_section  # noqa: E402
from neuronkit.atomic import write_json  # noqa: E402

sm = snakemake  # noqa: F821
perplexities = dict(zip(("before", "sntune", "rsntune"), sm.input.perplexity))
write_json(sntune_section(sm.input.plnd, sm.input.foundation, list(sm.input.summaries), perplexities,
                          list(sm.input.tuning), list(sm.input.deactivation),
                          deactivation_perplexity=sm.input.deactivation_perplexity), sm.output.json)
