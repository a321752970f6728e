// The RVV loops of ATen's native/cpu/rvv/BoolLoops.h (aten-rvv patch 0004) against
// plain scalar loops: comparisons with a bool output (eq, ne, lt, le, gt, ge on float and
// double) and where(cond, self, other) on 4- and 8-byte elements, for every n from 0 to
// 300, every mix of contiguous and broadcast (stride 0) operands, on special values
// (NaN, +-Inf, +-0, denormals, limits) paired with each other and with random values.
// Outputs carry guard bytes after n that must stay untouched; stride patterns and
// pointers the loops do not handle must be refused without a write. Built with
// -march=rv64gcv -DCPU_CAPABILITY_RVV and run under qemu-riscv64 at several VLENs
// (tests/integration/test_aten_rvv_bool.py). Prints one "ok"/"FAIL" line per
// (type, operation) and a summary; exits 1 on any difference.

#include <ATen/native/cpu/rvv/BoolLoops.h>

#include <riscv_vector.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <vector>

using at::native::rvv::CmpOp;

namespace {

constexpr int64_t kMaxN = 300;
constexpr int64_t kGuard = 64;
constexpr unsigned char kSentinel = 0xA5;

struct Tally {
  long checks = 0;
  long failures = 0;
};
std::map<std::string, Tally> tallies;  // ordered: stable output

void check(const std::string& what, bool ok) {
  Tally& t = tallies[what];
  ++t.checks;
  if (!ok) ++t.failures;
}

template <typename T>
std::vector<T> specials() {
  using L = std::numeric_limits<T>;
  return {L::quiet_NaN(), -L::quiet_NaN(), L::infinity(), -L::infinity(), T(0), -T(0),
          L::denorm_min(), -L::denorm_min(), L::min(), -L::min(), L::max(), L::lowest(),
          T(1), T(-1), T(1.5), L::epsilon()};
}

// a[i] and b[i]: every special value meets every other one (16 x 16 = 256 pairs),
// the rest random, with some equal pairs.
template <typename T>
void fill(std::vector<T>& a, std::vector<T>& b, std::mt19937_64& rng) {
  const std::vector<T> s = specials<T>();
  const size_t k = s.size();
  std::uniform_real_distribution<T> u(T(-4), T(4));
  for (size_t i = 0; i < a.size(); ++i) {
    if (i < k * k) {
      a[i] = s[i % k];
      b[i] = s[i / k];
    } else {
      a[i] = u(rng);
      b[i] = (i % 3 == 0) ? a[i] : u(rng);
    }
  }
}

template <typename T>
bool ref_cmp(CmpOp op, T a, T b) {
  switch (op) {
    case CmpOp::EQ: return a == b;
    case CmpOp::NE: return a != b;
    case CmpOp::LT: return a < b;
    case CmpOp::LE: return a <= b;
    case CmpOp::GT: return a > b;
    case CmpOp::GE: return a >= b;
  }
  return false;
}

const char* op_name(CmpOp op) {
  static const char* names[] = {"eq", "ne", "lt", "le", "gt", "ge"};
  return names[static_cast<int>(op)];
}

template <typename T>
void test_compare(const char* tname, std::mt19937_64& rng) {
  std::vector<T> a(kMaxN + kGuard), b(kMaxN + kGuard);
  fill(a, b, rng);
  const std::vector<T> s = specials<T>();
  std::vector<unsigned char> out(kMaxN + kGuard);
  const int64_t es = sizeof(T);
  for (CmpOp op : {CmpOp::EQ, CmpOp::NE, CmpOp::LT, CmpOp::LE, CmpOp::GT, CmpOp::GE}) {
    const std::string what = std::string(tname) + " " + op_name(op);
    for (int64_t n = 0; n <= kMaxN; ++n) {
      for (int pattern = 0; pattern < 4; ++pattern) {
        const bool as = pattern & 2, bs = pattern & 1;
        // A broadcast operand is one special value (a different one for each n).
        T sa = s[n % s.size()], sb = s[(n / s.size() + n) % s.size()];
        const T* pa = as ? &sa : a.data();
        const T* pb = bs ? &sb : b.data();
        std::memset(out.data(), kSentinel, out.size());
        char* data[3] = {reinterpret_cast<char*>(out.data()),
                         const_cast<char*>(reinterpret_cast<const char*>(pa)),
                         const_cast<char*>(reinterpret_cast<const char*>(pb))};
        const int64_t strides[3] = {1, as ? 0 : es, bs ? 0 : es};
        check(what + " handled", at::native::rvv::compare_loop<T>(op, data, strides, n));
        for (int64_t i = 0; i < n; ++i) {
          const bool want = ref_cmp(op, pa[as ? 0 : i], pb[bs ? 0 : i]);
          check(what, out[i] == (want ? 1 : 0));
        }
        for (int64_t i = n; i < n + kGuard; ++i) check(what + " guard", out[i] == kSentinel);
      }
    }
    // Patterns the loop must leave to the scalar path, untouched.
    const int64_t refused[][3] = {{2, es, es}, {1, 2 * es, es}, {1, es, -es}, {0, es, es},
                                  {1, es, 3}};
    for (const auto& st : refused) {
      std::memset(out.data(), kSentinel, out.size());
      char* data[3] = {reinterpret_cast<char*>(out.data()), reinterpret_cast<char*>(a.data()),
                       reinterpret_cast<char*>(b.data())};
      check(what + " refuse", !at::native::rvv::compare_loop<T>(op, data, st, 100));
      check(what + " refuse", out[0] == kSentinel && out[99] == kSentinel);
    }
    // A pointer that is not element aligned.
    std::vector<unsigned char> raw((kMaxN + 1) * sizeof(T));
    const int64_t st[3] = {1, es, es};
    char* data[3] = {reinterpret_cast<char*>(out.data()),
                     reinterpret_cast<char*>(raw.data() + 1), reinterpret_cast<char*>(b.data())};
    check(what + " refuse", !at::native::rvv::compare_loop<T>(op, data, st, 100));
  }
}

template <typename T>
T random_bits(std::mt19937_64& rng) {
  uint64_t r = rng();
  T v;
  std::memcpy(&v, &r, sizeof(T));
  return v;
}

// where() on the bits of 4- or 8-byte elements: the values are random bit patterns (NaN
// payloads included) and must come through bit for bit.
template <typename T>
void test_where(const char* tname, std::mt19937_64& rng) {
  constexpr size_t Size = sizeof(T);
  std::vector<T> x(kMaxN + kGuard), y(kMaxN + kGuard), out(kMaxN + kGuard);
  std::vector<unsigned char> cond(kMaxN + kGuard);
  for (auto& v : x) v = random_bits<T>(rng);
  for (auto& v : y) v = random_bits<T>(rng);
  // Mostly bool bytes; also other non-zero bytes, which count as true.
  const unsigned char bytes[] = {0, 1, 0, 1, 1, 0, 2, 255};
  for (auto& c : cond) c = bytes[rng() % 8];
  T sentinel;
  std::memset(&sentinel, kSentinel, sizeof(T));
  const int64_t es = Size;
  const std::string what = std::string(tname) + " where";
  for (int64_t n = 0; n <= kMaxN; ++n) {
    for (int pattern = 0; pattern < 8; ++pattern) {
      const bool cs = pattern & 4, xs = pattern & 2, ys = pattern & 1;
      unsigned char sc = bytes[n % 8];
      T sx = x[(n * 7) % kMaxN], sy = y[(n * 11) % kMaxN];
      const unsigned char* pc = cs ? &sc : cond.data();
      const T* px = xs ? &sx : x.data();
      const T* py = ys ? &sy : y.data();
      std::memset(out.data(), kSentinel, out.size() * sizeof(T));
      char* data[4] = {reinterpret_cast<char*>(out.data()),
                       const_cast<char*>(reinterpret_cast<const char*>(pc)),
                       const_cast<char*>(reinterpret_cast<const char*>(px)),
                       const_cast<char*>(reinterpret_cast<const char*>(py))};
      const int64_t strides[4] = {es, cs ? 0 : 1, xs ? 0 : es, ys ? 0 : es};
      check(what + " handled", at::native::rvv::where_loop<Size>(data, strides, n));
      for (int64_t i = 0; i < n; ++i) {
        const T want = pc[cs ? 0 : i] != 0 ? px[xs ? 0 : i] : py[ys ? 0 : i];
        check(what, std::memcmp(&out[i], &want, Size) == 0);
      }
      for (int64_t i = n; i < n + kGuard; ++i)
        check(what + " guard", std::memcmp(&out[i], &sentinel, Size) == 0);
    }
  }
  const int64_t refused[][4] = {{2 * es, 1, es, es}, {es, 2, es, es}, {es, 1, -es, es},
                                {0, 1, es, es},      {es, 1, es, 1}};
  for (const auto& st : refused) {
    std::memset(out.data(), kSentinel, out.size() * sizeof(T));
    char* data[4] = {reinterpret_cast<char*>(out.data()), reinterpret_cast<char*>(cond.data()),
                     reinterpret_cast<char*>(x.data()), reinterpret_cast<char*>(y.data())};
    check(what + " refuse", !at::native::rvv::where_loop<Size>(data, st, 100));
    check(what + " refuse", std::memcmp(&out[0], &sentinel, Size) == 0 &&
                                std::memcmp(&out[99], &sentinel, Size) == 0);
  }
}

}  // namespace

int main() {
  std::mt19937_64 rng(20261205);
  test_compare<float>("float", rng);
  test_compare<double>("double", rng);
  test_where<float>("float", rng);
  test_where<int32_t>("int32", rng);
  test_where<double>("double", rng);
  test_where<int64_t>("int64", rng);
  long checks = 0, failures = 0;
  for (const auto& [what, t] : tallies) {
    checks += t.checks;
    failures += t.failures;
    if (t.failures)
      std::printf("FAIL %s: %ld of %ld checks differ\n", what.c_str(), t.failures, t.checks);
    else
      std::printf("ok %s\n", what.c_str());
  }
  const unsigned vlen = static_cast<unsigned>(__riscv_vsetvlmax_e8m1()) * 8;
  std::printf("bool-loops-test: vlen=%u checks=%ld failures=%ld\n", vlen, checks, failures);
  return failures ? 1 : 0;
}
