// oneDNN's convolution, input-gradient and kernel-gradient primitives as XLA FFI handlers
// (bnbench/kernels/onednn.py builds, loads and registers them, and documents the contract).
//
// Activations are channels last (N, *spatial, C), kernels (*spatial, C_in, C_out), as
// bnbench.models.convolution.patches takes them. Any leading axes before those (runs, under
// vmap's "broadcast_all") are looped over, one convolution each. A primitive is created once per
// shape, dtype and window and kept for the process. XLA calls a program's handlers from several
// threads at once (blocks training side by side), so every execution gets its own scratchpad: with
// oneDNN's default, a scratchpad shared by the process's primitives, two concurrent executions
// corrupted each other's sums or never returned (measured).
//
// The activations' memory is described as channels last, the kernel's as `any`: oneDNN then
// picks its blocked direct kernels and reorders the kernel into their layout on each call. With
// the kernel's plain layout oneDNN 3.2 runs both gradients with its GEMM-based kernels instead
// (DNNL_VERBOSE=1 names each call's kernel: x64:gemm:jit), several times slower on a ResNet-20
// layer (measured while choosing; docs/performance.md has the layers' speeds as built).

#include <cstdint>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;
using tag = dnnl::memory::format_tag;

namespace {

enum class Op { kForward, kInputGradient, kKernelGradient };

dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// The window of one convolution: the per-run shapes of its three operands and its strides and padding.
struct Window {
  memory::dims x, w, y, strides, pad_lo, pad_hi;
  memory::data_type type;
};

tag activation_tag(size_t spatial) { return spatial == 1 ? tag::nwc : spatial == 2 ? tag::nhwc : tag::ndhwc; }
tag kernel_tag(size_t spatial) { return spatial == 1 ? tag::wio : spatial == 2 ? tag::hwio : tag::dhwio; }

// oneDNN's logical order (N, C, *spatial) from channels-last dims (N, *spatial, C).
memory::dims channels_first(const memory::dims& nsc) {
  memory::dims out = {nsc.front(), nsc.back()};
  out.insert(out.end(), nsc.begin() + 1, nsc.end() - 1);
  return out;
}

// oneDNN's logical order (O, I, *spatial) from kernel dims (*spatial, I, O).
memory::dims kernel_dims(const memory::dims& sio) {
  memory::dims out = {sio.back(), sio[sio.size() - 2]};
  out.insert(out.end(), sio.begin(), sio.end() - 2);
  return out;
}

// The attributes of every primitive: scratchpads are the caller's (see above).
const dnnl::primitive_attr& user_scratchpad() {
  static dnnl::primitive_attr attr = [] {
    dnnl::primitive_attr a;
    a.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    return a;
  }();
  return attr;
}

// A primitive and the scratchpad each execution of it needs.
struct Step {
  dnnl::primitive primitive;
  memory::desc scratchpad;
};

// The primitives of one window: the operation and the reorders between the kernel's layout (user)
// and the one the operation picked (internal), each absent where the layouts are the same.
struct Primitives {
  Step op;
  memory::desc activations_in, kernel_internal, kernel_user, activations_out;
  std::unique_ptr<Step> to_internal, to_user;
};

// The kernel's memory as the operations are asked for it: any layout, oneDNN's choice (see above).
memory::desc any_kernel(const Window& win) { return memory::desc(kernel_dims(win.w), win.type, tag::any); }

dnnl::convolution_forward::primitive_desc forward_pd(const Window& win) {
  size_t spatial = win.strides.size();
  memory::desc x(channels_first(win.x), win.type, activation_tag(spatial));
  memory::desc y(channels_first(win.y), win.type, activation_tag(spatial));
  return {cpu_engine(), dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, x, any_kernel(win), y,
          win.strides, win.pad_lo, win.pad_hi, user_scratchpad()};
}

std::unique_ptr<Step> reorder_between(const memory::desc& from, const memory::desc& to) {
  if (from == to) return nullptr;
  dnnl::reorder::primitive_desc pd(cpu_engine(), from, cpu_engine(), to, user_scratchpad());
  return std::make_unique<Step>(Step{dnnl::reorder(pd), pd.scratchpad_desc()});
}

std::shared_ptr<Primitives> make_primitives(Op op, const Window& win) {
  size_t spatial = win.strides.size();
  auto out = std::make_shared<Primitives>();
  out->kernel_user = memory::desc(kernel_dims(win.w), win.type, kernel_tag(spatial));
  auto fwd = forward_pd(win);
  if (op == Op::kForward) {
    out->op = {dnnl::convolution_forward(fwd), fwd.scratchpad_desc()};
    out->activations_in = fwd.src_desc();
    out->kernel_internal = fwd.weights_desc();
    out->activations_out = fwd.dst_desc();
    out->to_internal = reorder_between(out->kernel_user, out->kernel_internal);
  } else if (op == Op::kInputGradient) {
    dnnl::convolution_backward_data::primitive_desc pd(
        cpu_engine(), dnnl::algorithm::convolution_direct, fwd.src_desc(), any_kernel(win), fwd.dst_desc(),
        win.strides, win.pad_lo, win.pad_hi, fwd, user_scratchpad());
    out->op = {dnnl::convolution_backward_data(pd), pd.scratchpad_desc()};
    out->activations_in = pd.diff_dst_desc();
    out->kernel_internal = pd.weights_desc();
    out->activations_out = pd.diff_src_desc();
    out->to_internal = reorder_between(out->kernel_user, out->kernel_internal);
  } else {
    dnnl::convolution_backward_weights::primitive_desc pd(
        cpu_engine(), dnnl::algorithm::convolution_direct, fwd.src_desc(), any_kernel(win), fwd.dst_desc(),
        win.strides, win.pad_lo, win.pad_hi, fwd, user_scratchpad());
    out->op = {dnnl::convolution_backward_weights(pd), pd.scratchpad_desc()};
    out->activations_in = pd.src_desc();
    out->activations_out = pd.diff_dst_desc();
    out->kernel_internal = pd.diff_weights_desc();
    out->to_user = reorder_between(out->kernel_internal, out->kernel_user);
  }
  return out;
}

std::shared_ptr<Primitives> primitives(Op op, const Window& win) {
  static std::mutex lock;
  static std::map<std::vector<int64_t>, std::shared_ptr<Primitives>> cache;
  std::vector<int64_t> key = {static_cast<int64_t>(op), static_cast<int64_t>(win.type)};
  for (const auto* part : {&win.x, &win.w, &win.y, &win.strides, &win.pad_lo, &win.pad_hi}) {
    key.push_back(static_cast<int64_t>(part->size()));
    key.insert(key.end(), part->begin(), part->end());
  }
  std::lock_guard<std::mutex> guard(lock);
  auto found = cache.find(key);
  if (found != cache.end()) return found->second;
  return cache[key] = make_primitives(op, win);
}

// Executes `step` with `args` and a scratchpad of its own.
void run(const Step& step, dnnl::stream& stream, std::unordered_map<int, memory> args) {
  args.insert({DNNL_ARG_SCRATCHPAD, memory(step.scratchpad, cpu_engine())});
  step.primitive.execute(stream, args);
}

// Runs one convolution by the primitives `p` of `op`: the two operands' data and the result's.
void execute(Op op, const Primitives& p, dnnl::stream& stream, void* first, void* second, void* result) {
  auto& engine = cpu_engine();
  if (op == Op::kKernelGradient) {  // first: x, second: dy, result: dw
    memory x(p.activations_in, engine, first), dy(p.activations_out, engine, second);
    memory dw_user(p.kernel_user, engine, result);
    memory dw = p.to_user ? memory(p.kernel_internal, engine) : dw_user;
    run(p.op, stream, {{DNNL_ARG_SRC, x}, {DNNL_ARG_DIFF_DST, dy}, {DNNL_ARG_DIFF_WEIGHTS, dw}});
    if (p.to_user) run(*p.to_user, stream, {{DNNL_ARG_FROM, dw}, {DNNL_ARG_TO, dw_user}});
  } else {  // first: x (or dy), second: w, result: y (or dx)
    memory in(p.activations_in, engine, first), out(p.activations_out, engine, result);
    memory w_user(p.kernel_user, engine, second);
    memory w = p.to_internal ? memory(p.kernel_internal, engine) : w_user;
    if (p.to_internal) run(*p.to_internal, stream, {{DNNL_ARG_FROM, w_user}, {DNNL_ARG_TO, w}});
    if (op == Op::kForward) {
      run(p.op, stream, {{DNNL_ARG_SRC, in}, {DNNL_ARG_WEIGHTS, w}, {DNNL_ARG_DST, out}});
    } else {
      run(p.op, stream, {{DNNL_ARG_DIFF_DST, in}, {DNNL_ARG_WEIGHTS, w}, {DNNL_ARG_DIFF_SRC, out}});
    }
  }
  stream.wait();
}

ffi::Error data_type(ffi::DataType type, memory::data_type* out) {
  if (type == ffi::DataType::F32) *out = memory::data_type::f32;
  else if (type == ffi::DataType::BF16) *out = memory::data_type::bf16;
  else return ffi::Error::InvalidArgument("bnbench oneDNN convolution: float32 or bfloat16 only");
  return ffi::Error::Success();
}

int64_t elements(const memory::dims& dims) {
  int64_t n = 1;
  for (auto d : dims) n *= d;
  return n;
}

// The trailing `rank` dims of `buffer` (one run's operand) and the product of the leading ones (runs).
memory::dims trailing(ffi::AnyBuffer buffer, size_t rank, int64_t* runs) {
  auto dims = buffer.dimensions();
  size_t lead = dims.size() - rank;
  *runs = 1;
  for (size_t i = 0; i < lead; ++i) *runs *= dims[i];
  return memory::dims(dims.begin() + lead, dims.end());
}

// One handler for the three operations: operands (a, b) and result r are (x, w, y) for the
// forward, (dy, w, dx) for the input gradient and (x, dy, dw) for the kernel gradient.
ffi::Error convolve(Op op, ffi::AnyBuffer a, ffi::AnyBuffer b, ffi::Result<ffi::AnyBuffer> r,
                    ffi::Span<const int64_t> strides, ffi::Span<const int64_t> pad_lo,
                    ffi::Span<const int64_t> pad_hi) {
  size_t rank = strides.size() + 2;
  if (a.dimensions().size() < rank || b.dimensions().size() < rank || r->dimensions().size() < rank) {
    return ffi::Error::InvalidArgument("bnbench oneDNN convolution: operands of too low a rank");
  }
  if (strides.size() < 1 || strides.size() > 3) {
    return ffi::Error::InvalidArgument("bnbench oneDNN convolution: 1 to 3 spatial axes only");
  }
  if (b.element_type() != a.element_type() || r->element_type() != a.element_type()) {
    return ffi::Error::InvalidArgument("bnbench oneDNN convolution: operands of different dtypes");
  }
  Window win;
  if (auto error = data_type(a.element_type(), &win.type); !error.success()) return error;
  int64_t runs = 1, runs_b = 1, runs_r = 1;
  memory::dims da = trailing(a, rank, &runs), db = trailing(b, rank, &runs_b), dr = trailing(*r, rank, &runs_r);
  if (runs != runs_b || runs != runs_r) {
    return ffi::Error::InvalidArgument("bnbench oneDNN convolution: operands with different leading axes");
  }
  win.strides.assign(strides.begin(), strides.end());
  win.pad_lo.assign(pad_lo.begin(), pad_lo.end());
  win.pad_hi.assign(pad_hi.begin(), pad_hi.end());
  if (op == Op::kForward) { win.x = da; win.w = db; win.y = dr; }
  else if (op == Op::kInputGradient) { win.y = da; win.w = db; win.x = dr; }
  else { win.x = da; win.y = db; win.w = dr; }
  size_t bytes = a.element_type() == ffi::DataType::F32 ? 4 : 2;
  size_t step_a = elements(da) * bytes, step_b = elements(db) * bytes, step_r = elements(dr) * bytes;
  auto* pa = static_cast<char*>(a.untyped_data());
  auto* pb = static_cast<char*>(b.untyped_data());
  auto* pr = static_cast<char*>(r->untyped_data());
  try {
    auto p = primitives(op, win);
    dnnl::stream stream(cpu_engine());
    for (int64_t i = 0; i < runs; ++i) execute(op, *p, stream, pa + i * step_a, pb + i * step_b, pr + i * step_r);
  } catch (const std::exception& e) {  // oneDNN's errors, and allocations that fail: none may cross into XLA
    return ffi::Error::Internal(std::string("bnbench oneDNN convolution: ") + e.what());
  }
  return ffi::Error::Success();
}

ffi::Error forward(ffi::AnyBuffer x, ffi::AnyBuffer w, ffi::Result<ffi::AnyBuffer> y, ffi::Span<const int64_t> s,
                   ffi::Span<const int64_t> lo, ffi::Span<const int64_t> hi) {
  return convolve(Op::kForward, x, w, y, s, lo, hi);
}

ffi::Error input_gradient(ffi::AnyBuffer dy, ffi::AnyBuffer w, ffi::Result<ffi::AnyBuffer> dx,
                          ffi::Span<const int64_t> s, ffi::Span<const int64_t> lo, ffi::Span<const int64_t> hi) {
  return convolve(Op::kInputGradient, dy, w, dx, s, lo, hi);
}

ffi::Error kernel_gradient(ffi::AnyBuffer x, ffi::AnyBuffer dy, ffi::Result<ffi::AnyBuffer> dw,
                           ffi::Span<const int64_t> s, ffi::Span<const int64_t> lo, ffi::Span<const int64_t> hi) {
  return convolve(Op::kKernelGradient, x, dy, dw, s, lo, hi);
}

auto binding() {
  return ffi::Ffi::Bind()
      .Arg<ffi::AnyBuffer>()
      .Arg<ffi::AnyBuffer>()
      .Ret<ffi::AnyBuffer>()
      .Attr<ffi::Span<const int64_t>>("strides")
      .Attr<ffi::Span<const int64_t>>("pad_lo")
      .Attr<ffi::Span<const int64_t>>("pad_hi");
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(BnbenchOnednnForward, forward, binding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(BnbenchOnednnInputGradient, input_gradient, binding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(BnbenchOnednnKernelGradient, kernel_gradient, binding());

// Whether oneDNN implements the three operations for `type` (0: float32, 1: bfloat16) on this CPU,
// tried on a small 2-D window: bfloat16 needs an instruction set this CPU may lack.
extern "C" int bnbench_onednn_supports(int type) {
  Window win{{2, 5, 5, 4}, {3, 3, 4, 8}, {2, 5, 5, 8}, {1, 1}, {1, 1}, {1, 1},
             type == 0 ? memory::data_type::f32 : memory::data_type::bf16};
  try {
    for (Op op : {Op::kForward, Op::kInputGradient, Op::kKernelGradient}) make_primitives(op, win);
  } catch (const std::exception&) {
    return 0;
  }
  return 1;
}

// oneDNN's version and the instruction set its kernels run with, as "3.2.0 avx512_core_bf16".
extern "C" const char* bnbench_onednn_describe() {
  static std::string text = [] {
    const dnnl_version_t* v = dnnl_version();
    const std::map<dnnl_cpu_isa_t, const char*> names = {
        {dnnl_cpu_isa_sse41, "sse41"}, {dnnl_cpu_isa_avx, "avx"}, {dnnl_cpu_isa_avx2, "avx2"},
        {dnnl_cpu_isa_avx2_vnni, "avx2_vnni"}, {dnnl_cpu_isa_avx2_vnni_2, "avx2_vnni_2"},
        {dnnl_cpu_isa_avx512_core, "avx512_core"}, {dnnl_cpu_isa_avx512_core_vnni, "avx512_core_vnni"},
        {dnnl_cpu_isa_avx512_core_bf16, "avx512_core_bf16"}, {dnnl_cpu_isa_avx512_core_fp16, "avx512_core_fp16"},
        {dnnl_cpu_isa_avx512_core_amx, "avx512_core_amx"}, {dnnl_cpu_isa_avx512_core_amx_fp16, "avx512_core_amx_fp16"}};
    auto found = names.find(dnnl_get_effective_cpu_isa());
    return std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch) + " " +
           (found == names.end() ? "unknown" : found->second);
  }();
  return text.c_str();
}
