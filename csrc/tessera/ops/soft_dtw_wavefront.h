// The soft-DTW recursion of soft_dtw_cpu.cpp walked by anti-diagonals, for the CUDA kernels
// (soft_dtw_cuda.cu). The cells of diagonal i + j = d depend only on diagonals d - 1 and d - 2
// (d + 1 and d + 2 backward), so a thread block computes one diagonal, synchronises, moves on.
// Each function is one thread's share of one step: cells first, first + stride, ..., so a
// diagonal longer than the block is still covered. The same code runs on the host, where
// test_soft_dtw_wavefront.cpp emulates a block thread by thread against the CPU kernel.
//
// One pair: R is [(N+2) x (M+2)] row-major, C the cost [N x M] (cell (i, j) costs C[i-1][j-1]),
// E the gradient [N x M], zero on entry. Only the region 1 <= i <= n, 1 <= j <= m is computed;
// it reads R's row 0 and column 0 and nothing beyond row n or column m, so the rest of R may hold
// anything. Cells outside the region keep E = 0, as their zero mass does on the CPU.
#pragma once
#include <math.h>
#include <stdint.h>

#ifdef __CUDACC__
#define TESSERA_HD __host__ __device__ __forceinline__
#else
#define TESSERA_HD inline
#endif

namespace tessera::ops::detail::wavefront {

TESSERA_HD float exp_of(float x) { return expf(x); }
TESSERA_HD double exp_of(double x) { return exp(x); }
TESSERA_HD float log_of(float x) { return logf(x); }
TESSERA_HD double log_of(double x) { return log(x); }

template <class T>
TESSERA_HD T min3(T a, T b, T c) {
  const T ab = a < b ? a : b;
  return ab < c ? ab : c;
}

/// Rows of diagonal d inside the region: max(1, d - m) .. min(n, d - 1).
TESSERA_HD int64_t first_row(int64_t d, int64_t m) { return d - m > 1 ? d - m : 1; }
TESSERA_HD int64_t last_row(int64_t d, int64_t n) { return d - 1 < n ? d - 1 : n; }

/// The borders the region reads: R[0][0] = 0, R[0][1..m] = R[1..n][0] = +inf.
template <class T>
TESSERA_HD void init_borders(T* R, int64_t M, int64_t n, int64_t m, int64_t first, int64_t stride) {
  const T inf = static_cast<T>(INFINITY);
  for (int64_t k = first; k <= m + n; k += stride) {
    if (k <= m)
      R[k] = k == 0 ? T(0) : inf;
    else
      R[(k - m) * (M + 2)] = inf;
  }
}

/// R on diagonal d: R[i][j] = C + softmin(diagonal, above, left), in the CPU kernel's log-space
/// form (every exponent <= 0); min when Hard (gamma == 0).
template <class T, bool Hard>
TESSERA_HD void forward_diagonal(T* R, const T* C, int64_t M, int64_t n, int64_t m, int64_t d, T gamma,
                                 int64_t first, int64_t stride) {
  const int64_t row = M + 2, last = last_row(d, n);
  const T inv_gamma = Hard ? T(0) : T(1) / gamma;
  for (int64_t i = first_row(d, m) + first; i <= last; i += stride) {
    const int64_t j = d - i;
    T* r = R + i * row + j;
    const T diag = r[-row - 1], above = r[-row], left = r[-1];
    const T lo = min3(diag, above, left), c = C[(i - 1) * M + (j - 1)];
    if constexpr (Hard) {
      *r = c + lo;
    } else {
      const T s = exp_of((lo - diag) * inv_gamma) + exp_of((lo - above) * inv_gamma) + exp_of((lo - left) * inv_gamma);
      *r = c + lo - gamma * log_of(s);
    }
  }
}

/// Pushes of the backward kept for the next two diagonals: [3 (d mod 3)][3 (to the diagonal,
/// above, left predecessor)][row i], N + 2 rows. A diagonal has one cell per row.
TESSERA_HD int64_t pushes_size(int64_t N) { return 9 * (N + 2); }

/// E on diagonal d, the CPU kernel's backward (a cell's mass E, 1 at (n, m), goes to its three
/// predecessors with the softmin's weights normalised to sum to 1; hard: all of it to the first
/// minimum in the order diagonal, above, left) with the same arithmetic, turned from push to
/// pull so that threads never write the same cell: a cell first sums what its successors on
/// d + 1 and d + 2 pushed to it, in the CPU's order (diagonal, above, left successor), then
/// stores its own pushes in W for diagonals d - 1 and d - 2.
template <class T, bool Hard>
TESSERA_HD void backward_diagonal(T* E, T* W, const T* R, int64_t N, int64_t M, int64_t n, int64_t m, int64_t d,
                                  T gamma, int64_t first, int64_t stride) {
  const int64_t row = M + 2, rows = N + 2, last = last_row(d, n);
  const T inv_gamma = Hard ? T(0) : T(1) / gamma;
  T* mine = W + (d % 3) * 3 * rows;
  const T* next = W + ((d + 1) % 3) * 3 * rows;   // diagonal d + 1: (i+1, j) and (i, j+1)
  const T* next2 = W + ((d + 2) % 3) * 3 * rows;  // diagonal d + 2: (i+1, j+1)
  for (int64_t i = first_row(d, m) + first; i <= last; i += stride) {
    const int64_t j = d - i;
    T e = 0;
    if (i < n && j < m) e += next2[i + 1];      // (i+1, j+1) pushes to its diagonal
    if (i < n) e += next[rows + i + 1];         // (i+1, j) to its above
    if (j < m) e += next[2 * rows + i];         // (i, j+1) to its left
    const T mass = i == n && j == m ? T(1) : e;
    E[(i - 1) * M + (j - 1)] = mass;
    const T* r = R + i * row + j;
    const T diag = r[-row - 1], above = r[-row], left = r[-1];
    T w_diag, w_above, w_left;
    if constexpr (Hard) {
      const bool to_diag = diag <= above && diag <= left;
      const bool to_above = !to_diag && above <= left;
      w_diag = to_diag ? mass : T(0);
      w_above = to_above ? mass : T(0);
      w_left = !to_diag && !to_above ? mass : T(0);
    } else {
      const T lo = min3(diag, above, left);
      w_diag = exp_of((lo - diag) * inv_gamma);
      w_above = exp_of((lo - above) * inv_gamma);
      w_left = exp_of((lo - left) * inv_gamma);
      const T share = mass / (w_diag + w_above + w_left);
      w_diag *= share, w_above *= share, w_left *= share;
    }
    mine[i] = w_diag;
    mine[rows + i] = w_above;
    mine[2 * rows + i] = w_left;
  }
}

}  // namespace tessera::ops::detail::wavefront
