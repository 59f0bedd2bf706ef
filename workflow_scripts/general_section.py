"""Report section: general ability of every listed variant, with paired tests against the first."""
import json
from pathlib import Path
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821

from neuronkit.atomic import write_json  # noqa: E402
from neuronkit.general import general_section  # noqa: E402

sm = snakemake  # noqa: F821
results = [json.loads(Path(path).read_text()) for path in sm.input.results]
write_json(general_section(results), sm.output.json)
