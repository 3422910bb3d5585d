# Cohort outputs: tables, registry database, review report, DICOM SEG/SR per patient.
rule tables:
    input:
        analyses,
        patients=L.patients_json,
    output:
        timepoints=L.timepoints_csv,
        outcomes=L.outcomes_csv,
        cohort=L.cohort_json,
    log:
        L.log("tables"),
    benchmark:
        L.benchmark("tables")
    shell:
        "{STAGE} tables --config {CONFIG_ARG} > {log} 2>&1"


rule registry:
    input:
        L.timepoints_csv,
        L.outcomes_csv,
        L.series_csv,
    output:
        L.registry_done,
    log:
        L.log("registry"),
    benchmark:
        L.benchmark("registry")
    shell:
        "{STAGE} registry --config {CONFIG_ARG} > {log} 2>&1"


rule report:
    input:
        analyses,
        L.cohort_json,
    output:
        L.report_index,
    log:
        L.log("report"),
    benchmark:
        L.benchmark("report")
    shell:
        "{STAGE} report --config {CONFIG_ARG} > {log} 2>&1"


rule dicom_patient:
    input:
        L.analysis_json("{patient}"),
    output:
        L.dicom_done("{patient}"),
    log:
        L.log("dicom", "{patient}"),
    benchmark:
        L.benchmark("dicom", "{patient}")
    shell:
        "{STAGE} dicom --config {CONFIG_ARG} --patient {wildcards.patient} > {log} 2>&1"


def dicom_outputs(wildcards):
    return [str(L.dicom_done(p)) for p in manifest_patients()]
