#include "pipeline/contract/json_schema.h"

#include <re2/re2.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "pipeline/contract/json_number.h"
#include "pipeline/contract/json_schema_formats.h"
#include "rapidjson/error/en.h"
#include "rapidjson/pointer.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"

namespace wharf::pipeline::contract {
namespace {

using rapidjson::SizeType;
using rapidjson::Value;
using Draft = JsonSchema::Draft;

constexpr std::string_view kDraft202012Uri = "https://json-schema.org/draft/2020-12/schema";
constexpr std::string_view kDraft7Uri = "http://json-schema.org/draft-07/schema";
// Base URI of a root schema without `$id`. Hierarchical so that relative references resolve
// normally; anything they resolve to outside the document is reported as a remote reference.
constexpr std::string_view kDefaultBaseUri = "wharf-schema:///root.json";
// Values quoted in messages are cut to about this many bytes.
constexpr size_t kRenderLimit = 64;

std::string_view ValueView(const Value& v) { return {v.GetString(), v.GetStringLength()}; }

// ---------------------------------------------------------------------------------------------
// Rendering values for messages.

void RenderStringInto(std::string_view s, std::string* out) {
  // Only the part that can still be shown is escaped; the caller truncates afterwards.
  std::string_view shown = s.substr(0, kRenderLimit + 1);
  rapidjson::StringBuffer sb;
  rapidjson::Writer<rapidjson::StringBuffer> writer(sb);
  writer.String(shown.data(), static_cast<SizeType>(shown.size()));
  out->append(sb.GetString(), sb.GetSize());
  if (shown.size() < s.size()) out->push_back(' ');  // forces truncation below
}

// Recursion is bounded by the output budget: every level appends at least one character.
void RenderInto(const Value& v, std::string* out) {
  if (out->size() > kRenderLimit) return;
  switch (v.GetType()) {
    case rapidjson::kArrayType:
      out->push_back('[');
      for (SizeType i = 0; i < v.Size(); ++i) {
        if (i > 0) out->push_back(',');
        if (out->size() > kRenderLimit) return;
        RenderInto(v[i], out);
      }
      out->push_back(']');
      return;
    case rapidjson::kObjectType: {
      out->push_back('{');
      bool first = true;
      for (const auto& m : v.GetObject()) {
        if (!first) out->push_back(',');
        first = false;
        if (out->size() > kRenderLimit) return;
        RenderStringInto(ValueView(m.name), out);
        out->push_back(':');
        RenderInto(m.value, out);
      }
      out->push_back('}');
      return;
    }
    case rapidjson::kStringType:
      RenderStringInto(ValueView(v), out);
      return;
    default: {
      rapidjson::StringBuffer sb;
      rapidjson::Writer<rapidjson::StringBuffer> writer(sb);
      v.Accept(writer);  // scalar: no recursion
      out->append(sb.GetString(), sb.GetSize());
      return;
    }
  }
}

std::string Render(const Value& v) {
  std::string out;
  RenderInto(v, &out);
  if (out.size() > kRenderLimit) {
    size_t cut = kRenderLimit;
    // Do not split a UTF-8 sequence.
    while (cut > 0 && (static_cast<unsigned char>(out[cut]) & 0xC0) == 0x80) --cut;
    out.resize(cut);
    out += "...";
  }
  return out;
}

std::string Quote(std::string_view s) {
  std::string out;
  RenderStringInto(s, &out);
  if (out.size() > kRenderLimit + 2) {
    size_t cut = kRenderLimit;
    while (cut > 0 && (static_cast<unsigned char>(out[cut]) & 0xC0) == 0x80) --cut;
    out.resize(cut);
    out += "...\"";
  }
  return out;
}

const char* InstanceTypeName(const Value& v) {
  switch (v.GetType()) {
    case rapidjson::kNullType:
      return "null";
    case rapidjson::kFalseType:
    case rapidjson::kTrueType:
      return "boolean";
    case rapidjson::kObjectType:
      return "object";
    case rapidjson::kArrayType:
      return "array";
    case rapidjson::kStringType:
      return "string";
    case rapidjson::kNumberType:
      return "number";
  }
  return "unknown";
}

// Schema locations in compile errors: RFC 6901, with the root printed as "/".
std::string Loc(const std::string& location) { return location.empty() ? "/" : location; }

void AppendPointerToken(std::string* pointer, std::string_view token) {
  pointer->push_back('/');
  for (char c : token) {
    if (c == '~') {
      *pointer += "~0";
    } else if (c == '/') {
      *pointer += "~1";
    } else {
      pointer->push_back(c);
    }
  }
}

std::string ChildLocation(const std::string& location, std::string_view token) {
  std::string out = location;
  AppendPointerToken(&out, token);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Numbers: int64 / uint64 stay exact; doubles only where the JSON text was not an integer that
// fits 64 bits.

struct Number {
  enum class Kind { kInt, kUint, kDouble };
  Kind kind = Kind::kInt;
  int64_t i = 0;
  uint64_t u = 0;  // only used for values above INT64_MAX
  double d = 0;
};

Number ToNumber(const Value& v) {
  Number n;
  if (v.IsInt64()) {
    n.i = v.GetInt64();
  } else if (v.IsUint64()) {
    n.kind = Number::Kind::kUint;
    n.u = v.GetUint64();
  } else {
    n.kind = Number::Kind::kDouble;
    n.d = v.GetDouble();
  }
  return n;
}

double AsDouble(const Number& n) {
  switch (n.kind) {
    case Number::Kind::kInt:
      return static_cast<double>(n.i);
    case Number::Kind::kUint:
      return static_cast<double>(n.u);
    case Number::Kind::kDouble:
      return n.d;
  }
  return 0;
}

bool IsIntegral(const Number& n) {
  if (n.kind != Number::Kind::kDouble) return true;
  return std::isfinite(n.d) && std::trunc(n.d) == n.d;
}

// NaN compares equal, as in the double-double case of CompareNumbers (`<` and `>` both false).
// RapidJSON 1.1 yields NaN for some numbers just above DBL_MAX (1.79769313489623157e+308) under
// kParseFullPrecisionFlag; without these checks the casts below are undefined (json_schema_fuzz).
int CompareIntDouble(int64_t i, double d) {
  if (std::isnan(d)) return 0;
  if (d >= 9223372036854775808.0) return -1;
  if (d < -9223372036854775808.0) return 1;
  double t = std::trunc(d);
  int64_t ti = static_cast<int64_t>(t);
  if (i != ti) return i < ti ? -1 : 1;
  if (d > t) return -1;
  if (d < t) return 1;
  return 0;
}

int CompareUintDouble(uint64_t u, double d) {
  if (std::isnan(d)) return 0;
  if (d >= 18446744073709551616.0) return -1;
  if (d < 0) return 1;
  double t = std::trunc(d);
  uint64_t tu = static_cast<uint64_t>(t);
  if (u != tu) return u < tu ? -1 : 1;
  return d > t ? -1 : 0;
}

int CompareNumbers(const Number& a, const Number& b) {
  using K = Number::Kind;
  switch (a.kind) {
    case K::kInt:
      if (b.kind == K::kInt) return a.i < b.i ? -1 : (a.i > b.i ? 1 : 0);
      if (b.kind == K::kUint) return -1;  // kUint is always above INT64_MAX
      return CompareIntDouble(a.i, b.d);
    case K::kUint:
      if (b.kind == K::kInt) return 1;
      if (b.kind == K::kUint) return a.u < b.u ? -1 : (a.u > b.u ? 1 : 0);
      return CompareUintDouble(a.u, b.d);
    case K::kDouble:
      if (b.kind == K::kInt) return -CompareIntDouble(b.i, a.d);
      if (b.kind == K::kUint) return -CompareUintDouble(b.u, a.d);
      return a.d < b.d ? -1 : (a.d > b.d ? 1 : 0);
  }
  return 0;
}

// Magnitude of an integral number as uint64, if it fits.
bool IntegralMagnitude(const Number& n, uint64_t* out) {
  switch (n.kind) {
    case Number::Kind::kInt:
      *out = n.i < 0 ? 0 - static_cast<uint64_t>(n.i) : static_cast<uint64_t>(n.i);
      return true;
    case Number::Kind::kUint:
      *out = n.u;
      return true;
    case Number::Kind::kDouble: {
      double a = std::fabs(n.d);
      if (!IsIntegral(n) || a >= 18446744073709551616.0) return false;
      *out = static_cast<uint64_t>(a);
      return true;
    }
  }
  return false;
}

// `divisor` is > 0 (checked at compile time).
bool IsMultipleOf(const Number& x, const Number& divisor) {
  uint64_t xm = 0, dm = 0;
  bool divisor_integral = IsIntegral(divisor);
  if (divisor_integral && IntegralMagnitude(divisor, &dm) && IntegralMagnitude(x, &xm)) {
    return xm % dm == 0;  // exact integer math
  }
  if (divisor_integral && !IsIntegral(x)) return false;  // k * integer is an integer
  double xd = AsDouble(x), dd = AsDouble(divisor);
  if (divisor_integral) return std::fmod(xd, dd) == 0.0;  // fmod is exact
  double q = xd / dd;
  if (!std::isfinite(q)) return std::fmod(xd, dd) == 0.0;  // quotient overflow: fmod is exact
  // Decimal divisors such as 0.0001 have no exact binary form, so the quotient of two decimal
  // multiples lands a few ulps away from an integer.
  double r = std::nearbyint(q);
  return std::fabs(q - r) <= 8 * DBL_EPSILON * std::max(1.0, std::fabs(q));
}

bool IsIntegralValue(const Value& v) { return v.IsNumber() && IsIntegral(ToNumber(v)); }

// ---------------------------------------------------------------------------------------------
// JSON equality (numbers by value, objects order-independent). Iterative: instance values may be
// nested arbitrarily deep.

bool ScalarEqual(const Value& a, const Value& b) {
  if (a.IsNumber() && b.IsNumber()) return CompareNumbers(ToNumber(a), ToNumber(b)) == 0;
  if (a.GetType() != b.GetType()) return false;
  if (a.IsString()) {
    return a.GetStringLength() == b.GetStringLength() &&
           std::memcmp(a.GetString(), b.GetString(), a.GetStringLength()) == 0;
  }
  return true;  // null, true, false
}

bool JsonEqual(const Value& a, const Value& b) {
  // Scalars (most enum and const comparisons) need no stack: the loop below would compare them
  // with ScalarEqual too, after allocating it.
  if (!a.IsArray() && !a.IsObject()) return ScalarEqual(a, b);
  std::vector<std::pair<const Value*, const Value*>> stack;
  stack.emplace_back(&a, &b);
  while (!stack.empty()) {
    auto [x, y] = stack.back();
    stack.pop_back();
    if (x->IsArray()) {
      if (!y->IsArray() || x->Size() != y->Size()) return false;
      for (SizeType i = 0; i < x->Size(); ++i) stack.emplace_back(&(*x)[i], &(*y)[i]);
    } else if (x->IsObject()) {
      if (!y->IsObject() || x->MemberCount() != y->MemberCount()) return false;
      for (const auto& m : x->GetObject()) {
        auto it = y->FindMember(m.name);
        if (it == y->MemberEnd()) return false;
        stack.emplace_back(&m.value, &it->value);
      }
    } else if (!ScalarEqual(*x, *y)) {
      return false;
    }
  }
  return true;
}

// Hash consistent with JsonEqual. Below a fixed depth every container hashes to a constant, which
// keeps the recursion bounded and stays consistent (equal values still hash equally).
size_t JsonHash(const Value& v, int depth) {
  constexpr size_t kMul = 0x9E3779B97F4A7C15ull;
  switch (v.GetType()) {
    case rapidjson::kNullType:
      return 1;
    case rapidjson::kFalseType:
      return 2;
    case rapidjson::kTrueType:
      return 3;
    case rapidjson::kStringType:
      return std::hash<std::string_view>()(ValueView(v));
    case rapidjson::kNumberType: {
      Number n = ToNumber(v);
      if (n.kind == Number::Kind::kDouble && IsIntegral(n)) {
        if (n.d >= -9223372036854775808.0 && n.d < 9223372036854775808.0) {
          n.kind = Number::Kind::kInt;
          n.i = static_cast<int64_t>(n.d);
        } else if (n.d >= 0 && n.d < 18446744073709551616.0) {
          n.kind = Number::Kind::kUint;
          n.u = static_cast<uint64_t>(n.d);
        }
      }
      switch (n.kind) {
        case Number::Kind::kInt:
          return std::hash<int64_t>()(n.i) * kMul + 5;
        case Number::Kind::kUint:
          return std::hash<uint64_t>()(n.u) * kMul + 5;
        case Number::Kind::kDouble:
          return std::hash<double>()(n.d) * kMul + 5;
      }
      return 5;
    }
    case rapidjson::kArrayType: {
      size_t h = 7 + v.Size();
      if (depth <= 0) return h;
      for (const auto& e : v.GetArray()) h = h * kMul + JsonHash(e, depth - 1);
      return h;
    }
    case rapidjson::kObjectType: {
      size_t h = 11 + v.MemberCount();
      if (depth <= 0) return h;
      for (const auto& m : v.GetObject()) {
        h += std::hash<std::string_view>()(ValueView(m.name)) * kMul ^ JsonHash(m.value, depth - 1);
      }
      return h;
    }
  }
  return 0;
}

size_t CodePointCount(const Value& s) {
  size_t n = 0;
  const char* p = s.GetString();
  for (SizeType i = 0; i < s.GetStringLength(); ++i) {
    if ((static_cast<unsigned char>(p[i]) & 0xC0) != 0x80) ++n;
  }
  return n;
}

// ---------------------------------------------------------------------------------------------
// Evaluation.

struct PathToken {
  const char* name = nullptr;
  SizeType length = 0;
  SizeType index = 0;
  bool is_index = false;
};

struct InternalViolation {
  std::string pointer;
  std::string keyword;
  std::string detail;

  std::string Message() const { return (pointer.empty() ? "/" : pointer) + ": " + detail; }
};

struct Node;

struct EvalContext {
  const std::vector<Node>* nodes = nullptr;
  // Where the first failure is described; null while evaluating quietly (inside anyOf, not, if,
  // contains, ...), where failing is an expected outcome and building messages would be waste.
  InternalViolation* out = nullptr;
  std::vector<PathToken> path;
  int eval_depth = 0;
};

std::string PointerString(const std::vector<PathToken>& path) {
  rapidjson::Pointer pointer;
  for (const PathToken& t : path) {
    pointer = t.is_index ? pointer.Append(t.index) : pointer.Append(t.name, t.length);
  }
  rapidjson::StringBuffer sb;
  pointer.Stringify(sb);
  return std::string(sb.GetString(), sb.GetSize());
}

template <typename DetailFn>
bool Fail(EvalContext& ctx, const char* keyword, DetailFn&& detail) {
  if (ctx.out != nullptr) {
    ctx.out->pointer = PointerString(ctx.path);
    ctx.out->keyword = keyword;
    ctx.out->detail = detail();
  }
  return false;
}

// Restores the violation sink on scope exit.
class QuietScope {
 public:
  explicit QuietScope(EvalContext& ctx) : ctx_(ctx), saved_(ctx.out) { ctx.out = nullptr; }
  ~QuietScope() { ctx_.out = saved_; }
  QuietScope(const QuietScope&) = delete;
  QuietScope& operator=(const QuietScope&) = delete;

 private:
  EvalContext& ctx_;
  InternalViolation* saved_;
};

// Keyword evaluation order: cheap, most telling checks first, so the reported first failure is
// the most direct one ("type" before "properties").
enum Rank { kRankType = 0, kRankValue = 1, kRankAssert = 2, kRankRef = 3, kRankApply = 4 };

class Keyword {
 public:
  explicit Keyword(Rank rank) : rank_(rank) {}
  virtual ~Keyword() = default;
  // Returns false on the first failure; reports it through ctx.out when that is set.
  virtual bool Validate(const Value& instance, EvalContext& ctx) const = 0;
  // Subschemas applied to the same instance location (for detecting endless $ref loops).
  virtual void AppendSameInstanceChildren(std::vector<int>* /*out*/) const {}
  Rank rank() const { return rank_; }

 private:
  Rank rank_;
};

struct Node {
  enum class Kind { kTrue, kFalse, kObject };
  Kind kind = Kind::kTrue;
  std::string location;  // JSON pointer in the schema document
  std::vector<std::unique_ptr<Keyword>> keywords;
};

bool Evaluate(int index, const Value& instance, EvalContext& ctx) {
  const Node& node = (*ctx.nodes)[index];
  switch (node.kind) {
    case Node::Kind::kTrue:
      return true;
    case Node::Kind::kFalse:
      return Fail(ctx, "false", [] { return std::string("schema false: no value is allowed"); });
    case Node::Kind::kObject:
      break;
  }
  if (ctx.eval_depth >= JsonSchema::kMaxEvaluationDepth) {
    return Fail(ctx, "depth", [] {
      return "schema evaluation nested too deep (more than " +
             std::to_string(JsonSchema::kMaxEvaluationDepth) + " levels)";
    });
  }
  ++ctx.eval_depth;
  bool ok = true;
  for (const auto& keyword : node.keywords) {
    if (!keyword->Validate(instance, ctx)) {
      ok = false;
      break;
    }
  }
  --ctx.eval_depth;
  return ok;
}

bool EvaluateChild(int index, const Value& child, const PathToken& token, EvalContext& ctx) {
  if (ctx.path.size() >= static_cast<size_t>(JsonSchema::kMaxInstanceDepth)) {
    return Fail(ctx, "depth", [] {
      return "nesting too deep (more than " + std::to_string(JsonSchema::kMaxInstanceDepth) +
             " levels)";
    });
  }
  ctx.path.push_back(token);
  bool ok = Evaluate(index, child, ctx);
  ctx.path.pop_back();
  return ok;
}

PathToken IndexToken(SizeType i) {
  PathToken t;
  t.index = i;
  t.is_index = true;
  return t;
}

PathToken NameToken(const Value& name) {
  PathToken t;
  t.name = name.GetString();
  t.length = name.GetStringLength();
  return t;
}

// Full message of why `index` rejects `instance` (used for summaries of anyOf / oneOf /
// propertyNames). Only called on the failure path with a sink present.
std::string DescribeFailure(int index, const Value& instance, EvalContext& ctx) {
  InternalViolation inner;
  InternalViolation* saved = ctx.out;
  ctx.out = &inner;
  bool ok = Evaluate(index, instance, ctx);
  ctx.out = saved;
  return ok ? std::string("valid") : inner.Message();
}

bool IsFalseNode(const EvalContext& ctx, int index) {
  return (*ctx.nodes)[index].kind == Node::Kind::kFalse;
}

// --- type / enum / const -----------------------------------------------------------------------

enum TypeBits : unsigned {
  kTypeNull = 1,
  kTypeBoolean = 2,
  kTypeObject = 4,
  kTypeArray = 8,
  kTypeNumber = 16,
  kTypeString = 32,
  kTypeInteger = 64,
};

class TypeKeyword : public Keyword {
 public:
  TypeKeyword(unsigned mask, std::string names) : Keyword(kRankType), mask_(mask), names_(names) {}
  bool Validate(const Value& v, EvalContext& ctx) const override {
    unsigned bit = 0;
    switch (v.GetType()) {
      case rapidjson::kNullType:
        bit = kTypeNull;
        break;
      case rapidjson::kFalseType:
      case rapidjson::kTrueType:
        bit = kTypeBoolean;
        break;
      case rapidjson::kObjectType:
        bit = kTypeObject;
        break;
      case rapidjson::kArrayType:
        bit = kTypeArray;
        break;
      case rapidjson::kStringType:
        bit = kTypeString;
        break;
      case rapidjson::kNumberType:
        if ((mask_ & kTypeNumber) || ((mask_ & kTypeInteger) && IsIntegralValue(v))) return true;
        break;
    }
    if (mask_ & bit) return true;
    return Fail(ctx, "type",
                [&] { return "type " + names_ + " expected, got " + InstanceTypeName(v); });
  }

 private:
  unsigned mask_;
  std::string names_;  // "string" or "string or null"
};

class EnumKeyword : public Keyword {
 public:
  explicit EnumKeyword(const Value* values) : Keyword(kRankValue), values_(values) {}
  bool Validate(const Value& v, EvalContext& ctx) const override {
    for (const auto& candidate : values_->GetArray()) {
      if (JsonEqual(candidate, v)) return true;
    }
    return Fail(ctx, "enum",
                [&] { return "enum " + Render(*values_) + " expected, got " + Render(v); });
  }

 private:
  const Value* values_;  // owned by the compiled schema document
};

class ConstKeyword : public Keyword {
 public:
  explicit ConstKeyword(const Value* value) : Keyword(kRankValue), value_(value) {}
  bool Validate(const Value& v, EvalContext& ctx) const override {
    if (JsonEqual(*value_, v)) return true;
    return Fail(ctx, "const",
                [&] { return "const " + Render(*value_) + " expected, got " + Render(v); });
  }

 private:
  const Value* value_;
};

// --- numbers -----------------------------------------------------------------------------------

class BoundKeyword : public Keyword {
 public:
  enum class Kind { kMinimum, kExclusiveMinimum, kMaximum, kExclusiveMaximum };
  BoundKeyword(Kind kind, const char* name, const Value* limit)
      : Keyword(kRankAssert),
        kind_(kind),
        name_(name),
        limit_value_(limit),
        limit_(ToNumber(*limit)) {}
  bool Validate(const Value& v, EvalContext& ctx) const override {
    if (!v.IsNumber()) return true;
    int c = CompareNumbers(ToNumber(v), limit_);
    bool ok = false;
    switch (kind_) {
      case Kind::kMinimum:
        ok = c >= 0;
        break;
      case Kind::kExclusiveMinimum:
        ok = c > 0;
        break;
      case Kind::kMaximum:
        ok = c <= 0;
        break;
      case Kind::kExclusiveMaximum:
        ok = c < 0;
        break;
    }
    if (ok) return true;
    return Fail(ctx, name_, [&] {
      return std::string(name_) + " " + Render(*limit_value_) + ", got " + Render(v);
    });
  }

 private:
  Kind kind_;
  const char* name_;
  const Value* limit_value_;
  Number limit_;
};

class MultipleOfKeyword : public Keyword {
 public:
  explicit MultipleOfKeyword(const Value* divisor)
      : Keyword(kRankAssert), divisor_value_(divisor), divisor_(ToNumber(*divisor)) {}
  bool Validate(const Value& v, EvalContext& ctx) const override {
    if (!v.IsNumber() || IsMultipleOf(ToNumber(v), divisor_)) return true;
    return Fail(ctx, "multipleOf",
                [&] { return "multipleOf " + Render(*divisor_value_) + ", got " + Render(v); });
  }

 private:
  const Value* divisor_value_;
  Number divisor_;
};

// --- counts (minLength, maxItems, minProperties, ...) -----------------------------------------

class CountKeyword : public Keyword {
 public:
  enum class Target { kStringLength, kItems, kProperties };
  CountKeyword(Target target, bool is_min, const char* name, uint64_t limit)
      : Keyword(kRankAssert), target_(target), is_min_(is_min), name_(name), limit_(limit) {}
  bool Validate(const Value& v, EvalContext& ctx) const override {
    uint64_t count = 0;
    const char* unit = "";
    switch (target_) {
      case Target::kStringLength:
        if (!v.IsString()) return true;
        // Each code point takes 1 to 4 bytes: when the byte length alone decides (at most
        // maxLength bytes; at least 4 * minLength bytes, so at least minLength code points),
        // counting cannot change the outcome.
        if (is_min_ ? v.GetStringLength() / 4 >= limit_ : v.GetStringLength() <= limit_) {
          return true;
        }
        count = CodePointCount(v);
        unit = " characters";
        break;
      case Target::kItems:
        if (!v.IsArray()) return true;
        count = v.Size();
        unit = " items";
        break;
      case Target::kProperties:
        if (!v.IsObject()) return true;
        count = v.MemberCount();
        unit = " properties";
        break;
    }
    if (is_min_ ? count >= limit_ : count <= limit_) return true;
    return Fail(ctx, name_, [&] {
      return std::string(name_) + " " + std::to_string(limit_) + ", got " + std::to_string(count) +
             unit;
    });
  }

 private:
  Target target_;
  bool is_min_;
  const char* name_;
  uint64_t limit_;
};

// --- strings -----------------------------------------------------------------------------------

class PatternKeyword : public Keyword {
 public:
  PatternKeyword(std::string source, std::unique_ptr<RE2> re)
      : Keyword(kRankAssert), source_(std::move(source)), re_(std::move(re)) {}
  bool Validate(const Value& v, EvalContext& ctx) const override {
    if (!v.IsString()) return true;
    if (RE2::PartialMatch(re2::StringPiece(v.GetString(), v.GetStringLength()), *re_)) {
      return true;
    }
    return Fail(ctx, "pattern",
                [&] { return "pattern " + Quote(source_) + " expected, got " + Render(v); });
  }

 private:
  std::string source_;
  std::unique_ptr<RE2> re_;
};

class FormatKeyword : public Keyword {
 public:
  FormatKeyword(std::string name, JsonSchemaFormatChecker checker)
      : Keyword(kRankAssert), name_(std::move(name)), checker_(checker) {}
  bool Validate(const Value& v, EvalContext& ctx) const override {
    if (!v.IsString() || checker_(ValueView(v))) return true;
    return Fail(ctx, "format",
                [&] { return "format " + Quote(name_) + " expected, got " + Render(v); });
  }

 private:
  std::string name_;
  JsonSchemaFormatChecker checker_;
};

// --- arrays ------------------------------------------------------------------------------------

// prefixItems + items (2020-12) or items-array + additionalItems / items-schema (draft-07).
class ItemsKeyword : public Keyword {
 public:
  ItemsKeyword(std::vector<int> prefix, int rest, const char* rest_name)
      : Keyword(kRankApply), prefix_(std::move(prefix)), rest_(rest), rest_name_(rest_name) {}
  bool Validate(const Value& v, EvalContext& ctx) const override {
    if (!v.IsArray()) return true;
    SizeType n = v.Size();
    SizeType i = 0;
    for (; i < n && i < prefix_.size(); ++i) {
      if (!EvaluateChild(prefix_[i], v[i], IndexToken(i), ctx)) return false;
    }
    if (rest_ < 0 || i >= n) return true;
    if (IsFalseNode(ctx, rest_)) {
      return Fail(ctx, rest_name_, [&] {
        return std::string(rest_name_) + ": at most " + std::to_string(prefix_.size()) +
               " items allowed, got " + std::to_string(n);
      });
    }
    for (; i < n; ++i) {
      if (!EvaluateChild(rest_, v[i], IndexToken(i), ctx)) return false;
    }
    return true;
  }

 private:
  std::vector<int> prefix_;
  int rest_;  // -1: no schema for the remaining items
  const char* rest_name_;
};

class ContainsKeyword : public Keyword {
 public:
  ContainsKeyword(int schema, uint64_t min, bool has_max, uint64_t max)
      : Keyword(kRankApply), schema_(schema), min_(min), has_max_(has_max), max_(max) {}
  bool Validate(const Value& v, EvalContext& ctx) const override {
    if (!v.IsArray()) return true;
    uint64_t matches = 0;
    {
      QuietScope quiet(ctx);
      for (SizeType i = 0; i < v.Size(); ++i) {
        ctx.path.push_back(IndexToken(i));
        bool ok = ctx.path.size() <= static_cast<size_t>(JsonSchema::kMaxInstanceDepth) &&
                  Evaluate(schema_, v[i], ctx);
        ctx.path.pop_back();
        if (ok) {
          ++matches;
          // Enough is known once the minimum is met and no maximum needs counting.
          if (!has_max_ && matches >= min_) return true;
        }
      }
    }
    if (matches < min_) {
      return Fail(ctx, min_ == 1 ? "contains" : "minContains", [&] {
        if (min_ == 1) return std::string("contains: no item matches the schema");
        return "minContains " + std::to_string(min_) + ", got " + std::to_string(matches) +
               " matching items";
      });
    }
    if (has_max_ && matches > max_) {
      return Fail(ctx, "maxContains", [&] {
        return "maxContains " + std::to_string(max_) + ", got " + std::to_string(matches) +
               " matching items";
      });
    }
    return true;
  }

 private:
  int schema_;
  uint64_t min_;
  bool has_max_;
  uint64_t max_;
};

class UniqueItemsKeyword : public Keyword {
 public:
  UniqueItemsKeyword() : Keyword(kRankAssert) {}
  bool Validate(const Value& v, EvalContext& ctx) const override {
    if (!v.IsArray() || v.Size() < 2) return true;
    SizeType first = 0, second = 0;
    if (!FindDuplicate(v, &first, &second)) return true;
    return Fail(ctx, "uniqueItems", [&] {
      return "uniqueItems expected, items " + std::to_string(first) + " and " +
             std::to_string(second) + " are equal";
    });
  }

 private:
  static bool FindDuplicate(const Value& v, SizeType* first, SizeType* second) {
    SizeType n = v.Size();
    if (n <= 16) {
      for (SizeType i = 0; i < n; ++i) {
        for (SizeType j = i + 1; j < n; ++j) {
          if (JsonEqual(v[i], v[j])) {
            *first = i;
            *second = j;
            return true;
          }
        }
      }
      return false;
    }
    // Sort by hash; only items with equal hashes need a full comparison.
    std::vector<std::pair<size_t, SizeType>> hashed;
    hashed.reserve(n);
    for (SizeType i = 0; i < n; ++i) hashed.emplace_back(JsonHash(v[i], 8), i);
    std::sort(hashed.begin(), hashed.end());
    bool found = false;
    for (size_t run = 0; run < hashed.size();) {
      size_t end = run + 1;
      while (end < hashed.size() && hashed[end].first == hashed[run].first) ++end;
      for (size_t a = run; a < end; ++a) {
        for (size_t b = a + 1; b < end; ++b) {
          if (JsonEqual(v[hashed[a].second], v[hashed[b].second])) {
            SizeType lo = std::min(hashed[a].second, hashed[b].second);
            SizeType hi = std::max(hashed[a].second, hashed[b].second);
            // Report the earliest pair so the message does not depend on hash order.
            if (!found || lo < *first || (lo == *first && hi < *second)) {
              *first = lo;
              *second = hi;
            }
            found = true;
          }
        }
      }
      run = end;
    }
    return found;
  }
};

// --- objects -----------------------------------------------------------------------------------

struct CompiledPattern {
  std::string source;
  std::unique_ptr<RE2> re;
};

// properties + patternProperties + additionalProperties, evaluated in one pass over the members.
class PropertiesKeyword : public Keyword {
 public:
  PropertiesKeyword(std::vector<std::pair<std::string, int>> properties,
                    std::vector<std::pair<CompiledPattern, int>> patterns, int additional)
      : Keyword(kRankApply),
        properties_(std::move(properties)),
        patterns_(std::move(patterns)),
        additional_(additional) {
    std::sort(properties_.begin(), properties_.end());
    // A hash index over the sorted list: the lookup runs for every member of every instance
    // object. emplace keeps the first of duplicate names, the one lower_bound used to find.
    for (const auto& [name, schema] : properties_) index_.emplace(name, schema);
  }
  // Not copyable: index_ points into this object's properties_.
  PropertiesKeyword(const PropertiesKeyword&) = delete;
  PropertiesKeyword& operator=(const PropertiesKeyword&) = delete;
  bool Validate(const Value& v, EvalContext& ctx) const override {
    if (!v.IsObject()) return true;
    for (const auto& m : v.GetObject()) {
      std::string_view name = ValueView(m.name);
      bool matched = false;
      if (auto it = index_.find(name); it != index_.end()) {
        matched = true;
        if (!EvaluateChild(it->second, m.value, NameToken(m.name), ctx)) return false;
      }
      for (const auto& [pattern, schema] : patterns_) {
        if (RE2::PartialMatch(re2::StringPiece(name.data(), name.size()), *pattern.re)) {
          matched = true;
          if (!EvaluateChild(schema, m.value, NameToken(m.name), ctx)) return false;
        }
      }
      if (matched || additional_ < 0) continue;
      if (IsFalseNode(ctx, additional_)) {
        return Fail(ctx, "additionalProperties", [&] {
          return "additionalProperties: property " + Quote(name) + " is not allowed";
        });
      }
      if (!EvaluateChild(additional_, m.value, NameToken(m.name), ctx)) return false;
    }
    return true;
  }

 private:
  std::vector<std::pair<std::string, int>> properties_;  // sorted by name
  // name -> schema of properties_ (the views point into properties_, never modified after the
  // constructor).
  std::unordered_map<std::string_view, int> index_;
  std::vector<std::pair<CompiledPattern, int>> patterns_;
  int additional_;  // -1: absent
};

class RequiredKeyword : public Keyword {
 public:
  explicit RequiredKeyword(std::vector<std::string> names)
      : Keyword(kRankAssert), names_(std::move(names)) {}
  bool Validate(const Value& v, EvalContext& ctx) const override {
    if (!v.IsObject()) return true;
    for (const std::string& name : names_) {
      Value key(rapidjson::StringRef(name.data(), static_cast<SizeType>(name.size())));
      if (!v.HasMember(key)) {
        return Fail(ctx, "required",
                    [&] { return "required property " + Quote(name) + " is missing"; });
      }
    }
    return true;
  }

 private:
  std::vector<std::string> names_;
};

class PropertyNamesKeyword : public Keyword {
 public:
  explicit PropertyNamesKeyword(int schema) : Keyword(kRankApply), schema_(schema) {}
  bool Validate(const Value& v, EvalContext& ctx) const override {
    if (!v.IsObject()) return true;
    for (const auto& m : v.GetObject()) {
      // The name is validated as a string instance; it has no location of its own, so errors
      // point at the object.
      Value name(rapidjson::StringRef(m.name.GetString(), m.name.GetStringLength()));
      bool ok;
      {
        QuietScope quiet(ctx);
        ok = Evaluate(schema_, name, ctx);
      }
      if (ok) continue;
      return Fail(ctx, "propertyNames", [&] {
        return "propertyNames: name " + Render(name) + " is invalid (" +
               DescribeFailure(schema_, name, ctx) + ")";
      });
    }
    return true;
  }

 private:
  int schema_;
};

class DependentRequiredKeyword : public Keyword {
 public:
  DependentRequiredKeyword(const char* name,
                           std::vector<std::pair<std::string, std::vector<std::string>>> deps)
      : Keyword(kRankAssert), name_(name), deps_(std::move(deps)) {}
  bool Validate(const Value& v, EvalContext& ctx) const override {
    if (!v.IsObject()) return true;
    for (const auto& dep : deps_) {
      // Not a structured binding: clang before 16 cannot capture those in the lambda below.
      const std::string& trigger = dep.first;
      const std::vector<std::string>& required = dep.second;
      Value key(rapidjson::StringRef(trigger.data(), static_cast<SizeType>(trigger.size())));
      if (!v.HasMember(key)) continue;
      for (const std::string& r : required) {
        Value rkey(rapidjson::StringRef(r.data(), static_cast<SizeType>(r.size())));
        if (v.HasMember(rkey)) continue;
        return Fail(ctx, name_, [&] {
          return std::string(name_) + ": property " + Quote(r) + " is required when " +
                 Quote(trigger) + " is present";
        });
      }
    }
    return true;
  }

 private:
  const char* name_;
  std::vector<std::pair<std::string, std::vector<std::string>>> deps_;
};

class DependentSchemasKeyword : public Keyword {
 public:
  explicit DependentSchemasKeyword(std::vector<std::pair<std::string, int>> deps)
      : Keyword(kRankApply), deps_(std::move(deps)) {}
  bool Validate(const Value& v, EvalContext& ctx) const override {
    if (!v.IsObject()) return true;
    for (const auto& [trigger, schema] : deps_) {
      Value key(rapidjson::StringRef(trigger.data(), static_cast<SizeType>(trigger.size())));
      if (v.HasMember(key) && !Evaluate(schema, v, ctx)) return false;
    }
    return true;
  }
  void AppendSameInstanceChildren(std::vector<int>* out) const override {
    for (const auto& d : deps_) out->push_back(d.second);
  }

 private:
  std::vector<std::pair<std::string, int>> deps_;
};

// --- applicators on the same instance ----------------------------------------------------------

class RefKeyword : public Keyword {
 public:
  RefKeyword() : Keyword(kRankRef) {}
  bool Validate(const Value& v, EvalContext& ctx) const override {
    return Evaluate(target_, v, ctx);
  }
  void AppendSameInstanceChildren(std::vector<int>* out) const override { out->push_back(target_); }
  void set_target(int target) { target_ = target; }

 private:
  int target_ = -1;  // resolved after the whole document is compiled
};

class AllOfKeyword : public Keyword {
 public:
  explicit AllOfKeyword(std::vector<int> schemas)
      : Keyword(kRankApply), schemas_(std::move(schemas)) {}
  bool Validate(const Value& v, EvalContext& ctx) const override {
    for (int s : schemas_) {
      if (!Evaluate(s, v, ctx)) return false;
    }
    return true;
  }
  void AppendSameInstanceChildren(std::vector<int>* out) const override {
    out->insert(out->end(), schemas_.begin(), schemas_.end());
  }

 private:
  std::vector<int> schemas_;
};

class AnyOfKeyword : public Keyword {
 public:
  explicit AnyOfKeyword(std::vector<int> schemas)
      : Keyword(kRankApply), schemas_(std::move(schemas)) {}
  bool Validate(const Value& v, EvalContext& ctx) const override {
    {
      QuietScope quiet(ctx);
      for (int s : schemas_) {
        if (Evaluate(s, v, ctx)) return true;
      }
    }
    return Fail(ctx, "anyOf", [&] {
      return "anyOf: value matches none of the " + std::to_string(schemas_.size()) +
             " schemas (first: " + DescribeFailure(schemas_[0], v, ctx) + ")";
    });
  }
  void AppendSameInstanceChildren(std::vector<int>* out) const override {
    out->insert(out->end(), schemas_.begin(), schemas_.end());
  }

 private:
  std::vector<int> schemas_;
};

class OneOfKeyword : public Keyword {
 public:
  explicit OneOfKeyword(std::vector<int> schemas)
      : Keyword(kRankApply), schemas_(std::move(schemas)) {}
  bool Validate(const Value& v, EvalContext& ctx) const override {
    int first_match = -1, second_match = -1;
    {
      QuietScope quiet(ctx);
      for (size_t i = 0; i < schemas_.size(); ++i) {
        if (!Evaluate(schemas_[i], v, ctx)) continue;
        if (first_match < 0) {
          first_match = static_cast<int>(i);
        } else {
          second_match = static_cast<int>(i);
          break;
        }
      }
    }
    if (first_match >= 0 && second_match < 0) return true;
    return Fail(ctx, "oneOf", [&] {
      if (first_match < 0) {
        return "oneOf: value matches none of the " + std::to_string(schemas_.size()) +
               " schemas (first: " + DescribeFailure(schemas_[0], v, ctx) + ")";
      }
      return "oneOf: value matches schemas " + std::to_string(first_match) + " and " +
             std::to_string(second_match) + ", exactly one expected";
    });
  }
  void AppendSameInstanceChildren(std::vector<int>* out) const override {
    out->insert(out->end(), schemas_.begin(), schemas_.end());
  }

 private:
  std::vector<int> schemas_;
};

class NotKeyword : public Keyword {
 public:
  explicit NotKeyword(int schema) : Keyword(kRankApply), schema_(schema) {}
  bool Validate(const Value& v, EvalContext& ctx) const override {
    bool matched;
    {
      QuietScope quiet(ctx);
      matched = Evaluate(schema_, v, ctx);
    }
    if (!matched) return true;
    return Fail(ctx, "not", [] { return std::string("not: value must not match the schema"); });
  }
  void AppendSameInstanceChildren(std::vector<int>* out) const override { out->push_back(schema_); }

 private:
  int schema_;
};

class IfThenElseKeyword : public Keyword {
 public:
  IfThenElseKeyword(int if_schema, int then_schema, int else_schema)
      : Keyword(kRankApply), if_(if_schema), then_(then_schema), else_(else_schema) {}
  bool Validate(const Value& v, EvalContext& ctx) const override {
    bool matched;
    {
      QuietScope quiet(ctx);
      matched = Evaluate(if_, v, ctx);
    }
    int next = matched ? then_ : else_;
    return next < 0 || Evaluate(next, v, ctx);
  }
  void AppendSameInstanceChildren(std::vector<int>* out) const override {
    out->push_back(if_);
    if (then_ >= 0) out->push_back(then_);
    if (else_ >= 0) out->push_back(else_);
  }

 private:
  int if_, then_, else_;
};

// ---------------------------------------------------------------------------------------------
// URI references (RFC 3986 section 5), used for `$id` / `$ref` resolution only.

bool IsAlpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }
int HexValue(char c) {
  if (IsDigit(c)) return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

struct UriRef {
  bool has_scheme = false, has_authority = false, has_query = false, has_fragment = false;
  std::string scheme, authority, path, query, fragment;

  std::string ToString() const {
    std::string out;
    if (has_scheme) out += scheme + ":";
    if (has_authority) out += "//" + authority;
    out += path;
    if (has_query) out += "?" + query;
    if (has_fragment) out += "#" + fragment;
    return out;
  }
};

UriRef ParseUriRef(std::string_view s) {
  UriRef r;
  if (!s.empty() && IsAlpha(s[0])) {
    size_t j = 1;
    while (j < s.size() &&
           (IsAlpha(s[j]) || IsDigit(s[j]) || s[j] == '+' || s[j] == '-' || s[j] == '.')) {
      ++j;
    }
    if (j < s.size() && s[j] == ':') {
      r.has_scheme = true;
      r.scheme = std::string(s.substr(0, j));
      std::transform(r.scheme.begin(), r.scheme.end(), r.scheme.begin(),
                     [](char c) { return (c >= 'A' && c <= 'Z') ? c - 'A' + 'a' : c; });
      s.remove_prefix(j + 1);
    }
  }
  if (size_t hash = s.find('#'); hash != std::string_view::npos) {
    r.has_fragment = true;
    r.fragment = std::string(s.substr(hash + 1));
    s = s.substr(0, hash);
  }
  if (size_t q = s.find('?'); q != std::string_view::npos) {
    r.has_query = true;
    r.query = std::string(s.substr(q + 1));
    s = s.substr(0, q);
  }
  if (s.substr(0, 2) == "//") {
    r.has_authority = true;
    size_t slash = s.find('/', 2);
    r.authority = std::string(s.substr(2, slash == std::string_view::npos ? s.npos : slash - 2));
    s = slash == std::string_view::npos ? std::string_view() : s.substr(slash);
  }
  r.path = std::string(s);
  return r;
}

std::string RemoveDotSegments(std::string_view in) {
  std::string out;
  while (!in.empty()) {
    if (in.substr(0, 3) == "../") {
      in.remove_prefix(3);
    } else if (in.substr(0, 2) == "./") {
      in.remove_prefix(2);
    } else if (in.substr(0, 3) == "/./") {
      in.remove_prefix(2);
    } else if (in == "/.") {
      in = "/";
    } else if (in.substr(0, 4) == "/../" || in == "/..") {
      in = in.size() == 3 ? std::string_view("/") : in.substr(3);
      size_t last = out.rfind('/');
      out.resize(last == std::string::npos ? 0 : last);
    } else if (in == "." || in == "..") {
      in = {};
    } else {
      size_t next = in.find('/', in[0] == '/' ? 1 : 0);
      std::string_view segment = in.substr(0, next);
      out += segment;
      in.remove_prefix(segment.size());
    }
  }
  return out;
}

std::string ResolveUri(const std::string& base, std::string_view reference) {
  UriRef r = ParseUriRef(reference);
  UriRef b = ParseUriRef(base);
  UriRef t;
  if (r.has_scheme) {
    t = r;
    t.path = RemoveDotSegments(r.path);
  } else {
    if (r.has_authority) {
      t.has_authority = true;
      t.authority = r.authority;
      t.path = RemoveDotSegments(r.path);
      t.has_query = r.has_query;
      t.query = r.query;
    } else {
      if (r.path.empty()) {
        t.path = b.path;
        t.has_query = r.has_query || b.has_query;
        t.query = r.has_query ? r.query : b.query;
      } else {
        if (r.path[0] == '/') {
          t.path = RemoveDotSegments(r.path);
        } else {
          std::string merged;
          if (b.has_authority && b.path.empty()) {
            merged = "/" + r.path;
          } else {
            size_t slash = b.path.rfind('/');
            merged = (slash == std::string::npos ? "" : b.path.substr(0, slash + 1)) + r.path;
          }
          t.path = RemoveDotSegments(merged);
        }
        t.has_query = r.has_query;
        t.query = r.query;
      }
      t.has_authority = b.has_authority;
      t.authority = b.authority;
    }
    t.has_scheme = b.has_scheme;
    t.scheme = b.scheme;
  }
  t.has_fragment = r.has_fragment;
  t.fragment = r.fragment;
  return t.ToString();
}

// Splits "uri#fragment"; an empty fragment is the same as none.
std::pair<std::string, std::string> SplitFragment(const std::string& uri) {
  size_t hash = uri.find('#');
  if (hash == std::string::npos) return {uri, ""};
  return {uri.substr(0, hash), uri.substr(hash + 1)};
}

bool PercentDecode(std::string_view in, std::string* out) {
  out->clear();
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      out->push_back(in[i]);
      continue;
    }
    if (i + 2 >= in.size() || HexValue(in[i + 1]) < 0 || HexValue(in[i + 2]) < 0) return false;
    out->push_back(static_cast<char>(HexValue(in[i + 1]) * 16 + HexValue(in[i + 2])));
    i += 2;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// Regular expressions: ECMA-262 source -> RE2 syntax for the constructs whose meaning differs.

void AppendCodePointEscape(uint32_t cp, std::string* out) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string digits;
  do {
    digits.insert(digits.begin(), kHex[cp & 0xF]);
    cp >>= 4;
  } while (cp != 0);
  *out += "\\x{" + digits + "}";
}

// ECMA-262 \s: WhiteSpace and LineTerminator (RE2's \s is ASCII only).
constexpr std::string_view kEcmaSpaceBody =
    "\\t\\n\\x0B\\f\\r \\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}"
    "\\x{3000}\\x{FEFF}";

// ECMA-262 `\p{...}` accepts long General_Category names and `key=value` forms; RE2 accepts
// short category names and script names only.
std::string TranslateUnicodeProperty(std::string_view name) {
  static const std::pair<std::string_view, std::string_view> kCategories[] = {
      {"Letter", "L"},
      {"Cased_Letter", "LC"},
      {"Uppercase_Letter", "Lu"},
      {"Lowercase_Letter", "Ll"},
      {"Titlecase_Letter", "Lt"},
      {"Modifier_Letter", "Lm"},
      {"Other_Letter", "Lo"},
      {"Mark", "M"},
      {"Combining_Mark", "M"},
      {"Nonspacing_Mark", "Mn"},
      {"Spacing_Mark", "Mc"},
      {"Enclosing_Mark", "Me"},
      {"Number", "N"},
      {"Decimal_Number", "Nd"},
      {"digit", "Nd"},
      {"Letter_Number", "Nl"},
      {"Other_Number", "No"},
      {"Punctuation", "P"},
      {"punct", "P"},
      {"Connector_Punctuation", "Pc"},
      {"Dash_Punctuation", "Pd"},
      {"Open_Punctuation", "Ps"},
      {"Close_Punctuation", "Pe"},
      {"Initial_Punctuation", "Pi"},
      {"Final_Punctuation", "Pf"},
      {"Other_Punctuation", "Po"},
      {"Symbol", "S"},
      {"Math_Symbol", "Sm"},
      {"Currency_Symbol", "Sc"},
      {"Modifier_Symbol", "Sk"},
      {"Other_Symbol", "So"},
      {"Separator", "Z"},
      {"Space_Separator", "Zs"},
      {"Line_Separator", "Zl"},
      {"Paragraph_Separator", "Zp"},
      {"Other", "C"},
      {"Control", "Cc"},
      {"cntrl", "Cc"},
      {"Format", "Cf"},
      {"Surrogate", "Cs"},
      {"Private_Use", "Co"},
      {"Unassigned", "Cn"}};
  std::string_view value = name;
  if (size_t eq = name.find('='); eq != std::string_view::npos) {
    std::string_view key = name.substr(0, eq);
    value = name.substr(eq + 1);
    if (key != "General_Category" && key != "gc") return std::string(value);  // script
  }
  for (const auto& [long_name, short_name] : kCategories) {
    if (value == long_name) return std::string(short_name);
  }
  return std::string(value);
}

std::string TranslateEcmaRegex(std::string_view p) {
  std::string out;
  bool in_class = false;
  for (size_t i = 0; i < p.size(); ++i) {
    char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      char d = p[i + 1];
      auto hex4 = [&](size_t at, uint32_t* v) {
        if (at + 4 > p.size()) return false;
        uint32_t x = 0;
        for (size_t k = at; k < at + 4; ++k) {
          int h = HexValue(p[k]);
          if (h < 0) return false;
          x = x * 16 + h;
        }
        *v = x;
        return true;
      };
      uint32_t cp = 0;
      if (d == 'u' && hex4(i + 2, &cp)) {
        i += 5;
        uint32_t low = 0;
        if (cp >= 0xD800 && cp <= 0xDBFF && i + 2 < p.size() && p[i + 1] == '\\' &&
            p[i + 2] == 'u' && hex4(i + 3, &low) && low >= 0xDC00 && low <= 0xDFFF) {
          cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          i += 6;
        }
        AppendCodePointEscape(cp, &out);
        continue;
      }
      if (d == 'c' && i + 2 < p.size() && IsAlpha(p[i + 2])) {
        // Control escape: \cJ is U+000A.
        AppendCodePointEscape(static_cast<unsigned char>(p[i + 2]) % 32, &out);
        i += 2;
        continue;
      }
      if ((d == 'p' || d == 'P') && i + 2 < p.size() && p[i + 2] == '{') {
        size_t close = p.find('}', i + 3);
        if (close != std::string_view::npos) {
          out.push_back('\\');
          out.push_back(d);
          out += "{" + TranslateUnicodeProperty(p.substr(i + 3, close - i - 3)) + "}";
          i = close;
          continue;
        }
      }
      if (d == 's' || (d == 'S' && !in_class)) {
        if (in_class) {
          out += kEcmaSpaceBody;
        } else {
          out += d == 's' ? "[" : "[^";
          out += kEcmaSpaceBody;
          out += "]";
        }
        ++i;
        continue;
      }
      out.push_back(c);
      out.push_back(d);
      ++i;
      continue;
    }
    if (c == '[' && !in_class) {
      in_class = true;
    } else if (c == ']' && in_class) {
      in_class = false;
    } else if (c == '.' && !in_class) {
      // ECMA-262 '.' excludes every line terminator, RE2's only '\n'.
      out += "[^\\n\\r\\x{2028}\\x{2029}]";
      continue;
    }
    out.push_back(c);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Compilation.

absl::Status SchemaError(const std::string& message) {
  return absl::InvalidArgumentError("json schema: " + message);
}

// Iterative so that a hostile document cannot exhaust the stack before it is refused.
int DocumentDepth(const Value& root) {
  int max_depth = 0;
  std::vector<std::pair<const Value*, int>> stack{{&root, 1}};
  while (!stack.empty()) {
    auto [v, depth] = stack.back();
    stack.pop_back();
    max_depth = std::max(max_depth, depth);
    if (v->IsArray()) {
      for (const auto& e : v->GetArray()) stack.emplace_back(&e, depth + 1);
    } else if (v->IsObject()) {
      for (const auto& m : v->GetObject()) stack.emplace_back(&m.value, depth + 1);
    }
  }
  return max_depth;
}

bool IsKnownKeyword(Draft draft, std::string_view k) {
  // clang-format off
  static const char* const kCommon[] = {
      "type", "enum", "const", "multipleOf", "maximum", "exclusiveMaximum", "minimum",
      "exclusiveMinimum", "maxLength", "minLength", "pattern", "items", "maxItems", "minItems",
      "uniqueItems", "contains", "maxProperties", "minProperties", "required", "properties",
      "patternProperties", "additionalProperties", "propertyNames", "allOf", "anyOf", "oneOf",
      "not", "if", "then", "else", "format", "$ref", "$id", "$schema", "$comment", "title",
      "description", "default", "examples", "readOnly", "writeOnly", "contentMediaType",
      "contentEncoding"};
  static const char* const kDraft7[] = {"additionalItems", "dependencies", "definitions"};
  static const char* const kDraft202012[] = {
      "prefixItems", "minContains", "maxContains", "dependentRequired", "dependentSchemas",
      "$defs", "$anchor", "$vocabulary", "deprecated", "contentSchema"};
  // clang-format on
  for (const char* c : kCommon) {
    if (k == c) return true;
  }
  if (draft == Draft::k7) {
    for (const char* c : kDraft7) {
      if (k == c) return true;
    }
  } else {
    for (const char* c : kDraft202012) {
      if (k == c) return true;
    }
  }
  return false;
}

absl::StatusOr<Draft> DraftFromUri(std::string_view uri) {
  std::string_view u = uri;
  if (!u.empty() && u.back() == '#') u.remove_suffix(1);
  if (u == kDraft202012Uri) return Draft::k202012;
  if (u == kDraft7Uri) return Draft::k7;
  return SchemaError("unsupported $schema " + Quote(uri) + ": expected \"" +
                     std::string(kDraft202012Uri) + "\" or \"" + std::string(kDraft7Uri) +
                     "#\" (custom meta-schemas are not supported)");
}

}  // namespace

struct JsonSchema::Compiled {
  rapidjson::Document doc;  // the schema; enum/const keywords point into it
  std::vector<Node> nodes;
  int root = 0;
};

namespace {

class Compiler {
 public:
  Compiler(Draft draft, const JsonSchemaOptions& options, JsonSchema::Compiled* out)
      : draft_(draft), options_(options), out_(out) {}

  absl::Status Run() {
    // The root is reachable through the default base even when it declares an `$id`.
    if (auto st = RegisterResource(std::string(kDefaultBaseUri), ""); !st.ok()) return st;
    auto root = CompileNode(out_->doc, "", std::string(kDefaultBaseUri), 1);
    if (!root.ok()) return root.status();
    out_->root = *root;
    while (!pending_.empty()) {
      PendingRef ref = std::move(pending_.back());
      pending_.pop_back();
      auto target = ResolveRef(ref);
      if (!target.ok()) return target.status();
      ref.keyword->set_target(*target);
    }
    return CheckRefLoops();
  }

 private:
  struct PendingRef {
    RefKeyword* keyword;
    std::string reference;  // as written
    std::string resolved;   // absolute
    std::string location;
  };

  std::vector<Node>& nodes() { return out_->nodes; }

  absl::StatusOr<int> CompileNode(const Value& s, const std::string& loc, const std::string& base,
                                  int depth) {
    if (depth > JsonSchema::kMaxSchemaDepth) {
      return SchemaError("schema nested too deep at " + Loc(loc));
    }
    if (auto it = node_by_location_.find(loc); it != node_by_location_.end()) return it->second;
    int index = static_cast<int>(nodes().size());
    nodes().emplace_back();
    nodes()[index].location = loc;
    node_by_location_[loc] = index;
    if (s.IsBool()) {
      nodes()[index].kind = s.GetBool() ? Node::Kind::kTrue : Node::Kind::kFalse;
      return index;
    }
    if (!s.IsObject()) {
      return SchemaError("schema at " + Loc(loc) + " must be an object or a boolean, got " +
                         InstanceTypeName(s));
    }
    nodes()[index].kind = Node::Kind::kObject;
    for (const auto& m : s.GetObject()) {
      std::string_view name = ValueView(m.name);
      if (!IsKnownKeyword(draft_, name)) {
        return SchemaError("unsupported keyword " + Quote(name) + " at " + Loc(loc));
      }
    }
    std::vector<std::unique_ptr<Keyword>> keywords;
    // Draft-07: "All other properties in a "$ref" object MUST be ignored", including `$id`.
    bool ref_only = draft_ == Draft::k7 && s.HasMember("$ref");
    std::string node_base = base;
    if (auto st = CheckSchemaKeyword(s, loc); !st.ok()) return st;
    if (!ref_only) {
      if (auto st = ApplyIdAndAnchor(s, loc, &node_base); !st.ok()) return st;
    }
    if (const Value* ref = Member(s, "$ref")) {
      if (!ref->IsString()) return TypeError("$ref", loc, "a string");
      auto keyword = std::make_unique<RefKeyword>();
      pending_.push_back(PendingRef{keyword.get(), std::string(ValueView(*ref)),
                                    ResolveUri(node_base, ValueView(*ref)), loc});
      keywords.push_back(std::move(keyword));
    }
    if (!ref_only) {
      if (auto st = CompileKeywords(s, loc, node_base, depth, &keywords); !st.ok()) return st;
    }
    std::stable_sort(keywords.begin(), keywords.end(),
                     [](const auto& a, const auto& b) { return a->rank() < b->rank(); });
    nodes()[index].keywords = std::move(keywords);
    return index;
  }

  static const Value* Member(const Value& s, const char* name) {
    auto it = s.FindMember(name);
    return it == s.MemberEnd() ? nullptr : &it->value;
  }

  static absl::Status TypeError(const char* keyword, const std::string& loc, const char* what) {
    return SchemaError("keyword \"" + std::string(keyword) + "\" at " + Loc(loc) + " must be " +
                       what);
  }

  absl::Status CheckSchemaKeyword(const Value& s, const std::string& loc) {
    const Value* schema = Member(s, "$schema");
    if (schema == nullptr) return absl::OkStatus();
    if (!schema->IsString()) return TypeError("$schema", loc, "a string");
    auto draft = DraftFromUri(ValueView(*schema));
    if (!draft.ok()) return draft.status();
    if (*draft != draft_) {
      return SchemaError("$schema at " + Loc(loc) +
                         " names a different draft than the root; mixing drafts is not supported");
    }
    return absl::OkStatus();
  }

  absl::Status RegisterResource(const std::string& uri, const std::string& loc) {
    auto [it, inserted] = resources_.emplace(uri, loc);
    if (!inserted && it->second != loc) {
      return SchemaError("duplicate $id " + Quote(uri) + " at " + Loc(loc) + " and " +
                         Loc(it->second));
    }
    return absl::OkStatus();
  }

  absl::Status RegisterAnchor(const std::string& base, const std::string& name,
                              const std::string& loc) {
    auto [it, inserted] = anchors_.emplace(base + "#" + name, loc);
    if (!inserted && it->second != loc) {
      return SchemaError("duplicate anchor " + Quote(name) + " at " + Loc(loc) + " and " +
                         Loc(it->second));
    }
    return absl::OkStatus();
  }

  absl::Status ApplyIdAndAnchor(const Value& s, const std::string& loc, std::string* base) {
    if (const Value* id = Member(s, "$id")) {
      if (!id->IsString()) return TypeError("$id", loc, "a string");
      std::string_view written = ValueView(*id);
      auto [uri, fragment] = SplitFragment(ResolveUri(*base, written));
      if (draft_ == Draft::k202012 && !fragment.empty()) {
        return SchemaError("$id at " + Loc(loc) + " must not contain a fragment (use $anchor)");
      }
      if (written.empty() || written[0] != '#') {
        *base = uri;
        if (auto st = RegisterResource(uri, loc); !st.ok()) return st;
      }
      // Draft-07 `"$id": "#name"` (or "uri#name"): a location-independent identifier.
      if (!fragment.empty()) {
        if (auto st = RegisterAnchor(uri, fragment, loc); !st.ok()) return st;
      }
    }
    if (const Value* anchor = Member(s, "$anchor")) {
      if (!anchor->IsString() || !IsPlainName(ValueView(*anchor))) {
        return TypeError("$anchor", loc, "a plain name matching [A-Za-z_][-A-Za-z0-9._]*");
      }
      if (auto st = RegisterAnchor(*base, std::string(ValueView(*anchor)), loc); !st.ok()) {
        return st;
      }
    }
    return absl::OkStatus();
  }

  static bool IsPlainName(std::string_view name) {
    if (name.empty() || !(IsAlpha(name[0]) || name[0] == '_')) return false;
    for (char c : name) {
      if (!IsAlpha(c) && !IsDigit(c) && c != '-' && c != '.' && c != '_') return false;
    }
    return true;
  }

  absl::StatusOr<int> Child(const Value& v, const std::string& loc, std::string_view token,
                            const std::string& base, int depth) {
    return CompileNode(v, ChildLocation(loc, token), base, depth + 1);
  }

  // A non-empty array of schemas.
  absl::StatusOr<std::vector<int>> SchemaArray(const Value& v, const char* keyword,
                                               const std::string& loc, const std::string& base,
                                               int depth) {
    std::string kloc = ChildLocation(loc, keyword);
    if (!v.IsArray() || v.Empty()) return TypeError(keyword, loc, "a non-empty array of schemas");
    std::vector<int> out;
    for (SizeType i = 0; i < v.Size(); ++i) {
      auto child = CompileNode(v[i], ChildLocation(kloc, std::to_string(i)), base, depth + 2);
      if (!child.ok()) return child.status();
      out.push_back(*child);
    }
    return out;
  }

  // An object whose values are schemas (properties, $defs, ...).
  absl::StatusOr<std::vector<std::pair<std::string, int>>> SchemaMap(const Value& v,
                                                                     const char* keyword,
                                                                     const std::string& loc,
                                                                     const std::string& base,
                                                                     int depth) {
    if (!v.IsObject()) return TypeError(keyword, loc, "an object of schemas");
    std::string kloc = ChildLocation(loc, keyword);
    std::vector<std::pair<std::string, int>> out;
    for (const auto& m : v.GetObject()) {
      auto child = Child(m.value, kloc, ValueView(m.name), base, depth + 1);
      if (!child.ok()) return child.status();
      out.emplace_back(std::string(ValueView(m.name)), *child);
    }
    return out;
  }

  static absl::StatusOr<std::vector<std::string>> StringArray(const Value& v, const char* keyword,
                                                              const std::string& loc) {
    if (!v.IsArray()) return TypeError(keyword, loc, "an array of strings");
    std::vector<std::string> out;
    for (const auto& e : v.GetArray()) {
      if (!e.IsString()) return TypeError(keyword, loc, "an array of strings");
      out.emplace_back(ValueView(e));
    }
    return out;
  }

  static absl::StatusOr<uint64_t> NonNegativeInteger(const Value& v, const char* keyword,
                                                     const std::string& loc) {
    if (!v.IsNumber() || !IsIntegralValue(v) || CompareNumbers(ToNumber(v), Number{}) < 0) {
      return TypeError(keyword, loc, "a non-negative integer");
    }
    if (v.IsUint64()) return v.GetUint64();
    return v.GetDouble() >= 18446744073709551616.0 ? UINT64_MAX
                                                   : static_cast<uint64_t>(v.GetDouble());
  }

  absl::StatusOr<std::unique_ptr<RE2>> CompileRegex(std::string_view source, const char* keyword,
                                                    const std::string& loc) {
    RE2::Options options;
    options.set_log_errors(false);
    auto re = std::make_unique<RE2>(TranslateEcmaRegex(source), options);
    if (!re->ok()) {
      return SchemaError("invalid regular expression " + Quote(source) + " for \"" + keyword +
                         "\" at " + Loc(loc) + ": " + re->error() +
                         " (ECMA-262 syntax that RE2 cannot express, such as look-around or "
                         "back-references, is not supported)");
    }
    return re;
  }

  absl::Status CompileKeywords(const Value& s, const std::string& loc, const std::string& base,
                               int depth, std::vector<std::unique_ptr<Keyword>>* out) {
    const bool d7 = draft_ == Draft::k7;
    // --- type / enum / const
    if (const Value* type = Member(s, "type")) {
      static const std::pair<const char*, unsigned> kTypes[] = {
          {"null", kTypeNull},      {"boolean", kTypeBoolean}, {"object", kTypeObject},
          {"array", kTypeArray},    {"number", kTypeNumber},   {"string", kTypeString},
          {"integer", kTypeInteger}};
      unsigned mask = 0;
      std::string names;
      auto add = [&](const Value& t) -> bool {
        if (!t.IsString()) return false;
        for (const auto& [name, bit] : kTypes) {
          if (ValueView(t) == name) {
            if (mask & bit) return false;  // duplicates are invalid
            mask |= bit;
            names += (names.empty() ? "" : " or ") + std::string(name);
            return true;
          }
        }
        return false;
      };
      bool ok = type->IsArray() ? !type->Empty() : add(*type);
      if (type->IsArray()) {
        for (const auto& t : type->GetArray()) ok = ok && add(t);
      }
      if (!ok) {
        return TypeError("type", loc,
                         "a type name (null, boolean, object, array, number, string, integer) or "
                         "a non-empty array of distinct type names");
      }
      out->push_back(std::make_unique<TypeKeyword>(mask, names));
    }
    if (const Value* e = Member(s, "enum")) {
      if (!e->IsArray()) return TypeError("enum", loc, "an array");
      out->push_back(std::make_unique<EnumKeyword>(e));
    }
    if (const Value* c = Member(s, "const")) out->push_back(std::make_unique<ConstKeyword>(c));
    // --- numbers
    static const std::pair<const char*, BoundKeyword::Kind> kBounds[] = {
        {"minimum", BoundKeyword::Kind::kMinimum},
        {"exclusiveMinimum", BoundKeyword::Kind::kExclusiveMinimum},
        {"maximum", BoundKeyword::Kind::kMaximum},
        {"exclusiveMaximum", BoundKeyword::Kind::kExclusiveMaximum}};
    for (const auto& [name, kind] : kBounds) {
      if (const Value* limit = Member(s, name)) {
        if (!limit->IsNumber()) return TypeError(name, loc, "a number");
        out->push_back(std::make_unique<BoundKeyword>(kind, name, limit));
      }
    }
    if (const Value* m = Member(s, "multipleOf")) {
      if (!m->IsNumber() || CompareNumbers(ToNumber(*m), Number{}) <= 0) {
        return TypeError("multipleOf", loc, "a number greater than 0");
      }
      out->push_back(std::make_unique<MultipleOfKeyword>(m));
    }
    // --- counts
    struct CountSpec {
      const char* name;
      CountKeyword::Target target;
      bool is_min;
    };
    static const CountSpec kCounts[] = {
        {"minLength", CountKeyword::Target::kStringLength, true},
        {"maxLength", CountKeyword::Target::kStringLength, false},
        {"minItems", CountKeyword::Target::kItems, true},
        {"maxItems", CountKeyword::Target::kItems, false},
        {"minProperties", CountKeyword::Target::kProperties, true},
        {"maxProperties", CountKeyword::Target::kProperties, false}};
    for (const CountSpec& spec : kCounts) {
      if (const Value* v = Member(s, spec.name)) {
        auto limit = NonNegativeInteger(*v, spec.name, loc);
        if (!limit.ok()) return limit.status();
        out->push_back(std::make_unique<CountKeyword>(spec.target, spec.is_min, spec.name, *limit));
      }
    }
    // --- strings
    if (const Value* p = Member(s, "pattern")) {
      if (!p->IsString()) return TypeError("pattern", loc, "a string");
      auto re = CompileRegex(ValueView(*p), "pattern", loc);
      if (!re.ok()) return re.status();
      out->push_back(std::make_unique<PatternKeyword>(std::string(ValueView(*p)), std::move(*re)));
    }
    if (const Value* f = Member(s, "format")) {
      if (!f->IsString()) return TypeError("format", loc, "a string");
      // Unknown format names are annotations (the specification requires ignoring them).
      JsonSchemaFormatChecker checker = FindJsonSchemaFormatChecker(ValueView(*f));
      if (options_.format_assertions && checker != nullptr) {
        out->push_back(std::make_unique<FormatKeyword>(std::string(ValueView(*f)), checker));
      }
    }
    // --- arrays
    {
      std::vector<int> prefix;
      int rest = -1;
      const char* rest_name = "items";
      bool present = false;
      const Value* items = Member(s, "items");
      if (d7) {
        if (items != nullptr && items->IsArray()) {
          auto schemas = SchemaArrayAllowEmpty(*items, "items", loc, base, depth);
          if (!schemas.ok()) return schemas.status();
          prefix = std::move(*schemas);
          present = true;
          if (const Value* additional = Member(s, "additionalItems")) {
            auto child = Child(*additional, loc, "additionalItems", base, depth);
            if (!child.ok()) return child.status();
            rest = *child;
            rest_name = "additionalItems";
          }
        } else {
          if (items != nullptr) {
            auto child = Child(*items, loc, "items", base, depth);
            if (!child.ok()) return child.status();
            rest = *child;
            present = true;
          }
          // additionalItems without an items array has no effect, but is still a schema.
          if (const Value* additional = Member(s, "additionalItems")) {
            auto child = Child(*additional, loc, "additionalItems", base, depth);
            if (!child.ok()) return child.status();
          }
        }
      } else {
        if (const Value* p = Member(s, "prefixItems")) {
          auto schemas = SchemaArray(*p, "prefixItems", loc, base, depth);
          if (!schemas.ok()) return schemas.status();
          prefix = std::move(*schemas);
          present = true;
        }
        if (items != nullptr) {
          if (items->IsArray()) {
            return TypeError("items", loc,
                             "a schema in draft 2020-12 (use \"prefixItems\" for tuples)");
          }
          auto child = Child(*items, loc, "items", base, depth);
          if (!child.ok()) return child.status();
          rest = *child;
          present = true;
        }
      }
      if (present)
        out->push_back(std::make_unique<ItemsKeyword>(std::move(prefix), rest, rest_name));
    }
    if (const Value* u = Member(s, "uniqueItems")) {
      if (!u->IsBool()) return TypeError("uniqueItems", loc, "a boolean");
      if (u->GetBool()) out->push_back(std::make_unique<UniqueItemsKeyword>());
    }
    if (const Value* c = Member(s, "contains")) {
      auto child = Child(*c, loc, "contains", base, depth);
      if (!child.ok()) return child.status();
      uint64_t min = 1, max = 0;
      bool has_max = false;
      if (const Value* v = Member(s, "minContains")) {
        auto n = NonNegativeInteger(*v, "minContains", loc);
        if (!n.ok()) return n.status();
        min = *n;
      }
      if (const Value* v = Member(s, "maxContains")) {
        auto n = NonNegativeInteger(*v, "maxContains", loc);
        if (!n.ok()) return n.status();
        max = *n;
        has_max = true;
      }
      if (min > 0 || has_max) {
        out->push_back(std::make_unique<ContainsKeyword>(*child, min, has_max, max));
      }
    } else {
      // Without "contains", minContains / maxContains have no effect; still check their form.
      for (const char* name : {"minContains", "maxContains"}) {
        if (const Value* v = Member(s, name)) {
          if (auto n = NonNegativeInteger(*v, name, loc); !n.ok()) return n.status();
        }
      }
    }
    // --- objects
    if (const Value* r = Member(s, "required")) {
      auto names = StringArray(*r, "required", loc);
      if (!names.ok()) return names.status();
      if (!names->empty()) out->push_back(std::make_unique<RequiredKeyword>(std::move(*names)));
    }
    {
      std::vector<std::pair<std::string, int>> properties;
      std::vector<std::pair<CompiledPattern, int>> patterns;
      int additional = -1;
      bool present = false;
      if (const Value* p = Member(s, "properties")) {
        auto map = SchemaMap(*p, "properties", loc, base, depth);
        if (!map.ok()) return map.status();
        properties = std::move(*map);
        present = true;
      }
      if (const Value* p = Member(s, "patternProperties")) {
        if (!p->IsObject()) return TypeError("patternProperties", loc, "an object of schemas");
        std::string kloc = ChildLocation(loc, "patternProperties");
        for (const auto& m : p->GetObject()) {
          auto re = CompileRegex(ValueView(m.name), "patternProperties", loc);
          if (!re.ok()) return re.status();
          auto child = Child(m.value, kloc, ValueView(m.name), base, depth + 1);
          if (!child.ok()) return child.status();
          patterns.emplace_back(CompiledPattern{std::string(ValueView(m.name)), std::move(*re)},
                                *child);
        }
        present = true;
      }
      if (const Value* a = Member(s, "additionalProperties")) {
        auto child = Child(*a, loc, "additionalProperties", base, depth);
        if (!child.ok()) return child.status();
        additional = *child;
        present = true;
      }
      if (present) {
        out->push_back(std::make_unique<PropertiesKeyword>(std::move(properties),
                                                           std::move(patterns), additional));
      }
    }
    if (const Value* p = Member(s, "propertyNames")) {
      auto child = Child(*p, loc, "propertyNames", base, depth);
      if (!child.ok()) return child.status();
      out->push_back(std::make_unique<PropertyNamesKeyword>(*child));
    }
    if (const Value* d = Member(s, "dependentRequired")) {
      if (!d->IsObject()) return TypeError("dependentRequired", loc, "an object of string arrays");
      std::vector<std::pair<std::string, std::vector<std::string>>> deps;
      for (const auto& m : d->GetObject()) {
        auto names = StringArray(m.value, "dependentRequired", loc);
        if (!names.ok()) return names.status();
        deps.emplace_back(std::string(ValueView(m.name)), std::move(*names));
      }
      out->push_back(
          std::make_unique<DependentRequiredKeyword>("dependentRequired", std::move(deps)));
    }
    if (const Value* d = Member(s, "dependentSchemas")) {
      auto map = SchemaMap(*d, "dependentSchemas", loc, base, depth);
      if (!map.ok()) return map.status();
      out->push_back(std::make_unique<DependentSchemasKeyword>(std::move(*map)));
    }
    if (const Value* d = Member(s, "dependencies")) {
      // Draft-07: each value is either an array of property names or a schema.
      if (!d->IsObject()) return TypeError("dependencies", loc, "an object");
      std::vector<std::pair<std::string, std::vector<std::string>>> required;
      std::vector<std::pair<std::string, int>> schemas;
      std::string kloc = ChildLocation(loc, "dependencies");
      for (const auto& m : d->GetObject()) {
        if (m.value.IsArray()) {
          auto names = StringArray(m.value, "dependencies", loc);
          if (!names.ok()) return names.status();
          required.emplace_back(std::string(ValueView(m.name)), std::move(*names));
        } else {
          auto child = Child(m.value, kloc, ValueView(m.name), base, depth + 1);
          if (!child.ok()) return child.status();
          schemas.emplace_back(std::string(ValueView(m.name)), *child);
        }
      }
      if (!required.empty()) {
        out->push_back(
            std::make_unique<DependentRequiredKeyword>("dependencies", std::move(required)));
      }
      if (!schemas.empty()) {
        out->push_back(std::make_unique<DependentSchemasKeyword>(std::move(schemas)));
      }
    }
    // --- combinators
    if (const Value* a = Member(s, "allOf")) {
      auto schemas = SchemaArray(*a, "allOf", loc, base, depth);
      if (!schemas.ok()) return schemas.status();
      out->push_back(std::make_unique<AllOfKeyword>(std::move(*schemas)));
    }
    if (const Value* a = Member(s, "anyOf")) {
      auto schemas = SchemaArray(*a, "anyOf", loc, base, depth);
      if (!schemas.ok()) return schemas.status();
      out->push_back(std::make_unique<AnyOfKeyword>(std::move(*schemas)));
    }
    if (const Value* a = Member(s, "oneOf")) {
      auto schemas = SchemaArray(*a, "oneOf", loc, base, depth);
      if (!schemas.ok()) return schemas.status();
      out->push_back(std::make_unique<OneOfKeyword>(std::move(*schemas)));
    }
    if (const Value* n = Member(s, "not")) {
      auto child = Child(*n, loc, "not", base, depth);
      if (!child.ok()) return child.status();
      out->push_back(std::make_unique<NotKeyword>(*child));
    }
    {
      int branches[3] = {-1, -1, -1};
      const char* names[3] = {"if", "then", "else"};
      for (int i = 0; i < 3; ++i) {
        if (const Value* v = Member(s, names[i])) {
          auto child = Child(*v, loc, names[i], base, depth);
          if (!child.ok()) return child.status();
          branches[i] = *child;
        }
      }
      // then / else without if have no effect (they are still compiled for $ref targets).
      if (branches[0] >= 0 && (branches[1] >= 0 || branches[2] >= 0)) {
        out->push_back(std::make_unique<IfThenElseKeyword>(branches[0], branches[1], branches[2]));
      }
    }
    // --- containers of subschemas that are not applied directly
    for (const char* name : {"$defs", "definitions"}) {
      if (const Value* defs = Member(s, name)) {
        if (auto map = SchemaMap(*defs, name, loc, base, depth); !map.ok()) return map.status();
      }
    }
    if (const Value* c = Member(s, "contentSchema")) {
      if (auto child = Child(*c, loc, "contentSchema", base, depth); !child.ok()) {
        return child.status();
      }
    }
    return CheckAnnotations(s, loc);
  }

  absl::StatusOr<std::vector<int>> SchemaArrayAllowEmpty(const Value& v, const char* keyword,
                                                         const std::string& loc,
                                                         const std::string& base, int depth) {
    if (v.Empty()) return std::vector<int>();
    return SchemaArray(v, keyword, loc, base, depth);
  }

  absl::Status CheckAnnotations(const Value& s, const std::string& loc) {
    for (const char* name :
         {"title", "description", "$comment", "contentMediaType", "contentEncoding"}) {
      const Value* v = Member(s, name);
      if (v != nullptr && !v->IsString()) return TypeError(name, loc, "a string");
    }
    for (const char* name : {"readOnly", "writeOnly", "deprecated"}) {
      const Value* v = Member(s, name);
      if (v != nullptr && !v->IsBool()) return TypeError(name, loc, "a boolean");
    }
    if (const Value* v = Member(s, "examples"); v != nullptr && !v->IsArray()) {
      return TypeError("examples", loc, "an array");
    }
    if (const Value* v = Member(s, "$vocabulary")) {
      // Only meaningful in meta-schemas; accepted as long as it requires nothing unsupported.
      if (!v->IsObject()) return TypeError("$vocabulary", loc, "an object");
      static const char* const kSupported[] = {
          "https://json-schema.org/draft/2020-12/vocab/core",
          "https://json-schema.org/draft/2020-12/vocab/applicator",
          "https://json-schema.org/draft/2020-12/vocab/validation",
          "https://json-schema.org/draft/2020-12/vocab/meta-data",
          "https://json-schema.org/draft/2020-12/vocab/format-annotation",
          "https://json-schema.org/draft/2020-12/vocab/content"};
      for (const auto& m : v->GetObject()) {
        if (!m.value.IsBool()) return TypeError("$vocabulary", loc, "an object of booleans");
        if (!m.value.GetBool()) continue;
        bool supported = false;
        for (const char* k : kSupported) supported = supported || ValueView(m.name) == k;
        if (!supported) {
          return SchemaError("$vocabulary at " + Loc(loc) + " requires unsupported vocabulary " +
                             Quote(ValueView(m.name)));
        }
      }
    }
    return absl::OkStatus();
  }

  absl::StatusOr<int> ResolveRef(const PendingRef& ref) {
    auto [uri, fragment] = SplitFragment(ref.resolved);
    std::string where = "$ref " + Quote(ref.reference) + " at " + Loc(ref.location);
    auto resource = resources_.find(uri);
    if (resource == resources_.end()) {
      return SchemaError(where + " refers to " + Quote(uri) +
                         ", which is not part of this schema document; remote references are "
                         "not supported");
    }
    std::string target;
    if (fragment.empty()) {
      target = resource->second;
    } else if (fragment[0] == '/') {
      std::string pointer;
      if (!PercentDecode(fragment, &pointer) || !rapidjson::Pointer(pointer.c_str()).IsValid()) {
        return SchemaError(where + " has an invalid JSON pointer fragment");
      }
      target = resource->second + pointer;
    } else {
      std::string name;
      if (!PercentDecode(fragment, &name)) {
        return SchemaError(where + " has an invalid fragment");
      }
      auto anchor = anchors_.find(uri + "#" + name);
      if (anchor == anchors_.end()) {
        return SchemaError(where + ": anchor " + Quote(name) + " not found");
      }
      target = anchor->second;
    }
    if (auto it = node_by_location_.find(target); it != node_by_location_.end()) {
      return it->second;
    }
    // A location the walk did not visit as a schema (e.g. under a draft-07 "$ref" sibling):
    // compile it on demand with the base URI of the resource it lives in.
    rapidjson::Pointer pointer(target.c_str(), target.size());
    const Value* value = pointer.IsValid() ? pointer.Get(out_->doc) : nullptr;
    if (value == nullptr) {
      return SchemaError(where + " does not resolve: nothing at " + Loc(target));
    }
    if (!value->IsObject() && !value->IsBool()) {
      return SchemaError(where + " points at " + Loc(target) + ", which is not a schema");
    }
    std::string base = uri;
    int depth = static_cast<int>(pointer.GetTokenCount()) + 1;
    return CompileNode(*value, target, base, depth);
  }

  // A cycle of subschemas applied to the same instance location ({"$ref": "#"} at the root, or
  // two definitions referring to each other) would never terminate; refuse it up front.
  absl::Status CheckRefLoops() {
    const std::vector<Node>& all = nodes();
    std::vector<std::vector<int>> edges(all.size());
    for (size_t i = 0; i < all.size(); ++i) {
      for (const auto& k : all[i].keywords) k->AppendSameInstanceChildren(&edges[i]);
    }
    enum Color : uint8_t { kWhite, kGrey, kBlack };
    std::vector<uint8_t> color(all.size(), kWhite);
    for (size_t start = 0; start < all.size(); ++start) {
      if (color[start] != kWhite) continue;
      std::vector<std::pair<int, size_t>> stack{{static_cast<int>(start), 0}};
      color[start] = kGrey;
      while (!stack.empty()) {
        auto& [node, next] = stack.back();
        if (next == edges[node].size()) {
          color[node] = kBlack;
          stack.pop_back();
          continue;
        }
        int child = edges[node][next++];
        if (color[child] == kGrey) {
          return SchemaError("reference cycle at " + Loc(all[child].location) +
                             " applies the schema to the same value forever");
        }
        if (color[child] == kWhite) {
          color[child] = kGrey;
          stack.emplace_back(child, 0);
        }
      }
    }
    return absl::OkStatus();
  }

  Draft draft_;
  const JsonSchemaOptions& options_;
  JsonSchema::Compiled* out_;
  std::map<std::string, int> node_by_location_;
  std::map<std::string, std::string> resources_;  // absolute URI -> schema location
  std::map<std::string, std::string> anchors_;    // "uri#name" -> schema location
  std::vector<PendingRef> pending_;
};

absl::StatusOr<Draft> DetectDraft(const Value& root) {
  if (!root.IsObject()) return Draft::k202012;
  auto it = root.FindMember("$schema");
  if (it == root.MemberEnd()) return Draft::k202012;
  if (!it->value.IsString()) return SchemaError("keyword \"$schema\" at / must be a string");
  return DraftFromUri(ValueView(it->value));
}

}  // namespace

JsonSchema::JsonSchema(Draft draft, std::unique_ptr<Compiled> compiled)
    : draft_(draft), compiled_(std::move(compiled)) {}

JsonSchema::~JsonSchema() = default;

absl::StatusOr<std::shared_ptr<const JsonSchema>> JsonSchema::Compile(
    std::string_view schema_json, const JsonSchemaOptions& options) {
  auto compiled = std::make_unique<Compiled>();
  // Exact numbers (json_number.h): bounds such as `minimum` compare against the exact value.
  const rapidjson::ParseResult parsed = ParseJsonExact(schema_json, &compiled->doc);
  if (parsed.IsError()) {
    return SchemaError("schema is not valid JSON at offset " + std::to_string(parsed.Offset()) +
                       ": " + rapidjson::GetParseError_En(parsed.Code()));
  }
  if (DocumentDepth(compiled->doc) > kMaxSchemaDepth) {
    return SchemaError("schema document nested deeper than " + std::to_string(kMaxSchemaDepth) +
                       " levels");
  }
  auto draft = DetectDraft(compiled->doc);
  if (!draft.ok()) return draft.status();
  Compiler compiler(*draft, options, compiled.get());
  if (auto st = compiler.Run(); !st.ok()) return st;
  return std::shared_ptr<const JsonSchema>(new JsonSchema(*draft, std::move(compiled)));
}

absl::StatusOr<std::shared_ptr<const JsonSchema>> JsonSchema::Compile(
    const rapidjson::Value& schema, const JsonSchemaOptions& options) {
  // Checked before serializing: rapidjson's writer recurses.
  if (DocumentDepth(schema) > kMaxSchemaDepth) {
    return SchemaError("schema document nested deeper than " + std::to_string(kMaxSchemaDepth) +
                       " levels");
  }
  // Round-trip through text rather than CopyFrom: RapidJSON 1.1 copies constant strings by
  // reference, which would tie the compiled schema to the caller's buffers.
  rapidjson::StringBuffer sb;
  rapidjson::Writer<rapidjson::StringBuffer> writer(sb);
  if (!schema.Accept(writer)) return SchemaError("schema cannot be serialized (non-finite number)");
  return Compile(std::string_view(sb.GetString(), sb.GetSize()), options);
}

bool JsonSchema::Validate(const rapidjson::Value& instance, SchemaViolation* violation) const {
  InternalViolation internal;
  EvalContext ctx;
  ctx.nodes = &compiled_->nodes;
  ctx.out = violation != nullptr ? &internal : nullptr;
  // Records nest a few levels: one allocation up front instead of one per doubling.
  ctx.path.reserve(16);
  if (Evaluate(compiled_->root, instance, ctx)) return true;
  if (violation != nullptr) {
    violation->pointer = internal.pointer;
    violation->keyword = internal.keyword;
    violation->message = internal.Message();
  }
  return false;
}

}  // namespace wharf::pipeline::contract
