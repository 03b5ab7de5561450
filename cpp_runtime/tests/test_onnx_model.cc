// ONNX reader tests: the protobuf wire reader on hand-built bytes (each wire
// type, every edge and hostile case), the ModelProto parser on a small model
// with every field the runtime reads, every truncation and a few thousand
// random corruptions of that model (each must parse or throw FormatError, and
// a parsed model's tensor bytes must be readable in bounds), and external data
// (zero-copy mapping, shared mappings, path escapes, offsets beyond the file).
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "format/protobuf_wire.h"
#include "ondevice/error.h"
#include "ondevice/onnx_model.h"
#include "test_util.h"

using namespace ondevice;
using namespace ondevice::onnx;
using wire::Field;
using wire::Reader;
using wire::WireType;

namespace {

// A test-side protobuf encoder, written from the wire-format spec.
struct Msg {
  std::vector<uint8_t> b;

  static void put_varint(std::vector<uint8_t>& out, uint64_t v) {
    while (v >= 0x80) {
      out.push_back(uint8_t(v | 0x80));
      v >>= 7;
    }
    out.push_back(uint8_t(v));
  }
  Msg& tag(uint32_t field, int type) {
    put_varint(b, (uint64_t(field) << 3) | uint64_t(type));
    return *this;
  }
  Msg& varint(uint32_t field, uint64_t v) {
    tag(field, 0);
    put_varint(b, v);
    return *this;
  }
  Msg& fixed32(uint32_t field, uint32_t v) {
    tag(field, 5);
    for (int i = 0; i < 4; ++i) b.push_back(uint8_t(v >> (8 * i)));
    return *this;
  }
  Msg& fixed64(uint32_t field, uint64_t v) {
    tag(field, 1);
    for (int i = 0; i < 8; ++i) b.push_back(uint8_t(v >> (8 * i)));
    return *this;
  }
  Msg& bytes(uint32_t field, const std::vector<uint8_t>& v) {
    tag(field, 2);
    put_varint(b, v.size());
    b.insert(b.end(), v.begin(), v.end());
    return *this;
  }
  Msg& str(uint32_t field, const std::string& s) { return bytes(field, std::vector<uint8_t>(s.begin(), s.end())); }
  Msg& msg(uint32_t field, const Msg& m) { return bytes(field, m.b); }
  Msg& packed_varints(uint32_t field, const std::vector<int64_t>& v) {
    std::vector<uint8_t> run;
    for (int64_t x : v) put_varint(run, uint64_t(x));
    return bytes(field, run);
  }
  Msg& packed_floats(uint32_t field, const std::vector<float>& v) {
    std::vector<uint8_t> run;
    for (float f : v) {
      uint32_t u;
      std::memcpy(&u, &f, 4);
      for (int i = 0; i < 4; ++i) run.push_back(uint8_t(u >> (8 * i)));
    }
    return bytes(field, run);
  }
  Msg& raw(const std::vector<uint8_t>& v) {
    b.insert(b.end(), v.begin(), v.end());
    return *this;
  }
};

uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

std::vector<uint8_t> float_bytes(const std::vector<float>& v) {
  std::vector<uint8_t> out(v.size() * 4);
  std::memcpy(out.data(), v.data(), out.size());
  return out;
}

Msg opset(const std::string& domain, int64_t version) { return Msg().str(1, domain).varint(2, uint64_t(version)); }

Msg value_info(const std::string& name, int32_t elem, const std::vector<std::string>& dims) {
  Msg shape;
  for (const std::string& d : dims) {
    Msg dim;
    if (!d.empty() && d[0] >= '0' && d[0] <= '9') dim.varint(1, std::stoull(d));
    else if (!d.empty()) dim.str(2, d);
    shape.msg(1, dim);
  }
  Msg tensor_type = Msg().varint(1, uint64_t(elem)).msg(2, shape);
  return Msg().str(1, name).msg(2, Msg().msg(1, tensor_type));
}

Msg raw_tensor(const std::string& name, int32_t dt, const std::vector<int64_t>& dims, const std::vector<uint8_t>& raw) {
  Msg t;
  for (int64_t d : dims) t.varint(1, uint64_t(d));  // unpacked, as the onnx package writes dims
  return t.varint(2, uint64_t(dt)).str(8, name).bytes(9, raw);
}

Msg external_tensor(const std::string& name, int32_t dt, const std::vector<int64_t>& dims, const std::string& location,
                    const std::string& offset, const std::string& length) {
  Msg t;
  for (int64_t d : dims) t.varint(1, uint64_t(d));
  t.varint(2, uint64_t(dt)).str(8, name);
  t.msg(13, Msg().str(1, "location").str(2, location));
  if (!offset.empty()) t.msg(13, Msg().str(1, "offset").str(2, offset));
  if (!length.empty()) t.msg(13, Msg().str(1, "length").str(2, length));
  return t.varint(14, 1);
}

Msg attr_int(const std::string& name, int64_t v) { return Msg().str(1, name).varint(20, 2).varint(3, uint64_t(v)); }

// A small model with every field the reader handles. `external` adds two
// initializers in "weights.bin" (64 floats at offset 0, 16 at offset 256).
std::vector<uint8_t> sample_model(bool external) {
  Msg node_add = Msg().str(1, "x").str(1, "w").str(2, "y").str(3, "n0_Add").str(4, "Add");
  Msg custom = Msg().str(1, "y").str(1, "").str(2, "z").str(3, "n1_BitPlaneMatMul").str(4, "BitPlaneMatMul").str(7, "ondevice");
  custom.msg(5, attr_int("N", 64));
  custom.msg(5, Msg().str(1, "alpha").varint(20, 1).fixed32(2, float_bits(0.25f)));
  custom.msg(5, Msg().str(1, "mode").varint(20, 3).str(4, "lut"));
  custom.msg(5, Msg().str(1, "perm").varint(20, 7).packed_varints(8, {0, 2, -1}));
  custom.msg(5, Msg().str(1, "scales").varint(20, 6).packed_floats(7, {1.5f, -2.0f}));
  custom.msg(5, Msg().str(1, "names").varint(20, 8).str(9, "a").str(9, "bc"));
  custom.msg(5, Msg().str(1, "value").varint(20, 4).msg(5, raw_tensor("", 7, {2}, {1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0})));
  custom.msg(5, Msg().str(1, "body").varint(20, 5).msg(6, Msg().str(2, "subgraph").msg(1, Msg().str(4, "Relu"))));

  Msg graph = Msg().msg(1, node_add).msg(1, custom).str(2, "main");
  graph.msg(5, raw_tensor("w", 1, {2, 2}, float_bytes({1, 2, 3, 4})));
  graph.msg(5, Msg().varint(1, 3).varint(2, 1).str(8, "typed_f").packed_floats(4, {0.5f, 1.5f, -3.0f}));
  graph.msg(5, Msg().varint(1, 2).varint(2, 10).str(8, "typed_h").packed_varints(5, {0x3C00, 0xC000}));
  graph.msg(5, Msg().varint(1, 2).varint(2, 3).str(8, "typed_i8").packed_varints(5, {-128, 127}));
  graph.msg(5, Msg().varint(2, 7).str(8, "scalar_i64").varint(7, uint64_t(int64_t(-5))));
  if (external) {
    graph.msg(5, external_tensor("big", 1, {8, 8}, "weights.bin", "0", "256"));
    graph.msg(5, external_tensor("small", 1, {16}, "./weights.bin", "256", "64"));
  }
  graph.msg(11, value_info("x", 1, {"batch", "2"}));
  graph.msg(12, value_info("z", 1, {"batch", "64"}));
  graph.raw(Msg().varint(99, 7).fixed64(98, 1).fixed32(97, 1).str(96, "unknown fields are skipped").b);

  Msg fn = Msg().str(1, "BitPlaneMatMul").str(10, "ondevice").str(4, "X").str(4, "W").str(5, "Y").str(6, "N");
  fn.msg(7, Msg().str(2, "n").str(4, "Constant").msg(5, Msg().str(1, "value_int").varint(20, 2).str(21, "N")));
  fn.msg(7, Msg().str(1, "X").str(1, "W").str(2, "Y").str(4, "MatMul"));
  fn.msg(9, opset("", 18));
  fn.msg(11, attr_int("K", 8));

  Msg model = Msg().varint(1, 10).str(2, "ondevice").str(3, "0.1");
  model.msg(7, graph);
  model.msg(8, opset("", 18)).msg(8, opset("ondevice", 1));
  model.msg(14, Msg().str(1, "k").str(2, "v"));
  model.msg(25, fn);
  return model.b;
}

Model parse(const std::vector<uint8_t>& bytes, const ParseLimits& limits = ParseLimits()) {
  auto owner = std::make_shared<std::vector<uint8_t>>(bytes);
  return parse_onnx_model(owner->data(), owner->size(), owner, limits);
}

bool has(const std::string& haystack, const std::string& needle) { return haystack.find(needle) != std::string::npos; }

std::string format_error(const std::vector<uint8_t>& bytes, const ParseLimits& limits = ParseLimits()) {
  try {
    (void)parse(bytes, limits);
  } catch (const FormatError& e) {
    return e.what();
  }
  return "";
}

// Reads every byte of every resolved tensor (ASan flags any out-of-bounds view).
uint64_t touch_all(const Model& m) {
  uint64_t sum = 0;
  auto touch = [&](const Tensor& t) {
    if (!t.resolved()) return;
    const TensorView v = t.view();
    for (uint64_t i = 0; i < v.byte_size; ++i) sum += v.data[i];
  };
  for (const Tensor& t : m.graph.initializers) touch(t);
  for (const Node& n : m.graph.nodes)
    for (const Attribute& a : n.attributes)
      if (a.t) touch(*a.t);
  return sum;
}

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/ondevice_onnx_test_XXXXXX";
    const char* p = ::mkdtemp(tmpl);
    if (p == nullptr) throw testing::Failure{"mkdtemp failed"};
    path = p;
  }
  ~TempDir() {
    for (const std::string& f : files) ::unlink((path + "/" + f).c_str());
    for (auto it = dirs.rbegin(); it != dirs.rend(); ++it) ::rmdir((path + "/" + *it).c_str());
    ::rmdir(path.c_str());
  }
  std::string write(const std::string& name, const std::vector<uint8_t>& bytes) {
    const std::string full = path + "/" + name;
    FILE* f = std::fopen(full.c_str(), "wb");
    if (f == nullptr) throw testing::Failure{"cannot write " + full};
    if (!bytes.empty()) std::fwrite(bytes.data(), 1, bytes.size(), f);
    std::fclose(f);
    files.push_back(name);
    return full;
  }
  void mkdir(const std::string& name) {
    ::mkdir((path + "/" + name).c_str(), 0700);
    dirs.push_back(name);
  }
  std::vector<std::string> files, dirs;
};

std::vector<uint8_t> weights_file() {
  std::vector<float> w(80);
  for (size_t i = 0; i < w.size(); ++i) w[i] = float(i) * 0.5f;
  return float_bytes(w);
}

}  // namespace

// ---------------------------------------------------------------- wire format

TEST(wire_varint_values) {
  const std::vector<uint64_t> values = {0, 1, 127, 128, 300, 16383, 16384, (1ull << 32) - 1, 1ull << 63, ~0ull};
  for (uint64_t v : values) {
    Msg m;
    m.varint(1, v);
    Reader r(m.b.data(), m.b.size());
    Field f;
    CHECK(r.next(&f) && f.number == 1 && f.type == WireType::kVarint);
    CHECK(r.varint(f) == v);
    CHECK(r.done() && !r.next(&f));
  }
  // The maximum 10-byte encoding, and a non-canonical (padded) encoding.
  const std::vector<uint8_t> max = {0x08, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01};
  Reader r(max.data(), max.size());
  Field f;
  CHECK(r.next(&f) && r.varint(f) == ~0ull);
  const std::vector<uint8_t> padded = {0x08, 0x81, 0x80, 0x80, 0x00};
  Reader p(padded.data(), padded.size());
  CHECK(p.next(&f) && p.varint(f) == 1);
}

TEST(wire_varint_overflow_and_truncation) {
  auto fails = [](const std::vector<uint8_t>& b) {
    Reader r(b.data(), b.size());
    Field f;
    try {
      if (r.next(&f)) (void)r.varint(f);
    } catch (const FormatError&) {
      return true;
    }
    return false;
  };
  CHECK(fails({0x08, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02}));  // 2^64
  CHECK(fails({0x08, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01}));  // 11 bytes
  CHECK(fails({0x08, 0x80}));  // truncated value
  CHECK(fails({0x08}));        // tag without value
  CHECK(fails({0x80}));        // truncated tag
  CHECK(fails({0x00, 0x00}));  // field number 0
  CHECK(fails({0x0E, 0x00}));  // wire type 6
  CHECK(fails({0x0F, 0x00}));  // wire type 7
  CHECK(fails({0x0C}));        // end-group outside a group
  // Tag with a field number above 2^29-1.
  Msg big;
  Msg::put_varint(big.b, (uint64_t(1) << 29) << 3);
  big.b.push_back(0);
  CHECK(fails(big.b));
}

TEST(wire_fixed_and_bytes) {
  Msg m;
  m.fixed32(1, 0x11223344u).fixed64(2, 0x0102030405060708ull).str(3, "hello").bytes(4, {});
  Reader r(m.b.data(), m.b.size(), 100);
  Field f;
  CHECK(r.next(&f) && r.fixed32(f) == 0x11223344u);
  CHECK(r.next(&f) && r.fixed64(f) == 0x0102030405060708ull);
  CHECK(r.next(&f));
  const wire::Bytes b = r.bytes(f);
  CHECK(b.str() == "hello" && b.offset == 100 + 5 + 9 + 2);
  CHECK(r.next(&f) && r.bytes(f).size == 0 && r.done());
  // Each truncation of the message fails cleanly.
  for (size_t n = 1; n < m.b.size(); ++n) {
    bool threw = false, ok = false;
    try {
      Reader t(m.b.data(), n);
      while (t.next(&f)) t.skip(f);
      ok = true;
    } catch (const FormatError&) {
      threw = true;
    }
    // Cuts at field boundaries are valid shorter messages.
    CHECK(threw != ok);
  }
}

TEST(wire_type_mismatch_is_an_error) {
  Msg m;
  m.fixed32(1, 5);
  Reader r(m.b.data(), m.b.size());
  Field f;
  CHECK(r.next(&f));
  CHECK_THROWS(r.varint(f), FormatError);
  Reader r2(m.b.data(), m.b.size());
  CHECK(r2.next(&f));
  CHECK_THROWS(r2.bytes(f), FormatError);
}

TEST(wire_hostile_lengths) {
  // Length 2^63, length just past the end, length past the end of a nested message.
  std::vector<uint8_t> huge = {0x0A};
  Msg::put_varint(huge, 1ull << 63);
  huge.push_back(0);
  Reader r(huge.data(), huge.size());
  Field f;
  CHECK(r.next(&f));
  CHECK_THROWS(r.bytes(f), FormatError);

  const std::vector<uint8_t> past = {0x0A, 0x03, 'a', 'b'};
  Reader r2(past.data(), past.size());
  CHECK(r2.next(&f));
  CHECK_THROWS(r2.bytes(f), FormatError);

  // The inner message claims 5 bytes but only 2 remain inside the outer one.
  const std::vector<uint8_t> nested = {0x0A, 0x04, 0x12, 0x05, 'a', 'b', 'c', 'd', 'e', 'f'};
  Reader r3(nested.data(), nested.size());
  CHECK(r3.next(&f));
  Reader inner = r3.message(f);
  CHECK(inner.next(&f));
  CHECK_THROWS(inner.bytes(f), FormatError);
  try {
    Reader r4(nested.data(), nested.size());
    CHECK(r4.next(&f));
    Reader in4 = r4.message(f);
    CHECK(in4.next(&f));
    (void)in4.bytes(f);
  } catch (const FormatError& e) {
    CHECK_MSG(has(e.what(), "at byte 3"), e.what());  // absolute offset of the inner length
  }
}

TEST(wire_skips_every_wire_type) {
  Msg m;
  m.varint(1, 1ull << 40).fixed64(2, 1).fixed32(3, 1).str(4, "x");
  m.tag(5, 3).varint(1, 7).str(2, "in group").tag(6, 3).fixed32(1, 2).tag(6, 4).tag(5, 4);  // nested groups
  m.varint(7, 42);
  Reader r(m.b.data(), m.b.size());
  Field f;
  uint64_t last = 0;
  while (r.next(&f)) {
    if (f.number == 7) last = r.varint(f);
    else r.skip(f);
  }
  CHECK(last == 42);
  // Mismatched end-group, unterminated group.
  Msg bad;
  bad.tag(5, 3).varint(1, 1).tag(6, 4);
  Reader rb(bad.b.data(), bad.b.size());
  CHECK(rb.next(&f));
  CHECK_THROWS(rb.skip(f), FormatError);
  Msg open;
  open.tag(5, 3).varint(1, 1);
  Reader ro(open.b.data(), open.b.size());
  CHECK(ro.next(&f));
  CHECK_THROWS(ro.skip(f), FormatError);
}

TEST(wire_deep_nesting_is_bounded) {
  // 100000 nested start-groups: rejected by the depth limit, without recursion.
  Msg groups;
  for (int i = 0; i < 100000; ++i) groups.tag(1, 3);
  Reader r(groups.b.data(), groups.b.size(), 0, 0, 32);
  Field f;
  CHECK(r.next(&f));
  CHECK_THROWS(r.skip(f), FormatError);
  // Nested messages: the reader refuses to open one deeper than the limit.
  std::vector<uint8_t> inner;
  for (int i = 0; i < 40; ++i) inner = Msg().bytes(1, inner).b;
  Reader outer(inner.data(), inner.size(), 0, 0, 32);
  bool threw = false;
  try {
    Reader cur = outer;
    for (;;) {
      if (!cur.next(&f)) break;
      cur = cur.message(f);
    }
  } catch (const FormatError& e) {
    threw = has(e.what(), "nested deeper");
  }
  CHECK(threw);
}

TEST(wire_repeated_packed_and_unpacked) {
  Msg m;
  m.varint(1, 5).packed_varints(1, {6, 7, 300}).varint(1, 8);
  m.fixed32(2, 1).packed_floats(2, {1.0f, 2.0f});
  m.fixed64(3, 9).bytes(3, std::vector<uint8_t>(16, 0));
  Reader r(m.b.data(), m.b.size());
  std::vector<uint64_t> v, d;
  std::vector<uint32_t> fl;
  Field f;
  while (r.next(&f)) {
    if (f.number == 1) r.append_varints(f, &v, 100);
    else if (f.number == 2) r.append_fixed32s(f, &fl, 100);
    else r.append_fixed64s(f, &d, 100);
  }
  CHECK((v == std::vector<uint64_t>{5, 6, 7, 300, 8}));
  CHECK(fl.size() == 3 && fl[2] == float_bits(2.0f));
  CHECK((d == std::vector<uint64_t>{9, 0, 0}));
  // Bad packed runs: not a multiple of the width, truncated varint, over the budget.
  Msg odd;
  odd.bytes(1, {1, 2, 3});
  Reader ro(odd.b.data(), odd.b.size());
  CHECK(ro.next(&f));
  CHECK_THROWS(ro.append_fixed32s(f, &fl, 100), FormatError);
  Msg trunc;
  trunc.bytes(1, {0x01, 0x80});
  Reader rt(trunc.b.data(), trunc.b.size());
  CHECK(rt.next(&f));
  CHECK_THROWS(rt.append_varints(f, &v, 100), FormatError);
  Msg many;
  many.packed_varints(1, std::vector<int64_t>(50, 1));
  Reader rm(many.b.data(), many.b.size());
  std::vector<uint64_t> small;
  CHECK(rm.next(&f));
  CHECK_THROWS(rm.append_varints(f, &small, 49), FormatError);
  CHECK(small.empty());  // rejected before anything was appended
}

// ---------------------------------------------------------------- the model

TEST(onnx_parses_every_field) {
  const Model m = parse(sample_model(true));
  CHECK(m.ir_version == 10 && m.producer_name == "ondevice" && m.producer_version == "0.1");
  CHECK(m.opset_import.size() == 2 && m.opset_version("") == 18 && m.opset_version("ai.onnx") == 18);
  CHECK(m.opset_version("ondevice") == 1 && m.opset_version("other") == -1);
  CHECK(m.metadata_props.size() == 1 && m.metadata_props[0].key == "k");
  const Graph& g = m.graph;
  CHECK(g.name == "main" && g.nodes.size() == 2);
  CHECK(g.nodes[0].op_type == "Add" && g.nodes[0].domain.empty() && g.nodes[0].name == "n0_Add");
  CHECK((g.nodes[0].inputs == std::vector<std::string>{"x", "w"}) && g.nodes[0].outputs[0] == "y");
  const Node& c = g.nodes[1];
  CHECK(c.domain == "ondevice" && c.op_type == "BitPlaneMatMul" && c.inputs.size() == 2 && c.inputs[1].empty());
  CHECK(c.attributes.size() == 8);
  CHECK(c.attribute("N")->type == AttributeType::kInt && c.attribute("N")->i == 64);
  CHECK(c.attribute("alpha")->type == AttributeType::kFloat && c.attribute("alpha")->f == 0.25f);
  CHECK(c.attribute("mode")->s == "lut");
  CHECK((c.attribute("perm")->ints == std::vector<int64_t>{0, 2, -1}));
  CHECK((c.attribute("scales")->floats == std::vector<float>{1.5f, -2.0f}));
  CHECK((c.attribute("names")->strings == std::vector<std::string>{"a", "bc"}));
  const Attribute* value = c.attribute("value");
  CHECK(value->type == AttributeType::kTensor && value->t && value->t->data_type == kInt64);
  CHECK(value->t->byte_size == 16 && value->t->view().data[8] == 2);
  CHECK(c.attribute("body")->type == AttributeType::kGraph);  // recorded, value skipped
  CHECK(c.attribute("missing") == nullptr);

  CHECK(g.initializers.size() == 7);
  const Tensor& w = g.initializers[0];
  CHECK(w.name == "w" && w.data_type == kFloat && (w.dims == std::vector<int64_t>{2, 2}));
  CHECK(w.source == TensorSource::kRawData && w.element_count == 4 && w.byte_size == 16);
  float wv[4];
  std::memcpy(wv, w.view().data, 16);
  CHECK(wv[0] == 1.0f && wv[3] == 4.0f);
  const Tensor& tf = g.initializers[1];
  CHECK(tf.source == TensorSource::kTypedData && tf.byte_size == 12);
  CHECK(tf.view().as<float>(kFloat)[2] == -3.0f);
  const Tensor& th = g.initializers[2];
  CHECK(th.data_type == kFloat16 && th.byte_size == 4);
  CHECK(th.view().as<uint16_t>(kFloat16)[1] == 0xC000);
  const Tensor& ti8 = g.initializers[3];
  CHECK(ti8.view().as<int8_t>(kInt8)[0] == -128 && ti8.view().as<int8_t>(kInt8)[1] == 127);
  const Tensor& sc = g.initializers[4];
  CHECK(sc.dims.empty() && sc.element_count == 1 && sc.view().as<int64_t>(kInt64)[0] == -5);
  const Tensor& big = g.initializers[5];
  CHECK(big.source == TensorSource::kExternal && !big.resolved());
  CHECK(big.external.location == "weights.bin" && big.external.offset == 0 && big.external.length == 256);
  CHECK_THROWS(big.view(), FormatError);

  CHECK(g.inputs.size() == 1 && g.inputs[0].type_kind == ValueInfo::TypeKind::kTensor);
  CHECK(g.inputs[0].elem_type == kFloat && g.inputs[0].has_shape && g.inputs[0].shape.size() == 2);
  CHECK(g.inputs[0].shape[0].kind == Dimension::Kind::kParam && g.inputs[0].shape[0].param == "batch");
  CHECK(g.inputs[0].shape[1].kind == Dimension::Kind::kValue && g.inputs[0].shape[1].value == 2);
  CHECK(g.outputs.size() == 1 && g.outputs[0].name == "z");

  CHECK(m.functions.size() == 1);
  const Function* fn = m.function("ondevice", "BitPlaneMatMul");
  CHECK(fn != nullptr && m.function("", "BitPlaneMatMul") == nullptr);
  CHECK((fn->inputs == std::vector<std::string>{"X", "W"}) && fn->outputs.size() == 1);
  CHECK((fn->attributes == std::vector<std::string>{"N"}));
  CHECK(fn->attribute_defaults.size() == 1 && fn->attribute_defaults[0].i == 8);
  CHECK(fn->nodes.size() == 2 && fn->nodes[0].attributes[0].ref_attr_name == "N");
  CHECK(fn->opset_import.size() == 1 && fn->opset_import[0].version == 18);
}

TEST(onnx_tensor_view_checks_type_and_alignment) {
  Msg graph;
  graph.msg(5, raw_tensor("w", 1, {2}, float_bytes({1, 2})));
  const std::vector<uint8_t> model = Msg().msg(7, graph).b;
  // Place the model at an odd address so that raw_data is misaligned.
  for (size_t shift : {0, 1, 2, 3}) {
    auto buf = std::make_shared<std::vector<uint8_t>>(shift + model.size() + 8);
    std::memcpy(buf->data() + shift, model.data(), model.size());
    const Model m = parse_onnx_model(buf->data() + shift, model.size(), buf);
    const TensorView v = m.graph.initializers[0].view();
    CHECK_THROWS(v.as<int32_t>(kInt32), FormatError);  // wrong type
    CHECK_THROWS(v.as<double>(kFloat), FormatError);   // wrong width
    if (v.aligned(4)) CHECK(v.as<float>(kFloat)[1] == 2.0f);
    else CHECK_THROWS(v.as<float>(kFloat), FormatError);
  }
}

TEST(onnx_typed_data_rules) {
  auto model_with = [](const Msg& tensor) { return Msg().msg(7, Msg().msg(5, tensor)).b; };
  auto err = [&](const Msg& tensor) { return format_error(model_with(tensor)); };
  // Values out of range for the element type.
  CHECK(has(err(Msg().varint(1, 1).varint(2, 3).packed_varints(5, {128})), "out of range"));
  CHECK(has(err(Msg().varint(1, 1).varint(2, 9).packed_varints(5, {2})), "out of range"));
  CHECK(has(err(Msg().varint(1, 1).varint(2, 12).packed_varints(11, {1ll << 32})), "out of range"));
  // A count that does not match the dims; the wrong field for the type.
  CHECK(has(err(Msg().varint(1, 3).varint(2, 1).packed_floats(4, {1, 2})), "dims require 3"));
  CHECK(has(err(Msg().varint(1, 1).varint(2, 1).packed_varints(7, {1})), "cannot be stored in int64_data"));
  CHECK(has(err(Msg().varint(1, 2).varint(2, 22).packed_varints(5, {1})), "use raw_data"));
  // raw_data and a typed field; raw_data of the wrong size; no data at all.
  CHECK(has(err(Msg().varint(1, 1).varint(2, 1).packed_floats(4, {1}).bytes(9, {0, 0, 0, 0})), "both"));
  CHECK(has(err(Msg().varint(1, 2).varint(2, 1).bytes(9, {0, 0, 0, 0})), "require 8"));
  CHECK(has(err(Msg().varint(1, 2).varint(2, 1)), "no data"));
  // Unsupported and unknown data types; negative and overflowing dims.
  CHECK(has(err(Msg().varint(2, 8).str(6, "s")), "unsupported tensor data type STRING"));
  CHECK(has(err(Msg().varint(2, 0)), "UNDEFINED"));
  CHECK(has(err(Msg().varint(2, 99)), "UNKNOWN(99)"));
  CHECK(has(err(Msg().varint(1, uint64_t(int64_t(-1))).varint(2, 1)), "negative"));
  CHECK(has(err(Msg().varint(1, 1ull << 40).varint(1, 1ull << 40).varint(2, 1)), "too many elements"));
  CHECK(has(err(Msg().varint(2, 1).varint(3, 0)), "segment"));
  // Zero elements need no data; complex64 takes two floats per element; sub-byte types pack.
  CHECK(err(Msg().varint(1, 0).varint(1, 5).varint(2, 1)).empty());
  CHECK(err(Msg().varint(1, 1).varint(2, 14).packed_floats(4, {1, 2})).empty());
  CHECK(err(Msg().varint(1, 3).varint(2, 21).bytes(9, {0x21, 0x03})).empty());
  const Model m = parse(model_with(Msg().varint(1, 3).varint(2, 21).bytes(9, {0x21, 0x03})));
  CHECK(m.graph.initializers[0].byte_size == 2 && m.graph.initializers[0].element_count == 3);
  // External entries on a non-external tensor; a location key twice; bad numbers.
  CHECK(has(err(Msg().varint(2, 1).bytes(9, {0, 0, 0, 0}).msg(13, Msg().str(1, "location").str(2, "w"))), "not EXTERNAL"));
  CHECK(has(err(external_tensor("t", 1, {1}, "w", "0", "4").msg(13, Msg().str(1, "location").str(2, "v"))), "twice"));
  CHECK(has(err(external_tensor("t", 1, {1}, "w", "-4", "4")), "not a decimal"));
  CHECK(has(err(external_tensor("t", 1, {1}, "w", "0", "99999999999999999999999")), "not a decimal"));
  CHECK(has(err(external_tensor("t", 1, {1}, "w", "0", "18446744073709551616")), "overflows"));
  CHECK(has(err(external_tensor("t", 1, {1}, "w", "0", "8")), "does not match"));
  CHECK(has(err(external_tensor("t", 1, {1}, "w", "0", "4").bytes(9, {0, 0, 0, 0})), "also data"));
  CHECK(has(err(Msg().varint(2, 1).varint(1, 1).varint(14, 1)), "without a 'location'"));
  CHECK(has(err(Msg().varint(2, 1).varint(1, 0).varint(14, 2)), "data_location"));
}

TEST(onnx_structural_errors_name_the_field_path) {
  // The error names where: the path of messages and the byte offset.
  Msg bad_node = Msg().str(4, "Add").msg(5, Msg().str(1, "k").varint(20, 99));
  const std::string e = format_error(Msg().msg(7, Msg().msg(1, Msg().str(4, "Relu")).msg(1, bad_node)).b);
  CHECK_MSG(has(e, "ModelProto.graph.node[1].attribute[0]") && has(e, "unknown attribute type 99") &&
                has(e, "at byte"),
            e);
  const std::string t = format_error(Msg().msg(7, Msg().msg(5, Msg().varint(2, 1).varint(1, 2).str(8, "w"))).b);
  CHECK_MSG(has(t, "ModelProto.graph.initializer[0]") && has(t, "tensor 'w'"), t);
  CHECK(has(format_error({}), "no graph"));
  CHECK(has(format_error(Msg().msg(7, Msg()).msg(7, Msg()).b), "duplicate field 'graph'"));
  CHECK(has(format_error(Msg().msg(7, Msg()).msg(8, opset("", 17)).msg(8, opset("", 18)).b), "twice"));
  CHECK(has(format_error(Msg().msg(7, Msg().msg(1, Msg().str(1, "x"))).b), "without an op_type"));
  CHECK(has(format_error(Msg().msg(7, Msg().msg(1, Msg().str(4, "A").msg(5, Msg().varint(20, 2)))).b), "without a name"));
  CHECK(has(format_error(Msg().msg(7, Msg().msg(1, Msg().str(4, "A").msg(5, Msg().str(1, "a")))).b), "no type"));
  CHECK(has(format_error(Msg().msg(7, Msg().msg(1, Msg().str(4, "A").msg(5, Msg().str(1, "a").varint(20, 4)))).b),
            "holds no tensor"));
  CHECK(has(format_error(Msg().msg(7, Msg().msg(15, Msg())).b), "sparse"));
  CHECK(has(format_error(Msg().msg(7, Msg()).msg(25, Msg().str(10, "d")).b), "function without a name"));
  CHECK(has(format_error(Msg().msg(7, Msg()).varint(2, 1).b), "expected length-delimited"));
  CHECK(has(format_error(Msg().msg(7, Msg().msg(5, Msg().varint(2, 1ull << 40))).b), "does not fit in int32"));
  // Two types in one TypeProto, a duplicate shape.
  Msg two_types = Msg().str(1, "x").msg(2, Msg().msg(1, Msg().varint(1, 1)).msg(4, Msg()));
  CHECK(has(format_error(Msg().msg(7, Msg().msg(11, two_types)).b), "more than one type"));
}

TEST(onnx_limits) {
  const std::vector<uint8_t> good = sample_model(false);
  ParseLimits tight;
  tight.max_depth = 3;  // graph 1 > node 2 > attribute 3 > its tensor 4
  CHECK(has(format_error(good, tight), "nested deeper"));
  ParseLimits few;
  few.max_items = 20;
  CHECK(has(format_error(good, few), "more than 20 items"));
  ParseLimits small;
  small.max_model_bytes = 10;
  CHECK(has(format_error(good, small), "exceeds the limit"));
  ParseLimits rank;
  rank.max_rank = 1;
  CHECK(has(format_error(good, rank), "rank"));
  // A huge packed run costs nothing before it is rejected.
  Msg floats;
  floats.varint(1, 1).varint(2, 1).bytes(4, std::vector<uint8_t>(4 * 1000, 0));
  ParseLimits budget;
  budget.max_items = 100;
  CHECK(has(format_error(Msg().msg(7, Msg().msg(5, floats)).b, budget), "more than"));
  // Deep nesting in an unknown field of the model (groups) hits the depth limit.
  Msg deep;
  for (int i = 0; i < 1000; ++i) deep.tag(50, 3);
  CHECK(has(format_error(Msg().msg(7, Msg()).raw(deep.b).b), "nested deeper"));
  // A 2^63 length for the graph.
  std::vector<uint8_t> hostile = {0x3A};
  Msg::put_varint(hostile, 1ull << 63);
  CHECK(has(format_error(hostile), "exceeds"));
}

TEST(onnx_every_truncation_parses_or_fails_cleanly) {
  const std::vector<uint8_t> good = sample_model(true);
  (void)parse(good);
  size_t ok = 0, rejected = 0;
  for (size_t n = 0; n < good.size(); ++n) {
    // An exact-size heap copy, so ASan catches any read past the end.
    std::vector<uint8_t> cut(good.begin(), good.begin() + n);
    try {
      const Model m = parse(cut);
      touch_all(m);
      ++ok;
    } catch (const FormatError&) {
      ++rejected;
    }
  }
  CHECK(ok + rejected == good.size());
  CHECK(rejected > good.size() / 2);  // most cuts fall inside a field
}

TEST(onnx_random_corruptions_parse_or_fail_cleanly) {
  const std::vector<uint8_t> good = sample_model(true);
  std::mt19937 rng(7);
  size_t ok = 0, rejected = 0;
  for (int trial = 0; trial < 4000; ++trial) {
    std::vector<uint8_t> bad = good;
    const int flips = 1 + int(rng() % 4);
    for (int k = 0; k < flips; ++k) {
      const size_t pos = rng() % bad.size();
      switch (rng() % 3) {
        case 0: bad[pos] ^= uint8_t(1u << (rng() % 8)); break;
        case 1: bad[pos] = uint8_t(rng()); break;
        default: bad[pos] = 0xFF; break;  // long varints, huge lengths
      }
    }
    try {
      const Model m = parse(bad);
      touch_all(m);
      ++ok;
    } catch (const FormatError&) {
      ++rejected;
    }
  }
  CHECK(ok + rejected == 4000 && rejected > 0 && ok > 0);
}

// ---------------------------------------------------------------- external data

TEST(onnx_external_data_is_mapped_zero_copy) {
  TempDir dir;
  const std::vector<uint8_t> weights = weights_file();
  dir.write("weights.bin", weights);
  const std::string path = dir.write("model.onnx", sample_model(true));
  const Model m = load_onnx_model(path);
  const Tensor& big = m.graph.initializers[5];
  const Tensor& small = m.graph.initializers[6];
  CHECK(big.resolved() && small.resolved());
  // One mapping shared by both tensors ("weights.bin" and "./weights.bin"),
  // the second tensor exactly 256 bytes after the first: both point into it.
  CHECK(big.owner && big.owner == small.owner);
  CHECK(small.view().data == big.view().data + 256);
  CHECK(std::memcmp(big.view().data, weights.data(), 256) == 0);
  CHECK(small.view().as<float>(kFloat)[15] == 79 * 0.5f);
  CHECK(big.view().aligned(4096));  // offset 0 of a mapping: page-aligned
  // raw_data points into the model buffer, shared by every raw tensor.
  CHECK(m.graph.initializers[0].owner && m.graph.initializers[0].owner == m.graph.nodes[1].attribute("value")->t->owner);
  // Views outlive the model: the tensor's owner keeps the mapping alive.
  Tensor copy;
  {
    const Model tmp = load_onnx_model(path);
    copy = tmp.graph.initializers[6];
  }
  CHECK(copy.view().as<float>(kFloat)[0] == 64 * 0.5f);
}

TEST(onnx_external_data_rejects_escapes_and_bad_ranges) {
  TempDir dir;
  dir.write("weights.bin", weights_file());  // 320 bytes
  dir.mkdir("sub");
  dir.write("sub/w.bin", weights_file());
  dir.write("empty.bin", {});
  auto load_with = [&](const Msg& tensor) -> std::string {
    const std::string path = dir.write("m.onnx", Msg().msg(7, Msg().msg(5, tensor)).b);
    try {
      const Model m = load_onnx_model(path);
      touch_all(m);
    } catch (const FormatError& e) {
      return e.what();
    }
    return "";
  };
  auto ext = [](const std::string& loc, const std::string& off, const std::string& len, int64_t n = 4) {
    return external_tensor("t", 1, {n}, loc, off, len);
  };
  CHECK(load_with(ext("weights.bin", "16", "16")).empty());
  CHECK(load_with(ext("sub/w.bin", "0", "16")).empty());
  CHECK(load_with(ext("sub/./w.bin", "304", "")).empty());  // no length: to the end of the file
  CHECK(load_with(ext("empty.bin", "0", "", 0)).empty());   // nothing in an empty file
  CHECK(has(load_with(ext("../weights.bin", "0", "16")), "leaves the model directory"));
  CHECK(has(load_with(ext("sub/../../weights.bin", "0", "16")), "leaves the model directory"));
  CHECK(has(load_with(ext("sub/..", "0", "16")), "leaves the model directory"));
  CHECK(has(load_with(ext("/etc/passwd", "0", "16")), "absolute path"));
  CHECK(has(load_with(ext("..\\weights.bin", "0", "16")), "backslash"));
  CHECK(has(load_with(ext(std::string("weights.bin\0x", 13), "0", "16")), "NUL"));
  CHECK(has(load_with(ext(".", "0", "16")), "names no file"));
  CHECK(has(load_with(ext("sub", "0", "16")), "not a regular file"));
  CHECK(has(load_with(ext("missing.bin", "0", "16")), "cannot open"));
  CHECK(has(load_with(ext("weights.bin", "321", "0", 0)), "beyond the end"));
  CHECK(has(load_with(ext("weights.bin", "320", "16")), "beyond the end"));
  CHECK(has(load_with(ext("weights.bin", "310", "16")), "beyond the end"));
  CHECK(has(load_with(ext("weights.bin", "18446744073709551615", "16")), "beyond the end"));
  CHECK(has(load_with(ext("weights.bin", "0", "")), "require 16"));  // the rest of the file is 320 bytes
  CHECK(has(load_with(ext("empty.bin", "0", "")), "require 16"));
  const std::string e = load_with(ext("weights.bin", "400", "16"));
  CHECK_MSG(has(e, "m.onnx") && has(e, "tensor 't'"), e);  // the file and the tensor are named
}

TEST(onnx_load_errors) {
  TempDir dir;
  CHECK_THROWS(load_onnx_model(dir.path + "/none.onnx"), FormatError);
  CHECK_THROWS(load_onnx_model(dir.path), FormatError);  // a directory
  const std::string path = dir.write("bad.onnx", {0x3A, 0xFF});
  try {
    (void)load_onnx_model(path);
    CHECK(false);
  } catch (const FormatError& e) {
    CHECK_MSG(has(e.what(), "bad.onnx") && has(e.what(), "truncated varint"), e.what());
  }
}
