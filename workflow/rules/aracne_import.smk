# Networks brought in (aracne.networks): a stratum named there (or every stratum, "*") takes its
# regulons from an ARACNe-AP, ARACNe3 or regulon file instead of netpert's ARACNe (netpert.aracne.imported).
import re

IMPORTED = {str(k): v for k, v in (config["aracne"]["networks"] or {}).items()}
#: the strata whose network is brought in ("*": all), as aracne_import's stratum constraint
IMPORTED_STRATA = (
    ".+"
    if "*" in IMPORTED
    else "|".join(map(re.escape, IMPORTED)) if IMPORTED else "(?!)"
)


ruleorder: aracne_import > aracne_consensus


rule aracne_import:
    input:
        h5ad=out("strata/{stratum}.h5ad"),
        network=lambda wc: IMPORTED.get(wc.stratum, IMPORTED.get("*")),
    output:
        network=out("aracne/{stratum}/network.tsv"),
        regulon=out("aracne/{stratum}/regulon.tsv"),
        status=out("aracne/{stratum}/status.json"),
    log:
        log_path("aracne_import/{stratum}"),
    benchmark:
        bench_path("aracne_import/{stratum}")
    params:
        max_targets=config["aracne"]["max_targets"],
        min_targets=config["aracne"]["min_targets"],
        skip_empty=config["strata"]["skip_empty"],
        stratum=lambda wc: wc.stratum,
    wildcard_constraints:
        stratum=IMPORTED_STRATA,
    threads: 1
    resources:
        mem_mb=lambda wc, input, attempt: int(max(2000, 4 * input.size_mb) * attempt),
        runtime=30,
    conda:
        f"{ENVS}/aracne.yaml"
    script:
        "../../scripts/aracne_import.py"
