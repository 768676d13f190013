#pragma once

// One clone of a hot loop per instruction set (AVX-512, AVX2+FMA, baseline), picked when the
// library loads. Only GCC on x86-64: clang 14 refuses clones of templates and the sanitizer
// builds do not need the speed, so there the attribute is empty and the baseline code is built.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define TESSERA_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define TESSERA_CLONES
#endif

// A hot helper inlined whatever the optimiser's budget says.
#define TESSERA_INLINE inline __attribute__((always_inline))
