// Self-test program of the toolchain image: threads, atomics, a sysroot library and the CPU the
// emulator presents. Prints one line "rvtorch-selftest ok ..." that the host side checks.
#include <sys/auxv.h>
#include <zstd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

namespace {

// Whether the (emulated) CPU reports its vector unit to the kernel ABI: RVV on riscv64 (HWCAP
// bit of letter 'V'), SVE on aarch64. The host checks it against targets.toml's `vector`.
bool cpu_has_vector() {
  const unsigned long hwcap = getauxval(AT_HWCAP);
#if defined(__riscv)
  return (hwcap & (1UL << ('V' - 'A'))) != 0;
#elif defined(__aarch64__)
  return (hwcap & (1UL << 22)) != 0;  // HWCAP_SVE
#else
  (void)hwcap;
  return false;
#endif
}

const char* arch_name() {
#if defined(__riscv) && __riscv_xlen == 64
  return "riscv64";
#elif defined(__aarch64__)
  return "aarch64";
#else
  return "unknown";
#endif
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 4;
  const long per_thread = argc > 2 ? std::atol(argv[2]) : 20000;
  if (threads <= 0 || per_thread <= 0) {
    std::fprintf(stderr, "usage: selftest [THREADS>0] [ITERATIONS>0]\n");
    return 2;
  }
  std::atomic<long> counter{0};
  std::atomic<int> started{0};
  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(threads));
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      started.fetch_add(1, std::memory_order_relaxed);
      for (long i = 0; i < per_thread; ++i) counter.fetch_add(1, std::memory_order_relaxed);
    });
  }
  for (auto& th : pool) th.join();
  const long expected = threads * per_thread;
  if (counter.load() != expected || started.load() != threads) {
    std::printf("rvtorch-selftest FAIL counter=%ld expected=%ld\n", counter.load(), expected);
    return 1;
  }
  std::printf("rvtorch-selftest ok arch=%s threads=%d counter=%ld vector=%d zstd=%u\n", arch_name(),
              threads, counter.load(), cpu_has_vector() ? 1 : 0, ZSTD_versionNumber());
  return 0;
}
