# cryotrack workflow: a thin entry point. The rules live in pipeline/workflow/rules/*.smk and
# call importable, tested stage functions (pipeline/workflow/stages.py).
# Usually started by `cryotrack run`; by hand:
#   snakemake --cores 2 --config archive=ARCHIVE lesions=lesions.csv out=OUT
include: "pipeline/workflow/main.smk"
