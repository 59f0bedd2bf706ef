"""The report's evaluation section."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821

from neuronkit.evaluate import evaluation_section  # noqa: E402
from neuronkit.atomic import write_json  # noqa: E402

section = evaluation_section(list(snakemake.input.scored), snakemake.params.labels,  # noqa: F821
                             list(snakemake.input.perplexity))  # noqa: F821
write_json(section, snakemake.output.json)  # noqa: F821
