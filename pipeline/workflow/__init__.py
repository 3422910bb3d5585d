"""Snakemake workflow: rule files, configuration schema, stage functions, runner."""
