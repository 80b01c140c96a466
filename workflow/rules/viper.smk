# VIPER / metaVIPER activity over every stratum's regulon, and master regulators (netpert.viper).


rule viper:
    input:
        cells=out("data/cells.h5ad"),
        regulons=lambda wc: expand(
            out("aracne/{stratum}/regulon.tsv"), stratum=kept_strata()
        ),
    output:
        activity=out("viper/activity.h5ad"),
    log:
        log_path("viper"),
    benchmark:
        bench_path("viper")
    params:
        signature=config["viper"]["signature"],
        eset_filter=config["viper"]["eset_filter"],
        min_targets=config["viper"]["min_targets"],
        mvws=config["viper"]["mvws"],
        pleiotropy=config["viper"]["pleiotropy"],
        network_choice=config["viper"]["network_choice"],
        block_size=config["viper"]["block_size"],
        enrichment=config["viper"]["enrichment"],
    threads: 2
    resources:
        mem_mb=lambda wc, input, attempt: int(max(2000, 30 * input.size_mb) * attempt),
        runtime=60,
    conda:
        f"{ENVS}/viper.yaml"
    script:
        "../../scripts/viper.py"


rule master_regulators:
    input:
        activity=out("viper/activity.h5ad"),
        # the strata with a network: only they get master regulators (the others are background)
        regulons=lambda wc: expand(
            out("aracne/{stratum}/regulon.tsv"), stratum=kept_strata()
        ),
    output:
        tsv=out("viper/master_regulators.tsv"),
    log:
        log_path("master_regulators"),
    benchmark:
        bench_path("master_regulators")
    params:
        top_k=config["viper"]["top_k"],
        padj=config["viper"]["mr_padj"],
        groupby="stratum",
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 2000 * attempt,
        runtime=15,
    conda:
        f"{ENVS}/viper.yaml"
    script:
        "../../scripts/master_regulators.py"


STAGE_TARGETS["activity"].append(out("viper/master_regulators.tsv"))
