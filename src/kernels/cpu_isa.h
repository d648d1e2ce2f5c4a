#pragma once
// Which of the CPU kernels' instruction-set paths runs, chosen once per process.
//   kAvx512:   our AVX-512 kernels (*_avx512.cpp): GEMM micro-kernel, attention, GeLU, cross-entropy
//   kAvx2:     the same kernels in 8 lanes with AVX2 + FMA (*_avx2.cpp)
//   kPortable: OpenBLAS for GEMM and the portable loops (the reference the others are tested against)
// The best path the CPU supports, unless the environment asks for a lower one:
//   MT_CPU_ISA=avx512|avx2|portable  the highest path to use (a path the CPU lacks falls to the next
//                                   one below it); any other value is a user error
//   MT_CPU_AVX512=0                 the older switch: an alias of MT_CPU_ISA=portable (MT_CPU_ISA wins)
// Everything else (LayerNorm, RMSNorm, AdamW, ...) is one portable source on every path.
namespace mt {

enum class CpuIsa { kPortable, kAvx2, kAvx512 };

CpuIsa cpu_isa();
// "AVX-512", "AVX2" or "portable", for the start-up line.
const char* cpu_isa_name(CpuIsa isa);
inline const char* cpu_isa_name() { return cpu_isa_name(cpu_isa()); }

}  // namespace mt
