"""The ISP benchmark's machine figures: the peak formulas, the clock source, the multiply-add count."""

from __future__ import annotations

import pytest
from script_utils import load_benchmark


def _script():
    return load_benchmark("benchmark_isp")


def test_peak_from_cores_clock_and_vector_width():
    B = _script()
    # AVX2 without VNNI: 2 FMA pipes x 8 fp32 lanes; int8 at twice fp32 (vpmaddubsw + vpmaddwd)
    p = B.cpu_peak({"avx2", "fma"}, cores=2, mhz=3000.0, vendor="AuthenticAMD", family=25)
    assert p["fp32_gflops"] == pytest.approx(2 * 3.0 * 2 * 8 * 2) and p["int8_gops"] == pytest.approx(2 * 3.0 * 32 * 2)
    assert (p["isa_bits"], p["datapath_bits"], p["vnni"]) == (256, 256, False)
    # Zen 4 (AMD family 25 with AVX-512): 512-bit instructions on 256-bit halves; VNNI: 4x fp32
    z4 = B.cpu_peak({"avx2", "avx512f", "avx512_vnni"}, 2, 2596.13, "AuthenticAMD", 25)
    assert (z4["isa_bits"], z4["datapath_bits"], z4["vnni"]) == (512, 256, True)
    assert z4["int8_gops"] == pytest.approx(4 * z4["fp32_gflops"]) == pytest.approx(2 * 2.59613 * 2 * 32 * 2)
    # an Intel AVX-512 VNNI core: the full 512-bit datapath
    icx = B.cpu_peak({"avx2", "avx512f", "avx512_vnni"}, 1, 2000.0, "GenuineIntel", 6)
    assert icx["datapath_bits"] == 512 and icx["int8_gops"] == pytest.approx(2.0 * 2 * 64 * 2)
    assert "= 512 GOP/s" in icx["int8_formula"] and "VNNI" in icx["int8_formula"]
    assert B.cpu_peak({"avx2", "avx_vnni"}, 1, 1000.0)["int8_gops"] == pytest.approx(1.0 * 2 * 32 * 2)


def test_clock_source():
    from netpert.machine import cpu_clock

    assert cpu_clock("cpu MHz\t\t: 2596.130\n", "CPU max MHz:   3700.0000\n") == (3700.0, "lscpu 'CPU max MHz'")
    mhz, source = cpu_clock("processor\t: 0\ncpu MHz\t\t: 2596.130\n\nprocessor\t: 1\ncpu MHz\t\t: 1800.0\n", "Model name: X\n")
    assert mhz == 2596.13 and source.startswith("/proc/cpuinfo 'cpu MHz'")
    assert cpu_clock("", "")[0] is None


def test_multiply_adds_counted_from_the_architecture_equal_torchs_count():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from torch.utils.flop_counter import FlopCounterMode

    from netpert.isp.export import encoder_macs, layer_encoder

    config = transformers.BertConfig(vocab_size=200, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                                     intermediate_size=128, max_position_embeddings=128, hidden_act="relu", pad_token_id=0)
    config._attn_implementation = "eager"  # plain matmuls, which torch's counter counts
    model = transformers.BertForMaskedLM(config).eval()
    ids = torch.randint(1, 200, (2, 37))
    mask = torch.ones_like(ids)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        layer_encoder(model, -2)(ids, mask)
    enc = encoder_macs(config, [37, 37], layers=2)
    assert counter.get_total_flops() == 2 * enc["total"]
    assert enc["linear"] == 2 * 2 * 37 * (4 * 64 * 64 + 2 * 64 * 128) and enc["attention"] == 2 * 2 * 2 * 37 * 37 * 64
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(input_ids=ids, attention_mask=mask)
    full = encoder_macs(config, [37, 37], mlm_head=True)
    assert counter.get_total_flops() == 2 * full["total"] and full["head"] == 2 * 37 * (64 * 64 + 64 * 200)


def test_int8_bound_puts_products_at_the_int8_ceiling_and_attention_at_the_fp32_ceiling():
    B = _script()
    # 100 GMAC in weight products at 500 GOP/s = 0.4 s; 10 GMAC of attention at 100 GFLOP/s = 0.2 s
    line = B.int8_bound({"linear": 100e9, "attention": 10e9}, {"int8": 500.0, "fp32": 100.0}, baseline_s=12.0, measured_s=1.2)
    assert "(0.400 s)" in line and "(0.200 s)" in line
    assert "= 0.600 s = at most 20.0x baseline (12.00 s)" in line
    assert "measured 1.200 s = 10.0x, 50% of the bound's speed" in line
