# Safety-neuron workflow: datasets -> aligned checkpoints -> generations -> judged scores -> report.
# Usage: snakemake --cores 2 results/smollm2/report.json   (see README.md)

from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/models.smk"
include: "rules/align.smk"
include: "rules/generate.smk"
include: "rules/neurons.smk"
include: "rules/patching.smk"
include: "rules/sntune.smk"
include: "rules/nlsr.smk"
include: "rules/general.smk"
include: "rules/report.smk"


onstart:
    preflight(workflow)


rule all:
    input:
        report_json(config["default_model"]),
        html_report(config["default_model"]),
