// The graph executor (include/ondevice/executor.h).
#include "ondevice/executor.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <unordered_map>

#include "../ops/op_kernel.h"
#include "graph_fusion.h"
#include "graph_steps.h"
#include "ondevice/error.h"

namespace ondevice {

namespace {

// The op-set versions this runtime implements: what the exporter writes
// (ai.onnx 18; the ops used have had the same semantics since 13/14, so
// 14..18 are accepted), and version 1 of our own domain.
constexpr int64_t kMinOnnxOpset = 14, kMaxOnnxOpset = 18;
constexpr int64_t kOndeviceOpset = 1;

struct InputSpec {
  std::string name;
  size_t slot = 0;
  DType dtype = DType::kFloat32;
  bool has_shape = false;
  std::vector<int64_t> dims;  // -1 for symbolic/unknown dimensions
};

Tensor tensor_from_initializer(const onnx::Tensor& t) {
  const DType dtype = dtype_from_onnx(t.data_type);
  if (!t.resolved()) throw FormatError("initializer '" + t.name + "' has unresolved external data");
  Shape shape(t.dims.begin(), t.dims.end());
  const size_t elem = dtype_size(dtype);
  if (t.byte_size != uint64_t(shape_numel(shape)) * elem)
    throw FormatError("initializer '" + t.name + "' has the wrong number of bytes");
  if (t.data != nullptr && reinterpret_cast<uintptr_t>(t.data) % elem != 0) {
    // raw_data inside the protobuf has no alignment: copy the (small) tensor.
    Tensor copy = Tensor::allocate(dtype, shape, nullptr);
    std::memcpy(const_cast<void*>(copy.raw()), t.data, t.byte_size);
    return copy;
  }
  return Tensor::borrowed(dtype, shape, t.data, t.owner);
}

}  // namespace

struct Executor::Impl {
  std::shared_ptr<const onnx::Model> model;
  ExecutorOptions options;
  std::shared_ptr<BufferPool> pool = BufferPool::create();
  std::vector<Tensor> constants;          // by slot (undefined for non-constants)
  std::vector<bool> is_constant;
  std::vector<InputSpec> inputs;
  std::vector<std::string> input_names, output_names;
  std::vector<int> output_slots;
  std::vector<Step> steps;
  size_t slots = 0;

  bool profiling = false;
  mutable std::mutex profile_mu;
  mutable std::map<std::string, OpTime> profile;

  void prepare();
};

void Executor::Impl::prepare() {
  const onnx::Graph& g = model->graph;
  for (const onnx::OperatorSetId& o : model->opset_import) {
    if (o.domain.empty() || o.domain == "ai.onnx") {
      if (o.version < kMinOnnxOpset || o.version > kMaxOnnxOpset)
        throw FormatError("the model imports ai.onnx opset " + std::to_string(o.version) + "; this runtime runs " +
                          std::to_string(kMinOnnxOpset) + ".." + std::to_string(kMaxOnnxOpset));
    } else if (o.domain == "ondevice") {
      if (o.version != kOndeviceOpset)
        throw FormatError("the model imports ondevice opset " + std::to_string(o.version) +
                          "; this runtime runs version " + std::to_string(kOndeviceOpset));
    }
  }
  std::unordered_map<std::string, int> slot_of;
  // NodeSpec holds pointers into `constants`: it must never reallocate.
  size_t max_slots = g.initializers.size() + g.inputs.size();
  for (const onnx::Node& node : g.nodes) max_slots += node.outputs.size();
  constants.reserve(max_slots);
  auto new_slot = [&](const std::string& name) {
    if (slot_of.count(name)) throw FormatError("value '" + name + "' is defined twice");
    slot_of[name] = int(slots++);
    constants.emplace_back();
    is_constant.push_back(false);
    return slot_of[name];
  };
  for (const onnx::Tensor& t : g.initializers) {
    const int s = new_slot(t.name);
    constants[size_t(s)] = tensor_from_initializer(t);
    is_constant[size_t(s)] = true;
  }
  for (const onnx::ValueInfo& v : g.inputs) {
    if (slot_of.count(v.name)) continue;  // backed by an initializer
    if (v.type_kind != onnx::ValueInfo::TypeKind::kTensor)
      throw FormatError("graph input '" + v.name + "' is not a tensor");
    InputSpec spec;
    spec.name = v.name;
    spec.slot = size_t(new_slot(v.name));
    spec.dtype = dtype_from_onnx(v.elem_type);
    spec.has_shape = v.has_shape;
    for (const onnx::Dimension& d : v.shape) spec.dims.push_back(d.kind == onnx::Dimension::Kind::kValue ? d.value : -1);
    inputs.push_back(spec);
    input_names.push_back(v.name);
  }
  const auto& reg = ops::registry();
  std::vector<Step> all;
  for (const onnx::Node& node : g.nodes) {
    Step st;
    st.node = &node;
    st.op = ops::op_key(node);
    auto it = reg.find(st.op);
    if (it == reg.end()) {
      std::string known;
      for (const std::string& s : supported_ops()) known += (known.empty() ? "" : ", ") + s;
      throw FormatError("node '" + node.name + "': operator " + st.op + " is not supported by this runtime (it runs: " +
                        known + ")");
    }
    // Every operator here computes one output (LayerNormalization's optional Mean and
    // InvStdDev must be omitted). Kernels write outputs[0] and nothing else: a node without
    // outputs would make them write past the end of the list, and a second named output
    // would be a value that later nodes read although nothing computed it.
    if (node.outputs.empty()) throw FormatError("node '" + node.name + "': " + st.op + " has no outputs");
    for (size_t i = 1; i < node.outputs.size(); ++i)
      if (!node.outputs[i].empty())
        throw FormatError("node '" + node.name + "': " + st.op + " has " + std::to_string(node.outputs.size()) +
                          " outputs; this runtime computes only the first (the others must be omitted)");
    ops::NodeSpec spec;
    spec.node = &node;
    for (const std::string& in : node.inputs) {
      if (in.empty()) {
        st.inputs.push_back(-1);
        spec.constants.push_back(nullptr);
        continue;
      }
      auto s = slot_of.find(in);
      if (s == slot_of.end())
        throw FormatError("node '" + node.name + "' reads '" + in + "', which no earlier node, input or initializer defines");
      st.inputs.push_back(s->second);
      spec.constants.push_back(is_constant[size_t(s->second)] ? &constants[size_t(s->second)] : nullptr);
    }
    st.kernel = it->second(spec);
    for (const std::string& out : node.outputs) st.outputs.push_back(out.empty() ? -1 : new_slot(out));
    // Constant folding: a standard op whose inputs are all constants runs once, now.
    const bool foldable = node.domain != "ondevice" && !node.inputs.empty() &&
                          std::all_of(spec.constants.begin(), spec.constants.end(),
                                      [&](const Tensor* t) { return t != nullptr; }) &&
                          std::none_of(st.inputs.begin(), st.inputs.end(), [](int s) { return s < 0; });
    if (foldable) {
      std::vector<Tensor> outs(node.outputs.size());
      ops::OpContext ctx{nullptr, 1, options.kernel};
      st.kernel->run(spec.constants, outs, ctx);
      for (size_t i = 0; i < outs.size(); ++i)
        if (st.outputs[i] >= 0) {
          constants[size_t(st.outputs[i])] = outs[i];
          is_constant[size_t(st.outputs[i])] = true;
        }
      continue;
    }
    all.push_back(std::move(st));
  }
  for (const onnx::ValueInfo& v : g.outputs) {
    auto s = slot_of.find(v.name);
    if (s == slot_of.end()) throw FormatError("graph output '" + v.name + "' is never computed");
    output_names.push_back(v.name);
    output_slots.push_back(s->second);
  }
  if (options.fuse) {
    fuse_frame_windows(all, constants, is_constant, output_slots);
    fuse_layer_norm_relu(all, output_slots);
  }
  // Liveness: the last step reading each non-constant, non-output value.
  std::vector<int> last(slots, -1);
  for (size_t i = 0; i < all.size(); ++i)
    for (int s : all[i].inputs)
      if (s >= 0) last[size_t(s)] = int(i);
  for (int s : output_slots) last[size_t(s)] = -2;
  for (size_t s = 0; s < slots; ++s)
    if (last[s] >= 0 && !is_constant[s]) all[size_t(last[s])].release.push_back(int(s));
  steps = std::move(all);
  if (const char* env = std::getenv("ONDEVICE_PROFILE"); env != nullptr && std::strcmp(env, "1") == 0) profiling = true;
}

bool ExecutorOptions::default_fuse() {
  const char* env = std::getenv("ONDEVICE_FUSE");
  if (env == nullptr || *env == '\0' || std::strcmp(env, "1") == 0) return true;
  if (std::strcmp(env, "0") == 0) return false;
  throw ArgumentError(std::string("ONDEVICE_FUSE must be 0 or 1, got '") + env + "'");
}

Executor::Executor(std::shared_ptr<const onnx::Model> model, ExecutorOptions options) : impl_(new Impl) {
  if (!model) throw ArgumentError("model is null");
  if (options.threads < 1) throw ArgumentError("threads must be >= 1");
  impl_->model = std::move(model);
  impl_->options = options;
  impl_->prepare();
}

Executor::~Executor() = default;
Executor::Executor(Executor&&) noexcept = default;
Executor& Executor::operator=(Executor&&) noexcept = default;

Executor Executor::load(const std::string& path, ExecutorOptions options) {
  if (options.threads < 1) throw ArgumentError("threads must be >= 1");  // the caller's error, not the file's
  auto model = std::make_shared<onnx::Model>(onnx::load_onnx_model(path));
  try {
    return Executor(std::move(model), options);
  } catch (const Error& e) {
    // Also ArgumentError from folding constants (shapes that do not fit, a tensor over
    // kMaxTensorBytes): at load, that too is a problem of the file.
    throw FormatError(path + ": " + e.what());
  }
}

const std::vector<std::string>& Executor::input_names() const { return impl_->input_names; }
const std::vector<std::string>& Executor::output_names() const { return impl_->output_names; }

void Executor::set_threads(int threads) {
  if (threads < 1) throw ArgumentError("threads must be >= 1");
  impl_->options.threads = threads;
}
int Executor::threads() const { return impl_->options.threads; }
BufferPool::Stats Executor::pool_stats() const { return impl_->pool->stats(); }
void Executor::trim_pool() const { impl_->pool->trim(); }

void Executor::enable_profiling(bool on) { impl_->profiling = on; }
void Executor::reset_profile() {
  std::lock_guard<std::mutex> lock(impl_->profile_mu);
  impl_->profile.clear();
}
std::vector<Executor::OpTime> Executor::profile() const {
  std::lock_guard<std::mutex> lock(impl_->profile_mu);
  std::vector<OpTime> v;
  for (const auto& kv : impl_->profile) v.push_back(kv.second);
  std::sort(v.begin(), v.end(), [](const OpTime& a, const OpTime& b) { return a.seconds > b.seconds; });
  return v;
}

std::vector<std::string> Executor::supported_ops() {
  std::vector<std::string> v;
  for (const auto& kv : ops::registry()) v.push_back(kv.first);
  return v;
}

std::vector<Tensor> Executor::run(const std::vector<NamedTensor>& feeds) const {
  const Impl& m = *impl_;
  std::vector<Tensor> values(m.slots);
  std::vector<const Tensor*> ptr(m.slots, nullptr);
  for (size_t s = 0; s < m.slots; ++s)
    if (m.is_constant[s]) ptr[s] = &m.constants[s];
  for (const InputSpec& in : m.inputs) {
    const Tensor* fed = nullptr;
    for (const NamedTensor& f : feeds)
      if (f.first == in.name) {
        if (fed != nullptr) throw ArgumentError("input '" + in.name + "' is given twice");
        fed = &f.second;
      }
    if (fed == nullptr) throw ArgumentError("input '" + in.name + "' is missing");
    if (fed->dtype() != in.dtype)
      throw ArgumentError("input '" + in.name + "' must be " + dtype_name(in.dtype) + ", got " + dtype_name(fed->dtype()));
    if (in.has_shape) {
      bool ok = fed->rank() == in.dims.size();
      for (size_t d = 0; ok && d < in.dims.size(); ++d) ok = in.dims[d] < 0 || in.dims[d] == fed->dim(d);
      if (!ok) throw ArgumentError("input '" + in.name + "' has shape " + shape_string(fed->shape()) +
                                   ", which does not match the graph's declaration");
    }
    values[in.slot] = *fed;
    ptr[in.slot] = &values[in.slot];
  }
  for (const NamedTensor& f : feeds)
    if (std::find(m.input_names.begin(), m.input_names.end(), f.first) == m.input_names.end())
      throw ArgumentError("the graph has no input named '" + f.first + "'");

  const ops::OpContext ctx{m.pool.get(), m.options.threads, m.options.kernel};
  ops::OpInputs args;
  std::vector<Tensor> outs;
  std::map<std::string, OpTime> local;
  for (const Step& st : m.steps) {
    args.clear();
    for (int s : st.inputs) args.push_back(s >= 0 ? ptr[size_t(s)] : nullptr);
    outs.assign(st.outputs.size(), Tensor());
    const auto t0 = m.profiling ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point();
    st.kernel->run(args, outs, ctx);
    if (m.profiling) {
      OpTime& o = local[st.op];
      o.op = st.op;
      o.calls++;
      o.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
    for (size_t i = 0; i < outs.size(); ++i) {
      const int s = st.outputs[i];
      if (s < 0) continue;
      values[size_t(s)] = std::move(outs[i]);
      ptr[size_t(s)] = &values[size_t(s)];
    }
    for (int s : st.release) {
      values[size_t(s)] = Tensor();
      ptr[size_t(s)] = nullptr;
    }
  }
  if (m.profiling) {
    std::lock_guard<std::mutex> lock(m.profile_mu);
    for (const auto& kv : local) {
      OpTime& o = m.profile[kv.first];
      o.op = kv.first;
      o.calls += kv.second.calls;
      o.seconds += kv.second.seconds;
    }
  }
  std::vector<Tensor> result;
  for (int s : m.output_slots) {
    if (ptr[size_t(s)] == nullptr) throw ArgumentError("graph output was not computed");
    result.push_back(*ptr[size_t(s)]);
  }
  return result;
}

}  // namespace ondevice
