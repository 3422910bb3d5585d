# One job per patient: load each chosen series once, register every study to the baseline,
# segment and measure every lesion of the patient.
rule analyse_patient:
    input:
        series=L.series_csv,
        lesions=config["lesions"],
    output:
        L.analysis_json("{patient}"),
    threads: config["analysis"].get("threads", 1)
    log:
        L.log("analyse", "{patient}"),
    benchmark:
        L.benchmark("analyse", "{patient}")
    shell:
        "{STAGE} analyse --config {CONFIG_ARG} --patient {wildcards.patient} --threads {threads} "
        "> {log} 2>&1"


def analyses(wildcards):
    return [str(L.analysis_json(p)) for p in manifest_patients()]
