// mmmila's compiled CPU kernels: the depthwise 3x3 convolution on tokens and what follows it
// (torch.ops.mmmila.dwconv_tokens, mmmila/ops/dwconv.py has the maths), forward and backward.
//
// Tokens (B, N = H W, C) are a channels-last map: the C channels of a pixel are contiguous. Every
// pass below walks a map row by row and a block of channels at a time (one SIMD vector of lanes),
// keeping the nine taps of the block in registers; the epilogue (activation, skip, residual, gate)
// runs on the same registers, so each pass reads and writes every tensor once. oneDNN's depthwise
// convolution, which the PyTorch implementation calls, costs 100-200 us per call on maps of a few
// hundred KiB whatever their size; these passes cost what their bytes and FLOPs cost.
//
// The vectors are GCC vector extensions (64 bytes: 16 floats or 8 doubles), compiled three times
// (target_clones: AVX-512, AVX2 with FMA, the x86-64 baseline) and chosen when the library loads.
// Channels past the last full vector run the same code on scalars. float32 and float64 only: the
// Python side sends other dtypes to the PyTorch implementation.
//
// Ops (namespace mmmila_cpu, CPU tensors, contiguous, inputs checked by the caller):
//   dwconv_tokens(x, weight, bias, H, W, residual?, gate?, skip, silu) -> out
//   dwconv_tokens_backward(grad, x, weight, bias, H, W, residual?, gate?, skip, silu)
//       -> (dx, dweight (C,1,3,3), dbias, dresidual (empty unless residual and gate),
//           dgate (empty unless gate))
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <cstring>
#include <tuple>

namespace mmmila_cpu {
namespace {

#define MMMILA_INLINE inline __attribute__((always_inline))
#define MMMILA_INLINE_LAMBDA __attribute__((always_inline))
#define MMMILA_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))

template <typename T> struct Lanes;
template <> struct Lanes<float> {
  typedef float V __attribute__((vector_size(64)));
  typedef int I __attribute__((vector_size(64)));
  static constexpr int n = 16;
};
template <> struct Lanes<double> {
  typedef double V __attribute__((vector_size(64)));
  static constexpr int n = 8;
};

// A "lane type" is a vector (Lanes<T>::V) or the scalar T itself (the channels past the last vector).
template <typename V, typename T> MMMILA_INLINE V load(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}
template <typename V, typename T> MMMILA_INLINE void store(T* p, V v) { std::memcpy(p, &v, sizeof(V)); }
template <typename V> struct Elem { typedef V type; };
template <> struct Elem<Lanes<float>::V> { typedef float type; };
template <> struct Elem<Lanes<double>::V> { typedef double type; };
template <typename V> MMMILA_INLINE V splat(double s) { return V{} + static_cast<typename Elem<V>::type>(s); }

// exp on float vectors: 2^n e^r with |r| <= ln2 / 2, a degree-6 Taylor polynomial for e^r (relative
// error below 3e-8, under float32's half ulp), the argument clamped to float's range.
MMMILA_INLINE Lanes<float>::V exp_lanes(Lanes<float>::V x) {
  typedef Lanes<float>::V V;
  typedef Lanes<float>::I I;
  const V hi = splat<V>(88.0), lo = splat<V>(-87.0);
  x = x > hi ? hi : x;
  x = x < lo ? lo : x;
  const V shift = splat<V>(12582912.0);   // 1.5 * 2^23: adding it rounds to an integer
  const V n = (x * splat<V>(1.4426950408889634) + shift) - shift;
  const V r = (x - n * splat<V>(0.693145751953125)) - n * splat<V>(1.428606765330187e-06);
  V p = splat<V>(1.0 / 720);
  p = p * r + splat<V>(1.0 / 120);
  p = p * r + splat<V>(1.0 / 24);
  p = p * r + splat<V>(1.0 / 6);
  p = p * r + splat<V>(0.5);
  p = p * r + splat<V>(1.0);
  p = p * r + splat<V>(1.0);
  const I bits = (__builtin_convertvector(n, I) + 127) << 23;
  V scale;
  std::memcpy(&scale, &bits, sizeof(V));
  return p * scale;
}
// exp on double vectors and on scalars: the C library's, lane by lane (float64 is the tests' dtype).
MMMILA_INLINE Lanes<double>::V exp_lanes(Lanes<double>::V x) {
  for (int l = 0; l < Lanes<double>::n; ++l) x[l] = std::exp(x[l]);
  return x;
}
MMMILA_INLINE float exp_lanes(float x) { return std::exp(x); }
MMMILA_INLINE double exp_lanes(double x) { return std::exp(x); }

template <typename V> MMMILA_INLINE V sigmoid(V v) { return splat<V>(1.0) / (splat<V>(1.0) + exp_lanes(-v)); }
// d silu(v) / dv = s (1 + v (1 - s)), s = sigmoid(v)
template <typename V> MMMILA_INLINE V silu_grad(V v, V s) { return s * (splat<V>(1.0) + v * (splat<V>(1.0) - s)); }

struct Map {
  int64_t B, H, W, C;
};

// The stencil at output row (b, h), channels [c, c + lanes), every column: calls emit(w, offset, p)
// with p = bias + sum of the nine taps of src (rows outside the map are zero padding). k holds the
// nine taps as (9, C), tap q = 3 i + j reading row h + i - 1 and column w + j - 1.
template <typename V, typename T, typename Emit>
MMMILA_INLINE void stencil_row(const Map& m, const T* src, const T* k, const T* bias, int64_t b, int64_t h,
                               int64_t c, Emit emit) {
  const T* rows[3];
  for (int i = 0; i < 3; ++i) {
    const int64_t hh = h + i - 1;
    rows[i] = (hh < 0 || hh >= m.H) ? nullptr : src + ((b * m.H + hh) * m.W) * m.C + c;
  }
  V taps[9];
  for (int q = 0; q < 9; ++q) taps[q] = load<V>(k + q * m.C + c);
  const V b0 = bias ? load<V>(bias + c) : V{};
  const int64_t base = ((b * m.H + h) * m.W) * m.C + c;
  for (int64_t w = 0; w < m.W; ++w) {
    V acc = b0;
    for (int i = 0; i < 3; ++i) {
      const T* r = rows[i];
      if (!r) continue;
      if (w > 0) acc += load<V>(r + (w - 1) * m.C) * taps[3 * i];
      acc += load<V>(r + w * m.C) * taps[3 * i + 1];
      if (w + 1 < m.W) acc += load<V>(r + (w + 1) * m.C) * taps[3 * i + 2];
    }
    emit(w, base + w * m.C, acc);
  }
}

// The rows [begin, end) of the map (row r = b H + h): body.run<V>(b, h, c) for every block of channels,
// vectors first, then the channels past the last vector one by one.
template <typename T, typename Body>
MMMILA_INLINE void for_rows(const Body& body, int64_t begin, int64_t end) {
  constexpr int L = Lanes<T>::n;
  const Map& m = body.m;
  const int64_t full = m.C / L;
  for (int64_t r = begin; r < end; ++r) {
    const int64_t b = r / m.H, h = r % m.H;
    for (int64_t j = 0; j < full; ++j) body.template run<typename Lanes<T>::V>(b, h, j * L);
    for (int64_t c = full * L; c < m.C; ++c) body.template run<T>(b, h, c);
  }
}

// ---- forward ---------------------------------------------------------------------------------------
template <typename T>
struct Forward {
  Map m;
  const T *x, *k, *bias, *residual, *gate;
  T* out;
  bool skip, silu;

  template <typename V> MMMILA_INLINE void run(int64_t b, int64_t h, int64_t c) const {
    stencil_row<V>(m, x, k, bias, b, h, c, [&](int64_t, int64_t o, V p) MMMILA_INLINE_LAMBDA {
      V s = silu ? p * sigmoid(p) : p;
      if (skip) s += load<V>(x + o);
      if (residual) s += load<V>(residual + o);
      if (gate) {
        const V g = load<V>(gate + o);
        s *= g * sigmoid(g);
      }
      store(out + o, s);
    });
  }
};

// ---- backward ----------------------------------------------------------------------------------------
// Pass 1: the gradient at the convolution's output (gp), and the gate's and residual's gradients.
template <typename T>
struct GradPre {
  Map m;
  const T *grad, *x, *k, *bias, *residual, *gate;
  T *gp, *gsum, *dresidual, *dgate;   // gsum: the gradient of the sum before the gate (for the skip)
  bool skip, silu;

  template <typename V> MMMILA_INLINE void run(int64_t b, int64_t h, int64_t c) const {
    stencil_row<V>(m, x, k, bias, b, h, c, [&](int64_t, int64_t o, V p) MMMILA_INLINE_LAMBDA {
      V g = load<V>(grad + o);
      const V sp = silu ? sigmoid(p) : V{};
      if (gate) {
        V s = silu ? p * sp : p;
        if (skip) s += load<V>(x + o);
        if (residual) s += load<V>(residual + o);
        const V z = load<V>(gate + o), sz = sigmoid(z);
        store(dgate + o, g * s * silu_grad(z, sz));
        g = g * z * sz;
        if (residual) store(dresidual + o, g);
        if (gsum) store(gsum + o, g);
      }
      store(gp + o, silu ? g * silu_grad(p, sp) : g);
    });
  }
};

// Pass 2: dx = the transposed stencil of gp (the stencil with the taps reversed) + the skip's share.
template <typename T>
struct GradInput {
  Map m;
  const T *gp, *k_reversed, *skip_grad;
  T* dx;

  template <typename V> MMMILA_INLINE void run(int64_t b, int64_t h, int64_t c) const {
    stencil_row<V>(m, gp, k_reversed, static_cast<const T*>(nullptr), b, h, c, [&](int64_t, int64_t o, V d) MMMILA_INLINE_LAMBDA {
      if (skip_grad) d += load<V>(skip_grad + o);
      store(dx + o, d);
    });
  }
};

// Pass 3: per map row, the nine taps' and the bias's gradients: sum over the row's columns of gp times
// x at the tap's offset; rows (B H, 10, C) are summed afterwards.
template <typename T>
struct GradWeight {
  Map m;
  const T *gp, *x;
  T* rows;

  template <typename V> MMMILA_INLINE void run(int64_t b, int64_t h, int64_t c) const {
    const T* xr[3];
    for (int i = 0; i < 3; ++i) {
      const int64_t hh = h + i - 1;
      xr[i] = (hh < 0 || hh >= m.H) ? nullptr : x + ((b * m.H + hh) * m.W) * m.C + c;
    }
    V acc[10] = {};
    const T* g = gp + ((b * m.H + h) * m.W) * m.C + c;
    for (int64_t w = 0; w < m.W; ++w) {
      const V gv = load<V>(g + w * m.C);
      acc[9] += gv;
      for (int i = 0; i < 3; ++i) {
        const T* r = xr[i];
        if (!r) continue;
        if (w > 0) acc[3 * i] += gv * load<V>(r + (w - 1) * m.C);
        acc[3 * i + 1] += gv * load<V>(r + w * m.C);
        if (w + 1 < m.W) acc[3 * i + 2] += gv * load<V>(r + (w + 1) * m.C);
      }
    }
    T* dst = rows + (b * m.H + h) * 10 * m.C + c;
    for (int q = 0; q < 10; ++q) store(dst + q * m.C, acc[q]);
  }
};

// One target_clones entry per pass and dtype, for a range of rows: the pass's loops are inlined into it
// and compiled for each instruction set. run_pass shares the rows among torch's intra-op threads.
#define MMMILA_PASS(NAME, TYPE)                                                                        \
  MMMILA_CLONES void rows_of(const NAME<TYPE>& p, int64_t begin, int64_t end) { for_rows<TYPE>(p, begin, end); }
MMMILA_PASS(Forward, float)
MMMILA_PASS(Forward, double)
MMMILA_PASS(GradPre, float)
MMMILA_PASS(GradPre, double)
MMMILA_PASS(GradInput, float)
MMMILA_PASS(GradInput, double)
MMMILA_PASS(GradWeight, float)
MMMILA_PASS(GradWeight, double)
#undef MMMILA_PASS

template <typename P> void run_pass(const P& p) {
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, p.m.W * p.m.C));
  at::parallel_for(0, p.m.B * p.m.H, grain, [&](int64_t begin, int64_t end) { rows_of(p, begin, end); });
}

// ---- the ops -----------------------------------------------------------------------------------------
Map check(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, int64_t H, int64_t W,
          const c10::optional<at::Tensor>& residual, const c10::optional<at::Tensor>& gate) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 3 && x.is_contiguous(),
              "mmmila_cpu.dwconv_tokens: x must be contiguous CPU tokens (B, N, C), got ", x.sizes());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "mmmila_cpu.dwconv_tokens: float32 or float64 only, got ", x.scalar_type());
  const Map m{x.size(0), H, W, x.size(2)};
  TORCH_CHECK(H >= 0 && W >= 0 && H * W == x.size(1), "mmmila_cpu.dwconv_tokens: H W = ", H, " x ", W,
              " does not match N = ", x.size(1));
  TORCH_CHECK(weight.numel() == 9 * m.C && bias.numel() == m.C, "mmmila_cpu.dwconv_tokens: weight (C, 1, 3, 3) "
              "and bias (C,) expected for C = ", m.C, ", got ", weight.sizes(), " and ", bias.sizes());
  for (const auto* t : {&residual, &gate})
    TORCH_CHECK(!t->has_value() || ((*t)->sizes() == x.sizes() && (*t)->scalar_type() == x.scalar_type() &&
                                    (*t)->is_contiguous() && (*t)->device().is_cpu()),
                "mmmila_cpu.dwconv_tokens: residual and gate must be contiguous CPU tensors like x");
  return m;
}

// The taps as (9, C) in x's dtype; reversed: tap q of the result is tap 8 - q (the transposed stencil).
at::Tensor taps(const at::Tensor& weight, const at::Tensor& x, bool reversed) {
  at::Tensor w = weight.reshape({-1, 9}).to(x.scalar_type());
  if (reversed) w = w.flip({1});
  return w.t().contiguous();
}

template <typename T> const T* ptr(const c10::optional<at::Tensor>& t) {
  return t.has_value() ? t->data_ptr<T>() : nullptr;
}

at::Tensor dwconv_tokens(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, int64_t H,
                         int64_t W, const c10::optional<at::Tensor>& residual,
                         const c10::optional<at::Tensor>& gate, bool skip, bool silu) {
  const Map m = check(x, weight, bias, H, W, residual, gate);
  at::Tensor out = at::empty_like(x);
  if (x.numel() == 0) return out;
  const at::Tensor k = taps(weight, x, false), b = bias.to(x.scalar_type()).contiguous();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mmmila_cpu.dwconv_tokens", [&] {
    run_pass(Forward<scalar_t>{m, x.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(), b.data_ptr<scalar_t>(),
                               ptr<scalar_t>(residual), ptr<scalar_t>(gate), out.data_ptr<scalar_t>(), skip,
                               silu});
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> dwconv_tokens_backward(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, int64_t H,
    int64_t W, const c10::optional<at::Tensor>& residual, const c10::optional<at::Tensor>& gate, bool skip,
    bool silu) {
  const Map m = check(x, weight, bias, H, W, residual, gate);
  TORCH_CHECK(grad.sizes() == x.sizes() && grad.scalar_type() == x.scalar_type() && grad.is_contiguous(),
              "mmmila_cpu.dwconv_tokens_backward: grad must be contiguous and like x");
  const bool with_gate = gate.has_value(), with_res = residual.has_value();
  at::Tensor dx = at::empty_like(x);
  at::Tensor dres = with_gate && with_res ? at::empty_like(x) : x.new_empty({0});
  at::Tensor dgate = with_gate ? at::empty_like(x) : x.new_empty({0});
  if (x.numel() == 0)
    return {dx, at::zeros_like(weight), at::zeros_like(bias), dres, dgate};
  // gp is grad itself when nothing comes between the convolution and the output
  const bool same = !with_gate && !silu;
  at::Tensor gp = same ? grad : at::empty_like(x);
  at::Tensor gsum = with_gate && skip ? at::empty_like(x) : at::Tensor();
  at::Tensor rows = at::empty({m.B * m.H, 10, m.C}, x.options());
  const at::Tensor k = taps(weight, x, false), kr = taps(weight, x, true), b = bias.to(x.scalar_type()).contiguous();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mmmila_cpu.dwconv_tokens_backward", [&] {
    using T = scalar_t;
    if (!same)
      run_pass(GradPre<T>{m, grad.data_ptr<T>(), x.data_ptr<T>(), k.data_ptr<T>(), b.data_ptr<T>(),
                          ptr<T>(residual), ptr<T>(gate), gp.data_ptr<T>(),
                          gsum.defined() ? gsum.data_ptr<T>() : nullptr,
                          with_gate && with_res ? dres.data_ptr<T>() : nullptr,
                          with_gate ? dgate.data_ptr<T>() : nullptr, skip, silu});
    const T* skip_grad = !skip ? nullptr : (with_gate ? gsum.data_ptr<T>() : grad.data_ptr<T>());
    run_pass(GradInput<T>{m, gp.data_ptr<T>(), kr.data_ptr<T>(), skip_grad, dx.data_ptr<T>()});
    run_pass(GradWeight<T>{m, gp.data_ptr<T>(), x.data_ptr<T>(), rows.data_ptr<T>()});
  });
  // the rows' sums, in float64 and in row order (the same bits whatever the thread count; the rows
  // are few: this is the short end of the reduction)
  at::Tensor sums = at::zeros({10, m.C}, x.options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mmmila_cpu.dwconv_tokens_backward_sum", [&] {
    const scalar_t* src = rows.data_ptr<scalar_t>();
    double* dst = sums.data_ptr<double>();
    for (int64_t r = 0; r < m.B * m.H; ++r)
      for (int64_t e = 0; e < 10 * m.C; ++e) dst[e] += static_cast<double>(src[r * 10 * m.C + e]);
  });
  at::Tensor dw = sums.narrow(0, 0, 9).t().reshape(weight.sizes()).to(weight.scalar_type()).contiguous();
  at::Tensor db = sums.select(0, 9).to(bias.scalar_type()).contiguous();
  return {dx, dw, db, dres, dgate};
}

}  // namespace

TORCH_LIBRARY(mmmila_cpu, m) {
  m.def("dwconv_tokens(Tensor x, Tensor weight, Tensor bias, int height, int width, Tensor? residual, "
        "Tensor? gate, bool skip, bool silu) -> Tensor");
  m.def("dwconv_tokens_backward(Tensor grad, Tensor x, Tensor weight, Tensor bias, int height, int width, "
        "Tensor? residual, Tensor? gate, bool skip, bool silu) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(mmmila_cpu, CPU, m) {
  m.impl("dwconv_tokens", &dwconv_tokens);
  m.impl("dwconv_tokens_backward", &dwconv_tokens_backward);
}

}  // namespace mmmila_cpu

// A Python module only so that `import mmmila._C` loads the library (the ops register as it loads).
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.doc() = "mmmila's compiled CPU kernels (torch.ops.mmmila_cpu)"; }
