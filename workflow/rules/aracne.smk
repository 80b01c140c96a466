# ARACNe per stratum: threshold, bootstrap chunks, consensus and regulons (netpert.aracne).


rule aracne_threshold:
    input:
        h5ad=out("strata/{stratum}.h5ad"),
        null=out("strata/{stratum}.null.h5ad"),
    output:
        threshold=out("aracne/{stratum}/threshold.txt"),
        info=out("aracne/{stratum}/threshold.json"),
        null=out("aracne/{stratum}/null.npz"),
    log:
        log_path("aracne_threshold/{stratum}"),
    benchmark:
        bench_path("aracne_threshold/{stratum}")
    params:
        regulators=config["regulators"]["lists"],
        species=config["regulators"]["species"],
        pvalue=config["aracne"]["pvalue"],
        fdr=config["aracne"]["fdr"],
        seed=config["aracne"]["seed"],
        method=config["aracne"]["threshold_method"],
        estimator=config["aracne"]["estimator"],
        resampling=config["aracne"]["resampling"],
        backend=config["aracne"]["backend"],
        cache_dir=out("aracne/null_cache"),
    threads: config["aracne"]["threads"]
    resources:
        mem_mb=lambda wc, input, attempt: aracne_mem_mb(input.size_mb, attempt),
        runtime=lambda wc, attempt: 60 * attempt,
    conda:
        f"{ENVS}/aracne.yaml"
    script:
        "../../scripts/aracne_threshold.py"


rule aracne_bootstrap:
    input:
        h5ad=out("strata/{stratum}.h5ad"),
        threshold=out("aracne/{stratum}/threshold.txt"),
        info=out("aracne/{stratum}/threshold.json"),
        null=out("aracne/{stratum}/null.npz"),
    output:
        tsv=out("aracne/{stratum}/boot_{chunk}.tsv"),
    log:
        log_path("aracne_bootstrap/{stratum}_{chunk}"),
    benchmark:
        bench_path("aracne_bootstrap/{stratum}_{chunk}")
    params:
        regulators=config["regulators"]["lists"],
        species=config["regulators"]["species"],
        seed=config["aracne"]["seed"],
        bootstraps=lambda wc: bootstrap_range(int(wc.chunk)),
        resampling=config["aracne"]["resampling"],
        dpi=config["aracne"]["dpi"],
        dpi_tolerance=config["aracne"]["dpi_tolerance"],
        backend=config["aracne"]["backend"],
    threads: config["aracne"]["threads"]
    resources:
        mem_mb=lambda wc, input, attempt: aracne_mem_mb(input.size_mb, attempt),
        runtime=lambda wc, attempt: 60 * attempt,
    conda:
        f"{ENVS}/aracne.yaml"
    script:
        "../../scripts/aracne_bootstrap.py"


rule aracne_consensus:
    input:
        boots=lambda wc: expand(
            out("aracne/{stratum}/boot_{chunk}.tsv"),
            stratum=wc.stratum,
            chunk=range(n_bootstrap_chunks()),
        ),
        h5ad=out("strata/{stratum}.h5ad"),
        threshold=out("aracne/{stratum}/threshold.txt"),
        info=out("aracne/{stratum}/threshold.json"),
        null=out("aracne/{stratum}/null.npz"),
    output:
        network=out("aracne/{stratum}/network.tsv"),
        regulon=out("aracne/{stratum}/regulon.tsv"),
        status=out("aracne/{stratum}/status.json"),
    log:
        log_path("aracne_consensus/{stratum}"),
    benchmark:
        bench_path("aracne_consensus/{stratum}")
    params:
        regulators=config["regulators"]["lists"],
        species=config["regulators"]["species"],
        seed=config["aracne"]["seed"],
        backend=config["aracne"]["backend"],
        consensus_pvalue=config["aracne"]["consensus_pvalue"],
        bonferroni=config["aracne"]["bonferroni"],
        max_targets=config["aracne"]["max_targets"],
        min_targets=config["aracne"]["min_targets"],
        n_bootstraps=config["aracne"]["bootstraps"],
        skip_empty=config["strata"]["skip_empty"],
        stratum=lambda wc: wc.stratum,
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=30,
    conda:
        f"{ENVS}/aracne.yaml"
    script:
        "../../scripts/aracne_consensus.py"


rule aracne_summary:
    input:
        strata=out("strata"),
        status=lambda wc: expand(
            out("aracne/{stratum}/status.json"), stratum=kept_strata()
        ),
    output:
        tsv=out("aracne/strata.tsv"),
    log:
        log_path("aracne_summary"),
    benchmark:
        bench_path("aracne_summary")
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 1000 * attempt,
        runtime=10,
    conda:
        f"{ENVS}/aracne.yaml"
    script:
        "../../scripts/aracne_summary.py"


STAGE_TARGETS["networks"].append(
    lambda wc: expand(out("aracne/{stratum}/regulon.tsv"), stratum=kept_strata())
)
STAGE_TARGETS["networks"].append(out("aracne/strata.tsv"))
