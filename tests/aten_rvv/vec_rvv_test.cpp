// ATen's RVV Vectorized<float>/<double> against the generic (DEFAULT) Vectorized, on whatever
// VLEN the CPU (or QEMU's -cpu rv64,v=true,vlen=N) has.
//
// Every operation of vec_ops.cpp runs on the same inputs through the RVV capability and the
// generic vec_base.h code at the RVV width (ops_ref512); the lane-wise ones also through the real
// DEFAULT capability (8 floats, 4 doubles per vector) over the same arrays. Inputs: special
// values (+-0, +-Inf, NaN, denormals, halfway cases, limits) paired with each other, then random
// values of several magnitudes. Loads and stores with a count run against a guard page, so a
// read or write past `count` elements faults. Prints one line per failing check and a summary;
// exits 1 on any failure.
#include "vec_ops.h"

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

namespace {

const char* g_current = "startup";
long g_checks = 0;
long g_failures = 0;
int g_printed = 0;  // failure lines printed for the current operation

void on_fault(int sig) {
  char msg[256];
  int len = std::snprintf(msg, sizeof(msg),
                          "FAIL %s: signal %d (an access past the elements it may touch)\n",
                          g_current, sig);
  if (len > 0) {
    ssize_t ignored = write(2, msg, static_cast<size_t>(len));
    (void)ignored;
  }
  _exit(1);
}

uint64_t g_rng = 0x9E3779B97F4A7C15ull;
uint64_t next_u64() {  // splitmix64: deterministic across runs
  uint64_t z = (g_rng += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
double uniform(double lo, double hi) {
  return lo + (hi - lo) * static_cast<double>(next_u64() >> 11) * 0x1.0p-53;
}

template <typename T>
struct Api;
template <>
struct Api<float> {
  using Bits = uint32_t;
  static constexpr const char* name = "float";
  static int size() { return ops_ref512::size_f32(); }
  static int size_default() { return ops_default::size_f32(); }
  static int run_default(int id, const float* a, const float* b, const float* c, float* o) {
    return ops_default::run_f32(id, a, b, c, o);
  }
  static int run_ref(int id, const float* a, const float* b, const float* c, float* o) {
    return ops_ref512::run_f32(id, a, b, c, o);
  }
  static int run_rvv(int id, const float* a, const float* b, const float* c, float* o) {
    return ops_rvv::run_f32(id, a, b, c, o);
  }
  static constexpr auto load_ref = ops_ref512::load_count_f32;
  static constexpr auto load_rvv = ops_rvv::load_count_f32;
  static constexpr auto store_ref = ops_ref512::store_count_f32;
  static constexpr auto store_rvv = ops_rvv::store_count_f32;
  static constexpr auto convert_ref = ops_ref512::convert_f32;
  static constexpr auto convert_rvv = ops_rvv::convert_f32;
  static constexpr auto sum_ref = ops_ref512::reduce_sum_f32;
  static constexpr auto sum_rvv = ops_rvv::reduce_sum_f32;
  static constexpr auto max_ref = ops_ref512::reduce_max_f32;
  static constexpr auto max_rvv = ops_rvv::reduce_max_f32;
};
template <>
struct Api<double> {
  using Bits = uint64_t;
  static constexpr const char* name = "double";
  static int size() { return ops_ref512::size_f64(); }
  static int size_default() { return ops_default::size_f64(); }
  static int run_default(int id, const double* a, const double* b, const double* c, double* o) {
    return ops_default::run_f64(id, a, b, c, o);
  }
  static int run_ref(int id, const double* a, const double* b, const double* c, double* o) {
    return ops_ref512::run_f64(id, a, b, c, o);
  }
  static int run_rvv(int id, const double* a, const double* b, const double* c, double* o) {
    return ops_rvv::run_f64(id, a, b, c, o);
  }
  static constexpr auto load_ref = ops_ref512::load_count_f64;
  static constexpr auto load_rvv = ops_rvv::load_count_f64;
  static constexpr auto store_ref = ops_ref512::store_count_f64;
  static constexpr auto store_rvv = ops_rvv::store_count_f64;
  static constexpr auto convert_ref = ops_ref512::convert_f64;
  static constexpr auto convert_rvv = ops_rvv::convert_f64;
  static constexpr auto sum_ref = ops_ref512::reduce_sum_f64;
  static constexpr auto sum_rvv = ops_rvv::reduce_sum_f64;
  static constexpr auto max_ref = ops_ref512::reduce_max_f64;
  static constexpr auto max_rvv = ops_rvv::reduce_max_f64;
};

template <typename T>
typename Api<T>::Bits bits(T x) {
  typename Api<T>::Bits b;
  std::memcpy(&b, &x, sizeof(b));
  return b;
}

template <typename T>
double ulp_of(T x) {
  T ax = std::fabs(x);
  if (!std::isfinite(ax)) return 0;
  T up = std::nextafter(ax, std::numeric_limits<T>::infinity());
  return static_cast<double>(up - ax);
}

template <typename T>
bool agree(const vec_test::OpInfo& op, T got, T want, T a, T b, T c, T scale) {
  switch (op.check) {
    case vec_test::kBits:
      return bits(got) == bits(want);
    case vec_test::kValue:
      return (std::isnan(got) && std::isnan(want)) || bits(got) == bits(want);
    case vec_test::kSame:
      return (std::isnan(got) && std::isnan(want)) || got == want;
    case vec_test::kUlp: {
      if (std::isnan(got) || std::isnan(want)) return std::isnan(got) && std::isnan(want);
      if (std::isinf(got) || std::isinf(want)) return got == want;
      double diff = std::fabs(static_cast<double>(got) - static_cast<double>(want));
      double tol = op.ulps * ulp_of(want);
      if (op.abs_floor) tol = std::max(tol, op.ulps * static_cast<double>(std::numeric_limits<T>::epsilon()));
      return diff <= tol;
    }
    case vec_test::kFma: {
      // The generic fmadd rounds a*b and then the sum; RVV (like AVX2's _mm256_fmadd_ps)
      // rounds once. The reference is the C library's correctly rounded fma: the same value, or
      // both NaN. (ulps carries the sign of c: +1 fmadd, -1 fmsub.)
      (void)want;
      T fused = std::fma(a, b, static_cast<T>(op.ulps) * c);
      return (std::isnan(got) && std::isnan(fused)) || bits(got) == bits(fused);
    }
    case vec_test::kSum: {
      // NaN in: NaN out. Inf in (or a sum of magnitudes that overflows): another order may
      // meet Inf - Inf or overflow at another step, so only finiteness must agree.
      if (std::isnan(scale)) return std::isnan(got) && std::isnan(want);
      if (std::isinf(scale)) return std::isfinite(got) == std::isfinite(want);
      if (std::isnan(got) || std::isnan(want)) return std::isnan(got) && std::isnan(want);
      if (std::isinf(got) || std::isinf(want)) return got == want;
      // Another summation order: bounded by n * eps * sum(|x|) (scale).
      double tol = 16 * std::numeric_limits<T>::epsilon() * static_cast<double>(scale);
      return std::fabs(static_cast<double>(got) - static_cast<double>(want)) <= tol;
    }
  }
  return false;
}

template <typename T>
void report(const char* what, int row, int lane, T got, T want, const T* a, const T* b,
            const T* c, int n) {
  ++g_failures;
  if (++g_printed > 4) return;  // a few lines per operation; the count comes at the end
  std::printf("FAIL %s %s row=%d lane=%d got=%.17g (0x%" PRIx64 ") want=%.17g (0x%" PRIx64 ")",
              Api<T>::name, what, row, lane, static_cast<double>(got),
              static_cast<uint64_t>(bits(got)), static_cast<double>(want),
              static_cast<uint64_t>(bits(want)));
  if (a != nullptr) {
    std::printf(" a=[");
    for (int i = 0; i < n; ++i) std::printf("%s%.9g", i ? "," : "", static_cast<double>(a[i]));
    std::printf("] b=[");
    for (int i = 0; i < n; ++i) std::printf("%s%.9g", i ? "," : "", static_cast<double>(b[i]));
    std::printf("] c0=%.9g", static_cast<double>(c[0]));
  }
  std::printf("\n");
}

template <typename T>
std::vector<T> special_values() {
  using L = std::numeric_limits<T>;
  const T mant = T(1) / L::epsilon();  // 2^23 / 2^52: every larger value is an integer
  return {T(0), -T(0), T(1), T(-1), T(0.5), T(-0.5), T(1.5), T(-1.5), T(2.5), T(-2.5),
          T(3.5), T(0.1), T(-0.3), T(2), T(10), T(-7.25), T(100), T(-100),
          L::denorm_min(), -L::denorm_min(), L::min(), -L::min(), L::min() / T(3),
          L::max(), L::lowest(), L::infinity(), -L::infinity(), L::quiet_NaN(),
          -L::quiet_NaN(), mant, -mant, mant + T(1), mant - T(0.5), -(mant - T(0.5)),
          T(88.5), T(-104), T(710), T(-745), T(1e30), T(-1e30), T(3.14159265358979),
          T(0.7853981633974483), T(12345.678), T(1e-30), T(-0.9999), T(0.99999)};
}

template <typename T>
void random_row(T* r, int n) {
  for (int i = 0; i < n; ++i) {
    switch (next_u64() % 4) {
      case 0: r[i] = static_cast<T>(uniform(-10, 10)); break;
      case 1: r[i] = static_cast<T>(uniform(-1, 1)); break;
      case 2: {  // log-uniform magnitude, random sign
        double e = uniform(-30, 30);
        r[i] = static_cast<T>((next_u64() & 1 ? -1 : 1) * std::pow(10.0, e));
        break;
      }
      default: r[i] = static_cast<T>(uniform(0, 100)); break;
    }
  }
}

// Operations whose results depend on the lane count (mask bits, counts, positions, a broadcast
// of lane 0, whole-vector predicates and reductions). The others work lane by lane, so RVV's
// 16/8 lanes must also equal the real DEFAULT capability (8/4 lanes) run over the same arrays.
bool lane_wise(const std::string& op) {
  static const char* const kWholeVector[] = {
      "ctor_broadcast", "blend", "set", "arange", "interleave2", "deinterleave2", "flip",
      "gather", "element_access", "zero_mask", "has_inf_nan", "vec_reduce_sum",
      "vec_reduce_max"};
  for (const char* w : kWholeVector) {
    if (op == w) return false;
  }
  return true;
}
int g_lane_wise_ops = 0;

template <typename T>
void check_ops() {
  const int n = Api<T>::size();
  const int n_default = Api<T>::size_default();
  const std::vector<T> sp = special_values<T>();
  const int p = static_cast<int>(sp.size());
  // Rows: every (special, special) pair once, then random rows.
  std::vector<T> a, b, c;
  for (int k = 0; k < p * p; ++k) {
    a.push_back(sp[k / p]);
    b.push_back(sp[k % p]);
    c.push_back(sp[(k * 7 + 3) % p]);
  }
  while (a.size() % n) {
    a.push_back(T(1));
    b.push_back(T(2));
    c.push_back(T(-3));
  }
  const int random_rows = 192;
  for (int r = 0; r < random_rows; ++r) {
    std::vector<T> row(3 * n);
    random_row(row.data(), 3 * n);
    a.insert(a.end(), row.begin(), row.begin() + n);
    b.insert(b.end(), row.begin() + n, row.begin() + 2 * n);
    c.insert(c.end(), row.begin() + 2 * n, row.end());
  }
  const int rows = static_cast<int>(a.size()) / n;
  std::vector<T> got(1024), want(1024);  // set() writes (size() + 1) vectors
  std::vector<T> want_default(n);
  for (int id = 0; id < ops_ref512::op_count(); ++id) {
    const vec_test::OpInfo& op = *ops_ref512::op_info(id);
    std::string what = std::string(op.name);
    g_current = op.name;
    g_printed = 0;
    long before = g_failures;
    long checks_before = g_checks;
    const bool by_lane = lane_wise(op.name) && n % n_default == 0;
    g_lane_wise_ops += by_lane;
    const std::string what_default = what + " (DEFAULT capability)";
    for (int r = 0; r < rows; ++r) {
      const T* ra = &a[r * n];
      const T* rb = &b[r * n];
      const T* rc = &c[r * n];
      int k_ref = Api<T>::run_ref(id, ra, rb, rc, want.data());
      int k_rvv = Api<T>::run_rvv(id, ra, rb, rc, got.data());
      if (k_ref != k_rvv || k_ref <= 0) {
        std::printf("FAIL %s %s: %d results, want %d\n", Api<T>::name, op.name, k_rvv, k_ref);
        ++g_failures;
        break;
      }
      T scale = 0;
      for (int i = 0; i < n; ++i) scale += std::fabs(ra[i]);
      for (int i = 0; i < k_ref; ++i) {
        ++g_checks;
        const T ai = ra[i % n], bi = rb[i % n], ci = rc[i % n];
        if (!agree(op, got[i], want[i], ai, bi, ci, scale)) {
          report(what.c_str(), r, i, got[i], want[i], ra, rb, rc, n);
        }
      }
      if (!by_lane) continue;
      // The same arrays through the real DEFAULT capability, size_default() lanes at a time.
      if (k_rvv != n) {
        std::printf("FAIL %s %s: %d results, a lane-wise operation gives one vector (%d)\n",
                    Api<T>::name, op.name, k_rvv, n);
        ++g_failures;
        break;
      }
      for (int h = 0; h < n; h += n_default) {
        int k = Api<T>::run_default(id, ra + h, rb + h, rc + h, &want_default[h]);
        if (k != n_default) {
          std::printf("FAIL %s %s: DEFAULT gives %d results, want %d\n", Api<T>::name, op.name,
                      k, n_default);
          ++g_failures;
          break;
        }
      }
      for (int i = 0; i < n; ++i) {
        ++g_checks;
        if (!agree(op, got[i], want_default[i], ra[i], rb[i], rc[i], scale)) {
          report(what_default.c_str(), r, i, got[i], want_default[i], ra, rb, rc, n);
        }
      }
    }
    if (g_failures == before) {
      std::printf("ok %s %s\n", Api<T>::name, op.name);
    } else {
      std::printf("FAIL %s %s: %ld of %ld checks differ\n", Api<T>::name, op.name,
                  g_failures - before, g_checks - checks_before);
    }
  }
}

// Loads and stores of 0..n elements whose last element is the last one before a guard page.
template <typename T>
void check_memory() {
  const int n = Api<T>::size();
  const long page = sysconf(_SC_PAGESIZE);
  char* mem = static_cast<char*>(
      mmap(nullptr, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  if (mem == MAP_FAILED || mprotect(mem + page, page, PROT_NONE) != 0) {
    std::printf("FAIL cannot set up a guard page\n");
    ++g_failures;
    return;
  }
  char* end = mem + page;
  std::vector<T> src(n), got(n), want(n);
  random_row(src.data(), n);
  long before = g_failures;
  g_printed = 0;
  // loadu(ptr, count), aligned and at byte offsets that are not element aligned.
  for (int misalign = 0; misalign < static_cast<int>(sizeof(T)); ++misalign) {
    for (int count = 0; count <= n; ++count) {
      char* p = end - count * static_cast<long>(sizeof(T)) - misalign;
      std::memcpy(p, src.data(), count * sizeof(T));
      g_current = misalign ? "loadu(misaligned ptr, count)" : "loadu(ptr, count)";
      Api<T>::load_ref(p, count, want.data());
      Api<T>::load_rvv(p, count, got.data());
      for (int i = 0; i < n; ++i) {
        ++g_checks;
        if (bits(got[i]) != bits(want[i])) {
          report<T>(g_current, count, i, got[i], want[i], nullptr, nullptr, nullptr, n);
        }
      }
    }
  }
  // store(ptr, count): exactly count elements written, the ones before untouched.
  for (int misalign = 0; misalign < static_cast<int>(sizeof(T)); ++misalign) {
    for (int count = 0; count <= n; ++count) {
      const long bytes = n * static_cast<long>(sizeof(T)) + misalign;
      char* region = end - bytes;
      std::vector<char> ref(bytes), out(bytes);
      g_current = misalign ? "store(misaligned ptr, count)" : "store(ptr, count)";
      std::memset(region, 0x5A, bytes);
      Api<T>::store_ref(src.data(), end - count * sizeof(T) - misalign, count);
      std::memcpy(ref.data(), region, bytes);
      std::memset(region, 0x5A, bytes);
      Api<T>::store_rvv(src.data(), end - count * sizeof(T) - misalign, count);
      std::memcpy(out.data(), region, bytes);
      ++g_checks;
      if (ref != out) {
        ++g_failures;
        std::printf("FAIL %s %s count=%d misalign=%d: bytes differ\n", Api<T>::name, g_current,
                    count, misalign);
      }
    }
  }
  // convert(src, dst, len) with dst ending at the guard page.
  for (int len = 0; len <= 4 * n + 5; ++len) {
    std::vector<T> s(len);
    random_row(s.data(), len);
    T* dst = reinterpret_cast<T*>(end) - len;
    std::vector<T> w(len);
    g_current = "convert";
    Api<T>::convert_ref(s.data(), w.data(), len);
    Api<T>::convert_rvv(s.data(), dst, len);
    ++g_checks;
    if (len && std::memcmp(w.data(), dst, len * sizeof(T)) != 0) {
      ++g_failures;
      std::printf("FAIL %s convert len=%d\n", Api<T>::name, len);
    }
  }
  // reduce_all over arrays of every length up to a few vectors (tails included).
  for (int len = 1; len <= 4 * n + 5; ++len) {
    std::vector<T> s(len);
    random_row(s.data(), len);
    T* d = reinterpret_cast<T*>(end) - len;
    std::memcpy(d, s.data(), len * sizeof(T));
    T scale = 0;
    for (T v : s) scale += std::fabs(v);
    vec_test::OpInfo sum{"reduce_all(+)", 1, vec_test::kSum, 0, false};
    vec_test::OpInfo mx{"reduce_all(maximum)", 1, vec_test::kSame, 0, false};
    g_current = sum.name;
    T ws = Api<T>::sum_ref(d, len), gs = Api<T>::sum_rvv(d, len);
    g_current = mx.name;
    T wm = Api<T>::max_ref(d, len), gm = Api<T>::max_rvv(d, len);
    g_checks += 2;
    if (!agree(sum, gs, ws, T(0), T(0), T(0), scale)) report<T>(sum.name, len, 0, gs, ws, nullptr, nullptr, nullptr, n);
    if (!agree(mx, gm, wm, T(0), T(0), T(0), scale)) report<T>(mx.name, len, 0, gm, wm, nullptr, nullptr, nullptr, n);
  }
  if (g_failures == before) std::printf("ok %s loadu/store with count, convert, reduce_all\n", Api<T>::name);
  munmap(mem, 2 * page);
}

}  // namespace

int main() {
  struct sigaction sa;
  std::memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_fault;
  sigaction(SIGSEGV, &sa, nullptr);
  sigaction(SIGBUS, &sa, nullptr);
  sigaction(SIGILL, &sa, nullptr);
  if (ops_default::op_count() != ops_ref512::op_count()) {
    std::printf("FAIL the DEFAULT object has another operation table\n");
    return 1;
  }
  if (ops_ref512::size_f32() != ops_rvv::size_f32() ||
      ops_ref512::size_f64() != ops_rvv::size_f64()) {
    std::printf("FAIL size(): float %d vs %d, double %d vs %d\n", ops_rvv::size_f32(),
                ops_ref512::size_f32(), ops_rvv::size_f64(), ops_ref512::size_f64());
    return 1;
  }
  // 512-bit RVV vectors (VECTOR_WIDTH 64, like AVX512), compared with the generic code at the
  // same width (the reference object's vec_base.h, see tests/integration/test_aten_rvv.py).
  if (ops_rvv::size_f32() != 16 || ops_rvv::size_f64() != 8) {
    std::printf("FAIL size(): float %d, double %d; want 16 and 8\n", ops_rvv::size_f32(),
                ops_rvv::size_f64());
    return 1;
  }
  check_ops<float>();
  check_memory<float>();
  check_ops<double>();
  check_memory<double>();
  std::printf("aten-rvv-vec-test: default-lanes=%d/%d lane-wise-ops=%d\n", ops_default::size_f32(),
              ops_default::size_f64(), g_lane_wise_ops);
  std::printf("aten-rvv-vec-test: vlen=%d ops=%d checks=%ld failures=%ld\n", ops_rvv::vlen_bits(),
              ops_ref512::op_count(), g_checks, g_failures);
  return g_failures == 0 ? 0 : 1;
}
