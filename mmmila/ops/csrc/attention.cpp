// mmmila's compiled CPU kernels for MILA's linear attention: the forward and the backward of
// torch.ops.mmmila.linear_attention on float32 and float64 CPU tensors (mmmila/ops/cpu_fused.py has
// the same algorithm in PyTorch ops, docs/kernel_math.md the maths).
//
// With q = phi(qk[..., :C]), k = phi(qk[..., C:]), phi = elu + 1, R the 2-D rotation (RoPE) of the
// channel pairs and, per head h (d channels), m = mean(k), z = 1 / (q . m + eps):
//   out = z (R q) S,   S = (R k)^T v / N.
// The map is walked in chunks of whole rows. Per chunk, one elementwise pass over the tokens makes
// what a matrix product reads (R phi(k); z R phi(q); ...) into a chunk-sized buffer, the products run
// as ATen's batched matrix products per image (MKL), and in the backward a second pass turns their
// results into dL/dqk. Each pass reads the input tensors once and computes the feature map, the
// rotation, the normaliser and their gradients on registers; the sums over tokens (of phi(k), and of
// dL/dm) are made per block of kBlock tokens and added in block order, so the result does not depend
// on the number of threads.
//
// Ops (namespace mmmila_cpu; CPU tensors; mmmila/ops/cpu_fused.py checks the inputs and calls them,
// and each op checks again what it relies on):
//   linear_attention(qk, v, row_table, col_table, num_heads, chunk_rows) -> (out, S, m)
//   linear_attention_backward(grad, grad_S?, grad_m?, qk, v, S, m, row_table, col_table, num_heads,
//                             chunk_rows) -> (dqk, dv)
// row_table (H, 2, C/2) and col_table (W, 2, C/2) hold the rotation of channels [0, C/2) by the
// token's row and of channels [C/2, C) by its column: the cosine of each channel's pair angle, and
// its sine with the sign of the channel's place in the pair (- first, + second), so that
// R x = x cos + swap(x) sin, R^T x = x cos - swap(x) sin, swap exchanging the two channels of a pair.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <tuple>
#include <vector>

#include "lanes.h"

namespace mmmila_cpu {
namespace {

constexpr int64_t kBlock = 64;    // tokens per unit of work, and per partial sum over tokens
constexpr double kEps = 1e-6;     // the normaliser's epsilon (mmmila/ops/reference.py)

template <typename T> using Vec = typename Lanes<T>::V;

// The first k lanes of a vector at p (k <= lanes; the others zero), and their store.
template <typename T> MMMILA_INLINE Vec<T> ld(const T* p, int64_t k) {
  if (k == Lanes<T>::n) return load<Vec<T>>(p);
  Vec<T> v{};
  std::memcpy(&v, p, k * sizeof(T));
  return v;
}
template <typename T> MMMILA_INLINE void st(T* p, Vec<T> v, int64_t k) {
  if (k == Lanes<T>::n) store(p, v);
  else std::memcpy(p, &v, k * sizeof(T));
}

// The two lanes of every pair exchanged (pairs start at even lanes).
MMMILA_INLINE Lanes<float>::V swap_pairs(Lanes<float>::V x) {
#if defined(__clang__)
  return __builtin_shufflevector(x, x, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
#else
  return __builtin_shuffle(x, Lanes<float>::I{1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14});
#endif
}
MMMILA_INLINE Lanes<double>::V swap_pairs(Lanes<double>::V x) {
#if defined(__clang__)
  return __builtin_shufflevector(x, x, 1, 0, 3, 2, 5, 4, 7, 6);
#else
  typedef long long I __attribute__((vector_size(64)));
  return __builtin_shuffle(x, I{1, 0, 3, 2, 5, 4, 7, 6});
#endif
}

// phi(x) = elu(x) + 1 = max(x + 1, exp(min(x, 0))); e = exp(min(x, 0)) is its derivative.
template <typename V> MMMILA_INLINE V phi_of(V x, V& e) {
  const V zero{};
  e = exp_lanes(x < zero ? x : zero);
  const V p = x + splat<V>(1.0);
  return p > e ? p : e;
}

template <typename T> MMMILA_INLINE T lane_sum(Vec<T> v) {
  T s = 0;
  for (int l = 0; l < Lanes<T>::n; ++l) s += v[l];
  return s;
}

// sum a[c] b[c] over c < n
template <typename T> MMMILA_INLINE T dot(const T* a, const T* b, int64_t n) {
  constexpr int L = Lanes<T>::n;
  Vec<T> acc{};
  for (int64_t c = 0; c < n; c += L) {
    const int64_t k = std::min<int64_t>(L, n - c);
    acc += ld(a + c, k) * ld(b + c, k);
  }
  return lane_sum<T>(acc);
}

// out[c] = per_head[c / d] for the nh * d channels
template <typename T> MMMILA_INLINE void spread(const T* per_head, int64_t nh, int64_t d, T* out) {
  constexpr int L = Lanes<T>::n;
  for (int64_t h = 0; h < nh; ++h) {
    const Vec<T> s = splat<Vec<T>>(per_head[h]);
    for (int64_t c = 0; c < d; c += L) st(out + h * d + c, s, std::min<int64_t>(L, d - c));
  }
}

// One chunk of the map: tokens [t0, t0 + n) of each of the B images (whole rows of width W).
// Chunk buffers are (B, bn, C) with bn >= n; the per-block sums (B, nblk, C).
template <typename T> struct Chunk {
  int64_t B, N, C, nh, d, W;
  int64_t t0, n, bn, nblk;
  const T *rows, *cols;   // the rotation tables (H, 2, C/2), (W, 2, C/2)

  int64_t units() const { return B * nblk; }
  // f(c, k, cos, sin) for each block of k <= lanes channels of a token at (row, col)
  template <typename F> MMMILA_INLINE void rotated_blocks(int64_t t, F f) const {
    constexpr int L = Lanes<T>::n;
    const int64_t half = C / 2;
    const T* tabs[2] = {rows + (t / W) * C, cols + (t % W) * C};
    for (int s = 0; s < 2; ++s) {
      for (int64_t j = 0; j < half; j += L) {
        const int64_t k = std::min<int64_t>(L, half - j);
        f(s * half + j, k, ld(tabs[s] + j, k), ld(tabs[s] + half + j, k));
      }
    }
  }
};

// The blocks of unit u: image b, chunk tokens [i0, i1).
struct Span {
  int64_t b, i0, i1;
};
template <typename T> MMMILA_INLINE Span span(const Chunk<T>& a, int64_t u) {
  const int64_t b = u / a.nblk, i0 = (u % a.nblk) * kBlock;
  return {b, i0, std::min(a.n, i0 + kBlock)};
}

// Forward pass 1 and backward pass B1: kr = R phi(k); with sums, each unit's sum of phi(k).
template <typename T> struct RotateK {
  Chunk<T> a;
  const T* qk;
  T *kr, *sums;

  MMMILA_INLINE void unit(int64_t u) const {
    const Span s = span(a, u);
    T* sum = sums ? sums + u * a.C : nullptr;
    if (sum) std::fill(sum, sum + a.C, T(0));
    for (int64_t i = s.i0; i < s.i1; ++i) {
      const int64_t t = a.t0 + i;
      const T* x = qk + (s.b * a.N + t) * 2 * a.C + a.C;
      T* y = kr + (s.b * a.bn + i) * a.C;
      a.rotated_blocks(t, [&](int64_t c, int64_t k, Vec<T> cs, Vec<T> sn) MMMILA_INLINE_LAMBDA {
        Vec<T> e;
        const Vec<T> p = phi_of(ld(x + c, k), e);
        if (sum) st(sum + c, ld(sum + c, k) + p, k);
        st(y + c, p * cs + swap_pairs(p) * sn, k);
      });
    }
  }
};

// Forward pass 2: qr = z R phi(q). Backward pass A1 (with g): qr = R phi(q), gz = z g and z itself.
template <typename T> struct RotateQ {
  Chunk<T> a;
  const T *qk, *m;   // m (B, C): mean(k), per head
  T* qr;
  const T* g;        // backward: the upstream gradient (B, N, C)
  T *gz, *z;         // backward: (B, bn, C), (B, bn, nh)

  MMMILA_INLINE void unit(int64_t u) const {
    constexpr int L = Lanes<T>::n;
    const Span s = span(a, u);
    std::vector<T> scratch(a.C + a.nh);
    T *zc = scratch.data(), *zh = zc + a.C;
    const T* mb = m + s.b * a.C;
    for (int64_t i = s.i0; i < s.i1; ++i) {
      const int64_t t = a.t0 + i;
      const T* x = qk + (s.b * a.N + t) * 2 * a.C;
      T* y = qr + (s.b * a.bn + i) * a.C;
      for (int64_t c = 0; c < a.C; c += L) {   // phi(q), not yet rotated
        const int64_t k = std::min<int64_t>(L, a.C - c);
        Vec<T> e;
        st(y + c, phi_of(ld(x + c, k), e), k);
      }
      for (int64_t h = 0; h < a.nh; ++h)
        zh[h] = T(1) / (dot(y + h * a.d, mb + h * a.d, a.d) + T(kEps));
      spread(zh, a.nh, a.d, zc);
      if (g) {
        const T* gt = g + (s.b * a.N + t) * a.C;
        T* out = gz + (s.b * a.bn + i) * a.C;
        for (int64_t c = 0; c < a.C; c += L) {
          const int64_t k = std::min<int64_t>(L, a.C - c);
          st(out + c, ld(gt + c, k) * ld(zc + c, k), k);
        }
        std::copy(zh, zh + a.nh, z + (s.b * a.bn + i) * a.nh);
      }
      a.rotated_blocks(t, [&](int64_t c, int64_t k, Vec<T> cs, Vec<T> sn) MMMILA_INLINE_LAMBDA {
        const Vec<T> p = ld(y + c, k);
        const Vec<T> r = p * cs + swap_pairs(p) * sn;
        st(y + c, g ? r : r * ld(zc + c, k), k);
      });
    }
  }
};

// Backward pass A2, in place: dqk[:C] holds dqr = dL/d(R q) (= z g S^T, the product wrote it there),
// qr = R q; then
//   w = z (R q . dqr) per head,  dL/dq = R^T dqr - w m,  dL/dqk[:C] = dL/dq phi'(q),
// and each unit's sum of -w q (dL/dm's share of these tokens).
template <typename T> struct GradQ {
  Chunk<T> a;
  const T *qk, *m, *qr, *z;
  T *dqk, *sums;

  MMMILA_INLINE void unit(int64_t u) const {
    const Span s = span(a, u);
    std::vector<T> scratch(a.C + a.nh);
    T *wc = scratch.data(), *wh = wc + a.C;
    const T* mb = m + s.b * a.C;
    T* sum = sums + u * a.C;
    std::fill(sum, sum + a.C, T(0));
    for (int64_t i = s.i0; i < s.i1; ++i) {
      const int64_t t = a.t0 + i, o = (s.b * a.bn + i);
      const T *x = qk + (s.b * a.N + t) * 2 * a.C, *q = qr + o * a.C;
      T* dq = dqk + (s.b * a.N + t) * 2 * a.C;
      for (int64_t h = 0; h < a.nh; ++h) wh[h] = z[o * a.nh + h] * dot(q + h * a.d, dq + h * a.d, a.d);
      spread(wh, a.nh, a.d, wc);
      a.rotated_blocks(t, [&](int64_t c, int64_t k, Vec<T> cs, Vec<T> sn) MMMILA_INLINE_LAMBDA {
        const Vec<T> gr = ld(dq + c, k);
        Vec<T> e;
        const Vec<T> p = phi_of(ld(x + c, k), e), w = ld(wc + c, k);
        st(sum + c, ld(sum + c, k) - w * p, k);
        st(dq + c, (gr * cs - swap_pairs(gr) * sn - w * ld(mb + c, k)) * e, k);
      });
    }
  }
};

// Backward pass B2, in place: dqk[C:] holds dkr = dL/d(R k) = v dS^T; then
// dL/dqk[C:] = (R^T dkr + dm) phi'(k), dm = dL/dm / N.
template <typename T> struct GradK {
  Chunk<T> a;
  const T *qk, *dm;
  T* dqk;

  MMMILA_INLINE void unit(int64_t u) const {
    const Span s = span(a, u);
    const T* dmb = dm + s.b * a.C;
    for (int64_t i = s.i0; i < s.i1; ++i) {
      const int64_t t = a.t0 + i;
      const T* x = qk + (s.b * a.N + t) * 2 * a.C + a.C;
      T* dk = dqk + (s.b * a.N + t) * 2 * a.C + a.C;
      a.rotated_blocks(t, [&](int64_t c, int64_t k, Vec<T> cs, Vec<T> sn) MMMILA_INLINE_LAMBDA {
        const Vec<T> gr = ld(dk + c, k);
        Vec<T> e;
        phi_of(ld(x + c, k), e);
        st(dk + c, (gr * cs - swap_pairs(gr) * sn + ld(dmb + c, k)) * e, k);
      });
    }
  }
};

// One target_clones entry per pass and dtype, for a range of units; run shares the units among
// torch's intra-op threads.
#define MMMILA_PASS(NAME, TYPE)                                                                        \
  MMMILA_CLONES void units_of(const NAME<TYPE>& p, int64_t begin, int64_t end) {                        \
    for (int64_t u = begin; u < end; ++u) p.unit(u);                                                   \
  }
MMMILA_PASS(RotateK, float)
MMMILA_PASS(RotateK, double)
MMMILA_PASS(RotateQ, float)
MMMILA_PASS(RotateQ, double)
MMMILA_PASS(GradQ, float)
MMMILA_PASS(GradQ, double)
MMMILA_PASS(GradK, float)
MMMILA_PASS(GradK, double)
#undef MMMILA_PASS

template <typename P> void run(const P& p) {
  at::parallel_for(0, p.a.units(), 1, [&](int64_t begin, int64_t end) { units_of(p, begin, end); });
}

// acc (B, C) float64 += the chunk's per-block sums (B, nblk, C), block by block.
template <typename T> void add_sums(const Chunk<T>& a, const at::Tensor& sums, at::Tensor& acc) {
  const T* src = sums.data_ptr<T>();
  double* dst = acc.data_ptr<double>();
  for (int64_t b = 0; b < a.B; ++b)
    for (int64_t blk = 0; blk < a.nblk; ++blk)
      for (int64_t c = 0; c < a.C; ++c) dst[b * a.C + c] += static_cast<double>(src[(b * a.nblk + blk) * a.C + c]);
}

// (n, C) tokens -> (nh, n, d), a view
at::Tensor heads(const at::Tensor& x, int64_t nh) { return x.view({x.size(0), nh, -1}).transpose(0, 1); }

// out = a b, batched over heads, into the view out (ATen's bmm_out takes an lvalue)
void bmm_into(at::Tensor out, const at::Tensor& a, const at::Tensor& b) { at::bmm_out(out, a, b); }

// blocks of kBlock tokens that cover n tokens
MMMILA_INLINE int64_t blocks(int64_t n) { return (n + kBlock - 1) / kBlock; }

struct Shape {
  int64_t B, N, C, nh, d, H, W, chunk_rows;
  int64_t chunk_tokens() const { return std::min(chunk_rows, H) * W; }   // of the largest chunk
};

Shape check(const char* op, const at::Tensor& qk, const at::Tensor& v, const at::Tensor& row_table,
            const at::Tensor& col_table, int64_t num_heads, int64_t chunk_rows) {
  TORCH_CHECK(qk.device().is_cpu() && v.device().is_cpu() && qk.dim() == 3 && v.dim() == 3 &&
                  qk.is_contiguous() && v.is_contiguous(),
              op, ": qk (B, N, 2C) and v (B, N, C) must be contiguous CPU tensors, got ", qk.sizes(), " and ",
              v.sizes());
  TORCH_CHECK(qk.scalar_type() == v.scalar_type() &&
                  (v.scalar_type() == at::kFloat || v.scalar_type() == at::kDouble),
              op, ": qk and v must both be float32 or both float64, got ", qk.scalar_type(), " and ",
              v.scalar_type());
  const int64_t B = v.size(0), N = v.size(1), C = v.size(2);
  TORCH_CHECK(qk.size(0) == B && qk.size(1) == N && qk.size(2) == 2 * C, op, ": qk must be (B, N, 2C) = (", B,
              ", ", N, ", ", 2 * C, "), got ", qk.sizes());
  TORCH_CHECK(num_heads > 0 && C % num_heads == 0 && (C / num_heads) % 2 == 0 && C % 4 == 0, op,
              ": C = ", C, " must be a multiple of 4 and of num_heads = ", num_heads, " with an even head width");
  const int64_t H = row_table.size(0), W = col_table.size(0);
  for (const at::Tensor* t : {&row_table, &col_table})
    TORCH_CHECK(t->dim() == 3 && t->size(1) == 2 && t->size(2) == C / 2 && t->is_contiguous() &&
                    t->scalar_type() == v.scalar_type() && t->device().is_cpu(),
                op, ": the rotation tables must be contiguous (H, 2, C/2) and (W, 2, C/2) CPU tensors in v's "
                "dtype, got ", t->sizes());
  TORCH_CHECK(H * W == N, op, ": the tables' H x W = ", H, " x ", W, " does not match N = ", N);
  TORCH_CHECK(chunk_rows >= 1, op, ": chunk_rows must be positive, got ", chunk_rows);
  return {B, N, C, num_heads, C / num_heads, H, W, chunk_rows};
}

// The chunks of whole rows: f(chunk) with the chunk's geometry filled in (buffers of chunk_tokens()).
template <typename T, typename F>
void for_chunks(const Shape& s, const at::Tensor& row_table, const at::Tensor& col_table, F f) {
  for (int64_t r0 = 0; r0 < s.H; r0 += s.chunk_rows) {
    const int64_t n = (std::min(r0 + s.chunk_rows, s.H) - r0) * s.W;
    f(Chunk<T>{s.B, s.N, s.C, s.nh, s.d, s.W, r0 * s.W, n, s.chunk_tokens(), blocks(n), row_table.data_ptr<T>(),
               col_table.data_ptr<T>()});
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_attention(const at::Tensor& qk, const at::Tensor& v,
                                                               const at::Tensor& row_table,
                                                               const at::Tensor& col_table, int64_t num_heads,
                                                               int64_t chunk_rows) {
  const Shape s = check("mmmila_cpu.linear_attention", qk, v, row_table, col_table, num_heads, chunk_rows);
  at::Tensor out = at::empty_like(v);
  at::Tensor S = at::zeros({s.B, s.nh, s.d, s.d}, v.options());
  if (s.B == 0 || s.N == 0) return {out, S, at::zeros({s.B, s.nh, s.d}, v.options())};
  at::Tensor buf = at::empty({s.B, s.chunk_tokens(), s.C}, v.options());
  at::Tensor sums = at::empty({s.B, blocks(s.chunk_tokens()), s.C}, v.options());
  at::Tensor ksum = at::zeros({s.B, s.C}, v.options().dtype(at::kDouble));
  at::Tensor m;
  AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "mmmila_cpu.linear_attention", [&] {
    using T = scalar_t;
    for_chunks<T>(s, row_table, col_table, [&](const Chunk<T>& a) {   // pass 1: S and sum(phi(k))
      run(RotateK<T>{a, qk.data_ptr<T>(), buf.data_ptr<T>(), sums.data_ptr<T>()});
      add_sums(a, sums, ksum);
      for (int64_t b = 0; b < s.B; ++b)
        S[b].baddbmm_(heads(buf[b].narrow(0, 0, a.n), s.nh).transpose(1, 2),
                      heads(v[b].narrow(0, a.t0, a.n), s.nh));
    });
    S.div_(s.N);
    m = ksum.div_(s.N).to(v.scalar_type());
    const T* mp = m.data_ptr<T>();
    for_chunks<T>(s, row_table, col_table, [&](const Chunk<T>& a) {   // pass 2: out = (z R q) S
      run(RotateQ<T>{a, qk.data_ptr<T>(), mp, buf.data_ptr<T>(), nullptr, nullptr, nullptr});
      for (int64_t b = 0; b < s.B; ++b)
        bmm_into(heads(out[b].narrow(0, a.t0, a.n), s.nh), heads(buf[b].narrow(0, 0, a.n), s.nh), S[b]);
    });
  });
  return {out, S, m.view({s.B, s.nh, s.d})};
}

std::tuple<at::Tensor, at::Tensor> linear_attention_backward(
    const at::Tensor& grad, const c10::optional<at::Tensor>& grad_s, const c10::optional<at::Tensor>& grad_m,
    const at::Tensor& qk, const at::Tensor& v, const at::Tensor& S, const at::Tensor& m,
    const at::Tensor& row_table, const at::Tensor& col_table, int64_t num_heads, int64_t chunk_rows) {
  const char* op = "mmmila_cpu.linear_attention_backward";
  const Shape s = check(op, qk, v, row_table, col_table, num_heads, chunk_rows);
  TORCH_CHECK(grad.sizes() == v.sizes() && grad.scalar_type() == v.scalar_type() && grad.is_contiguous() &&
                  grad.device().is_cpu(),
              op, ": grad must be a contiguous CPU tensor like v, got ", grad.sizes());
  TORCH_CHECK(S.sizes() == at::IntArrayRef({s.B, s.nh, s.d, s.d}) && m.sizes() == at::IntArrayRef({s.B, s.nh, s.d}) &&
                  S.scalar_type() == v.scalar_type() && m.scalar_type() == v.scalar_type() && m.is_contiguous(),
              op, ": S (B, nh, d, d) and m (B, nh, d), contiguous, in v's dtype expected, got ", S.sizes(), " and ",
              m.sizes());
  for (const auto* t : {&grad_s, &grad_m})
    TORCH_CHECK(!t->has_value() || (*t)->scalar_type() == v.scalar_type(), op,
                ": the gradients of S and m must be in v's dtype");
  at::Tensor dqk = at::empty_like(qk), dv = at::empty_like(v);
  if (s.B == 0 || s.N == 0) return {dqk, dv};
  at::Tensor qr = at::empty({s.B, s.chunk_tokens(), s.C}, v.options()), gz = at::empty_like(qr);
  at::Tensor z = at::empty({s.B, s.chunk_tokens(), s.nh}, v.options());
  at::Tensor sums = at::empty({s.B, blocks(s.chunk_tokens()), s.C}, v.options());
  at::Tensor dS = at::zeros_like(S), dm = at::zeros({s.B, s.C}, v.options().dtype(at::kDouble));
  const at::Tensor St = S.transpose(-1, -2);
  AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "mmmila_cpu.linear_attention_backward", [&] {
    using T = scalar_t;
    const T* mp = m.data_ptr<T>();
    for_chunks<T>(s, row_table, col_table, [&](const Chunk<T>& a) {   // pass A: dS, dm and dL/dq
      run(RotateQ<T>{a, qk.data_ptr<T>(), mp, qr.data_ptr<T>(), grad.data_ptr<T>(), gz.data_ptr<T>(),
                     z.data_ptr<T>()});
      for (int64_t b = 0; b < s.B; ++b) {
        const at::Tensor gzb = heads(gz[b].narrow(0, 0, a.n), s.nh);
        bmm_into(heads(dqk[b].narrow(0, a.t0, a.n).narrow(1, 0, s.C), s.nh), gzb, St[b]);
        dS[b].baddbmm_(heads(qr[b].narrow(0, 0, a.n), s.nh).transpose(1, 2), gzb);
      }
      run(GradQ<T>{a, qk.data_ptr<T>(), mp, qr.data_ptr<T>(), z.data_ptr<T>(), dqk.data_ptr<T>(),
                   sums.data_ptr<T>()});
      add_sums(a, sums, dm);
    });
    if (grad_s.has_value()) dS.add_(*grad_s);
    if (grad_m.has_value()) dm.add_(grad_m->reshape({s.B, s.C}));
    dS.div_(s.N);
    const at::Tensor dmN = dm.div_(s.N).to(v.scalar_type());
    const at::Tensor dSt = dS.transpose(-1, -2);
    for_chunks<T>(s, row_table, col_table, [&](const Chunk<T>& a) {   // pass B: dL/dk and dL/dv
      run(RotateK<T>{a, qk.data_ptr<T>(), qr.data_ptr<T>(), nullptr});
      for (int64_t b = 0; b < s.B; ++b) {
        bmm_into(heads(dv[b].narrow(0, a.t0, a.n), s.nh), heads(qr[b].narrow(0, 0, a.n), s.nh), dS[b]);
        bmm_into(heads(dqk[b].narrow(0, a.t0, a.n).narrow(1, s.C, s.C), s.nh), heads(v[b].narrow(0, a.t0, a.n), s.nh),
                 dSt[b]);
      }
      run(GradK<T>{a, qk.data_ptr<T>(), dmN.data_ptr<T>(), dqk.data_ptr<T>()});
    });
  });
  return {dqk, dv};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(mmmila_cpu, m) {
  m.def("linear_attention(Tensor qk, Tensor v, Tensor row_table, Tensor col_table, int num_heads, "
        "int chunk_rows) -> (Tensor, Tensor, Tensor)");
  m.def("linear_attention_backward(Tensor grad, Tensor? grad_s, Tensor? grad_m, Tensor qk, Tensor v, Tensor S, "
        "Tensor m, Tensor row_table, Tensor col_table, int num_heads, int chunk_rows) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(mmmila_cpu, CPU, m) {
  m.impl("linear_attention", &linear_attention);
  m.impl("linear_attention_backward", &linear_attention_backward);
}

}  // namespace mmmila_cpu
