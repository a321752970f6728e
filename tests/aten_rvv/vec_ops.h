// The interface between the test driver (vec_rvv_test.cpp) and vec_ops.cpp, which is compiled
// three times: for ATen's DEFAULT capability (ops_default: the generic Vectorized<T> of
// vec_base.h, 256 bits), for the same generic code at the RVV width (ops_ref512: a copy of
// vec_base.h whose CPU_CAPABILITY_RVV width branch is taken, 512 bits, in its own DEFAULT512
// namespace; the scalar reference for everything) and for CPU_CAPABILITY_RVV (ops_rvv). The
// driver runs every operation through them and compares the results.
#pragma once

#include <cstdint>

namespace vec_test {

// How a result is compared with the DEFAULT one.
enum Check : int {
  kBits = 0,   // identical bit patterns (masks, bit operations, data movement)
  kValue = 1,  // identical values, or both NaN (any payload); -0.0 and +0.0 differ
  kSame = 2,   // equal as numbers (-0.0 == +0.0) or both NaN: order-dependent max/min reductions
  kUlp = 3,    // within `ulps` units in the last place, both NaN, or identical infinities
  kFma = 4,    // fused multiply-add: the correctly rounded std::fma (ulps: sign of c)
  kSum = 5,    // a reduction whose summation order differs
};

struct OpInfo {
  const char* name;
  int arity;        // inputs used: a, b, c
  Check check;
  double ulps;      // for kUlp
  bool abs_floor;   // kUlp: also accept |diff| <= ulps * epsilon (results near zero: sin(pi))
};

}  // namespace vec_test

#define VEC_TEST_DECLARE(ns)                                                                   \
  namespace ns {                                                                               \
  int op_count();                                                                              \
  const vec_test::OpInfo* op_info(int id);                                                     \
  int size_f32();                                                                              \
  int size_f64();                                                                              \
  /* runs op `id` on one vector of each input; returns the number of results in out */         \
  int run_f32(int id, const float* a, const float* b, const float* c, float* out);             \
  int run_f64(int id, const double* a, const double* b, const double* c, double* out);         \
  void load_count_f32(const void* p, int64_t count, float* out);                               \
  void load_count_f64(const void* p, int64_t count, double* out);                              \
  void store_count_f32(const float* in, void* p, int64_t count);                               \
  void store_count_f64(const double* in, void* p, int64_t count);                              \
  void convert_f32(const float* src, float* dst, int64_t n);                                   \
  void convert_f64(const double* src, double* dst, int64_t n);                                 \
  float reduce_sum_f32(const float* d, int64_t n);                                             \
  double reduce_sum_f64(const double* d, int64_t n);                                           \
  float reduce_max_f32(const float* d, int64_t n);                                             \
  double reduce_max_f64(const double* d, int64_t n);                                           \
  int vlen_bits();                                                                             \
  }

VEC_TEST_DECLARE(ops_default)
VEC_TEST_DECLARE(ops_ref512)
VEC_TEST_DECLARE(ops_rvv)
