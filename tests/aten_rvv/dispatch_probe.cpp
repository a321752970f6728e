// ATen's run-time CPU capability choice with the aten-rvv patches (patch 0002), without a torch
// build: this program links the real DispatchStub.cpp object of a configured tree and libc10, and
// registers two stubs the way kernels do. `probe_stub` has a DEFAULT and an RVV kernel;
// `default_only_stub` has only a DEFAULT one (a kernel never compiled for RVV must fall back).
// Prints: capability=<0|1> probe=<default|rvv> default_only=<default>
#include <ATen/native/DispatchStub.h>

#include <cstdio>

#if !defined(HAVE_RVV_CPU_DEFINITION)
#error "compile with the flags of the configured tree (HAVE_RVV_CPU_DEFINITION)"
#endif

namespace at::native {
using probe_fn = const char* (*)();
DECLARE_DISPATCH(probe_fn, probe_stub);
DECLARE_DISPATCH(probe_fn, default_only_stub);
DEFINE_DISPATCH(probe_stub);
DEFINE_DISPATCH(default_only_stub);

static const char* kernel_default() { return "default"; }
static const char* kernel_rvv() { return "rvv"; }

REGISTER_ARCH_DISPATCH(probe_stub, DEFAULT, &kernel_default)
REGISTER_ARCH_DISPATCH(probe_stub, RVV, &kernel_rvv)
REGISTER_ARCH_DISPATCH(default_only_stub, DEFAULT, &kernel_default)
REGISTER_ARCH_DISPATCH(default_only_stub, RVV, nullptr)
}  // namespace at::native

int main() {
  using namespace at::native;
  std::printf("capability=%d probe=%s default_only=%s\n", static_cast<int>(get_cpu_capability()),
              probe_stub(c10::DeviceType::CPU), default_only_stub(c10::DeviceType::CPU));
  return 0;
}
