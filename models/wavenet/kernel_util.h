// The WaveNet CPU kernels' shared pieces: vectors, register-tiled matmuls over packed weights,
// exp and the gate. Included by step_kernel.cc (the sampler's step) and stack_kernel.cc (the
// training forward and backward of the layer stack).

#ifndef WAVEGEN_MODELS_WAVENET_KERNEL_UTIL_H_
#define WAVEGEN_MODELS_WAVENET_KERNEL_UTIL_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace wavegen {

#if defined(__AVX512F__)
constexpr int kLanes = 16;
#else
constexpr int kLanes = 8;  // AVX2, or two NEON/SSE registers
#endif
typedef float Vec __attribute__((vector_size(kLanes * sizeof(float))));

inline Vec Load(const float* p) {
  Vec v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

inline void Store(float* p, Vec v) { std::memcpy(p, &v, sizeof(v)); }

// Weights come packed in panels of kPanel columns, [ceil(N / kPanel), K, kPanel], zero-padded
// (kernel.py packs them once per model), so that a tile streams its panel from memory in
// order; results are kept in rows padded to whole panels (Padded).
constexpr int64_t kPanel = 32;
constexpr int kPanelVecs = kPanel / kLanes;
constexpr int kTileRows = kLanes == 16 ? 8 : 4;  // 16 accumulator registers either way

inline int64_t Padded(int64_t n) { return (n + kPanel - 1) / kPanel * kPanel; }

// c[0:M, 0:kPanel] += sum over k < k_len of a(m, k) b[k ldb + 0:kPanel], the accumulators in
// registers: a(m, k) = a[m lda + k] (a product with a packed panel, ldb = kPanel), or with
// Transposed a[k lda + m] (a weight gradient a^T b over k_len rows).
template <int M, bool Transposed = false>
inline void Tile(const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc,
                 int64_t k_len) {
  Vec acc[M][kPanelVecs];
#pragma GCC unroll 8
  for (int m = 0; m < M; ++m)
#pragma GCC unroll 4
    for (int v = 0; v < kPanelVecs; ++v) acc[m][v] = Load(c + m * ldc + v * kLanes);
  for (int64_t k = 0; k < k_len; ++k) {
    Vec bv[kPanelVecs];
#pragma GCC unroll 4
    for (int v = 0; v < kPanelVecs; ++v) bv[v] = Load(b + k * ldb + v * kLanes);
#pragma GCC unroll 8
    for (int m = 0; m < M; ++m) {
      const float s = Transposed ? a[k * lda + m] : a[m * lda + k];
#pragma GCC unroll 4
      for (int v = 0; v < kPanelVecs; ++v) acc[m][v] += s * bv[v];
    }
  }
#pragma GCC unroll 8
  for (int m = 0; m < M; ++m)
#pragma GCC unroll 4
    for (int v = 0; v < kPanelVecs; ++v) Store(c + m * ldc + v * kLanes, acc[m][v]);
}

// c[rows, 0:Padded(N)] += a[rows, K] w, w packed (N columns); a and c with row strides lda
// and ldc >= Padded(N). k_total > k_len: w is rows [r0, r0 + k_len) of a packed kernel of
// k_total rows (w points at row r0 of its first panel).
inline void Gemm(const float* a, int64_t lda, const float* w, int64_t n, float* c, int64_t ldc,
                 int64_t rows, int64_t k_len, int64_t k_total = 0) {
  for (int64_t p = 0; p < Padded(n) / kPanel; ++p) {
    const float* panel = w + p * (k_total ? k_total : k_len) * kPanel;
    float* cp = c + p * kPanel;
    int64_t i = 0;
    for (; i + kTileRows <= rows; i += kTileRows)
      Tile<kTileRows>(a + i * lda, lda, panel, kPanel, cp + i * ldc, ldc, k_len);
    if (kTileRows > 4 && i + 4 <= rows)
      Tile<4>(a + i * lda, lda, panel, kPanel, cp + i * ldc, ldc, k_len), i += 4;
    if (i + 2 <= rows) Tile<2>(a + i * lda, lda, panel, kPanel, cp + i * ldc, ldc, k_len), i += 2;
    if (i < rows) Tile<1>(a + i * lda, lda, panel, kPanel, cp + i * ldc, ldc, k_len);
  }
}

// Row j of c [rows, ldc] = bias [n], then zeros to ldc.
inline void Init(float* c, int64_t ldc, const float* bias, int64_t n, int64_t rows) {
  for (int64_t j = 0; j < rows; ++j) {
    std::memcpy(c + j * ldc, bias, sizeof(float) * n);
    std::fill(c + j * ldc + n, c + (j + 1) * ldc, 0.f);
  }
}

// exp(x) to ~2 ulp for x in [-87, 88], 0 below, exp(88) above, written so that the compiler
// vectorises it: x = k ln2 + r, |r| <= ln2 / 2, exp(r) by its Taylor polynomial to r^7, times
// 2^k. k is rounded by adding and subtracting 1.5 * 2^23 (round to nearest, the FPU's default).
inline float Exp(float x0) {
  const float x = x0 < -87.f ? -87.f : (x0 > 88.f ? 88.f : x0);
  const float k = (x * 1.44269504f + 12582912.f) - 12582912.f;
  const float r = (x - k * 0.693145752f) - k * 1.42860677e-6f;  // ln 2 in two parts
  float p = 1.f / 5040.f;
  p = p * r + 1.f / 720.f;
  p = p * r + 1.f / 120.f;
  p = p * r + 1.f / 24.f;
  p = p * r + 1.f / 6.f;
  p = p * r + 0.5f;
  p = p * r + 1.f;
  p = p * r + 1.f;
  return x0 < -87.f ? 0.f : p * __builtin_bit_cast(float, (static_cast<int32_t>(k) + 127) << 23);
}

inline float Sigmoid(float x) { return 1.f / (1.f + Exp(-x)); }

// z[h] = tanh(y[h]) * sigmoid(y[H + h]) for one row; tanh(x) = 2 sigmoid(2x) - 1.
// Not inlined: inlined into its caller, GCC 12 leaves its loop scalar (16x slower).
__attribute__((noinline)) inline void Gate(const float* __restrict y, float* __restrict z,
                                           int64_t h_len) {
  for (int64_t h = 0; h < h_len; ++h)
    z[h] = (2.f * Sigmoid(2.f * y[h]) - 1.f) * Sigmoid(y[h_len + h]);
}

}  // namespace wavegen

#endif  // WAVEGEN_MODELS_WAVENET_KERNEL_UTIL_H_
