# Index the archive (headers only, dask in parallel); a checkpoint, because the per-patient
# part of the DAG depends on which manifest patients the archive actually holds.
checkpoint index:
    input:
        lesions=config["lesions"],
    output:
        series=L.series_csv,
        patients=L.patients_json,
    params:
        archive=config["archive"],
    threads: config["index"]["workers"]
    log:
        L.log("index"),
    benchmark:
        L.benchmark("index")
    shell:
        "{STAGE} index --config {CONFIG_ARG} > {log} 2>&1"


def manifest_patients(wildcards=None):
    """Safe ids of the manifest patients found in the archive (after the checkpoint)."""
    with open(checkpoints.index.get().output.patients) as fh:
        return sorted(json.load(fh)["found"])
