// Replaying recorded sequences of Triton kernel launches ("programs") from C++.
//
// A detector step on a fast GPU is bound by host time. The Triton paths of the CBAM and SE
// plugins (cbam_mmdet/ops/cbam_triton.py) spend most of their host time in Python: binding
// each launch's arguments, and, in training, a Python autograd Function whose backward
// runs Python again. For one input signature every launch's kernel, grid and integer
// arguments are fixed; only the tensors' addresses change. cbam_mmdet/ops/triton_programs.py
// records the launches of one call (kernel handle, grid, block, shared memory, and for every
// parameter either a slot of the call's tensor list or an immediate value) and hands them to
// a Program here. Later calls with that signature run:
//
//   infer(program, x, ...)  one call: the workspace and output allocated, every kernel
//                           launched with cuLaunchKernel;
//   train(state, x, ...)    an autograd Function in C++: its forward replays the forward
//                           program, its backward the backward program, with no Python.
//
// The CUDA driver is reached through dlopen("libcuda.so.1") (loaded by PyTorch already), so
// the extension builds without CUDA headers; on a machine without CUDA nothing here runs.
#include <torch/extension.h>

#include <dlfcn.h>

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace {

using CUresult = int;
using LaunchKernel = CUresult (*)(void* f, unsigned gx, unsigned gy, unsigned gz,
                                  unsigned bx, unsigned by, unsigned bz, unsigned smem,
                                  void* stream, void** params, void** extra);
using GetErrorString = CUresult (*)(CUresult, const char**);

struct Driver {
  LaunchKernel launch = nullptr;
  GetErrorString error_string = nullptr;
};

const Driver& driver() {
  static const Driver d = [] {
    Driver r;
    void* handle = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    TORCH_CHECK(handle != nullptr, "triton_programs: libcuda.so.1 could not be opened");
    r.launch = reinterpret_cast<LaunchKernel>(dlsym(handle, "cuLaunchKernel"));
    r.error_string = reinterpret_cast<GetErrorString>(dlsym(handle, "cuGetErrorString"));
    TORCH_CHECK(r.launch != nullptr, "triton_programs: cuLaunchKernel not found");
    return r;
  }();
  return d;
}

constexpr size_t kMaxParams = 96;

// One kernel launch: per parameter a slot of the call's tensors (>= 0) or -1 and an
// immediate value (its bytes, little-endian, in 8 bytes); Triton's two scratch pointers
// (global and profile) follow as null pointers.
struct Launch {
  void* function;
  unsigned grid[3];
  unsigned block;
  unsigned smem;
  std::vector<int64_t> slots;
  std::vector<uint64_t> values;
};

struct Program {
  std::vector<Launch> launches;
  int64_t num_slots = 0;

  void add(uint64_t function, std::vector<int64_t> grid, int64_t block, int64_t smem,
           std::vector<int64_t> slots, std::vector<uint64_t> values) {
    TORCH_CHECK(grid.size() == 3, "grid must have 3 values");
    TORCH_CHECK(slots.size() == values.size(), "slots and values must have one entry per parameter");
    TORCH_CHECK(slots.size() + 2 <= kMaxParams, "too many parameters");
    for (int64_t s : slots) num_slots = std::max(num_slots, s + 1);
    launches.push_back(Launch{reinterpret_cast<void*>(function),
                              {static_cast<unsigned>(grid[0]), static_cast<unsigned>(grid[1]),
                               static_cast<unsigned>(grid[2])},
                              static_cast<unsigned>(block), static_cast<unsigned>(smem),
                              std::move(slots), std::move(values)});
  }

  // Launches the first `count` launches on `stream` with the tensors `slots`.
  void run(const std::vector<at::Tensor>& slots, uint64_t stream, size_t count) const {
    TORCH_CHECK(static_cast<int64_t>(slots.size()) >= num_slots, "program needs ", num_slots,
                " tensors, got ", slots.size());
    const Driver& d = driver();
    std::array<uint64_t, kMaxParams> storage;
    std::array<void*, kMaxParams> params;
    for (size_t i = 0; i < count && i < launches.size(); ++i) {
      const Launch& l = launches[i];
      const size_t n = l.slots.size();
      for (size_t p = 0; p < n; ++p) {
        const int64_t s = l.slots[p];
        storage[p] = s >= 0 ? reinterpret_cast<uint64_t>(slots[s].data_ptr()) : l.values[p];
        params[p] = &storage[p];
      }
      storage[n] = storage[n + 1] = 0;
      params[n] = &storage[n];
      params[n + 1] = &storage[n + 1];
      const CUresult r = d.launch(l.function, l.grid[0], l.grid[1], l.grid[2], l.block, 1, 1,
                                  l.smem, reinterpret_cast<void*>(stream), params.data(),
                                  nullptr);
      if (r != 0) {
        const char* msg = "unknown";
        if (d.error_string != nullptr) d.error_string(r, &msg);
        TORCH_CHECK(false, "triton_programs: cuLaunchKernel failed (", r, ": ", msg, ")");
      }
    }
  }
};

// Inference: out = program(x) with a fresh float32 workspace; the slots are
// [x, workspace, out, *rest] (rest: the parameters, then the other tensors the program
// names). inplace: out is x.
at::Tensor infer(const Program& program, const at::Tensor& x, bool inplace, int64_t ws_size,
                 uint64_t stream, const std::vector<at::Tensor>& rest) {
  c10::DeviceGuard guard(x.device());
  std::vector<at::Tensor> slots;
  slots.reserve(3 + rest.size());
  slots.push_back(x);
  slots.push_back(at::empty({ws_size}, x.options().dtype(at::kFloat)));
  slots.push_back(inplace ? x : at::empty_like(x));
  slots.insert(slots.end(), rest.begin(), rest.end());
  program.run(slots, stream, program.launches.size());
  return slots[2];
}

// What a training call needs besides its tensors: the forward program (slots
// [x, workspace, out, *params, *rest]), the backward program (slots
// [grad_out, x, workspace, dx, *params, *rest], its last launch writing dx), the workspace
// size, where the parameters' gradients lie in it, and the regions that atomics
// accumulate into (zeroed by the forward; zeroed again for a second backward).
// The state is owned by its plan on the Python side (kept for the process's life), so the
// autograd graph may hold its address.
struct TrainState {
  Program forward;
  Program backward;
  int64_t ws_size = 0;
  std::vector<int64_t> grad_offsets;
  std::vector<std::vector<int64_t>> grad_shapes;
  std::vector<std::pair<int64_t, int64_t>> atomic_regions;
};

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct AttentionFunction : public torch::autograd::Function<AttentionFunction> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x,
                               at::TensorList params, int64_t state_address, int64_t stream,
                               std::vector<at::Tensor> rest) {
    const auto* state = reinterpret_cast<const TrainState*>(state_address);
    c10::DeviceGuard guard(x.device());
    at::Tensor ws = at::empty({state->ws_size}, x.options().dtype(at::kFloat));
    at::Tensor out = at::empty_like(x);
    std::vector<at::Tensor> slots;
    slots.reserve(3 + params.size() + rest.size());
    slots.push_back(x);
    slots.push_back(ws);
    slots.push_back(out);
    slots.insert(slots.end(), params.begin(), params.end());
    slots.insert(slots.end(), rest.begin(), rest.end());
    state->forward.run(slots, static_cast<uint64_t>(stream), state->forward.launches.size());
    std::vector<at::Tensor> saved{x};
    saved.insert(saved.end(), params.begin(), params.end());
    ctx->save_for_backward(saved);
    ctx->saved_data["ws"] = ws;
    ctx->saved_data["rest"] = rest;
    ctx->saved_data["state"] = state_address;
    ctx->saved_data["stream"] = stream;
    ctx->saved_data["done"] = false;
    return {out};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto* state = reinterpret_cast<const TrainState*>(ctx->saved_data["state"].toInt());
    // the forward's stream: autograd runs a node's backward on its forward's stream
    const uint64_t stream = static_cast<uint64_t>(ctx->saved_data["stream"].toInt());
    auto saved = ctx->get_saved_variables();
    const at::Tensor& x = saved[0];
    at::Tensor ws = ctx->saved_data["ws"].toTensor();
    c10::DeviceGuard guard(x.device());
    if (ctx->saved_data["done"].toBool()) {  // retain_graph: a second backward
      for (const auto& region : state->atomic_regions) ws.narrow(0, region.first, region.second).zero_();
    }
    ctx->saved_data["done"] = true;
    at::Tensor g = grad_outputs[0];
    // the backward program was recorded with a gradient laid out as x, 16-byte aligned
    if (g.strides() != x.strides() || g.scalar_type() != x.scalar_type() ||
        reinterpret_cast<uintptr_t>(g.data_ptr()) % 16 != 0) {
      at::Tensor copy = at::empty_strided(x.sizes(), x.strides(), x.options());
      copy.copy_(g);
      g = copy;
    }
    const bool needs_dx = ctx->needs_input_grad(0);
    at::Tensor dx = needs_dx ? at::empty_strided(x.sizes(), x.strides(), x.options()) : at::Tensor();
    auto rest = ctx->saved_data["rest"].toTensorVector();
    std::vector<at::Tensor> slots{g, x, ws, needs_dx ? dx : x};
    slots.insert(slots.end(), saved.begin() + 1, saved.end());
    slots.insert(slots.end(), rest.begin(), rest.end());
    const size_t count = state->backward.launches.size() - (needs_dx ? 0 : 1);
    state->backward.run(slots, stream, count);
    variable_list grads{dx};
    const size_t num_params = saved.size() - 1;
    for (size_t i = 0; i < num_params; ++i) {
      if (!ctx->needs_input_grad(1 + i)) {
        grads.emplace_back();
        continue;
      }
      const auto& shape = state->grad_shapes[i];
      int64_t numel = 1;
      for (int64_t s : shape) numel *= s;
      grads.push_back(ws.narrow(0, state->grad_offsets[i], numel).view(shape));
    }
    grads.emplace_back();  // state_address
    grads.emplace_back();  // stream
    grads.emplace_back();  // rest
    return grads;
  }
};

at::Tensor train(const TrainState& state, const at::Tensor& x, std::vector<at::Tensor> params,
                 int64_t stream, std::vector<at::Tensor> rest) {
  TORCH_CHECK(params.size() == state.grad_offsets.size(),
              "train: expected ", state.grad_offsets.size(), " parameters, got ", params.size());
  return AttentionFunction::apply(x, at::TensorList(params),
                                  reinterpret_cast<int64_t>(&state), stream, std::move(rest))[0];
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  namespace py = pybind11;
  py::class_<Program>(m, "Program")
      .def(py::init<>())
      .def("add", &Program::add, py::arg("function"), py::arg("grid"), py::arg("block"),
           py::arg("smem"), py::arg("slots"), py::arg("values"),
           "Append a launch: CUfunction handle, grid (3), threads per block, dynamic shared "
           "memory, per parameter a tensor slot (or -1) and an immediate value")
      .def_property_readonly("num_launches", [](const Program& p) { return p.launches.size(); })
      .def_readonly("num_slots", &Program::num_slots);
  py::class_<TrainState>(m, "TrainState")
      .def(py::init([](Program forward, Program backward, int64_t ws_size,
                       std::vector<int64_t> grad_offsets,
                       std::vector<std::vector<int64_t>> grad_shapes,
                       std::vector<std::pair<int64_t, int64_t>> atomic_regions) {
             auto s = std::make_unique<TrainState>();
             s->forward = std::move(forward);
             s->backward = std::move(backward);
             s->ws_size = ws_size;
             s->grad_offsets = std::move(grad_offsets);
             s->grad_shapes = std::move(grad_shapes);
             s->atomic_regions = std::move(atomic_regions);
             TORCH_CHECK(s->grad_offsets.size() == s->grad_shapes.size(),
                         "one gradient offset per gradient shape");
             return s;
           }),
           py::arg("forward"), py::arg("backward"), py::arg("ws_size"), py::arg("grad_offsets"),
           py::arg("grad_shapes"), py::arg("atomic_regions"));
  m.def("infer", &infer, "Replay an inference program: returns the output",
        py::arg("program"), py::arg("x"), py::arg("inplace"), py::arg("ws_size"),
        py::arg("stream"), py::arg("rest"));
  m.def("train", &train, "The C++ autograd Function: forward and backward programs",
        py::arg("state"), py::arg("x"), py::arg("params"), py::arg("stream"), py::arg("rest"));
}
