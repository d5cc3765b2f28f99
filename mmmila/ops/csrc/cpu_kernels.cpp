// mmmila's compiled CPU kernels: the depthwise 3x3 convolutions of a MILA backbone with what comes
// before and after them, forward and backward: the block's, on tokens (torch.ops.mmmila.dwconv_tokens,
// mmmila/ops/dwconv.py has the maths), and the Downsample's stride-2 one between two ReLUs
// (torch.ops.mmmila.expand_dwconv, mmmila/ops/downsample.py); the MLP's GELU with its derivative in
// the backward of GELU + fc2 (torch.ops.mmmila.gelu_linear). The linear attention's kernels are in
// attention.cpp; the vector toolkit both use is lanes.h.
//
// Tokens (B, N = H W, C) are a channels-last map: the C channels of a pixel are contiguous. Every
// pass below walks a map row by row and a block of channels at a time (one SIMD vector of lanes),
// keeping the nine taps of the block in registers; the epilogue (activation, skip, residual, gate)
// runs on the same registers, so each pass reads and writes every tensor once. oneDNN's depthwise
// convolution, which the PyTorch implementation calls, costs 100-200 us per call on maps of a few
// hundred KiB whatever their size; these passes cost what their bytes and FLOPs cost.
//
// The vectors are GCC vector extensions (64 bytes: 16 floats or 8 doubles, lanes.h), compiled three
// times (target_clones: AVX-512, AVX2 with FMA, the x86-64 baseline) and chosen when the library loads.
// Channels past the last full vector run the same code on scalars. float32 and float64 only: the
// Python side sends other dtypes to the PyTorch implementation.
//
// Ops (namespace mmmila_cpu; contiguous CPU tensors; the callers check the inputs, and each kernel
// checks again the shapes, dtypes and layouts it relies on):
//   dwconv_tokens(x, weight, bias, H, W, residual?, gate?, skip, silu) -> out
//   dwconv_tokens_backward(grad, x, weight, bias, H, W, residual?, gate?, skip, silu)
//       -> (dx, dweight (C,1,3,3), dbias, dresidual (empty unless residual and gate),
//           dgate (empty unless gate))
//   dwconv_s2_relu(a, weight, bias, pad_top) -> out: the Downsample's stride-2 depthwise convolution
//       with both ReLUs on a chunk of the expansion's pre-activation (mmmila/ops/downsample.py)
//   dwconv_s2_relu_backward_(grad, a!, weight, bias, pad_top) -> (dweight, dbias), da written over a
//   gelu_grad_(h, a!, dh!): a = gelu(h) and dh = dh gelu'(h) (dh holds dL/da on entry), exact GELU,
//       for the backward of GELU + fc2 (mmmila/ops/linear_chains.py)
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <cstring>
#include <tuple>

#include "lanes.h"

namespace mmmila_cpu {
namespace {

// erf on float vectors: x P(x^2) / Q(x^2) on [-4, 4] (outside, erf is +-1 in float32), a rational
// approximation with an absolute error below 7e-8; the C library's on double vectors and scalars.
MMMILA_INLINE Lanes<float>::V erf_lanes(Lanes<float>::V x) {
  typedef Lanes<float>::V V;
  const V hi = splat<V>(4.0), lo = splat<V>(-4.0);
  x = x > hi ? hi : x;
  x = x < lo ? lo : x;
  const V x2 = x * x;
  V p = splat<V>(-2.72614225801306e-10);
  p = p * x2 + splat<V>(2.77068142495902e-08);
  p = p * x2 + splat<V>(-2.10102402082508e-06);
  p = p * x2 + splat<V>(-5.69250639462346e-05);
  p = p * x2 + splat<V>(-7.34990630326855e-04);
  p = p * x2 + splat<V>(-2.95459980854025e-03);
  p = p * x2 + splat<V>(-1.60960333262415e-02);
  V q = splat<V>(-1.45660718464996e-05);
  q = q * x2 + splat<V>(-2.13374055278905e-04);
  q = q * x2 + splat<V>(-1.68282697438203e-03);
  q = q * x2 + splat<V>(-7.37332916720468e-03);
  q = q * x2 + splat<V>(-1.42647390514189e-02);
  return x * p / q;
}
MMMILA_INLINE Lanes<double>::V erf_lanes(Lanes<double>::V x) {
  for (int l = 0; l < Lanes<double>::n; ++l) x[l] = std::erf(x[l]);
  return x;
}
MMMILA_INLINE float erf_lanes(float x) { return std::erf(x); }
MMMILA_INLINE double erf_lanes(double x) { return std::erf(x); }

template <typename V> MMMILA_INLINE V sigmoid(V v) { return splat<V>(1.0) / (splat<V>(1.0) + exp_lanes(-v)); }
// d silu(v) / dv = s (1 + v (1 - s)), s = sigmoid(v)
template <typename V> MMMILA_INLINE V silu_grad(V v, V s) {
  return s * (splat<V>(1.0) + v * (splat<V>(1.0) - s));
}

struct Map {
  int64_t B, H, W, C;
};

// How a pass walks its tensors: images x rows per image, each row row_elems values wide, channels
// per pixel. Each pass's grid() says it.
struct Grid {
  int64_t images, rows, channels, row_elems;
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
  const Grid g = body.grid();
  const int64_t full = g.channels / L;
  for (int64_t r = begin; r < end; ++r) {
    const int64_t b = r / g.rows, h = r % g.rows;
    for (int64_t j = 0; j < full; ++j) body.template run<typename Lanes<T>::V>(b, h, j * L);
    for (int64_t c = full * L; c < g.channels; ++c) body.template run<T>(b, h, c);
  }
}

// ---- forward ---------------------------------------------------------------------------------------
template <typename T>
struct Forward {
  Map m;
  Grid grid() const { return {m.B, m.H, m.C, m.W * m.C}; }
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
  Grid grid() const { return {m.B, m.H, m.C, m.W * m.C}; }
  const T *grad, *x, *k, *bias, *residual, *gate;
  // gsum: the gradient of the sum before the gate (for the skip). With a gate, that is also the
  // residual's gradient, and without SiLU gp too: such twins share one buffer, written once (the
  // others' pointers are null).
  T *gp, *gsum, *dresidual, *dgate;
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
        if (dresidual) store(dresidual + o, g);
        if (gsum) store(gsum + o, g);
      }
      store(gp + o, silu ? g * silu_grad(p, sp) : g);
    });
  }
};

// Pass 2: dx = the transposed stencil of gp (the stencil with the taps reversed) + the skip's share;
// and, as gp's row is at hand, per map row the nine taps' and the bias's gradients: the sum over the
// row's columns of gp times x at the tap's offset (rows (B H, 10, C), summed afterwards).
template <typename T>
struct GradInputWeight {
  Map m;
  Grid grid() const { return {m.B, m.H, m.C, m.W * m.C}; }
  const T *gp, *k_reversed, *skip_grad, *x;
  T *dx, *rows;

  template <typename V> MMMILA_INLINE void run(int64_t b, int64_t h, int64_t c) const {
    const T* xr[3];
    for (int i = 0; i < 3; ++i) {
      const int64_t hh = h + i - 1;
      xr[i] = (hh < 0 || hh >= m.H) ? nullptr : x + ((b * m.H + hh) * m.W) * m.C + c;
    }
    V acc[10] = {};
    const T* no_bias = nullptr;
    stencil_row<V>(m, gp, k_reversed, no_bias, b, h, c, [&](int64_t w, int64_t o, V d) MMMILA_INLINE_LAMBDA {
      if (skip_grad) d += load<V>(skip_grad + o);
      store(dx + o, d);
      const V gv = load<V>(gp + o);
      acc[9] += gv;
      for (int i = 0; i < 3; ++i) {
        const T* r = xr[i];
        if (!r) continue;
        if (w > 0) acc[3 * i] += gv * load<V>(r + (w - 1) * m.C);
        acc[3 * i + 1] += gv * load<V>(r + w * m.C);
        if (w + 1 < m.W) acc[3 * i + 2] += gv * load<V>(r + (w + 1) * m.C);
      }
    });
    T* dst = rows + (b * m.H + h) * 10 * m.C + c;
    for (int q = 0; q < 10; ++q) store(dst + q * m.C, acc[q]);
  }
};

// ---- the Downsample's stride-2 depthwise convolution (mmmila/ops/downsample.py) --------------------------
// On a chunk of the expansion's pre-activation a (B, R, W, C), a channels-last map whose rows may start
// below the image's top: out (B, Ro, W/2, C) = relu(bias + sum of the nine taps of relu(a)), stride 2,
// one column of zero padding at the left and right and pad rows of zeros at the top and bottom
// (pad 1 for a chunk that starts at the image's top). Output row k reads rows 2k - pad + i, i = 0, 1, 2,
// output column j reads columns 2j - 1 + jj. The ReLU of the expansion is applied as a is read, and its
// gradient as da is written: the expanded map is never activated or masked in a pass of its own.
struct S2Map {
  int64_t B, R, W, C, Ro, Wo, pad;
};

template <typename V> MMMILA_INLINE V relu_lanes(V v) {
  const V zero{};
  return v > zero ? v : zero;
}
MMMILA_INLINE float relu_lanes(float v) { return v > 0.f ? v : 0.f; }
MMMILA_INLINE double relu_lanes(double v) { return v > 0.0 ? v : 0.0; }

// The stencil at output row (b, k), channels [c, c + lanes): emit(j, offset into the output, p,
// the nine inputs relu(a) it read) for every output column.
template <typename V, typename T, typename Emit>
MMMILA_INLINE void s2_stencil_row(const S2Map& m, const T* a, const T* k, const T* bias, int64_t b,
                                  int64_t kr, int64_t c, Emit emit) {
  const T* rows[3];
  for (int i = 0; i < 3; ++i) {
    const int64_t t = 2 * kr - m.pad + i;
    rows[i] = (t < 0 || t >= m.R) ? nullptr : a + ((b * m.R + t) * m.W) * m.C + c;
  }
  V taps[9];
  for (int q = 0; q < 9; ++q) taps[q] = load<V>(k + q * m.C + c);
  const V b0 = load<V>(bias + c);
  const int64_t base = ((b * m.Ro + kr) * m.Wo) * m.C + c;
  for (int64_t j = 0; j < m.Wo; ++j) {
    V in[9] = {};
    V acc = b0;
    for (int i = 0; i < 3; ++i) {
      const T* r = rows[i];
      if (!r) continue;
      for (int jj = 0; jj < 3; ++jj) {
        const int64_t x = 2 * j - 1 + jj;
        if (x < 0 || x >= m.W) continue;
        in[3 * i + jj] = relu_lanes(load<V>(r + x * m.C));
        acc += in[3 * i + jj] * taps[3 * i + jj];
      }
    }
    emit(base + j * m.C, acc, in);
  }
}

template <typename T>
struct S2Forward {
  S2Map m;
  const T *a, *k, *bias;
  T* out;
  Grid grid() const { return {m.B, m.Ro, m.C, m.Wo * m.C}; }

  template <typename V> MMMILA_INLINE void run(int64_t b, int64_t kr, int64_t c) const {
    s2_stencil_row<V>(m, a, k, bias, b, kr, c, [&](int64_t o, V p, const V*) MMMILA_INLINE_LAMBDA {
      store(out + o, relu_lanes(p));
    });
  }
};

// Backward pass 1, per output row: gp = grad where the output's pre-activation is positive, and the
// row's sums for the taps' and the bias's gradients (rows (B Ro, 10, C), summed afterwards).
template <typename T>
struct S2GradOut {
  S2Map m;
  const T *grad, *a, *k, *bias;
  T *gp, *rows;
  Grid grid() const { return {m.B, m.Ro, m.C, m.Wo * m.C}; }

  template <typename V> MMMILA_INLINE void run(int64_t b, int64_t kr, int64_t c) const {
    V acc[10] = {};
    s2_stencil_row<V>(m, a, k, bias, b, kr, c, [&](int64_t o, V p, const V* in) MMMILA_INLINE_LAMBDA {
      const V zero{};
      const V g = load<V>(grad + o);
      const V gpv = p > zero ? g : zero;
      store(gp + o, gpv);
      for (int q = 0; q < 9; ++q) acc[q] += gpv * in[q];
      acc[9] += gpv;
    });
    T* dst = rows + (b * m.Ro + kr) * 10 * m.C + c;
    for (int q = 0; q < 10; ++q) store(dst + q * m.C, acc[q]);
  }
};

// Backward pass 2, per input row t: da = (a > 0) times the sum over the outputs that read (t, x) of
// gp times their tap: output rows k = (t + pad - i) / 2 where that is whole, output columns
// j = (x + 1 - jj) / 2 likewise.
template <typename T>
struct S2GradIn {
  S2Map m;
  const T *gp, *a, *k;
  T* da;   // may be a itself
  Grid grid() const { return {m.B, m.R, m.C, m.W * m.C}; }

  template <typename V> MMMILA_INLINE void run(int64_t b, int64_t t, int64_t c) const {
    const T* grows[2];
    int taps_i[2], n = 0;
    for (int i = 0; i < 3; ++i) {
      const int64_t num = t + m.pad - i;
      if (num < 0 || num % 2 || num / 2 >= m.Ro) continue;
      grows[n] = gp + ((b * m.Ro + num / 2) * m.Wo) * m.C + c;
      taps_i[n++] = i;
    }
    V taps[9];
    for (int q = 0; q < 9; ++q) taps[q] = load<V>(k + q * m.C + c);
    const int64_t base = ((b * m.R + t) * m.W) * m.C + c;
    const V zero{};
    for (int64_t x = 0; x < m.W; ++x) {
      V acc{};
      for (int u = 0; u < n; ++u) {
        const T* g = grows[u];
        const int i = taps_i[u];
        if (x % 2) {   // x = 2j - 1 + jj with jj = 0 (j = (x + 1) / 2) or jj = 2 (j = (x - 1) / 2)
          if ((x + 1) / 2 < m.Wo) acc += load<V>(g + ((x + 1) / 2) * m.C) * taps[3 * i];
          acc += load<V>(g + ((x - 1) / 2) * m.C) * taps[3 * i + 2];
        } else {       // jj = 1, j = x / 2
          acc += load<V>(g + (x / 2) * m.C) * taps[3 * i + 1];
        }
      }
      const V av = load<V>(a + base + x * m.C);
      store(da + base + x * m.C, av > zero ? acc : zero);
    }
  }
};

// ---- the MLP's GELU in the backward of GELU + fc2 (mmmila/ops/linear_chains.py) ------------------------
// From the hidden pre-activation h and dL/da (a = gelu(h), fc2's input), held in dh: a itself (for fc2's
// weight gradient) and dL/dh = dL/da gelu'(h) in place of dL/da, exact GELU: gelu(h) = h Phi(h),
// gelu'(h) = Phi(h) + h phi(h), Phi the normal distribution function, phi its density. One pass over
// (rows, C) contiguous tensors.
template <typename T>
struct GeluGrad {
  int64_t rows, C;
  const T* h;
  T *a, *dh;
  Grid grid() const { return {1, rows, C, C}; }

  template <typename V> MMMILA_INLINE void run(int64_t, int64_t r, int64_t c) const {
    const int64_t o = r * C + c;
    const V x = load<V>(h + o);
    const V cdf = splat<V>(0.5) * (splat<V>(1.0) + erf_lanes(x * splat<V>(0.70710678118654752)));
    const V pdf = exp_lanes(splat<V>(-0.5) * x * x) * splat<V>(0.39894228040143268);
    store(a + o, x * cdf);
    store(dh + o, load<V>(dh + o) * (cdf + x * pdf));
  }
};

// One target_clones entry per pass and dtype, for a range of rows: the pass's loops are inlined into it
// and compiled for each instruction set. run_pass shares the rows among torch's intra-op threads.
#define MMMILA_PASS(NAME, TYPE)                                                                        \
  MMMILA_CLONES void rows_of(const NAME<TYPE>& p, int64_t begin, int64_t end) {                         \
    for_rows<TYPE>(p, begin, end);                                                                     \
  }
MMMILA_PASS(Forward, float)
MMMILA_PASS(Forward, double)
MMMILA_PASS(GradPre, float)
MMMILA_PASS(GradPre, double)
MMMILA_PASS(GradInputWeight, float)
MMMILA_PASS(GradInputWeight, double)
MMMILA_PASS(S2Forward, float)
MMMILA_PASS(S2Forward, double)
MMMILA_PASS(S2GradOut, float)
MMMILA_PASS(S2GradOut, double)
MMMILA_PASS(S2GradIn, float)
MMMILA_PASS(S2GradIn, double)
MMMILA_PASS(GeluGrad, float)
MMMILA_PASS(GeluGrad, double)
#undef MMMILA_PASS

template <typename P> void run_pass(const P& p) {
  const Grid g = p.grid();
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, g.row_elems));
  at::parallel_for(0, g.images * g.rows, grain, [&](int64_t begin, int64_t end) { rows_of(p, begin, end); });
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
  TORCH_CHECK(weight.numel() == 9 * m.C && bias.numel() == m.C,
              "mmmila_cpu.dwconv_tokens: weight (C, 1, 3, 3) and bias (C,) expected for C = ", m.C, ", got ",
              weight.sizes(), " and ", bias.sizes());
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

// The taps' and the bias's gradients from per-row sums rows (n, 10, C): summed in float64 and in row
// order (the same bits whatever the thread count; the rows are few: the short end of the reduction),
// returned in the weight's and the bias's dtypes.
std::tuple<at::Tensor, at::Tensor> tap_gradients(const at::Tensor& rows, const at::Tensor& weight,
                                                 const at::Tensor& bias) {
  const int64_t n = rows.size(0), width = rows.size(1) * rows.size(2);
  at::Tensor sums = at::zeros({rows.size(1), rows.size(2)}, rows.options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES(rows.scalar_type(), "mmmila_cpu.tap_gradients", [&] {
    const scalar_t* src = rows.data_ptr<scalar_t>();
    double* dst = sums.data_ptr<double>();
    for (int64_t r = 0; r < n; ++r)
      for (int64_t e = 0; e < width; ++e) dst[e] += static_cast<double>(src[r * width + e]);
  });
  at::Tensor dw = sums.narrow(0, 0, 9).t().reshape(weight.sizes()).to(weight.scalar_type()).contiguous();
  at::Tensor db = sums.select(0, 9).to(bias.scalar_type()).contiguous();
  return {dw, db};
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
  // gp is grad itself when nothing comes between the convolution and the output; with a gate, the
  // gradient of the sum before it is dL/dresidual, and without SiLU gp and the skip's gradient too:
  // one buffer (the fewer fresh buffers, the fewer page faults)
  const bool same = !with_gate && !silu;
  const bool res_twins = with_gate && with_res;
  at::Tensor gp = same ? grad : (res_twins && !silu ? dres : at::empty_like(x));
  at::Tensor gsum = with_gate && skip ? (res_twins ? dres : at::empty_like(x)) : at::Tensor();
  at::Tensor rows = at::empty({m.B * m.H, 10, m.C}, x.options());
  const at::Tensor k = taps(weight, x, false), kr = taps(weight, x, true);
  const at::Tensor b = bias.to(x.scalar_type()).contiguous();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mmmila_cpu.dwconv_tokens_backward", [&] {
    using T = scalar_t;
    if (!same)
      run_pass(GradPre<T>{m, grad.data_ptr<T>(), x.data_ptr<T>(), k.data_ptr<T>(), b.data_ptr<T>(),
                          ptr<T>(residual), ptr<T>(gate), gp.data_ptr<T>(),
                          gsum.defined() && !gsum.is_same(gp) ? gsum.data_ptr<T>() : nullptr,
                          res_twins && !dres.is_same(gp) && !dres.is_same(gsum) ? dres.data_ptr<T>() : nullptr,
                          with_gate ? dgate.data_ptr<T>() : nullptr, skip, silu});
    const T* skip_grad = !skip ? nullptr : (with_gate ? gsum.data_ptr<T>() : grad.data_ptr<T>());
    run_pass(GradInputWeight<T>{m, gp.data_ptr<T>(), kr.data_ptr<T>(), skip_grad, x.data_ptr<T>(),
                                dx.data_ptr<T>(), rows.data_ptr<T>()});
  });
  auto [dw, db] = tap_gradients(rows, weight, bias);
  return {dx, dw, db, dres, dgate};
}

S2Map check_s2(const at::Tensor& a, const at::Tensor& weight, const at::Tensor& bias, bool pad_top) {
  TORCH_CHECK(a.device().is_cpu() && a.dim() == 4 && a.is_contiguous(),
              "mmmila_cpu.dwconv_s2_relu: a must be a contiguous CPU map (B, rows, W, C), got ", a.sizes());
  TORCH_CHECK(a.scalar_type() == at::kFloat || a.scalar_type() == at::kDouble,
              "mmmila_cpu.dwconv_s2_relu: float32 or float64 only, got ", a.scalar_type());
  const int64_t B = a.size(0), R = a.size(1), W = a.size(2), C = a.size(3), pad = pad_top ? 1 : 0;
  TORCH_CHECK(W % 2 == 0, "mmmila_cpu.dwconv_s2_relu: the map's width must be even, got ", W);
  TORCH_CHECK(weight.numel() == 9 * C && bias.numel() == C, "mmmila_cpu.dwconv_s2_relu: weight (C, 1, 3, 3) "
              "and bias (C,) expected for C = ", C, ", got ", weight.sizes(), " and ", bias.sizes());
  const int64_t Ro = R + 2 * pad >= 3 ? (R + 2 * pad - 3) / 2 + 1 : 0;
  return S2Map{B, R, W, C, Ro, W / 2, pad};
}

at::Tensor dwconv_s2_relu(const at::Tensor& a, const at::Tensor& weight, const at::Tensor& bias,
                          bool pad_top) {
  const S2Map m = check_s2(a, weight, bias, pad_top);
  at::Tensor out = at::empty({m.B, m.Ro, m.Wo, m.C}, a.options());
  if (out.numel() == 0) return out;
  const at::Tensor k = taps(weight, a, false), b = bias.to(a.scalar_type()).contiguous();
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "mmmila_cpu.dwconv_s2_relu", [&] {
    run_pass(S2Forward<scalar_t>{m, a.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(), b.data_ptr<scalar_t>(),
                                 out.data_ptr<scalar_t>()});
  });
  return out;
}

// dL/da is written over a (pass 2 reads a only at the element it writes): the chunk's expansion
// needs no second buffer.
std::tuple<at::Tensor, at::Tensor> dwconv_s2_relu_backward_(const at::Tensor& grad, const at::Tensor& a,
                                                            const at::Tensor& weight, const at::Tensor& bias,
                                                            bool pad_top) {
  const S2Map m = check_s2(a, weight, bias, pad_top);
  TORCH_CHECK(grad.is_contiguous() && grad.scalar_type() == a.scalar_type() &&
                  grad.sizes() == at::IntArrayRef({m.B, m.Ro, m.Wo, m.C}),
              "mmmila_cpu.dwconv_s2_relu_backward_: grad must be contiguous, in a's dtype, of the output's "
              "shape ", at::IntArrayRef({m.B, m.Ro, m.Wo, m.C}), ", got ", grad.sizes());
  if (grad.numel() == 0 || a.numel() == 0) {
    a.zero_();
    return {at::zeros_like(weight), at::zeros_like(bias)};
  }
  at::Tensor gp = at::empty_like(grad);
  at::Tensor rows = at::empty({m.B * m.Ro, 10, m.C}, a.options());
  const at::Tensor k = taps(weight, a, false), b = bias.to(a.scalar_type()).contiguous();
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "mmmila_cpu.dwconv_s2_relu_backward_", [&] {
    using T = scalar_t;
    run_pass(S2GradOut<T>{m, grad.data_ptr<T>(), a.data_ptr<T>(), k.data_ptr<T>(), b.data_ptr<T>(),
                          gp.data_ptr<T>(), rows.data_ptr<T>()});
    run_pass(S2GradIn<T>{m, gp.data_ptr<T>(), a.data_ptr<T>(), k.data_ptr<T>(), a.data_ptr<T>()});
  });
  return tap_gradients(rows, weight, bias);
}

void gelu_grad_(const at::Tensor& h, const at::Tensor& a, const at::Tensor& dh) {
  TORCH_CHECK(h.device().is_cpu() && h.dim() == 2 && h.is_contiguous(),
              "mmmila_cpu.gelu_grad_: h must be contiguous CPU rows (n, C), got ", h.sizes());
  TORCH_CHECK(h.scalar_type() == at::kFloat || h.scalar_type() == at::kDouble,
              "mmmila_cpu.gelu_grad_: float32 or float64 only, got ", h.scalar_type());
  for (const at::Tensor* t : {&a, &dh})
    TORCH_CHECK(t->sizes() == h.sizes() && t->scalar_type() == h.scalar_type() && t->is_contiguous() &&
                    t->device().is_cpu(),
                "mmmila_cpu.gelu_grad_: a and dh must be contiguous CPU tensors like h");
  if (h.numel() == 0) return;
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "mmmila_cpu.gelu_grad_", [&] {
    using T = scalar_t;
    run_pass(GeluGrad<T>{h.size(0), h.size(1), h.data_ptr<T>(), a.data_ptr<T>(), dh.data_ptr<T>()});
  });
}

}  // namespace

TORCH_LIBRARY(mmmila_cpu, m) {
  m.def("dwconv_tokens(Tensor x, Tensor weight, Tensor bias, int height, int width, Tensor? residual, "
        "Tensor? gate, bool skip, bool silu) -> Tensor");
  m.def("dwconv_tokens_backward(Tensor grad, Tensor x, Tensor weight, Tensor bias, int height, int width, "
        "Tensor? residual, Tensor? gate, bool skip, bool silu) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def("dwconv_s2_relu(Tensor a, Tensor weight, Tensor bias, bool pad_top) -> Tensor");
  m.def("dwconv_s2_relu_backward_(Tensor grad, Tensor(a!) a, Tensor weight, Tensor bias, bool pad_top) "
        "-> (Tensor, Tensor)");
  m.def("gelu_grad_(Tensor h, Tensor(a!) a, Tensor(b!) dh) -> ()");
}

TORCH_LIBRARY_IMPL(mmmila_cpu, CPU, m) {
  m.impl("dwconv_tokens", &dwconv_tokens);
  m.impl("dwconv_tokens_backward", &dwconv_tokens_backward);
  m.impl("dwconv_s2_relu", &dwconv_s2_relu);
  m.impl("dwconv_s2_relu_backward_", &dwconv_s2_relu_backward_);
  m.impl("gelu_grad_", &gelu_grad_);
}

}  // namespace mmmila_cpu

// A Python module only so that `import mmmila._C` loads the library (the ops register as it loads).
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.doc() = "mmmila's compiled CPU kernels (torch.ops.mmmila_cpu)"; }
