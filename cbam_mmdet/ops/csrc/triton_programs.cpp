// Replaying recorded sequences of Triton kernel launches ("programs") from C++.
//
// A detector step on a fast GPU is bound by host time, and the Triton paths of the CBAM and
// SE plugins spend most of theirs in Python. For one input signature every launch's kernel,
// grid and integer arguments are fixed; only tensor addresses change. The Python side
// (cbam_mmdet/ops/triton_programs.py) records one call's launches (kernel handle, grid,
// block, shared memory, per parameter a slot of the call's tensor list or an immediate value)
// into a Program here. Later calls with that signature run:
//   infer(program, x, ...)  one call: workspace and output allocated, every kernel launched;
//   train(state, x, ...)    an autograd node in C++: the forward replays the forward
//                           program, its backward the backward program, with no Python.
// A program of several launches runs as one CUDA graph launch (Program::run_graph) where the
// driver has the graph entry points and the stream is not capturing. The driver is reached
// through dlopen("libcuda.so.1") (loaded by PyTorch), so no CUDA headers are needed.
#include <torch/extension.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/csrc/autograd/graph_task.h>

#include <dlfcn.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace {

namespace py = pybind11;

using CUresult = int;
using LaunchKernel = CUresult (*)(void* f, unsigned gx, unsigned gy, unsigned gz,
                                  unsigned bx, unsigned by, unsigned bz, unsigned smem,
                                  void* stream, void** params, void** extra);
using GetErrorString = CUresult (*)(CUresult, const char**);

// CUDA_KERNEL_NODE_PARAMS_v2 (cuda.h), for the graph entry points below
struct KernelNodeParams {
  void* function;
  unsigned grid_x, grid_y, grid_z;
  unsigned block_x, block_y, block_z;
  unsigned smem;
  void** params;
  void** extra;
  void* kernel;
  void* context;
};
using GraphCreate = CUresult (*)(void** graph, unsigned flags);
using GraphAddKernelNode = CUresult (*)(void** node, void* graph, void* const* deps,
                                        size_t num_deps, const KernelNodeParams* params);
using GraphInstantiate = CUresult (*)(void** exec, void* graph, unsigned long long flags);
using GraphExecSetParams = CUresult (*)(void* exec, void* node, const KernelNodeParams* params);
using GraphLaunch = CUresult (*)(void* exec, void* stream);
using StreamIsCapturing = CUresult (*)(void* stream, int* status);
using Destroy = CUresult (*)(void* handle);

struct Driver {
  LaunchKernel launch = nullptr;
  GetErrorString error_string = nullptr;
  GraphCreate graph_create = nullptr;
  GraphAddKernelNode graph_add_kernel = nullptr;
  GraphInstantiate graph_instantiate = nullptr;
  GraphExecSetParams graph_set_params = nullptr;
  GraphLaunch graph_launch = nullptr;
  StreamIsCapturing stream_is_capturing = nullptr;
  Destroy graph_destroy = nullptr;
  Destroy graph_exec_destroy = nullptr;
  bool graphs() const {
    return graph_create && graph_add_kernel && graph_instantiate && graph_set_params &&
           graph_launch && stream_is_capturing && graph_destroy && graph_exec_destroy;
  }
};

const Driver& driver() {
  static const Driver d = [] {
    Driver r;
    void* handle = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    TORCH_CHECK(handle != nullptr, "triton_programs: libcuda.so.1 could not be opened");
    r.launch = reinterpret_cast<LaunchKernel>(dlsym(handle, "cuLaunchKernel"));
    r.error_string = reinterpret_cast<GetErrorString>(dlsym(handle, "cuGetErrorString"));
    TORCH_CHECK(r.launch != nullptr, "triton_programs: cuLaunchKernel not found");
    r.graph_create = reinterpret_cast<GraphCreate>(dlsym(handle, "cuGraphCreate"));
    r.graph_add_kernel = reinterpret_cast<GraphAddKernelNode>(dlsym(handle, "cuGraphAddKernelNode_v2"));
    r.graph_instantiate = reinterpret_cast<GraphInstantiate>(dlsym(handle, "cuGraphInstantiateWithFlags"));
    r.graph_set_params = reinterpret_cast<GraphExecSetParams>(dlsym(handle, "cuGraphExecKernelNodeSetParams_v2"));
    r.graph_launch = reinterpret_cast<GraphLaunch>(dlsym(handle, "cuGraphLaunch"));
    r.stream_is_capturing = reinterpret_cast<StreamIsCapturing>(dlsym(handle, "cuStreamIsCapturing"));
    r.graph_destroy = reinterpret_cast<Destroy>(dlsym(handle, "cuGraphDestroy"));
    r.graph_exec_destroy = reinterpret_cast<Destroy>(dlsym(handle, "cuGraphExecDestroy"));
    return r;
  }();
  return d;
}

// Process-wide switches and counters, all atomics: calls may come from several threads.
std::atomic<bool> g_graphs{true};            // set_graphs: programs as one graph launch
std::atomic<bool> g_direct_grads{true};      // set_direct_grads: see AttentionBackward
std::atomic<int64_t> g_replayed_calls{0};    // infer calls and train forwards replayed
std::atomic<int64_t> g_graph_launches{0};    // programs run as one graph launch
std::atomic<int64_t> g_nodes_kept{0};        // kernel nodes whose arguments were not set again

void check_cuda(CUresult r, const char* what) {
  if (r == 0) return;
  const char* msg = "unknown";
  if (driver().error_string != nullptr) driver().error_string(r, &msg);
  TORCH_CHECK(false, "triton_programs: ", what, " failed (", r, ": ", msg, ")");
}

constexpr size_t kMaxParams = 96;

// One kernel launch: per parameter a slot of the call's tensors (>= 0) or -1 and an immediate
// value (little-endian, 8 bytes); Triton's two scratch pointers follow as null pointers.
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

  // The launches as one executable CUDA graph (a chain of kernel nodes), built on the first
  // full run; later runs set the arguments of nodes whose arguments changed (queued launches
  // keep theirs): a quarter to a half of the host time of one cuLaunchKernel per kernel.
  struct Graph {
    void* graph = nullptr;
    void* exec = nullptr;
    std::vector<void*> nodes;
    std::vector<std::vector<uint64_t>> args;  // each node's arguments, as last set
    bool failed = false;  // not buildable here: the program launches kernel by kernel
    std::mutex mutex;     // graphs are not thread-safe
    Graph() = default;
    Graph(const Graph&) = delete;
    Graph& operator=(const Graph&) = delete;
    ~Graph() {  // return codes ignored: the context may be gone at exit
      if (exec != nullptr) driver().graph_exec_destroy(exec);
      if (graph != nullptr) driver().graph_destroy(graph);
    }
  };
  // shared by copies of the program (pybind hands programs over by value)
  std::shared_ptr<Graph> graph = std::make_shared<Graph>();

  void fill(const Launch& l, const std::vector<at::Tensor>& slots, uint64_t* storage,
            void** params) const {
    const size_t n = l.slots.size();
    for (size_t p = 0; p < n; ++p) {
      const int64_t s = l.slots[p];
      storage[p] = s >= 0 ? reinterpret_cast<uint64_t>(slots[s].data_ptr()) : l.values[p];
      params[p] = &storage[p];
    }
    storage[n] = storage[n + 1] = 0;
    params[n] = &storage[n];
    params[n + 1] = &storage[n + 1];
  }

  static KernelNodeParams node_params(const Launch& l, void** params) {
    KernelNodeParams k{};
    k.function = l.function;
    k.grid_x = l.grid[0];
    k.grid_y = l.grid[1];
    k.grid_z = l.grid[2];
    k.block_x = l.block;
    k.block_y = k.block_z = 1;
    k.smem = l.smem;
    k.params = params;
    return k;
  }

  // Runs every launch as one graph launch on `stream`; false, launching nothing, where that
  // cannot be done (no graph entry points, a capturing stream, a graph that failed to build).
  bool run_graph(const std::vector<at::Tensor>& slots, uint64_t stream) const {
    const Driver& d = driver();
    if (!d.graphs()) return false;
    int capturing = 0;
    if (d.stream_is_capturing(reinterpret_cast<void*>(stream), &capturing) != 0 || capturing != 0) {
      return false;
    }
    Graph& g = *graph;
    std::lock_guard<std::mutex> lock(g.mutex);
    if (g.failed) return false;
    std::array<uint64_t, kMaxParams> storage;
    std::array<void*, kMaxParams> params;
    if (g.exec == nullptr) {
      bool ok = d.graph_create(&g.graph, 0) == 0;
      void* previous = nullptr;
      for (size_t i = 0; ok && i < launches.size(); ++i) {
        fill(launches[i], slots, storage.data(), params.data());
        const KernelNodeParams k = node_params(launches[i], params.data());
        void* node = nullptr;
        ok = d.graph_add_kernel(&node, g.graph, previous ? &previous : nullptr,
                                previous ? 1 : 0, &k) == 0;
        g.nodes.push_back(node);
        g.args.emplace_back(storage.begin(), storage.begin() + launches[i].slots.size());
        previous = node;
      }
      ok = ok && d.graph_instantiate(&g.exec, g.graph, 0) == 0;
      if (!ok) {
        g.failed = true;
        g.exec = nullptr;
        return false;
      }
    } else {
      for (size_t i = 0; i < launches.size(); ++i) {
        fill(launches[i], slots, storage.data(), params.data());
        std::vector<uint64_t>& last = g.args[i];
        if (std::equal(last.begin(), last.end(), storage.begin())) {
          ++g_nodes_kept;  // the node holds these arguments already
          continue;
        }
        const KernelNodeParams k = node_params(launches[i], params.data());
        check_cuda(d.graph_set_params(g.exec, g.nodes[i], &k), "cuGraphExecKernelNodeSetParams");
        std::copy(storage.begin(), storage.begin() + last.size(), last.begin());
      }
    }
    check_cuda(d.graph_launch(g.exec, reinterpret_cast<void*>(stream)), "cuGraphLaunch");
    ++g_graph_launches;
    return true;
  }

  // Runs launches[0:count] with the tensors `slots` on `stream`, as one graph where possible.
  void run(const std::vector<at::Tensor>& slots, uint64_t stream, size_t count) const {
    TORCH_CHECK(static_cast<int64_t>(slots.size()) >= num_slots, "program needs ", num_slots,
                " tensors, got ", slots.size());
    if (count == 0 || launches.empty()) return;
    if (count >= launches.size() && launches.size() > 1 && g_graphs.load() &&
        run_graph(slots, stream)) {
      return;
    }
    const Driver& d = driver();
    std::array<uint64_t, kMaxParams> storage;
    std::array<void*, kMaxParams> params;
    for (size_t i = 0; i < count && i < launches.size(); ++i) {
      const Launch& l = launches[i];
      fill(l, slots, storage.data(), params.data());
      check_cuda(d.launch(l.function, l.grid[0], l.grid[1], l.grid[2], l.block, 1, 1, l.smem,
                          reinterpret_cast<void*>(stream), params.data(), nullptr),
                 "cuLaunchKernel");
    }
  }
};

// Inference: out = program(x) with a fresh float32 workspace and output laid out as x;
// slots [x, workspace, out, *rest] (rest: the parameters, then other tensors it names).
at::Tensor infer(const Program& program, const at::Tensor& x, int64_t ws_size,
                 uint64_t stream, const std::vector<at::Tensor>& rest) {
  c10::DeviceGuard guard(x.device());
  std::vector<at::Tensor> slots;
  slots.reserve(3 + rest.size());
  slots.push_back(x);
  slots.push_back(at::empty({ws_size}, x.options().dtype(at::kFloat)));
  slots.push_back(at::empty_like(x));
  slots.insert(slots.end(), rest.begin(), rest.end());
  program.run(slots, stream, program.launches.size());
  ++g_replayed_calls;
  return slots[2];
}

// A training call's programs (forward slots [x, workspace, out, *params, *rest], backward
// [grad_out, x, workspace, dx, *params, *rest], its last launch writing dx, skipped where dx
// is not needed), workspace size, gradient layout and the regions atomics accumulate into
// (zeroed by the forward; again for a second backward). Its plan on the Python side owns it
// for the process's life, so the autograd graph may hold its address.
struct TrainState {
  Program forward;
  Program backward;
  int64_t ws_size = 0;
  std::vector<int64_t> grad_offsets;
  std::vector<std::vector<int64_t>> grad_shapes;
  std::vector<std::vector<int64_t>> grad_strides;  // the parameters' (contiguous if not given)
  std::vector<std::pair<int64_t, int64_t>> atomic_regions;
};

// A tensor over `base`'s storage with the given sizes, strides and offset (elements, from
// base's), made without the dispatcher: not an autograd view (unlike as_strided), cheaper.
at::Tensor alias(const at::Tensor& base, at::IntArrayRef sizes, at::IntArrayRef strides,
                 int64_t offset) {
  auto impl = c10::make_intrusive<c10::TensorImpl>(c10::Storage(base.storage()),
                                                   base.key_set(), base.dtype());
  impl->set_sizes_and_strides(sizes, strides, base.storage_offset() + offset);
  return at::Tensor(std::move(impl));
}

// AccumulateGrad on a dense gradient of the parameter's layout: take it where .grad is
// undefined, else add it (out of place where the backward records a graph).
void accumulate_grad(const at::Tensor& p, const at::Tensor& g) {
  at::Tensor& grad = p.mutable_grad();
  if (!grad.defined()) {
    grad = g;
  } else if (at::GradMode::is_enabled()) {
    grad = grad + g;
  } else {
    grad.add_(g);
  }
}

// The autograd node of a training call. Its next edges are x's and those of parameters whose
// gradients go through autograd; the other ("direct") gradients are accumulated into .grad
// here, as AccumulateGrad would (asking torch.autograd.grad for one raises), saving about
// 40 us of host time per CBAM training call, 20 us per SE call (H200 host).
using torch::autograd::SavedVariable;
using torch::autograd::variable_list;
using NodePtr = std::decay_t<decltype(std::declval<torch::autograd::Edge>().function)>;

// The grad accumulator of a parameter whose gradient may go into .grad directly; null if it
// is no leaf requiring grad or has hooks AccumulateGrad would run (tensor, post-acc., DDP's).
NodePtr direct_grad_accumulator(const at::Tensor& p) {
  if (!p.requires_grad() || !p.is_leaf()) return NodePtr();
  if (!torch::autograd::impl::hooks(p).empty()) return NodePtr();
  if (torch::autograd::impl::post_acc_grad_hooks(p)) return NodePtr();
  NodePtr acc = torch::autograd::impl::grad_accumulator(p);
  if (!acc->pre_hooks().empty() || !acc->post_hooks().empty() || !acc->tensor_pre_hooks().empty()) {
    return NodePtr();
  }
  return acc;
}

// Autograd nodes are held by std::shared_ptr or c10::intrusive_ptr depending on the
// PyTorch version: make one of whichever kind Edge uses.
template <typename Ptr> struct NodeMaker;
template <> struct NodeMaker<std::shared_ptr<torch::autograd::Node>> {
  template <typename T> static std::shared_ptr<T> make() { return std::make_shared<T>(); }
};
template <> struct NodeMaker<c10::intrusive_ptr<torch::autograd::Node>> {
  template <typename T> static c10::intrusive_ptr<T> make() { return c10::make_intrusive<T>(); }
};

struct AttentionBackward : public torch::autograd::Node {
  const TrainState* state = nullptr;
  uint64_t stream = 0;
  SavedVariable x_;
  std::vector<SavedVariable> params_;
  std::vector<int64_t> edge_of_param_;  // next edge of each parameter, or -1 (direct, or none)
  // per parameter its grad accumulator if direct (else null), kept alive for exec_info lookups
  std::vector<NodePtr> accumulators_;
  at::Tensor ws_;
  std::vector<at::Tensor> rest_;
  bool done_ = false;
  bool released_ = false;

  std::string name() const override { return "AttentionBackward"; }

  void release_variables() override {
    std::lock_guard<std::mutex> lock(mutex_);
    x_.reset_data();
    for (auto& p : params_) p.reset_data();
    ws_.reset();
    rest_.clear();
    released_ = true;
  }

  variable_list apply(variable_list&& grads) override {
    std::lock_guard<std::mutex> lock(mutex_);
    TORCH_CHECK(!released_, torch::autograd::ERR_BACKWARD_TWICE);
    if (!grads[0].defined()) return variable_list(num_outputs());  // a zero gradient
    at::Tensor x = x_.unpack();
    std::vector<at::Tensor> params;
    params.reserve(params_.size());
    for (auto& p : params_) params.push_back(p.unpack());
    c10::DeviceGuard guard(x.device());
    at::Tensor ws = ws_;
    if (done_) {  // retain_graph: a second backward, into a copy (.grad may hold aliases of ws)
      ws = ws.clone();
      for (const auto& region : state->atomic_regions) ws.narrow(0, region.first, region.second).zero_();
    }
    done_ = true;
    at::Tensor g = grads[0];
    // the backward program was recorded with a gradient laid out as x, 16-byte aligned
    if (g.strides() != x.strides() || g.scalar_type() != x.scalar_type() ||
        reinterpret_cast<uintptr_t>(g.data_ptr()) % 16 != 0) {
      at::Tensor copy = at::empty_strided(x.sizes(), x.strides(), x.options());
      copy.copy_(g);
      g = copy;
    }
    const bool needs_dx = should_compute_output(0);
    at::Tensor dx = needs_dx ? at::empty_strided(x.sizes(), x.strides(), x.options())
                             : at::Tensor();
    std::vector<at::Tensor> slots{g, x, ws, needs_dx ? dx : x};
    slots.insert(slots.end(), params.begin(), params.end());
    slots.insert(slots.end(), rest_.begin(), rest_.end());
    const size_t launches = state->backward.launches.size();
    const size_t count = needs_dx || launches == 0 ? launches : launches - 1;
    state->backward.run(slots, stream, count);
    variable_list out(num_outputs());
    if (needs_dx) out[0] = dx;
    const auto* exec_info = torch::autograd::get_current_graph_task_exec_info();
    const bool whole_graph = exec_info == nullptr || exec_info->empty();
    for (size_t i = 0; i < params.size(); ++i) {
      const int64_t edge = edge_of_param_[i];
      const bool direct = accumulators_[i] != nullptr;
      if (edge < 0 && !direct) continue;
      if (edge >= 0 && !should_compute_output(edge)) continue;
      if (direct && !whole_graph) {  // .backward(inputs=...) or torch.autograd.grad
        auto it = exec_info->find(accumulators_[i].get());
        if (it == exec_info->end()) continue;  // not asked for
        TORCH_CHECK(!it->second.captures_,
                    "torch.autograd.grad asked for the gradient of a CBAM/SE parameter, which "
                    "the plugin's backward accumulates into its .grad; call .backward() and "
                    "read .grad, or call "
                    "cbam_mmdet.ops.triton_programs.set_direct_grads(False) before the "
                    "forward to route parameter gradients through autograd");
        if (!it->second.needed_) continue;
      }
      // an alias of the workspace, laid out as the parameter (may become its .grad)
      at::Tensor grad = alias(ws, state->grad_shapes[i], state->grad_strides[i],
                              state->grad_offsets[i]);
      if (direct) {
        accumulate_grad(params[i], grad);
      } else {
        out[edge] = std::move(grad);
      }
    }
    return out;
  }
};

// out = forward program(x), recorded as an AttentionBackward where grad mode is on and x or
// a parameter requires grad; the workspace (what the forward saved), params and rest kept.
at::Tensor train(const TrainState& state, const at::Tensor& x, std::vector<at::Tensor> params,
                 int64_t stream, std::vector<at::Tensor> rest) {
  TORCH_CHECK(params.size() == state.grad_offsets.size(),
              "train: expected ", state.grad_offsets.size(), " parameters, got ", params.size());
  c10::DeviceGuard guard(x.device());
  at::Tensor ws = at::empty({state.ws_size}, x.options().dtype(at::kFloat));
  at::Tensor out = at::empty_like(x);
  {
    std::vector<at::Tensor> slots;
    slots.reserve(3 + params.size() + rest.size());
    slots.push_back(x);
    slots.push_back(ws);
    slots.push_back(out);
    slots.insert(slots.end(), params.begin(), params.end());
    slots.insert(slots.end(), rest.begin(), rest.end());
    state.forward.run(slots, static_cast<uint64_t>(stream), state.forward.launches.size());
  }
  ++g_replayed_calls;
  if (!torch::autograd::compute_requires_grad(x, at::TensorList(params))) return out;
  auto node = NodeMaker<NodePtr>::template make<AttentionBackward>();
  node->state = &state;
  node->stream = static_cast<uint64_t>(stream);
  const bool direct = g_direct_grads.load();
  torch::autograd::edge_list edges{torch::autograd::impl::gradient_edge(x)};
  for (const auto& p : params) {
    node->accumulators_.push_back(direct ? direct_grad_accumulator(p) : NodePtr());
    if (node->accumulators_.back() == nullptr && p.requires_grad()) {
      node->edge_of_param_.push_back(static_cast<int64_t>(edges.size()));
      edges.push_back(torch::autograd::impl::gradient_edge(p));
    } else {
      node->edge_of_param_.push_back(-1);
    }
  }
  node->set_next_edges(std::move(edges));
  node->x_ = SavedVariable(x, false);
  node->params_.reserve(params.size());
  for (const auto& p : params) node->params_.emplace_back(p, false);
  node->ws_ = std::move(ws);
  node->rest_ = std::move(rest);
  torch::autograd::set_history(out, NodePtr(node));
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("set_graphs", [](bool on) { g_graphs.store(on); }, py::arg("enabled"),
        "Run programs of several launches as one CUDA graph launch (default) or kernel by kernel");
  m.def("graphs", []() { return g_graphs.load(); },
        "Whether programs of several launches run as CUDA graph launches");
  m.def("set_direct_grads", [](bool on) { g_direct_grads.store(on); }, py::arg("enabled"),
        "Accumulate parameter gradients into .grad in the backward (default) or through autograd edges");
  m.def("direct_grads", []() { return g_direct_grads.load(); },
        "Whether training calls accumulate parameter gradients into .grad in their backward");
  m.def("replayed_calls", []() { return g_replayed_calls.load(); },
        "Calls replayed so far in this process (each infer and each train forward counts 1)");
  m.def("graph_launches", []() { return g_graph_launches.load(); },
        "Programs run as one CUDA graph launch so far, in this process");
  m.def("graph_nodes_kept", []() { return g_nodes_kept.load(); },
        "Kernel nodes of graph launches whose arguments had not changed since the graph's "
        "last launch (not set again), in this process");
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
                       std::vector<std::pair<int64_t, int64_t>> atomic_regions,
                       std::vector<std::vector<int64_t>> grad_strides) {
             TORCH_CHECK(grad_offsets.size() == grad_shapes.size(),
                         "one gradient offset per gradient shape");
             TORCH_CHECK(grad_strides.empty() || grad_strides.size() == grad_shapes.size(),
                         "one gradient stride list per gradient shape");
             for (size_t i = 0; i < grad_strides.size(); ++i) {
               TORCH_CHECK(grad_strides[i].size() == grad_shapes[i].size(),
                           "each gradient's strides must have one value per dimension");
             }
             if (grad_strides.empty()) {  // contiguous
               for (const auto& shape : grad_shapes) {
                 std::vector<int64_t> strides(shape.size(), 1);
                 for (size_t d = shape.size(); d-- > 1;) strides[d - 1] = strides[d] * shape[d];
                 grad_strides.push_back(std::move(strides));
               }
             }
             auto s = std::make_unique<TrainState>();
             s->forward = std::move(forward);
             s->backward = std::move(backward);
             s->ws_size = ws_size;
             s->grad_offsets = std::move(grad_offsets);
             s->grad_shapes = std::move(grad_shapes);
             s->grad_strides = std::move(grad_strides);
             s->atomic_regions = std::move(atomic_regions);
             return s;
           }), py::arg("forward"), py::arg("backward"), py::arg("ws_size"), py::arg("grad_offsets"),
           py::arg("grad_shapes"), py::arg("atomic_regions"),
           py::arg("grad_strides") = std::vector<std::vector<int64_t>>());
  m.def("infer", &infer, "Replay an inference program: returns a new output laid out as x",
        py::arg("program"), py::arg("x"), py::arg("ws_size"), py::arg("stream"), py::arg("rest"));
  m.def("train", &train,
        "A training call: the forward program, recorded in autograd with the backward program",
        py::arg("state"), py::arg("x"), py::arg("params"), py::arg("stream"), py::arg("rest"));
}
