"""report.html: every plot with its caption and the tables of report.json, in one self-contained file."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821

from neuronkit.artifacts import read_json  # noqa: E402
from neuronkit.html_report import write_html_report  # noqa: E402

sm = snakemake  # noqa: F821
report = read_json(sm.input.json)
plots = {name: sm.input[name] for name in sm.params.plots}
write_html_report(report, plots, sm.output.html)
print("wrote", sm.output.html)
