# Data preparation and stratification (netpert.data).


rule prepare_data:
    input:
        input_file,
    output:
        cells=out("data/cells.h5ad"),
    log:
        log_path("prepare_data"),
    benchmark:
        bench_path("prepare_data")
    params:
        source=config["input"],
        cell_type_key=config["data"]["cell_type_key"],
        tissue_key=config["data"]["tissue_key"],
        counts_layer=config["data"]["counts_layer"],
        gene_symbols=config["data"]["gene_symbols"],
        min_cells=config["data"]["min_cells"],
        min_cells_per_gene=config["data"]["min_cells_per_gene"],
        regulators=config["regulators"]["lists"],
        species=config["regulators"]["species"],
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=30,
    conda:
        f"{ENVS}/data.yaml"
    script:
        "../../scripts/prepare_data.py"


checkpoint stratify:
    input:
        cells=rules.prepare_data.output.cells,
    output:
        directory(out("strata")),
    log:
        log_path("stratify"),
    benchmark:
        bench_path("stratify")
    params:
        min_cells=config["strata"]["min_cells"],
        max_cells=config["strata"]["max_cells"],
        seed=config["strata"]["seed"],
        metacells=config["strata"]["metacells"]["enabled"],
        metacell_method=config["strata"]["metacells"]["method"],
        metacell_k=config["strata"]["metacells"]["k"],
        metacell_max_k=config["strata"]["metacells"]["max_k"],
        metacell_max_cells=config["strata"]["metacells"]["max_cells"],
        target_umis=config["strata"]["metacells"]["target_umis"],
        n_pcs=config["strata"]["metacells"]["n_pcs"],
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=30,
    conda:
        f"{ENVS}/data.yaml"
    script:
        "../../scripts/stratify.py"
