// Every method of ATen's Vectorized<float> and Vectorized<double>, plus the free functions of
// vec_base.h/functional_base.h that a capability specialises, driven through one table.
//
// Compiled three times (see vec_ops.h): with -DVEC_TEST_NS=ops_default -DCPU_CAPABILITY=DEFAULT
// it runs the generic vec_base.h code; with -DVEC_TEST_NS=ops_ref512 -DCPU_CAPABILITY=DEFAULT512
// (and the reference-width vec_base.h first) the same code at the RVV width; with
// -DVEC_TEST_NS=ops_rvv -DCPU_CAPABILITY=RVV -DCPU_CAPABILITY_RVV -march=...v the RVV
// specialisations. The objects link into one program because ATen puts each capability in its
// own inline namespace, as in a real build.
#include "vec_ops.h"

#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <cmath>
#include <cstring>
#include <functional>

#if defined(CPU_CAPABILITY_RVV)
#include <riscv_vector.h>
#endif

#ifndef VEC_TEST_NS
#error "define VEC_TEST_NS"
#endif

using vec_test::kBits;
using vec_test::kFma;
using vec_test::kSame;
using vec_test::kSum;
using vec_test::kUlp;
using vec_test::kValue;

namespace {

template <typename T>
T square_plus_one(T x) {
  return x * x + T(1);
}
template <typename T>
T cube_ref(const T& x) {
  return x * x * x;
}

// name, arity, check, ulps, abs_floor, body. The body sees x, y, z (Vectorized<T> of a, b, c),
// a, b, c (the raw inputs), N and `out`, and returns the number of results written.
#define VEC_TEST_OPS(X)                                                                          \
  /* construction and data movement */                                                          \
  X(loadu_store, 1, kBits, 0, false, { return put(out, x); })                                   \
  X(ctor_broadcast, 1, kBits, 0, false, { return put(out, V(a[0])); })                          \
  X(ctor_values, 1, kBits, 0, false, { return put(out, from_values(a)); })                      \
  X(ctor_array, 1, kBits, 0, false, { return put(out, from_array(a)); })                        \
  X(blend, 2, kBits, 0, false, {                                                                \
    int k = put(out, V::template blend<0>(x, y));                                               \
    k += put(out + k, V::template blend<1>(x, y));                                              \
    k += put(out + k, V::template blend<5>(x, y));                                              \
    k += put(out + k, V::template blend<(1 << V::size()) - 2>(x, y));                           \
    return k + put(out + k, V::template blend<(1 << V::size()) - 1>(x, y));                     \
  })                                                                                            \
  X(blendv, 3, kBits, 0, false, { return put(out, V::blendv(x, y, z > V(T(0)))); })             \
  X(set, 2, kBits, 0, false, {                                                                  \
    int k = 0;                                                                                  \
    for (int count = 0; count <= N; ++count) k += put(out + k, V::set(x, y, count));            \
    return k;                                                                                   \
  })                                                                                            \
  X(arange, 2, kBits, 0, false, {                                                               \
    int k = put(out, V::arange(a[0], b[0]));                                                    \
    k += put(out + k, V::arange(a[0], 3));                                                      \
    return k + put(out + k, V::arange(a[0], int64_t(-2)));                                                 \
  })                                                                                            \
  X(interleave2, 2, kBits, 0, false, {                                                          \
    auto p = at::vec::interleave2(x, y);                                                        \
    int k = put(out, p.first);                                                                  \
    return k + put(out + k, p.second);                                                          \
  })                                                                                            \
  X(deinterleave2, 2, kBits, 0, false, {                                                        \
    auto p = at::vec::deinterleave2(x, y);                                                      \
    int k = put(out, p.first);                                                                  \
    return k + put(out + k, p.second);                                                          \
  })                                                                                            \
  X(flip, 1, kBits, 0, false, { return put(out, at::vec::flip(x)); })                           \
  X(gather, 1, kBits, 0, false, {                                                               \
    using I = at::vec::int_same_size_t<T>;                                                      \
    auto idx = at::vec::Vectorized<I>::arange(I(N - 1), I(-1));                                 \
    return put(out, at::vec::gather<sizeof(T)>(a, idx));                                        \
  })                                                                                            \
  X(element_access, 2, kBits, 0, false, {                                                       \
    const V cx = x;                                                                             \
    for (int i = 0; i < N; ++i) out[i] = cx[i];                                                 \
    V z = x;                                                                                    \
    z[N - 1] = y[0];                                                                            \
    return N + put(out + N, z);                                                                 \
  })                                                                                            \
  /* predicates and masks */                                                                    \
  X(zero_mask, 1, kBits, 0, false, { out[0] = T(x.zero_mask()); return 1; })                     \
  X(isnan, 1, kBits, 0, false, { return put(out, x.isnan()); })                                 \
  X(has_inf_nan, 1, kBits, 0, false, { out[0] = T(x.has_inf_nan() ? 1 : 0); return 1; })        \
  X(cmp_eq, 2, kBits, 0, false, { return put(out, x == y); })                                   \
  X(cmp_ne, 2, kBits, 0, false, { return put(out, x != y); })                                   \
  X(cmp_lt, 2, kBits, 0, false, { return put(out, x < y); })                                    \
  X(cmp_le, 2, kBits, 0, false, { return put(out, x <= y); })                                   \
  X(cmp_gt, 2, kBits, 0, false, { return put(out, x > y); })                                    \
  X(cmp_ge, 2, kBits, 0, false, { return put(out, x >= y); })                                   \
  X(eq, 2, kBits, 0, false, { return put(out, x.eq(y)); })                                      \
  X(ne, 2, kBits, 0, false, { return put(out, x.ne(y)); })                                      \
  X(lt, 2, kBits, 0, false, { return put(out, x.lt(y)); })                                      \
  X(le, 2, kBits, 0, false, { return put(out, x.le(y)); })                                      \
  X(gt, 2, kBits, 0, false, { return put(out, x.gt(y)); })                                      \
  X(ge, 2, kBits, 0, false, { return put(out, x.ge(y)); })                                      \
  X(bit_and, 2, kBits, 0, false, { return put(out, x & y); })                                   \
  X(bit_or, 2, kBits, 0, false, { return put(out, x | y); })                                    \
  X(bit_xor, 2, kBits, 0, false, { return put(out, x ^ y); })                                   \
  X(bit_not, 1, kBits, 0, false, { return put(out, ~x); })                                      \
  /* exact arithmetic */                                                                        \
  X(add, 2, kValue, 0, false, { return put(out, x + y); })                                      \
  X(sub, 2, kValue, 0, false, { return put(out, x - y); })                                      \
  X(mul, 2, kValue, 0, false, { return put(out, x * y); })                                      \
  X(div, 2, kValue, 0, false, { return put(out, x / y); })                                      \
  X(add_assign, 2, kValue, 0, false, { V r = x; r += y; return put(out, r); })                  \
  X(sub_assign, 2, kValue, 0, false, { V r = x; r -= y; return put(out, r); })                  \
  X(mul_assign, 2, kValue, 0, false, { V r = x; r *= y; return put(out, r); })                  \
  X(div_assign, 2, kValue, 0, false, { V r = x; r /= y; return put(out, r); })                  \
  X(fmadd, 3, kFma, 1, false, { return put(out, at::vec::fmadd(x, y, z)); })                    \
  X(fmsub, 3, kFma, -1, false, { return put(out, at::vec::fmsub(x, y, z)); })                    \
  X(maximum, 2, kValue, 0, false, { return put(out, at::vec::maximum(x, y)); })                 \
  X(minimum, 2, kValue, 0, false, { return put(out, at::vec::minimum(x, y)); })                 \
  X(clamp, 3, kValue, 0, false, {                                                               \
    return put(out, at::vec::clamp(x, at::vec::minimum(y, z), at::vec::maximum(y, z)));         \
  })                                                                                            \
  X(clamp_min, 2, kValue, 0, false, { return put(out, at::vec::clamp_min(x, y)); })             \
  X(clamp_max, 2, kValue, 0, false, { return put(out, at::vec::clamp_max(x, y)); })             \
  X(abs, 1, kBits, 0, false, { return put(out, x.abs()); })                                     \
  X(neg, 1, kBits, 0, false, { return put(out, x.neg()); })                                     \
  X(copysign, 2, kBits, 0, false, { return put(out, x.copysign(y)); })                          \
  X(angle, 1, kValue, 0, false, { return put(out, x.angle()); })                                \
  X(real, 1, kBits, 0, false, { return put(out, x.real()); })                                   \
  X(imag, 1, kBits, 0, false, { return put(out, x.imag()); })                                   \
  X(conj, 1, kBits, 0, false, { return put(out, x.conj()); })                                   \
  X(ceil, 1, kValue, 0, false, { return put(out, x.ceil()); })                                  \
  X(floor, 1, kValue, 0, false, { return put(out, x.floor()); })                                \
  X(round, 1, kValue, 0, false, { return put(out, x.round()); })                                \
  X(trunc, 1, kValue, 0, false, { return put(out, x.trunc()); })                                \
  X(frac, 1, kValue, 0, false, { return put(out, x.frac()); })                                  \
  X(sqrt, 1, kValue, 0, false, { return put(out, x.sqrt()); })                                  \
  X(reciprocal, 1, kValue, 0, false, { return put(out, x.reciprocal()); })                      \
  X(rsqrt, 1, kValue, 0, false, { return put(out, x.rsqrt()); })                                \
  X(fmod, 2, kValue, 0, false, { return put(out, x.fmod(y)); })                                 \
  X(nextafter, 2, kValue, 0, false, { return put(out, x.nextafter(y)); })                       \
  X(map, 1, kValue, 0, false, { return put(out, x.map(square_plus_one<T>)); })                  \
  X(map_ref, 1, kValue, 0, false, { return put(out, x.map(cube_ref<T>)); })                     \
  /* scalar in both capabilities (calc_* of ATen/native/Math.h) */                              \
  X(erfinv, 1, kValue, 0, false, { return put(out, x.erfinv()); })                              \
  X(i0, 1, kValue, 0, false, { return put(out, x.i0()); })                                      \
  X(i0e, 1, kValue, 0, false, { return put(out, x.i0e()); })                                    \
  X(digamma, 1, kValue, 0, false, { return put(out, x.digamma()); })                            \
  X(igamma, 2, kValue, 0, false, { return put(out, x.igamma(y)); })                             \
  X(igammac, 2, kValue, 0, false, { return put(out, x.igammac(y)); })                           \
  /* SLEEF on RVV against the C library */                                                      \
  X(acos, 1, kUlp, 4, false, { return put(out, x.acos()); })                                    \
  X(acosh, 1, kUlp, 4, false, { return put(out, x.acosh()); })                                  \
  X(asin, 1, kUlp, 4, false, { return put(out, x.asin()); })                                    \
  X(atan, 1, kUlp, 4, false, { return put(out, x.atan()); })                                    \
  X(atanh, 1, kUlp, 4, false, { return put(out, x.atanh()); })                                  \
  X(atan2, 2, kUlp, 4, false, { return put(out, x.atan2(y)); })                                 \
  X(erf, 1, kUlp, 4, false, { return put(out, x.erf()); })                                      \
  X(erfc, 1, kUlp, 4, false, { return put(out, x.erfc()); })                                    \
  X(exp, 1, kUlp, 4, false, { return put(out, x.exp()); })                                      \
  X(exp2, 1, kUlp, 4, false, { return put(out, x.exp2()); })                                    \
  X(expm1, 1, kUlp, 4, false, { return put(out, x.expm1()); })                                  \
  X(exp_u20, 1, kUlp, 20, false, { return put(out, x.exp_u20()); })                             \
  X(log, 1, kUlp, 4, false, { return put(out, x.log()); })                                      \
  X(log2, 1, kUlp, 4, false, { return put(out, x.log2()); })                                    \
  X(log10, 1, kUlp, 4, false, { return put(out, x.log10()); })                                  \
  X(log1p, 1, kUlp, 4, false, { return put(out, x.log1p()); })                                  \
  X(sin, 1, kUlp, 4, true, { return put(out, x.sin()); })                                       \
  X(cos, 1, kUlp, 4, true, { return put(out, x.cos()); })                                       \
  X(tan, 1, kUlp, 4, true, { return put(out, x.tan()); })                                       \
  X(sinh, 1, kUlp, 4, false, { return put(out, x.sinh()); })                                    \
  X(cosh, 1, kUlp, 4, false, { return put(out, x.cosh()); })                                    \
  X(tanh, 1, kUlp, 4, false, { return put(out, x.tanh()); })                                    \
  X(lgamma, 1, kUlp, 4, true, { return put(out, x.lgamma()); })                                 \
  X(hypot, 2, kUlp, 4, false, { return put(out, x.hypot(y)); })                                 \
  X(pow, 2, kUlp, 4, false, { return put(out, x.pow(y)); })                                     \
  /* reductions of one vector */                                                                \
  X(vec_reduce_sum, 1, kSum, 0, false, {                                                        \
    out[0] = at::vec::vec_reduce_all<T>([](V& p, V& q) { return p + q; }, x);                   \
    return 1;                                                                                   \
  })                                                                                            \
  X(vec_reduce_max, 1, kSame, 0, false, {                                                       \
    out[0] = at::vec::vec_reduce_all<T>([](V& p, V& q) { return at::vec::maximum(p, q); }, x);  \
    return 1;                                                                                   \
  })

template <typename V, typename T>
int put(T* out, const V& r) {
  r.store(out);
  return V::size();
}

template <typename V, typename T, size_t... I>
V from_values_impl(const T* a, std::index_sequence<I...>) {
  return V(a[I]...);
}
template <typename T>
at::vec::Vectorized<T> from_values(const T* a) {
  using V = at::vec::Vectorized<T>;
  return from_values_impl<V>(a, std::make_index_sequence<V::size()>());
}
template <typename T>
at::vec::Vectorized<T> from_array(const T* a) {
  using V = at::vec::Vectorized<T>;
  T arr[V::size()];
  std::memcpy(arr, a, sizeof(arr));
  return V(arr);
}

enum OpId : int {
#define VEC_TEST_ID(name, arity, check, ulps, floor, body) op_##name,
  VEC_TEST_OPS(VEC_TEST_ID)
#undef VEC_TEST_ID
  op_end
};

const vec_test::OpInfo kOps[] = {
#define VEC_TEST_INFO(name, arity, check, ulps, floor, body) {#name, arity, check, ulps, floor},
    VEC_TEST_OPS(VEC_TEST_INFO)
#undef VEC_TEST_INFO
};

template <typename T>
int run(int id, const T* a, const T* b, const T* c, T* out) {
  using V = at::vec::Vectorized<T>;
  constexpr int N = V::size();
  (void)N;
  const V x = V::loadu(a), y = V::loadu(b), z = V::loadu(c);
  (void)y;
  (void)z;
  switch (id) {
#define VEC_TEST_CASE(name, arity, check, ulps, floor, body) \
  case op_##name: body
    VEC_TEST_OPS(VEC_TEST_CASE)
#undef VEC_TEST_CASE
    default:
      return -1;
  }
}

}  // namespace

namespace VEC_TEST_NS {

int op_count() { return op_end; }
const vec_test::OpInfo* op_info(int id) { return &kOps[id]; }
int size_f32() { return at::vec::Vectorized<float>::size(); }
int size_f64() { return at::vec::Vectorized<double>::size(); }
int run_f32(int id, const float* a, const float* b, const float* c, float* out) {
  return run<float>(id, a, b, c, out);
}
int run_f64(int id, const double* a, const double* b, const double* c, double* out) {
  return run<double>(id, a, b, c, out);
}
void load_count_f32(const void* p, int64_t count, float* out) {
  at::vec::Vectorized<float>::loadu(p, count).store(out);
}
void load_count_f64(const void* p, int64_t count, double* out) {
  at::vec::Vectorized<double>::loadu(p, count).store(out);
}
void store_count_f32(const float* in, void* p, int64_t count) {
  at::vec::Vectorized<float>::loadu(in).store(p, count);
}
void store_count_f64(const double* in, void* p, int64_t count) {
  at::vec::Vectorized<double>::loadu(in).store(p, count);
}
void convert_f32(const float* src, float* dst, int64_t n) { at::vec::convert(src, dst, n); }
void convert_f64(const double* src, double* dst, int64_t n) { at::vec::convert(src, dst, n); }
template <typename T>
T reduce_sum(const T* d, int64_t n) {
  using V = at::vec::Vectorized<T>;
  return at::vec::reduce_all<T>([](V& p, V& q) { return p + q; }, d, n);
}
template <typename T>
T reduce_max(const T* d, int64_t n) {
  using V = at::vec::Vectorized<T>;
  return at::vec::reduce_all<T>([](V& p, V& q) { return at::vec::maximum(p, q); }, d, n);
}
float reduce_sum_f32(const float* d, int64_t n) { return reduce_sum(d, n); }
double reduce_sum_f64(const double* d, int64_t n) { return reduce_sum(d, n); }
float reduce_max_f32(const float* d, int64_t n) { return reduce_max(d, n); }
double reduce_max_f64(const double* d, int64_t n) { return reduce_max(d, n); }
int vlen_bits() {
#if defined(CPU_CAPABILITY_RVV)
  return static_cast<int>(__riscv_vlenb() * 8);
#else
  return 0;
#endif
}

}  // namespace VEC_TEST_NS
