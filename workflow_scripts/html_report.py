"""report.html: every plot with its caption and the tables of report.json, in one self-contained file."""
import json
import sys
from pathlib import Path

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821

from neuronkit.html_report import write_html_report  # noqa: E402

sm = snakemake  # noqa: F821
report = json.loads(Path(sm.input.json).read_text())
plots = {name: sm.input[name] for name in sm.params.plots}
write_html_report(report, plots, sm.output.html)
print("wrote", sm.output.html)
