// soft-DTW on the CPU (Cuturi & Blondel 2017, algorithms 1 and 2). Pairs are independent and each
// pair's recursion is sequential, so the batch is the vector axis: up to kLanes pairs (lanes_for)
// advance through the table together, one cell per step, with exp/log that vectorise
// (fast_math.h). The table is stored [chunk, i, j, lane] with a border row and column, R[0][0] = 0 and R[0][j] = R[i][0] = +inf
// (no path starts elsewhere), so no lane loop branches. (The table is (N + 2) x (M + 2): the last
// row and column are unused padding that keeps the CPU and CUDA layouts one shape.)
// Shorter pairs (per-pair lengths) run the full table; their cells past (n_b, m_b) are never read
// by their own value and get zero expected alignment, because E starts at 1 only at (n_b, m_b).
#include "tessera/ops/fast_math.h"
#include "tessera/ops/soft_dtw_kernels.h"
#include "tessera/ops/target_clones.h"

#include <ATen/Parallel.h>
#include <ATen/ops/zeros.h>

#include <limits>

namespace tessera::ops::detail {
namespace {

constexpr int64_t kLanes = 16;  // pairs per chunk: two AVX2 (one AVX-512) float vectors

/// Pairs per chunk for a batch: the narrowest of 1, 4, 8 and 16 lanes that holds a small batch, since
/// every lane costs a full table (16 lanes for one 2048 x 2048 pair would add ~550 MiB in float32).
int64_t lanes_for(int64_t batch) { return batch == 1 ? 1 : batch <= 4 ? 4 : batch <= 8 ? 8 : kLanes; }

template <class T>
TESSERA_INLINE T min3(T a, T b, T c) {
  const T ab = a < b ? a : b;
  return ab < c ? ab : c;
}

/// R for one chunk (C and R: [(N+2) x (M+2) x L]; C zero on the border).
template <class T, bool Hard, int64_t L>
TESSERA_INLINE void forward_chunk(T* R, const T* C, int64_t N, int64_t M, T gamma) {
  const int64_t row = (M + 2) * L;
  const T inf = std::numeric_limits<T>::infinity();
  for (int64_t j = 0; j < M + 2; ++j)
    for (int64_t l = 0; l < L; ++l) {
      R[j * L + l] = j == 0 ? T(0) : inf;
      R[(N + 1) * row + j * L + l] = inf;
    }
  for (int64_t i = 1; i <= N; ++i)
    for (int64_t l = 0; l < L; ++l) {
      R[i * row + l] = inf;
      R[i * row + (M + 1) * L + l] = inf;
    }
  const T inv_gamma = Hard ? T(0) : T(1) / gamma;
  for (int64_t i = 1; i <= N; ++i) {
    for (int64_t j = 1; j <= M; ++j) {
      T* __restrict__ r = R + i * row + j * L;
      const T* __restrict__ up = r - row;
      const T* __restrict__ c = C + i * row + j * L;
#pragma GCC ivdep
      for (int64_t l = 0; l < L; ++l) {
        const T diag = up[l - L], above = up[l], left = r[l - L];
        const T lo = min3(diag, above, left);
        if constexpr (Hard) {
          r[l] = c[l] + lo;
        } else {  // softmin = lo - gamma log sum e^{-(v - lo) / gamma}: every exponent <= 0
          const T s = fast_exp((lo - diag) * inv_gamma) + fast_exp((lo - above) * inv_gamma) +
                      fast_exp((lo - left) * inv_gamma);
          r[l] = c[l] + lo - gamma * fast_log(s);
        }
      }
    }
  }
}

/// E = d R[n, m] / d C for one chunk (E zero-initialised, same layout as R). n, m: per-lane lengths.
/// Cells are visited in reverse order and each pushes its E to its three predecessors with the
/// softmin's weights, recomputed from the predecessors alone and normalised to sum to 1: the
/// alignment mass is conserved exactly, where the textbook pull form's weights
/// e^{(R[s] - C[s] - R[p]) / gamma} drift by float32's rounding of R (~1e-4 at N = 512).
template <class T, bool Hard, int64_t L>
TESSERA_INLINE void backward_chunk(T* E, const T* R, int64_t N, int64_t M, T gamma, const T* n, const T* m) {
  const int64_t row = (M + 2) * L;
  const T inv_gamma = Hard ? T(0) : T(1) / gamma;
  for (int64_t i = N; i >= 1; --i) {
    for (int64_t j = M; j >= 1; --j) {
      const int64_t at = i * row + j * L;
      T* __restrict__ e = E + at;
      const T* __restrict__ r = R + at;
      const T fi = T(i), fj = T(j);
#pragma GCC ivdep
      for (int64_t l = 0; l < L; ++l) {
        // E starts at 1 on the pair's last cell; cells past it only ever receive zeros.
        const T mass = fi == n[l] && fj == m[l] ? T(1) : e[l];
        e[l] = mass;
        const T diag = r[l - row - L], above = r[l - row], left = r[l - L];
        T w_diag, w_above, w_left;
        if constexpr (Hard) {  // the first minimum in the order diagonal, above, left
          const bool d = diag <= above && diag <= left;
          const bool a = !d && above <= left;
          w_diag = d ? T(1) : T(0);
          w_above = a ? T(1) : T(0);
          w_left = !d && !a ? T(1) : T(0);
        } else {
          const T lo = min3(diag, above, left);
          w_diag = fast_exp((lo - diag) * inv_gamma);
          w_above = fast_exp((lo - above) * inv_gamma);
          w_left = fast_exp((lo - left) * inv_gamma);
          const T share = mass / (w_diag + w_above + w_left);
          w_diag *= share, w_above *= share, w_left *= share;
        }
        if constexpr (Hard) w_diag *= mass, w_above *= mass, w_left *= mass;
        e[l - row - L] += w_diag;
        e[l - row] += w_above;
        e[l - L] += w_left;
      }
    }
  }
}

template <class T, int64_t L>
TESSERA_INLINE void forward_lanes(T* R, const T* C, int64_t N, int64_t M, T gamma) {
  gamma == 0 ? forward_chunk<T, true, L>(R, C, N, M, gamma) : forward_chunk<T, false, L>(R, C, N, M, gamma);
}
template <class T, int64_t L>
TESSERA_INLINE void backward_lanes(T* E, const T* R, int64_t N, int64_t M, T gamma, const T* n, const T* m) {
  gamma == 0 ? backward_chunk<T, true, L>(E, R, N, M, gamma, n, m) : backward_chunk<T, false, L>(E, R, N, M, gamma, n, m);
}

// The lane count as a compile-time constant (the widths lanes_for picks). A switch, not a lambda: a
// lambda's body would be compiled outside the target clones and lose their vector width.
#define TESSERA_WITH_LANES(lanes, CALL) \
  switch (lanes) {                      \
    case 1: { constexpr int64_t L = 1; CALL; } break; \
    case 4: { constexpr int64_t L = 4; CALL; } break; \
    case 8: { constexpr int64_t L = 8; CALL; } break; \
    default: { constexpr int64_t L = kLanes; CALL; } \
  }

TESSERA_CLONES void forward_f32(float* R, const float* C, int64_t N, int64_t M, float gamma, int64_t lanes) {
  TESSERA_WITH_LANES(lanes, (forward_lanes<float, L>(R, C, N, M, gamma)))
}
TESSERA_CLONES void backward_f32(float* E, const float* R, int64_t N, int64_t M, float gamma, const float* n,
                                 const float* m, int64_t lanes) {
  TESSERA_WITH_LANES(lanes, (backward_lanes<float, L>(E, R, N, M, gamma, n, m)))
}
void forward_f64(double* R, const double* C, int64_t N, int64_t M, double gamma, int64_t lanes) {
  TESSERA_WITH_LANES(lanes, (forward_lanes<double, L>(R, C, N, M, gamma)))
}
void backward_f64(double* E, const double* R, int64_t N, int64_t M, double gamma, const double* n, const double* m,
                  int64_t lanes) {
  TESSERA_WITH_LANES(lanes, (backward_lanes<double, L>(E, R, N, M, gamma, n, m)))
}
#undef TESSERA_WITH_LANES

inline void run_forward(float* R, const float* C, int64_t N, int64_t M, double g, int64_t lanes) {
  forward_f32(R, C, N, M, float(g), lanes);
}
inline void run_forward(double* R, const double* C, int64_t N, int64_t M, double g, int64_t lanes) {
  forward_f64(R, C, N, M, g, lanes);
}
inline void run_backward(float* E, const float* R, int64_t N, int64_t M, double g, const float* n, const float* m,
                         int64_t lanes) {
  backward_f32(E, R, N, M, float(g), n, m, lanes);
}
inline void run_backward(double* E, const double* R, int64_t N, int64_t M, double g, const double* n,
                         const double* m, int64_t lanes) {
  backward_f64(E, R, N, M, g, n, m, lanes);
}

/// [B] int64 -> [chunks, lanes] in the cost's dtype; padded lanes end at (1, 1).
at::Tensor lane_lengths(const at::Tensor& len, const at::TensorOptions& opts, int64_t chunks, int64_t lanes) {
  at::Tensor out = at::ones({chunks * lanes}, opts);
  out.narrow(0, 0, len.size(0)).copy_(len);
  return out.view({chunks, lanes});
}

}  // namespace

at::Tensor soft_dtw_forward_cpu(const at::Tensor& cost, double gamma, const at::Tensor& n, const at::Tensor& m,
                                SoftDtwTables& keep) {
  const int64_t B = cost.size(0), N = cost.size(1), M = cost.size(2), L = lanes_for(B), chunks = (B + L - 1) / L;
  at::Tensor lanes = at::zeros({chunks * L, N + 2, M + 2}, cost.options());
  lanes.narrow(0, 0, B).narrow(1, 1, N).narrow(2, 1, M).copy_(cost);
  lanes = lanes.view({chunks, L, N + 2, M + 2}).permute({0, 2, 3, 1}).contiguous();
  keep.r = at::empty_like(lanes);  // the backward needs R alone (its last size is the lane count)
  at::Tensor out = at::empty({B}, cost.options());
  const auto nn = n.accessor<int64_t, 1>(), mm = m.accessor<int64_t, 1>();
  AT_DISPATCH_FLOATING_TYPES(cost.scalar_type(), "soft_dtw", [&] {
    scalar_t* R = keep.r.data_ptr<scalar_t>();
    const scalar_t* C = lanes.data_ptr<scalar_t>();
    const int64_t table = (N + 2) * (M + 2) * L;
    at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t k = begin; k < end; ++k) run_forward(R + k * table, C + k * table, N, M, gamma, L);
    });
    scalar_t* o = out.data_ptr<scalar_t>();
    for (int64_t b = 0; b < B; ++b) o[b] = R[(b / L) * table + (nn[b] * (M + 2) + mm[b]) * L + b % L];
  });
  return out;
}

at::Tensor soft_dtw_backward_cpu(const SoftDtwTables& keep, double gamma, const at::Tensor& n, const at::Tensor& m,
                                 const at::Tensor& grad_out, int64_t N, int64_t M) {
  const int64_t B = grad_out.size(0), chunks = keep.r.size(0), L = keep.r.size(3);
  at::Tensor E = at::zeros_like(keep.r);
  const at::Tensor nl = lane_lengths(n, keep.r.options(), chunks, L), ml = lane_lengths(m, keep.r.options(), chunks, L);
  AT_DISPATCH_FLOATING_TYPES(keep.r.scalar_type(), "soft_dtw_backward", [&] {
    scalar_t* e = E.data_ptr<scalar_t>();
    const scalar_t* R = keep.r.data_ptr<scalar_t>();
    const scalar_t* np = nl.data_ptr<scalar_t>();
    const scalar_t* mp = ml.data_ptr<scalar_t>();
    const int64_t table = (N + 2) * (M + 2) * L;
    at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t k = begin; k < end; ++k)
        run_backward(e + k * table, R + k * table, N, M, gamma, np + k * L, mp + k * L, L);
    });
  });
  at::Tensor grad = E.permute({0, 3, 1, 2}).reshape({chunks * L, N + 2, M + 2});
  grad = grad.narrow(0, 0, B).narrow(1, 1, N).narrow(2, 1, M);
  return grad * grad_out.to(grad.scalar_type()).view({B, 1, 1});
}

}  // namespace tessera::ops::detail
