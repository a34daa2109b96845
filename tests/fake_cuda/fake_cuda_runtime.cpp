// A stand-in CUDA runtime for a CPU-only torch build, for tests only.
//
// torch's FakeTensorMode can make tensors on a "cuda" device without any data, but a CPU
// build has no CUDA device guard and no CUDA hooks: moving a module with .to("cuda") and
// running autograd on such tensors ask both (for the current device and its streams) and
// fail. This library registers a guard that does nothing and hooks that report one device
// (whose "page-locked" host memory is ordinary memory), so those calls succeed; every
// kernel on a fake tensor remains a computation of shapes, dtypes and devices, and nothing
// runs anywhere.
//
// Load it with RTLD_GLOBAL before `import torch`: at::detail::getCUDAHooks() looks up the
// "CUDAHooks" registry once, on first use, and keeps what it found.
#include <ATen/detail/CUDAHooksInterface.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>

namespace {

constexpr c10::DeviceType kCuda = c10::DeviceType::CUDA;
const c10::Device kDevice0(kCuda, 0);

// The default stream of `device`, index 0 when the device names none.
c10::Stream default_stream(c10::Device device) {
  return c10::Stream(c10::Stream::DEFAULT, c10::Device(kCuda, device.has_index() ? device.index() : 0));
}

class NoOpCudaGuard final : public c10::impl::DeviceGuardImplInterface {
 public:
  c10::DeviceType type() const override { return kCuda; }
  c10::Device exchangeDevice(c10::Device) const override { return kDevice0; }
  c10::Device getDevice() const override { return kDevice0; }
  void setDevice(c10::Device) const override {}
  void uncheckedSetDevice(c10::Device) const noexcept override {}
  c10::Stream getStream(c10::Device device) const noexcept override { return default_stream(device); }
  c10::Stream getDefaultStream(c10::Device device) const override { return default_stream(device); }
  c10::Stream getNewStream(c10::Device device, int) const override { return default_stream(device); }
  c10::Stream exchangeStream(c10::Stream stream) const noexcept override { return default_stream(stream.device()); }
  c10::DeviceIndex deviceCount() const noexcept override { return 1; }
  // Events and synchronisation: there is no work in flight to wait for.
  void record(void**, const c10::Stream&, const c10::DeviceIndex, const c10::EventFlag) const override {}
  void block(void*, const c10::Stream&) const override {}
  bool queryEvent(void*) const override { return true; }
  void destroyEvent(void*, const c10::DeviceIndex) const noexcept override {}
  bool queryStream(const c10::Stream&) const override { return true; }
  void synchronizeStream(const c10::Stream&) const override {}
  void synchronizeEvent(void*) const override {}
  void synchronizeDevice(const c10::DeviceIndex) const override {}
};

class OneDeviceCudaHooks final : public at::CUDAHooksInterface {
 public:
  explicit OneDeviceCudaHooks(at::CUDAHooksArgs) {}
  bool hasCUDA() const override { return true; }
  bool isBuilt() const override { return true; }
  bool isAvailable() const override { return true; }
  bool hasPrimaryContext(c10::DeviceIndex) const override { return false; }
  void init() const override {}
  c10::DeviceIndex deviceCount() const override { return 1; }
  int getNumGPUs() const override { return 1; }
  c10::DeviceIndex current_device() const override { return 0; }
  c10::DeviceIndex getCurrentDevice() const override { return 0; }
  void setCurrentDevice(c10::DeviceIndex) const override {}
  c10::DeviceIndex exchangeDevice(c10::DeviceIndex) const override { return 0; }
  c10::DeviceIndex maybeExchangeDevice(c10::DeviceIndex) const override { return 0; }
  // pin_memory=True (the training loader's buffers for a GPU) allocates ordinary memory.
  c10::Allocator* getPinnedMemoryAllocator() const override { return c10::GetCPUAllocator(); }
};

}  // namespace

C10_REGISTER_GUARD_IMPL(CUDA, NoOpCudaGuard);

namespace at {
C10_REGISTER_TYPED_CLASS(CUDAHooksRegistry, "CUDAHooks", OneDeviceCudaHooks)
}  // namespace at
