"""Report section for NLSR: safety and task accuracy per variant and poison fraction, plus a plot."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821

from neuronkit.evaluate import nlsr_section  # noqa: E402
from neuronkit.atomic import write_json  # noqa: E402
from neuronkit.report import plot_nlsr  # noqa: E402

sm = snakemake  # noqa: F821
section = nlsr_section(list(sm.input.safety), list(sm.input.task), sm.input.task_data, list(sm.input.realign),
                       sm.params.nlsr, perplexity_paths=list(sm.input.perplexity))
write_json(section, sm.output.json)
plot_nlsr(section, sm.output.plot)
