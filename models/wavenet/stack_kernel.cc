// The WaveNet layer stack's training forward and backward on the CPU, as two XLA FFI calls
// (kernel.py's `stack`, a custom_vjp that model.py takes for float32 models on the CPU).
//
// XLA:CPU runs the stack as per-layer matmuls with the gate, residual and skip sums between
// them as separate elementwise kernels on one thread; here each layer is one pass over the
// batch's rows in chunks that stay in cache, split over the machine's cores. The arithmetic
// is model.py's: per layer i of dilation d, on the rows (b, t) of the batch, with the layer's
// input x and its kernel's taps j = 0 .. k - 1 (tap j sees x s_j = (k - 1 - j) d steps back,
// zeros before the start),
//   y = offsets_i[b, f(t)] + sum_j x(t - s_j) conv_ij        [2H]
//   z = tanh(y_filter) * sigmoid(y_gate);  o = z out_i + out_b_i       [R + S]
//   x += o[:R];  skips += o[R:]
// f(t) = min((t + 1) / hop, F - 1) when hop > 0 (local conditioning at the frame rate), else 0.
//
// Forward arguments (float32, row-major):
//   x0       [B, T, R]        the stem's output
//   conv     [L, kR, 2H]      the dilated convolutions, tap by tap, packed (kernel.pack):
//                             [L, ceil(2H / 32), kR, 32]
//   offsets  [L, Bo, F, 2H]   conv bias plus conditioning; Bo = 1 or B
//   out      [L, H, R + S]    residual and skip kernels side by side (the last layer's residual
//                             columns zero), packed
//   out_b    [L, R + S]       their biases
// Attributes: int64 [L] dilation; int64 hop, threads.
// Results: skips [B, T, S]; xs [L, B, P + T, R]: each layer's input after P = (k - 1) max(d)
// rows of zeros; ts [L, B, T, 2H]: tanh(y_filter) and sigmoid(y_gate). xs and ts are what the
// backward reads.
//
// Backward arguments: dskips [B, T, S], xs, ts, offsets (its shape), conv_t [L, k, 2H, R]:
// each tap's kernel transposed, packed; out_t [L, R + S, H]: out transposed, packed.
// Same attributes. Results: dx0 [B, T, R], dconv [L, kR, 2H], doffsets [L, Bo, F, 2H],
// dout [L, H, R + S], dout_b [L, R + S].
//
// Threads split the rows (b, t) into contiguous ranges and meet at a barrier after each layer
// (forward) or after each layer's gate gradient (backward: the input gradient reads dy up to
// (k - 1) d rows ahead); each keeps its own weight-gradient sums, added at the end.

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "kernel_util.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using namespace wavegen;  // NOLINT: the shared pieces, kernel_util.h

constexpr int64_t kChunk = 32;  // rows per pass: a chunk's y, z and o stay in L1

// c[0:K, 0:Padded(N)] += a[rows, K]^T b[rows, Padded(N)]: a weight gradient over a chunk of
// rows; b's rows are read to Padded(N) (zero-padded), c has row stride ldc >= Padded(N).
void GemmT(const float* a, int64_t lda, int64_t k_len, const float* b, int64_t ldb, int64_t n,
           float* c, int64_t ldc, int64_t rows) {
  for (int64_t p = 0; p < Padded(n) / kPanel; ++p) {
    const float* bp = b + p * kPanel;
    float* cp = c + p * kPanel;
    int64_t m = 0;
    for (; m + kTileRows <= k_len; m += kTileRows)
      Tile<kTileRows, true>(a + m, lda, bp, ldb, cp + m * ldc, ldc, rows);
    if (kTileRows > 4 && m + 4 <= k_len)
      Tile<4, true>(a + m, lda, bp, ldb, cp + m * ldc, ldc, rows), m += 4;
    if (m + 2 <= k_len) Tile<2, true>(a + m, lda, bp, ldb, cp + m * ldc, ldc, rows), m += 2;
    if (m < k_len) Tile<1, true>(a + m, lda, bp, ldb, cp + m * ldc, ldc, rows);
  }
}

// One row's gate, keeping what its gradient needs: ts = [tanh(y_f), sigmoid(y_g)], z = their
// product. Not inlined, for the reason Gate is not (kernel_util.h).
__attribute__((noinline)) void GateKeep(const float* __restrict y, float* __restrict ts,
                                        float* __restrict z, int64_t h_len) {
  for (int64_t h = 0; h < h_len; ++h) {
    const float t = 2.f * Sigmoid(2.f * y[h]) - 1.f, s = Sigmoid(y[h_len + h]);
    ts[h] = t;
    ts[h_len + h] = s;
    z[h] = t * s;
  }
}

// The gate's gradient for one row: dy = dz [s (1 - t^2), t s (1 - s)]; z = t s again.
__attribute__((noinline)) void GateGrad(const float* __restrict dz, const float* __restrict ts,
                                        float* __restrict dy, float* __restrict z,
                                        int64_t h_len) {
  for (int64_t h = 0; h < h_len; ++h) {
    const float t = ts[h], s = ts[h_len + h], g = dz[h];
    z[h] = t * s;
    dy[h] = g * s * (1.f - t * t);
    dy[h_len + h] = g * t * s * (1.f - s);
  }
}

// A barrier for the few threads of one call; waiting threads spin, yielding.
class Barrier {
 public:
  explicit Barrier(int n) : n_(n) {}
  void Wait() {
    const int gen = gen_.load(std::memory_order_acquire);
    if (count_.fetch_add(1, std::memory_order_acq_rel) + 1 == n_) {
      count_.store(0, std::memory_order_relaxed);
      gen_.fetch_add(1, std::memory_order_release);
    } else {
      while (gen_.load(std::memory_order_acquire) == gen) std::this_thread::yield();
    }
  }

 private:
  const int n_;
  std::atomic<int> count_{0}, gen_{0};
};

// fn(thread) on `n` threads, this one among them.
template <typename F>
void Parallel(int n, const F& fn) {
  std::vector<std::thread> pool;
  for (int th = 1; th < n; ++th) pool.emplace_back(fn, th);
  fn(0);
  for (auto& t : pool) t.join();
}

struct Dims {
  int64_t b, t, r, l, h2, s, k, bo, f, hop, pad;
  int64_t Frame(int64_t t) const { return hop > 0 ? std::min((t + 1) / hop, f - 1) : 0; }
  // offsets_i[b, f(t)]
  int64_t Offset(int64_t i, int64_t b, int64_t t) const {
    return ((i * bo + (bo == 1 ? 0 : b)) * f + Frame(t)) * h2;
  }
};

// Calls fn(b, t0, rows) for the chunks of at most kChunk rows, within one sequence each, of
// thread th's share of the B T rows.
template <typename F>
void Chunks(const Dims& d, int th, int threads, const F& fn) {
  const int64_t n = d.b * d.t, n0 = n * th / threads, n1 = n * (th + 1) / threads;
  for (int64_t row = n0; row < n1;) {
    const int64_t b = row / d.t, t0 = row % d.t;
    const int64_t rows = std::min({kChunk, d.t - t0, n1 - row});
    fn(b, t0, rows);
    row += rows;
  }
}

int Threads(const Dims& d, int64_t threads) {
  return static_cast<int>(std::max<int64_t>(1, std::min(threads, d.b * d.t / (4 * kChunk))));
}

void Forward(const Dims& d, const int64_t* dilation, int64_t threads, const float* x0,
             const float* conv, const float* offsets, const float* out, const float* out_b,
             float* skips, float* xs, float* ts) {
  const int64_t r = d.r, h2 = d.h2, h = h2 / 2, s = d.s, kr = d.k * r;
  const int64_t ly = Padded(h2), lo = Padded(r + s), seq = d.pad + d.t;
  const int n = Threads(d, threads);
  Barrier barrier(n);
  Parallel(n, [&](int th) {
    std::vector<float> scratch(kChunk * (ly + h + lo));
    float *y = scratch.data(), *z = y + kChunk * ly, *o = z + kChunk * h;
    // Each layer's input rows, the zeros in front of each sequence included.
    for (int64_t i = 0; i < d.l; ++i)
      for (int64_t b = th; b < d.b; b += n)
        std::fill_n(xs + (i * d.b + b) * seq * r, d.pad * r, 0.f);
    Chunks(d, th, n, [&](int64_t b, int64_t t0, int64_t rows) {
      std::memcpy(xs + (b * seq + d.pad + t0) * r, x0 + (b * d.t + t0) * r,
                  sizeof(float) * rows * r);
    });
    barrier.Wait();
    for (int64_t i = 0; i < d.l; ++i) {
      const float* x = xs + i * d.b * seq * r;
      float* x_next = i + 1 < d.l ? xs + (i + 1) * d.b * seq * r : nullptr;
      Chunks(d, th, n, [&](int64_t b, int64_t t0, int64_t rows) {
        for (int64_t j = 0; j < rows; ++j)
          Init(y + j * ly, ly, offsets + d.Offset(i, b, t0 + j), h2, 1);
        const float* xb = x + (b * seq + d.pad + t0) * r;
        for (int64_t tap = 0; tap < d.k; ++tap)
          Gemm(xb - (d.k - 1 - tap) * dilation[i] * r, r, conv + (i * ly * kr) + tap * r * kPanel,
               h2, y, ly, rows, r, kr);
        float* tsb = ts + ((i * d.b + b) * d.t + t0) * h2;
        for (int64_t j = 0; j < rows; ++j) GateKeep(y + j * ly, tsb + j * h2, z + j * h, h);
        Init(o, lo, out_b + i * (r + s), r + s, rows);
        Gemm(z, h, out + i * lo * h, r + s, o, lo, rows, h);
        float* sk = skips + (b * d.t + t0) * s;
        for (int64_t j = 0; j < rows; ++j) {
          const float* oj = o + j * lo;
          if (x_next != nullptr) {
            const float* xj = xb + j * r;
            float* xn = x_next + (b * seq + d.pad + t0 + j) * r;
            for (int64_t c = 0; c < r; ++c) xn[c] = xj[c] + oj[c];
          }
          float* sj = sk + j * s;
          if (i == 0) {
            std::memcpy(sj, oj + r, sizeof(float) * s);
          } else {
            for (int64_t c = 0; c < s; ++c) sj[c] += oj[r + c];
          }
        }
      });
      barrier.Wait();
    }
  });
}

struct Grads {  // one thread's weight-gradient sums, rows padded as the kernels write them
  std::vector<float> conv, out, offsets, out_b;
};

// dst[i n + c] = the sum over the threads' `part` [rows, ld] of part[i ld + c], c < n.
void AddUp(const std::vector<Grads>& grads, std::vector<float> Grads::*part, int64_t rows,
           int64_t n, int64_t ld, float* dst) {
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t c = 0; c < n; ++c) {
      float v = 0.f;
      for (const Grads& g : grads) v += (g.*part)[i * ld + c];
      dst[i * n + c] = v;
    }
}

void Backward(const Dims& d, const int64_t* dilation, int64_t threads, const float* dskips,
              const float* xs, const float* ts, const float* conv_t, const float* out_t,
              float* dx, float* dconv, float* doffsets, float* dout, float* dout_b) {
  const int64_t r = d.r, h2 = d.h2, h = h2 / 2, s = d.s, kr = d.k * r, rs = r + s;
  const int64_t ly = Padded(h2), lg = Padded(rs), lz = Padded(h), lr = Padded(r);
  const int64_t seq = d.pad + d.t, n_off = d.l * d.bo * d.f * h2;
  const int n = Threads(d, threads);
  // The gate gradients dy of two layers in turn, each sequence followed by P rows of zeros
  // (the input gradient reads dy up to P rows ahead), rows padded to ly.
  const int64_t dy_size = d.b * seq * ly;
  std::unique_ptr<float[]> dy_bufs(new float[2 * dy_size]);
  std::vector<Grads> grads(n);
  Barrier barrier(n);
  Parallel(n, [&](int th) {
    Grads& g = grads[th];
    g.conv.assign(d.l * kr * ly, 0.f);
    g.out.assign(d.l * h * lg, 0.f);
    g.offsets.assign(n_off, 0.f);
    g.out_b.assign(d.l * rs, 0.f);
    std::vector<float> scratch(kChunk * (lg + lz + h + lr));
    float *gs = scratch.data(), *dz = gs + kChunk * lg, *z = dz + kChunk * lz,
          *gx = z + kChunk * h;
    for (int64_t b = th; b < d.b; b += n)
      for (int64_t p = 0; p < 2; ++p)
        std::fill_n(dy_bufs.get() + p * dy_size + (b * seq + d.t) * ly, d.pad * ly, 0.f);
    Chunks(d, th, n, [&](int64_t b, int64_t t0, int64_t rows) {
      std::fill_n(dx + (b * d.t + t0) * r, rows * r, 0.f);
    });
    for (int64_t i = d.l - 1; i >= 0; --i) {
      float* dy = dy_bufs.get() + (i % 2) * dy_size;
      const float* x = xs + i * d.b * seq * r;
      const bool last = i == d.l - 1;  // its residual output goes nowhere: dx is zero
      Chunks(d, th, n, [&](int64_t b, int64_t t0, int64_t rows) {
        // gs = [dx, dskips]: the gradient of the layer's output o.
        for (int64_t j = 0; j < rows; ++j) {
          float* gj = gs + j * lg;
          std::memcpy(gj, dx + (b * d.t + t0 + j) * r, sizeof(float) * r);
          std::memcpy(gj + r, dskips + (b * d.t + t0 + j) * s, sizeof(float) * s);
          std::fill(gj + rs, gj + lg, 0.f);
        }
        std::fill_n(dz, rows * lz, 0.f);
        const float* ot = out_t + i * lz * rs;
        if (last) {
          Gemm(gs + r, lg, ot + r * kPanel, h, dz, lz, rows, s, rs);
        } else {
          Gemm(gs, lg, ot, h, dz, lz, rows, rs);
        }
        float* dyb = dy + (b * seq + t0) * ly;
        const float* tsb = ts + ((i * d.b + b) * d.t + t0) * h2;
        for (int64_t j = 0; j < rows; ++j) {
          GateGrad(dz + j * lz, tsb + j * h2, dyb + j * ly, z + j * h, h);
          std::fill(dyb + j * ly + h2, dyb + (j + 1) * ly, 0.f);
        }
        float* ob = g.out_b.data() + i * rs;
        for (int64_t j = 0; j < rows; ++j) {
          const float* gj = gs + j * lg;
          for (int64_t c = 0; c < rs; ++c) ob[c] += gj[c];
          float* off = g.offsets.data() + d.Offset(i, b, t0 + j);
          const float* dyj = dyb + j * ly;
          for (int64_t c = 0; c < h2; ++c) off[c] += dyj[c];
        }
        GemmT(z, h, h, gs, lg, rs, g.out.data() + i * h * lg, lg, rows);
        const float* xb = x + (b * seq + d.pad + t0) * r;
        for (int64_t tap = 0; tap < d.k; ++tap)
          GemmT(xb - (d.k - 1 - tap) * dilation[i] * r, r, r, dyb, ly, h2,
                g.conv.data() + (i * kr + tap * r) * ly, ly, rows);
      });
      barrier.Wait();
      // dx += sum_j dy(t + s_j) conv_ij^T: this layer's input gradient.
      Chunks(d, th, n, [&](int64_t b, int64_t t0, int64_t rows) {
        float* dxb = dx + (b * d.t + t0) * r;
        for (int64_t j = 0; j < rows; ++j) {
          std::memcpy(gx + j * lr, dxb + j * r, sizeof(float) * r);
          std::fill(gx + j * lr + r, gx + (j + 1) * lr, 0.f);
        }
        for (int64_t tap = 0; tap < d.k; ++tap)
          Gemm(dy + (b * seq + t0 + (d.k - 1 - tap) * dilation[i]) * ly, ly,
               conv_t + ((i * d.k + tap) * lr) * h2, r, gx, lr, rows, h2);
        for (int64_t j = 0; j < rows; ++j)
          std::memcpy(dxb + j * r, gx + j * lr, sizeof(float) * r);
      });
    }
  });
  // The threads' sums, unpadded.
  AddUp(grads, &Grads::conv, d.l * kr, h2, ly, dconv);
  AddUp(grads, &Grads::out, d.l * h, rs, lg, dout);
  AddUp(grads, &Grads::offsets, 1, n_off, n_off, doffsets);
  AddUp(grads, &Grads::out_b, 1, d.l * rs, d.l * rs, dout_b);
}

// The dimensions from x [B, T, R], offsets [L, Bo, F, 2H] and out_b [L, R + S]; false when
// they do not fit the other operands.
bool Shapes(ffi::Span<const int64_t> xd, ffi::Span<const int64_t> fd,
            ffi::Span<const int64_t> bd, ffi::Span<const int64_t> dilation, int64_t k,
            int64_t hop, Dims* d) {
  if (xd.size() != 3 || fd.size() != 4 || bd.size() != 2) return false;
  int64_t most = 0;
  for (int64_t v : dilation) most = std::max(most, v);
  *d = Dims{xd[0], xd[1], xd[2], fd[0], fd[3], bd[1] - xd[2], k, fd[1], fd[2], hop,
            (k - 1) * most};
  return d->l >= 1 && bd[0] == d->l && d->s > 0 && d->h2 % 2 == 0 && k >= 1 &&
         (d->bo == 1 || d->bo == d->b) && d->f >= 1 && (hop > 0 || d->f == 1) &&
         dilation.size() == static_cast<size_t>(d->l);
}

ffi::Error StackForward(ffi::Buffer<ffi::F32> x0, ffi::Buffer<ffi::F32> conv,
                        ffi::Buffer<ffi::F32> offsets, ffi::Buffer<ffi::F32> out,
                        ffi::Buffer<ffi::F32> out_b, ffi::Span<const int64_t> dilation,
                        int64_t hop, int64_t threads, ffi::ResultBuffer<ffi::F32> skips,
                        ffi::ResultBuffer<ffi::F32> xs, ffi::ResultBuffer<ffi::F32> ts) {
  const auto cd = conv.dimensions(), od = out.dimensions();
  Dims d;
  if (cd.size() != 4 || od.size() != 4 || x0.dimensions().size() != 3 ||
      cd[2] % x0.dimensions()[2] != 0 ||
      !Shapes(x0.dimensions(), offsets.dimensions(), out_b.dimensions(), dilation,
              cd[2] / x0.dimensions()[2], hop, &d))
    return ffi::Error::InvalidArgument("wavenet stack: operand ranks or shapes");
  if (cd[0] != d.l || cd[1] != Padded(d.h2) / kPanel || cd[3] != kPanel || od[0] != d.l ||
      od[1] != Padded(d.r + d.s) / kPanel || od[2] != d.h2 / 2 || od[3] != kPanel ||
      xs->element_count() != static_cast<size_t>(d.l * d.b * (d.pad + d.t) * d.r) ||
      ts->element_count() != static_cast<size_t>(d.l * d.b * d.t * d.h2) ||
      skips->element_count() != static_cast<size_t>(d.b * d.t * d.s))
    return ffi::Error::InvalidArgument("wavenet stack: inconsistent shapes");
  Forward(d, dilation.begin(), threads, x0.typed_data(), conv.typed_data(),
          offsets.typed_data(), out.typed_data(), out_b.typed_data(), skips->typed_data(),
          xs->typed_data(), ts->typed_data());
  return ffi::Error::Success();
}

ffi::Error StackBackward(ffi::Buffer<ffi::F32> dskips, ffi::Buffer<ffi::F32> xs,
                         ffi::Buffer<ffi::F32> ts, ffi::Buffer<ffi::F32> offsets,
                         ffi::Buffer<ffi::F32> conv_t, ffi::Buffer<ffi::F32> out_t,
                         ffi::Span<const int64_t> dilation, int64_t hop, int64_t threads,
                         ffi::ResultBuffer<ffi::F32> dx, ffi::ResultBuffer<ffi::F32> dconv,
                         ffi::ResultBuffer<ffi::F32> doffsets, ffi::ResultBuffer<ffi::F32> dout,
                         ffi::ResultBuffer<ffi::F32> dout_b) {
  const auto ct = conv_t.dimensions(), ot = out_t.dimensions(), sd = dskips.dimensions(),
             xd = xs.dimensions();
  Dims d;
  if (ct.size() != 5 || ot.size() != 4 || sd.size() != 3 || xd.size() != 4 ||
      dout_b->dimensions().size() != 2 ||
      !Shapes(dx->dimensions(), offsets.dimensions(), dout_b->dimensions(), dilation, ct[1],
              hop, &d))
    return ffi::Error::InvalidArgument("wavenet stack backward: operand ranks or shapes");
  if (sd[0] != d.b || sd[1] != d.t || sd[2] != d.s || xd[0] != d.l || xd[1] != d.b ||
      xd[2] != d.pad + d.t || xd[3] != d.r ||
      ts.element_count() != static_cast<size_t>(d.l * d.b * d.t * d.h2) || ct[0] != d.l ||
      ct[2] != Padded(d.r) / kPanel || ct[3] != d.h2 || ct[4] != kPanel || ot[0] != d.l ||
      ot[1] != Padded(d.h2 / 2) / kPanel || ot[2] != d.r + d.s || ot[3] != kPanel ||
      dconv->element_count() != static_cast<size_t>(d.l * d.k * d.r * d.h2) ||
      dout->element_count() != static_cast<size_t>(d.l * d.h2 / 2 * (d.r + d.s)))
    return ffi::Error::InvalidArgument("wavenet stack backward: inconsistent shapes");
  Backward(d, dilation.begin(), threads, dskips.typed_data(), xs.typed_data(),
           ts.typed_data(), conv_t.typed_data(), out_t.typed_data(), dx->typed_data(),
           dconv->typed_data(), doffsets->typed_data(), dout->typed_data(),
           dout_b->typed_data());
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(WavegenWavenetStackForward, StackForward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // x0
                                  .Arg<ffi::Buffer<ffi::F32>>()  // conv
                                  .Arg<ffi::Buffer<ffi::F32>>()  // offsets
                                  .Arg<ffi::Buffer<ffi::F32>>()  // out
                                  .Arg<ffi::Buffer<ffi::F32>>()  // out_b
                                  .Attr<ffi::Span<const int64_t>>("dilation")
                                  .Attr<int64_t>("hop")
                                  .Attr<int64_t>("threads")
                                  .Ret<ffi::Buffer<ffi::F32>>()  // skips
                                  .Ret<ffi::Buffer<ffi::F32>>()  // xs
                                  .Ret<ffi::Buffer<ffi::F32>>());  // ts

XLA_FFI_DEFINE_HANDLER_SYMBOL(WavegenWavenetStackBackward, StackBackward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // dskips
                                  .Arg<ffi::Buffer<ffi::F32>>()  // xs
                                  .Arg<ffi::Buffer<ffi::F32>>()  // ts
                                  .Arg<ffi::Buffer<ffi::F32>>()  // offsets
                                  .Arg<ffi::Buffer<ffi::F32>>()  // conv_t
                                  .Arg<ffi::Buffer<ffi::F32>>()  // out_t
                                  .Attr<ffi::Span<const int64_t>>("dilation")
                                  .Attr<int64_t>("hop")
                                  .Attr<int64_t>("threads")
                                  .Ret<ffi::Buffer<ffi::F32>>()  // dx0
                                  .Ret<ffi::Buffer<ffi::F32>>()  // dconv
                                  .Ret<ffi::Buffer<ffi::F32>>()  // doffsets
                                  .Ret<ffi::Buffer<ffi::F32>>()  // dout
                                  .Ret<ffi::Buffer<ffi::F32>>()  // dout_b
                              );
