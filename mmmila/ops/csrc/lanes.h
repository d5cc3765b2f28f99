// The vector toolkit of mmmila's compiled CPU kernels (cpu_kernels.cpp, attention.cpp): 64-byte GCC
// vector types (16 floats or 8 doubles), unaligned loads and stores, and exp on vectors. Each pass of
// the kernels is compiled three times (MMMILA_CLONES: AVX-512, AVX2 with FMA, the x86-64 baseline),
// and the library picks one when it loads.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace mmmila_cpu {
namespace {

#define MMMILA_INLINE inline __attribute__((always_inline))
#define MMMILA_INLINE_LAMBDA __attribute__((always_inline))
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define MMMILA_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else   // other compilers and CPUs: the build's own instruction set
#define MMMILA_CLONES
#endif

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
// error below 3e-8, under float32's half ulp). Arguments above 88 give exp(88) (float's largest power
// of e short of infinity), below -87 (where float's normal numbers end) 0.
MMMILA_INLINE Lanes<float>::V exp_lanes(Lanes<float>::V x) {
  typedef Lanes<float>::V V;
  typedef Lanes<float>::I I;
  const V hi = splat<V>(88.0), lo = splat<V>(-87.0);
  const V arg = x;
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
  const V zero{};
  return arg < lo ? zero : p * scale;
}
// exp on double vectors and on scalars: the C library's, lane by lane (float64 is the tests' dtype).
MMMILA_INLINE Lanes<double>::V exp_lanes(Lanes<double>::V x) {
  for (int l = 0; l < Lanes<double>::n; ++l) x[l] = std::exp(x[l]);
  return x;
}
MMMILA_INLINE float exp_lanes(float x) { return std::exp(x); }
MMMILA_INLINE double exp_lanes(double x) { return std::exp(x); }

}  // namespace
}  // namespace mmmila_cpu
