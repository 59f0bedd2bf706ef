"""report.json from the stage sections."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821

from neuronkit.atomic import write_json  # noqa: E402
from neuronkit.report import build_report  # noqa: E402

sections = {name: snakemake.input[name] for name in snakemake.params.sections}  # noqa: F821
report = build_report(snakemake.wildcards.model, sections, list(snakemake.input.variants))  # noqa: F821
write_json(report, snakemake.output.json)  # noqa: F821
