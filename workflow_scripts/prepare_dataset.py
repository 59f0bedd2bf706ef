"""Prepare one configured dataset into the common Parquet schema."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821  (before heavy imports)

from neuronkit.data import DatasetSpec, load_dataset, write_table  # noqa: E402

spec = DatasetSpec.from_config(snakemake.wildcards.dataset, snakemake.params.spec)  # noqa: F821
table = load_dataset(spec, base_dir=snakemake.params.base_dir)  # noqa: F821
write_table(table, snakemake.output.parquet)  # noqa: F821
print(f"{spec.name}: {table.num_rows} rows from {spec.source}", file=sys.stderr)
