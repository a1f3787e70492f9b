// The WaveNet sampler's step on the CPU, from the stem's output to the head's, as one XLA
// FFI call.
//
// XLA:CPU runs the pure-JAX step (models/wavenet/sampler.py) as ~180 small kernels per sample;
// this replaces those of the residual layers and the head with one call. It is the same
// arithmetic: per layer i of dilation d, with its input x and the kernel's taps j = 0 .. k - 1
// (tap j sees the layer's input k - 1 - j dilations back, tap k - 1 the current one),
//   y = offsets_i + [x(t - (k - 1) d), ..., x(t - d), x] conv_i
//   z = tanh(y_filter) * sigmoid(y_gate);  o = z out_i + out_b_i
//   x += o[:R];  skips += o[R:]
// then output = relu(relu(skips) head_w1 + head_b1) head_w2 + head_b2. The past inputs come
// from the sampler's ring buffers, one per dilation group, and each layer's input is written
// to its buffer at row t mod (k - 1) d, in place (the buffers are results aliased to the
// arguments).
//
// Arguments (float32 unless said, row-major):
//   x        [B, R]             the stem's output
//   offsets  [L, B or 1, 2H]    conv bias plus conditioning per layer
//   conv     [L, k R, 2H]       the dilated convolutions' kernels, tap by tap  (packed)
//   out      [L, H, R + S]      residual and skip kernels side by side; the last layer's
//                               residual columns are zero                   (packed)
//   out_b    [L, R + S]         their biases
//   head_w1  [S, S2] (packed), head_b1 [S2], head_w2 [S2, Q] (packed), head_b2 [Q]
// A packed kernel [..., K, N] comes as [..., ceil(N / 32), K, 32]: panels of 32 columns,
// zero-padded (kernel.pack).
//   t        [] int32           the step's position
//   u        [B]                a uniform per stream, and temperature []: with draw = 1, a
//                               code is drawn from softmax(output / temperature) (Draw)
//   bufs...  [(k - 1) d, G, B, R] per dilation group: the inputs of its G layers, ring by time
// Attributes: int64 [L] group (each layer's buffer; unused when k = 1), slot (its place among
// the group's G layers), dilation; int64 draw (1: draw codes), threads (the cores this process
// may use: with 2 or more, a step of at most kHelperStreams streams splits its layers with a
// helper thread, Helper).
// Results: the output [B, Q], the codes [B] int32 (zeros without draw), then the buffers
// (aliased to bufs).
//
// Built by setup.py (models/wavenet/kernel.py says how, and loads it).

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "kernel_util.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using namespace wavegen;  // NOLINT: the shared pieces, kernel_util.h

// A draw from softmax(logits / temperature) given a uniform u in [0, 1), as
// layers/sampling.inverse_cdf draws: the number of classes whose cumulative probability is at
// most u times the total, at most q - 1. Temperature 0 is the argmax. `e` is scratch [q].
int32_t Draw(const float* logits, int64_t q, float u, float temperature, float* e) {
  const float inv = 1.f / std::max(temperature, 1e-6f);
  float mx = -INFINITY;
  for (int64_t c = 0; c < q; ++c) mx = std::max(mx, logits[c] * inv);
  for (int64_t c = 0; c < q; ++c) e[c] = Exp(logits[c] * inv - mx);
  for (int64_t c = 1; c < q; ++c) e[c] += e[c - 1];
  const float bound = u * e[q - 1];
  int64_t k = 0;
  for (int64_t c = 0; c < q; ++c) k += e[c] <= bound;
  return static_cast<int32_t>(std::min(k, q - 1));
}

struct Dims {
  int64_t b, r, l, h2, s, s2, q, k, offset_rows;
};

// A second thread for steps of few streams, which are bound by reading the weights: the calling
// thread runs the first half of the layers and this one the rest and the head, so that each
// half of the weights stays in its own core's cache from step to step (2 MB of L2 per core
// holds half of the 2.9 MB of the peer config's, not all). Between tasks it spins for a while
// (a sampler calls again within microseconds), then sleeps.
class Helper {
 public:
  static Helper& Get() {
    static Helper* helper = new Helper();  // never destroyed: its thread outlives main
    return *helper;
  }

  // fn() on the helper, waiting for it; false (fn not run) when another call has the helper.
  template <typename F>
  bool Run(const F& fn) {
    std::unique_lock<std::mutex> owner(owner_, std::try_to_lock);
    if (!owner.owns_lock()) return false;
    task_ = [](const void* f) { (*static_cast<const F*>(f))(); };
    arg_ = &fn;
    done_.store(false, std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      posted_.store(true, std::memory_order_release);
    }
    wake_.notify_one();
    while (!done_.load(std::memory_order_acquire)) Pause();
    return true;
  }

 private:
  Helper() { std::thread([this] { Loop(); }).detach(); }

  static void Pause() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  }

  void Loop() {
    for (;;) {
      const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(500);
      while (!posted_.load(std::memory_order_acquire)) {
        for (int i = 0; i < 64; ++i) Pause();
        if (std::chrono::steady_clock::now() > until) {
          std::unique_lock<std::mutex> lock(mutex_);
          wake_.wait(lock, [this] { return posted_.load(std::memory_order_acquire); });
        }
      }
      posted_.store(false, std::memory_order_relaxed);
      task_(arg_);
      done_.store(true, std::memory_order_release);
    }
  }

  std::mutex owner_, mutex_;
  std::condition_variable wake_;
  std::atomic<bool> posted_{false}, done_{false};
  void (*task_)(const void*) = nullptr;
  const void* arg_ = nullptr;
};

constexpr int64_t kHelperStreams = 2;  // at most this many streams split their layers

// The step on raw arrays (shapes as at the top of this file). taps[i * (k - 1) + j] is layer
// i's input at the time of its past tap j and rows[i] where its current input goes, [B, R].
void Run(const Dims& d, const float* x_in, const float* offsets, const float* conv,
         const float* out, const float* out_b, const float* w1, const float* b1,
         const float* w2, const float* b2, const float* const* taps, float* const* rows,
         float* output, const float* u, float temperature, int32_t* codes, bool helper) {
  const int64_t b = d.b, r = d.r, h2 = d.h2, h = h2 / 2, s = d.s, kr = d.k * r;
  const int64_t ly = Padded(h2), lo = Padded(r + s), lh = Padded(d.s2), lq = Padded(d.q);
  thread_local std::vector<float> scratch;
  scratch.resize(b * (kr + ly + h + lo + s + lh + lq) + d.q);
  float *a = scratch.data(), *y = a + b * kr, *z = y + b * ly, *o = z + b * h,
        *skips = o + b * lo, *hid = skips + b * s, *logits = hid + b * lh;
  float* x = a + (d.k - 1) * r;  // the current input, beside the past taps in each row of a
  for (int64_t j = 0; j < b; ++j) std::memcpy(x + j * kr, x_in + j * r, sizeof(float) * r);
  std::fill(skips, skips + b * s, 0.f);
  const auto layers = [&](int64_t from, int64_t to) {
    for (int64_t i = from; i < to; ++i) {
      for (int64_t m = 0; m < d.k - 1; ++m)  // the past taps
        for (int64_t j = 0; j < b; ++j)
          std::memcpy(a + j * kr + m * r, taps[i * (d.k - 1) + m] + j * r, sizeof(float) * r);
      for (int64_t j = 0; j < b; ++j)  // the taps are read: the oldest row takes the input
        std::memcpy(rows[i] + j * r, x + j * kr, sizeof(float) * r);
      const float* off = offsets + i * d.offset_rows * h2;
      if (d.offset_rows == 1) {
        Init(y, ly, off, h2, b);
      } else {
        for (int64_t j = 0; j < b; ++j) Init(y + j * ly, ly, off + j * h2, h2, 1);
      }
      Gemm(a, kr, conv + i * Padded(h2) * kr, h2, y, ly, b, kr);
      for (int64_t j = 0; j < b; ++j) Gate(y + j * ly, z + j * h, h);
      Init(o, lo, out_b + i * (r + s), r + s, b);
      Gemm(z, h, out + i * lo * h, r + s, o, lo, b, h);
      for (int64_t j = 0; j < b; ++j) {
        float *xj = x + j * kr, *oj = o + j * lo, *sj = skips + j * s;
        for (int64_t c = 0; c < r; ++c) xj[c] += oj[c];
        for (int64_t c = 0; c < s; ++c) sj[c] += oj[r + c];
      }
    }
  };
  // The head: relu, 1x1, relu, 1x1; then the draw.
  const auto head = [&] {
    for (int64_t j = 0; j < b * s; ++j) skips[j] = std::max(skips[j], 0.f);
    Init(hid, lh, b1, d.s2, b);
    Gemm(skips, s, w1, d.s2, hid, lh, b, s);
    for (int64_t j = 0; j < b * lh; ++j) hid[j] = std::max(hid[j], 0.f);
    Init(logits, lq, b2, d.q, b);
    Gemm(hid, lh, w2, d.q, logits, lq, b, d.s2);
    for (int64_t j = 0; j < b; ++j)
      std::memcpy(output + j * d.q, logits + j * lq, sizeof(float) * d.q);
    for (int64_t j = 0; u != nullptr && j < b; ++j)
      codes[j] = Draw(output + j * d.q, d.q, u[j], temperature, logits + b * lq);
  };
  const int64_t half = d.l / 2;
  if (helper && b <= kHelperStreams && half > 0) {
    layers(0, half);
    const auto rest = [&] {
      layers(half, d.l);
      head();
    };
    if (Helper::Get().Run(rest)) return;
    layers(half, d.l);  // another call has the helper: the rest here
  } else {
    layers(0, d.l);
  }
  head();
}

ffi::Error Step(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> offsets,
                ffi::Buffer<ffi::F32> conv, ffi::Buffer<ffi::F32> out,
                ffi::Buffer<ffi::F32> out_b, ffi::Buffer<ffi::F32> w1, ffi::Buffer<ffi::F32> b1,
                ffi::Buffer<ffi::F32> w2, ffi::Buffer<ffi::F32> b2, ffi::Buffer<ffi::S32> t_buf,
                ffi::Buffer<ffi::F32> u, ffi::Buffer<ffi::F32> temperature, ffi::RemainingArgs,
                ffi::Span<const int64_t> group, ffi::Span<const int64_t> slot,
                ffi::Span<const int64_t> dilation, int64_t draw, int64_t threads,
                ffi::ResultBuffer<ffi::F32> output, ffi::ResultBuffer<ffi::S32> codes,
                ffi::RemainingRets bufs) {
  const auto xd = x.dimensions(), fd = offsets.dimensions(), cd = conv.dimensions(),
             od = out.dimensions(), w1d = w1.dimensions(), w2d = w2.dimensions();
  if (xd.size() != 2 || fd.size() != 3 || cd.size() != 4 || od.size() != 4 || w1d.size() != 3 ||
      w2d.size() != 3 || t_buf.element_count() != 1)
    return ffi::Error::InvalidArgument("wavenet step: operand ranks");
  Dims d{xd[0], xd[1], fd[0], fd[2], w1d[1], static_cast<int64_t>(b1.element_count()),
         static_cast<int64_t>(b2.element_count()), cd[2] / xd[1], fd[1]};
  const auto panels = [](int64_t n) { return Padded(n) / kPanel; };
  if ((d.offset_rows != 1 && d.offset_rows != d.b) || cd[0] != d.l ||
      cd[1] != panels(d.h2) || cd[2] != d.k * d.r || cd[3] != kPanel || d.h2 % 2 != 0 ||
      od[0] != d.l || od[1] != panels(d.r + d.s) || od[2] != d.h2 / 2 || od[3] != kPanel ||
      out_b.element_count() != static_cast<size_t>(d.l * (d.r + d.s)) ||
      w1d[0] != panels(d.s2) || w1d[2] != kPanel || w2d[0] != panels(d.q) ||
      w2d[1] != d.s2 || w2d[2] != kPanel || group.size() != static_cast<size_t>(d.l) ||
      u.element_count() != static_cast<size_t>(d.b) || temperature.element_count() != 1 ||
      codes->element_count() != static_cast<size_t>(d.b) ||
      slot.size() != group.size() || dilation.size() != group.size())
    return ffi::Error::InvalidArgument("wavenet step: inconsistent shapes");
  const int64_t t = t_buf.typed_data()[0];
  std::vector<const float*> taps(d.l * (d.k - 1));
  std::vector<float*> rows(d.l);
  std::vector<float> discard(d.k == 1 ? d.b * d.r : 0);  // k = 1: no buffers, nothing kept
  for (int64_t i = 0; i < d.l; ++i) {
    if (d.k == 1) {
      rows[i] = discard.data();
      continue;
    }
    auto buf = bufs.get<ffi::Buffer<ffi::F32>>(group[i]);
    if (group[i] < 0 || !buf.has_value())
      return ffi::Error::InvalidArgument("wavenet step: a layer without its buffer");
    const auto bd = (*buf)->dimensions();
    const int64_t ring = (d.k - 1) * dilation[i];
    if (bd.size() != 4 || bd[0] != ring || slot[i] < 0 || slot[i] >= bd[1] || bd[2] != d.b ||
        bd[3] != d.r)
      return ffi::Error::InvalidArgument("wavenet step: a buffer of the wrong shape");
    float* data = (*buf)->typed_data();
    for (int64_t j = 0; j < d.k - 1; ++j) {
      const int64_t row = ((t - (d.k - 1 - j) * dilation[i]) % ring + ring) % ring;
      taps[i * (d.k - 1) + j] = data + (row * bd[1] + slot[i]) * d.b * d.r;
    }
    rows[i] = data + ((t % ring) * bd[1] + slot[i]) * d.b * d.r;
  }
  Run(d, x.typed_data(), offsets.typed_data(), conv.typed_data(), out.typed_data(),
      out_b.typed_data(), w1.typed_data(), b1.typed_data(), w2.typed_data(), b2.typed_data(),
      taps.data(), rows.data(), output->typed_data(), draw ? u.typed_data() : nullptr,
      temperature.typed_data()[0], codes->typed_data(), threads > 1);
  if (!draw) std::fill(codes->typed_data(), codes->typed_data() + d.b, 0);
  return ffi::Error::Success();
}

}  // namespace

// The operands' layout above; kernel.py refuses a library whose number differs from its own.
extern "C" int WavegenWavenetStepAbi() { return 5; }

XLA_FFI_DEFINE_HANDLER_SYMBOL(WavegenWavenetStep, Step,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // x
                                  .Arg<ffi::Buffer<ffi::F32>>()  // offsets
                                  .Arg<ffi::Buffer<ffi::F32>>()  // conv
                                  .Arg<ffi::Buffer<ffi::F32>>()  // out
                                  .Arg<ffi::Buffer<ffi::F32>>()  // out_b
                                  .Arg<ffi::Buffer<ffi::F32>>()  // head_w1
                                  .Arg<ffi::Buffer<ffi::F32>>()  // head_b1
                                  .Arg<ffi::Buffer<ffi::F32>>()  // head_w2
                                  .Arg<ffi::Buffer<ffi::F32>>()  // head_b2
                                  .Arg<ffi::Buffer<ffi::S32>>()  // t
                                  .Arg<ffi::Buffer<ffi::F32>>()  // u
                                  .Arg<ffi::Buffer<ffi::F32>>()  // temperature
                                  .RemainingArgs()               // the buffers (aliased)
                                  .Attr<ffi::Span<const int64_t>>("group")
                                  .Attr<ffi::Span<const int64_t>>("slot")
                                  .Attr<ffi::Span<const int64_t>>("dilation")
                                  .Attr<int64_t>("draw")
                                  .Attr<int64_t>("threads")
                                  .Ret<ffi::Buffer<ffi::F32>>()  // output
                                  .Ret<ffi::Buffer<ffi::S32>>()  // codes
                                  .RemainingRets());             // the buffers, updated
