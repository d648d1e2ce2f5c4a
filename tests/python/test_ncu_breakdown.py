"""scripts/ncu_breakdown.py reads both of Nsight Compute's CSV pages and sums kernel time by
kernel and category, per iteration."""
import importlib.util
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("ncu_breakdown", REPO / "scripts" / "ncu_breakdown.py")
ncu = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ncu)

DETAILS = '''==PROF== Connected to process 123
"ID","Process ID","Process Name","Kernel Name","Section Name","Metric Name","Metric Unit","Metric Value"
"0","123","megatron","nvjet_hsh_128x256_64x4_2x1_v_bz_coopA_TNT","Command line profiler metrics","gpu__time_duration.sum","usecond","1,250.50"
"1","123","megatron","layernorm_forward","Command line profiler metrics","gpu__time_duration.sum","nsecond","40,000"
"2","123","megatron","cudnn_generated_fort_native_sdpa_sm90","Command line profiler metrics","gpu__time_duration.sum","msecond","2.5"
"3","123","megatron","layernorm_forward","Command line profiler metrics","gpu__time_duration.sum","nsecond","60,000"
"4","123","megatron","ncclDevKernel_ReduceScatter_Sum_bf16","Command line profiler metrics","gpu__time_duration.sum","usecond","7"
"4","123","megatron","ncclDevKernel_ReduceScatter_Sum_bf16","Command line profiler metrics","dram__bytes.sum","byte","7"
==PROF== Disconnected from process 123
'''

RAW = '''"ID","Process ID","Kernel Name","gpu__time_duration.sum"
"","","","nsecond"
"0","9","sm90_xmma_gemm_bf16bf16_bf16f32","2,000"
"1","9","triton_per_fused_add_native_layer_norm_0","500"
'''


def test_details_page_sums_by_kernel_and_converts_units():
    got = list(ncu.kernel_times(DETAILS.splitlines()))
    assert got == [("nvjet_hsh_128x256_64x4_2x1_v_bz_coopA_TNT", 1250500.0), ("layernorm_forward", 40000.0),
                   ("cudnn_generated_fort_native_sdpa_sm90", 2.5e6), ("layernorm_forward", 60000.0),
                   ("ncclDevKernel_ReduceScatter_Sum_bf16", 7000.0)]


def test_raw_page_reads_the_unit_row():
    assert list(ncu.kernel_times(RAW.splitlines())) == [("sm90_xmma_gemm_bf16bf16_bf16f32", 2000.0),
                                                      ("triton_per_fused_add_native_layer_norm_0", 500.0)]


def test_categories():
    assert ncu.category("nvjet_hsh_128x256_64x4_2x1_v_bz_coopA_TNT") == "gemm"
    assert ncu.category("sm90_xmma_gemm_bf16bf16_bf16f32") == "gemm"
    assert ncu.category("cudnn_generated_fort_native_sdpa_sm90") == "attention"
    assert ncu.category("ncclDevKernel_ReduceScatter_Sum_bf16") == "nccl"
    assert ncu.category("layernorm_forward") == "other"


def test_table_per_iteration(tmp_path, capsys):
    f = tmp_path / "ncu.csv"
    f.write_text(DETAILS)
    ncu.main([str(f), "--iters", "2"])
    out = capsys.readouterr().out
    # 3.8575 ms of kernels over 2 iterations; the two layernorm launches are one kernel.
    assert "2.5 kernel launches per iteration, 1.93 ms of GPU time per iteration" in out
    assert "| gemm | 0.63 | 32.4% |" in out
    assert "| `layernorm_forward` | other | 1 | 0.050 | 2.6% | 50.0 |" in out
