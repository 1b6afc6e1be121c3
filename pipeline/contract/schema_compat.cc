#include "pipeline/contract/schema_compat.h"

#include <rapidjson/document.h>
#include <rapidjson/error/en.h>
#include <rapidjson/pointer.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <re2/re2.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace wharf::pipeline::contract {
namespace {

using rapidjson::Value;

// Schemas nested deeper than this are refused at parse time, which keeps every recursive walk
// below (including rapidjson's operator==) within a small, fixed stack depth.
constexpr int kMaxSchemaDepth = 256;
// Bounds on one comparison: recursion through $ref chains and the total work. Beyond them the
// check gives up with "cannot be proven compatible" instead of exhausting stack or time.
constexpr int kMaxCompareDepth = 300;
constexpr size_t kMaxSteps = 200000;

constexpr char kNarrowed[] = "narrowed: values valid before are refused now";
constexpr char kWidened[] = "widened: values valid now were refused before";
constexpr char kUnproven[] = "cannot be proven compatible";

// --- parsing ---

int Depth(const Value& root) {
  int max_depth = 0;
  std::vector<std::pair<const Value*, int>> stack{{&root, 1}};
  while (!stack.empty()) {
    auto [v, d] = stack.back();
    stack.pop_back();
    max_depth = std::max(max_depth, d);
    if (d > kMaxSchemaDepth) break;
    if (v->IsObject()) {
      for (auto it = v->MemberBegin(); it != v->MemberEnd(); ++it)
        stack.push_back({&it->value, d + 1});
    } else if (v->IsArray()) {
      for (const Value& e : v->GetArray()) stack.push_back({&e, d + 1});
    }
  }
  return max_depth;
}

absl::Status ParseSchema(std::string_view text, const std::string& what, rapidjson::Document* doc) {
  if (text.find_first_not_of(" \t\r\n") == std::string_view::npos) {
    doc->SetBool(true);  // no schema: every document is accepted
    return absl::OkStatus();
  }
  doc->Parse<rapidjson::kParseIterativeFlag>(text.data(), text.size());
  if (doc->HasParseError()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": schema is not valid JSON at offset ", doc->GetErrorOffset(), ": ",
                     rapidjson::GetParseError_En(doc->GetParseError())));
  }
  if (!doc->IsObject() && !doc->IsBool()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": a JSON Schema must be an object or a boolean"));
  }
  if (Depth(*doc) > kMaxSchemaDepth) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": schema is nested deeper than ", kMaxSchemaDepth, " levels"));
  }
  return absl::OkStatus();
}

// --- small helpers ---

std::string Json(const Value& v) {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
  v.Accept(writer);
  std::string out(buffer.GetString(), buffer.GetSize());
  if (out.size() > 80) out = out.substr(0, 77) + "...";
  return out;
}

std::string EscapeToken(std::string_view token) {
  std::string out;
  for (char c : token) {
    if (c == '~') {
      out += "~0";
    } else if (c == '/') {
      out += "~1";
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::string Child(const std::string& path, std::string_view keyword) {
  return absl::StrCat(path, "/", std::string(keyword));
}
std::string Child(const std::string& path, std::string_view keyword, std::string_view name) {
  return absl::StrCat(path, "/", std::string(keyword), "/", EscapeToken(name));
}

const Value* Member(const Value& schema, const char* keyword) {
  if (!schema.IsObject()) return nullptr;
  auto it = schema.FindMember(keyword);
  return it == schema.MemberEnd() ? nullptr : &it->value;
}

// "<keyword> <value>" or "<keyword> (none)".
std::string Rule(const Value& schema, const char* keyword) {
  const Value* v = Member(schema, keyword);
  return absl::StrCat(keyword, " ", v != nullptr ? Json(*v) : "(none)");
}

size_t CodePoints(const Value& s) {
  size_t n = 0;
  for (rapidjson::SizeType i = 0; i < s.GetStringLength(); ++i) {
    if ((static_cast<unsigned char>(s.GetString()[i]) & 0xC0) != 0x80) ++n;
  }
  return n;
}

bool IsAnnotation(std::string_view k) {
  static const std::set<std::string_view> kAnnotations = {"$schema",
                                                          "$id",
                                                          "$anchor",
                                                          "$dynamicAnchor",
                                                          "$comment",
                                                          "$defs",
                                                          "definitions",
                                                          "$vocabulary",
                                                          "title",
                                                          "description",
                                                          "default",
                                                          "examples",
                                                          "deprecated",
                                                          "readOnly",
                                                          "writeOnly",
                                                          "contentEncoding",
                                                          "contentMediaType",
                                                          "contentSchema"};
  return kAnnotations.count(k) > 0;
}

// Keywords the structural comparison handles itself.
bool IsStructural(std::string_view k) {
  static const std::set<std::string_view> kStructural = {"type",
                                                         "enum",
                                                         "const",
                                                         "minimum",
                                                         "maximum",
                                                         "exclusiveMinimum",
                                                         "exclusiveMaximum",
                                                         "multipleOf",
                                                         "minLength",
                                                         "maxLength",
                                                         "pattern",
                                                         "format",
                                                         "items",
                                                         "prefixItems",
                                                         "additionalItems",
                                                         "minItems",
                                                         "maxItems",
                                                         "uniqueItems",
                                                         "properties",
                                                         "required",
                                                         "additionalProperties",
                                                         "patternProperties",
                                                         "minProperties",
                                                         "maxProperties",
                                                         "$ref"};
  return kStructural.count(k) > 0;
}

// A schema that accepts everything: true, {} or only annotations.
bool IsTrivialTrue(const Value& s) {
  if (s.IsBool()) return s.GetBool();
  if (!s.IsObject()) return false;
  for (auto it = s.MemberBegin(); it != s.MemberEnd(); ++it) {
    if (!IsAnnotation(std::string_view(it->name.GetString(), it->name.GetStringLength()))) {
      return false;
    }
  }
  return true;
}

bool IsFalse(const Value& s) { return s.IsBool() && !s.GetBool(); }

// Type bits; "number" is both integer bits.
enum : unsigned {
  kNull = 1,
  kBoolean = 2,
  kObject = 4,
  kArray = 8,
  kInteger = 16,
  kFraction = 32,  // numbers that are not integers
  kString = 64,
  kNumber = kInteger | kFraction,
  kAllTypes = 127,
};

bool TypeBit(std::string_view name, unsigned* bits) {
  if (name == "null") {
    *bits |= kNull;
  } else if (name == "boolean") {
    *bits |= kBoolean;
  } else if (name == "object") {
    *bits |= kObject;
  } else if (name == "array") {
    *bits |= kArray;
  } else if (name == "number") {
    *bits |= kNumber;
  } else if (name == "integer") {
    *bits |= kInteger;
  } else if (name == "string") {
    *bits |= kString;
  } else {
    return false;
  }
  return true;
}

// The types `schema` admits by its "type" keyword (all when absent); false when malformed.
bool DeclaredTypes(const Value& schema, unsigned* bits) {
  const Value* t = Member(schema, "type");
  if (t == nullptr) {
    *bits = kAllTypes;
    return true;
  }
  *bits = 0;
  if (t->IsString()) return TypeBit(std::string_view(t->GetString(), t->GetStringLength()), bits);
  if (!t->IsArray()) return false;
  for (const Value& e : t->GetArray()) {
    if (!e.IsString() || !TypeBit(std::string_view(e.GetString(), e.GetStringLength()), bits)) {
      return false;
    }
  }
  return true;
}

bool IsIntegral(const Value& v) {
  if (v.IsInt64() || v.IsUint64()) return true;
  double d = v.GetDouble();
  return std::isfinite(d) && d == std::floor(d);
}

unsigned ValueType(const Value& v) {
  if (v.IsNull()) return kNull;
  if (v.IsBool()) return kBoolean;
  if (v.IsObject()) return kObject;
  if (v.IsArray()) return kArray;
  if (v.IsString()) return kString;
  return IsIntegral(v) ? kInteger : kFraction;
}

std::string TypeRule(const Value& schema) {
  if (Member(schema, "type") == nullptr) return "type (any)";
  return Rule(schema, "type");
}

bool MultipleOf(double value, double divisor) {
  if (!(divisor > 0)) return false;
  double q = value / divisor;
  return std::fabs(q - std::round(q)) <= 1e-9 * std::max(1.0, std::fabs(q));
}

// A numeric bound: value and whether it is exclusive.
struct Bound {
  double value = 0;
  bool exclusive = false;
  std::string keyword;
  const Value* source = nullptr;  // the keyword's value as written, for messages
};

// The tightest lower (or upper) bound from minimum/exclusiveMinimum (draft 6+ numbers and the
// draft 4 boolean form). `bad` is set when a keyword has a malformed value.
std::optional<Bound> NumericBound(const Value& schema, bool lower, bool* bad) {
  const char* inclusive_kw = lower ? "minimum" : "maximum";
  const char* exclusive_kw = lower ? "exclusiveMinimum" : "exclusiveMaximum";
  const Value* inclusive = Member(schema, inclusive_kw);
  const Value* exclusive = Member(schema, exclusive_kw);
  std::optional<Bound> best;
  auto consider = [&](const Value* source, bool is_exclusive, const char* keyword) {
    const double value = source->GetDouble();
    bool tighter = !best || (lower ? value > best->value : value < best->value) ||
                   (value == best->value && is_exclusive && !best->exclusive);
    if (tighter) best = Bound{value, is_exclusive, keyword, source};
  };
  bool draft4_exclusive = false;
  if (exclusive != nullptr) {
    if (exclusive->IsBool()) {
      draft4_exclusive = exclusive->GetBool();
    } else if (exclusive->IsNumber()) {
      consider(exclusive, true, exclusive_kw);
    } else {
      *bad = true;
    }
  }
  if (inclusive != nullptr) {
    if (inclusive->IsNumber()) {
      consider(inclusive, draft4_exclusive, draft4_exclusive ? exclusive_kw : inclusive_kw);
    } else {
      *bad = true;
    }
  }
  return best;
}

std::string BoundRule(const std::optional<Bound>& b, bool lower) {
  if (!b) return absl::StrCat(lower ? "minimum" : "maximum", " (none)");
  return absl::StrCat(b->keyword, " ", Json(*b->source));
}

// A non-negative integer keyword (minLength, maxItems, ...): absent, valid or malformed.
enum class Count { kAbsent, kOk, kBad };
Count GetCount(const Value& schema, const char* keyword, uint64_t* out) {
  const Value* v = Member(schema, keyword);
  if (v == nullptr) return Count::kAbsent;
  if (v->IsUint64()) {
    *out = v->GetUint64();
    return Count::kOk;
  }
  if (v->IsNumber() && v->GetDouble() >= 0 && IsIntegral(*v)) {
    // 2^64 and beyond (1e300) do not fit; such a bound is as good as none.
    *out = v->GetDouble() >= 18446744073709551616.0 ? UINT64_MAX
                                                    : static_cast<uint64_t>(v->GetDouble());
    return Count::kOk;
  }
  return Count::kBad;
}

// Percent-decodes a URI fragment ("/a%20b" -> "/a b"); false on a malformed escape.
bool DecodeFragment(std::string_view fragment, std::string* out) {
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  for (size_t i = 0; i < fragment.size(); ++i) {
    if (fragment[i] != '%') {
      out->push_back(fragment[i]);
      continue;
    }
    if (i + 2 >= fragment.size()) return false;
    int high = hex(fragment[i + 1]);
    int low = hex(fragment[i + 2]);
    if (high < 0 || low < 0) return false;
    out->push_back(static_cast<char>(high * 16 + low));
    i += 2;
  }
  return true;
}

enum class Tri { kYes, kNo, kUnknown };

// A schema inside one of the two documents; the root resolves local $refs.
struct Node {
  const Value* v;
  const Value* root;
};

// How a check reports: either a real finding or, inside an equivalence probe, nothing (the
// caller truncates).
class Checker {
 public:
  Checker(const Value& old_root, const Value& new_root, bool backward, std::string suffix)
      : old_root_(old_root), new_root_(new_root), backward_(backward), suffix_(std::move(suffix)) {}

  std::vector<Incompatibility> Run() {
    if (old_root_ == new_root_) return {};  // identical documents, $defs included
    Node old_node{&old_root_, &old_root_};
    Node new_node{&new_root_, &new_root_};
    // BACKWARD: old ⊆ new. FORWARD: new ⊆ old.
    if (backward_) {
      Sub(old_node, new_node, "", 0);
    } else {
      Sub(new_node, old_node, "", 0);
    }
    return std::move(out_);
  }

 private:
  // --- reporting (sub/sup rules are mapped onto old/new by direction) ---

  void Add(const std::string& path, std::string sub_rule, std::string sup_rule, bool unproven) {
    Incompatibility inc;
    inc.path = path;
    if (backward_) {
      inc.old_rule = std::move(sub_rule);
      inc.new_rule = std::move(sup_rule);
    } else {
      inc.old_rule = std::move(sup_rule);
      inc.new_rule = std::move(sub_rule);
    }
    inc.reason = absl::StrCat(unproven ? kUnproven : (backward_ ? kNarrowed : kWidened), suffix_);
    out_.push_back(std::move(inc));
  }
  void Narrowed(const std::string& path, std::string sub_rule, std::string sup_rule) {
    Add(path, std::move(sub_rule), std::move(sup_rule), false);
  }
  void Unproven(const std::string& path, std::string sub_rule, std::string sup_rule) {
    Add(path, std::move(sub_rule), std::move(sup_rule), true);
  }

  // --- $ref ---

  // Follows local $refs. On the superset side keywords next to $ref (which add constraints from
  // draft 2019-09 on) cannot be combined with the target, so they make the node unresolvable;
  // on the subset side they are ignored, which only makes the subset larger (sound).
  std::optional<Node> Resolve(Node n, bool sup, std::string* problem) {
    for (int hops = 0; hops < 32; ++hops) {
      const Value* ref = Member(*n.v, "$ref");
      if (ref == nullptr) return n;
      if (!ref->IsString()) {
        *problem = "$ref is not a string";
        return std::nullopt;
      }
      if (sup) {
        for (auto it = n.v->MemberBegin(); it != n.v->MemberEnd(); ++it) {
          std::string_view k(it->name.GetString(), it->name.GetStringLength());
          if (k != "$ref" && !IsAnnotation(k)) {
            *problem = "keywords next to $ref";
            return std::nullopt;
          }
        }
      }
      std::string_view text(ref->GetString(), ref->GetStringLength());
      if (text.empty() || text[0] != '#') {
        *problem = absl::StrCat("$ref ", Json(*ref), " to another document");
        return std::nullopt;
      }
      // rapidjson's URI-fragment parser insists on percent-encoding characters such as the
      // '$' of "#/$defs/x", so the fragment is decoded here and parsed as a plain pointer.
      std::string decoded;
      const Value* target = nullptr;
      if (DecodeFragment(text.substr(1), &decoded) && (decoded.empty() || decoded[0] == '/')) {
        rapidjson::Pointer pointer(decoded.data(), decoded.size());
        if (pointer.IsValid()) target = pointer.Get(*n.root);
      }
      if (target == nullptr) {
        *problem = absl::StrCat("$ref ", Json(*ref), " does not resolve");
        return std::nullopt;
      }
      n.v = target;
    }
    *problem = "$ref chain too long";
    return std::nullopt;
  }

  bool ContainsRef(const Value& v) {
    auto it = contains_ref_.find(&v);
    if (it != contains_ref_.end()) return it->second;
    bool found = false;
    if (v.IsObject()) {
      for (auto m = v.MemberBegin(); m != v.MemberEnd() && !found; ++m) {
        found = (m->name == "$ref") || ContainsRef(m->value);
      }
    } else if (v.IsArray()) {
      for (const Value& e : v.GetArray()) {
        if ((found = ContainsRef(e))) break;
      }
    }
    contains_ref_[&v] = found;
    return found;
  }

  // --- equivalence probes (used where only "the same constraint" can be accepted) ---

  bool Equivalent(Node a, Node b, int depth) {
    const size_t mark = out_.size();
    Sub(a, b, "", depth + 1);
    Sub(b, a, "", depth + 1);
    const bool equivalent = out_.size() == mark;
    out_.resize(mark);
    return equivalent;
  }

  bool EquivalentKeyword(Node a, Node b, const char* keyword, int depth) {
    const Value* av = Member(*a.v, keyword);
    const Value* bv = Member(*b.v, keyword);
    if (av == nullptr || bv == nullptr) return av == bv;
    if (*av == *bv && !ContainsRef(*av) && !ContainsRef(*bv)) return true;
    if (av->IsArray() && bv->IsArray()) {
      if (av->Size() != bv->Size()) return false;
      for (rapidjson::SizeType i = 0; i < av->Size(); ++i) {
        if (!IsSchema((*av)[i]) || !IsSchema((*bv)[i])) {
          if (!((*av)[i] == (*bv)[i])) return false;
          continue;
        }
        if (!Equivalent({&(*av)[i], a.root}, {&(*bv)[i], b.root}, depth)) return false;
      }
      return true;
    }
    if (IsSchema(*av) && IsSchema(*bv) && !IsMapKeyword(keyword)) {
      return Equivalent({av, a.root}, {bv, b.root}, depth);
    }
    if (av->IsObject() && bv->IsObject() && IsMapKeyword(keyword)) {
      // name -> schema (or name -> array of names for dependencies).
      if (av->MemberCount() != bv->MemberCount()) return false;
      for (auto it = av->MemberBegin(); it != av->MemberEnd(); ++it) {
        auto other = bv->FindMember(it->name);
        if (other == bv->MemberEnd()) return false;
        if (IsSchema(it->value) && IsSchema(other->value)) {
          if (!Equivalent({&it->value, a.root}, {&other->value, b.root}, depth)) return false;
        } else if (!(it->value == other->value)) {
          return false;
        }
      }
      return true;
    }
    return false;
  }

  static bool IsSchema(const Value& v) { return v.IsObject() || v.IsBool(); }
  static bool IsMapKeyword(std::string_view k) {
    return k == "dependencies" || k == "dependentSchemas" || k == "dependentRequired";
  }

  // --- does a schema admit one value? (for enum/const) ---

  const RE2* Regex(const std::string& pattern) {
    auto it = regexes_.find(pattern);
    if (it == regexes_.end()) {
      RE2::Options options;
      options.set_log_errors(false);
      auto re = std::make_unique<RE2>(pattern, options);
      it = regexes_.emplace(pattern, re->ok() ? std::move(re) : nullptr).first;
    }
    return it->second.get();
  }

  // kNo/kUnknown set `*why` to the deciding rule ("maxLength 3").
  Tri Admits(Node s, const Value& v, std::string* why, int depth) {
    if (++steps_ > kMaxSteps || depth > kMaxCompareDepth) {
      *why = "schema (too complex)";
      return Tri::kUnknown;
    }
    std::string problem;
    std::optional<Node> resolved = Resolve(s, true, &problem);
    if (!resolved) {
      *why = problem;
      return Tri::kUnknown;
    }
    const Value& schema = *resolved->v;
    if (schema.IsBool()) {
      if (!schema.GetBool()) *why = "schema false";
      return schema.GetBool() ? Tri::kYes : Tri::kNo;
    }
    if (!schema.IsObject()) {
      *why = "schema " + Json(schema);
      return Tri::kUnknown;
    }
    Tri result = Tri::kYes;
    auto unknown = [&](std::string rule) {
      if (result == Tri::kYes) {
        result = Tri::kUnknown;
        *why = std::move(rule);
      }
    };
    const unsigned type = ValueType(v);
    for (auto it = schema.MemberBegin(); it != schema.MemberEnd(); ++it) {
      const std::string k(it->name.GetString(), it->name.GetStringLength());
      const Value& kv = it->value;
      const std::string rule = absl::StrCat(k, " ", Json(kv));
      if (IsAnnotation(k)) continue;
      bool no = false;
      if (k == "type") {
        unsigned bits = 0;
        if (!DeclaredTypes(schema, &bits)) {
          unknown(rule);
          continue;
        }
        no = (bits & type) == 0;
      } else if (k == "enum") {
        if (!kv.IsArray()) {
          unknown(rule);
          continue;
        }
        no = true;
        for (const Value& e : kv.GetArray()) no = no && !(e == v);
      } else if (k == "const") {
        no = !(kv == v);
      } else if (k == "minimum" || k == "maximum" || k == "exclusiveMinimum" ||
                 k == "exclusiveMaximum") {
        if (!v.IsNumber()) continue;
        bool bad = false;
        const bool lower = k == "minimum" || k == "exclusiveMinimum";
        std::optional<Bound> b = NumericBound(schema, lower, &bad);
        if (bad) {
          unknown(rule);
          continue;
        }
        if (!b) continue;  // a draft 4 boolean without its bound
        double x = v.GetDouble();
        no = lower ? (b->exclusive ? x <= b->value : x < b->value)
                   : (b->exclusive ? x >= b->value : x > b->value);
      } else if (k == "multipleOf") {
        if (!v.IsNumber()) continue;
        if (!kv.IsNumber() || !(kv.GetDouble() > 0)) {
          unknown(rule);
          continue;
        }
        no = !MultipleOf(v.GetDouble(), kv.GetDouble());
      } else if (k == "minLength" || k == "maxLength") {
        if (!v.IsString()) continue;
        uint64_t n = 0;
        if (GetCount(schema, k.c_str(), &n) != Count::kOk) {
          unknown(rule);
          continue;
        }
        no = k == "minLength" ? CodePoints(v) < n : CodePoints(v) > n;
      } else if (k == "pattern") {
        if (!v.IsString()) continue;
        const RE2* re = kv.IsString() ? Regex(kv.GetString()) : nullptr;
        if (re == nullptr) {
          unknown(rule);
          continue;
        }
        no = !RE2::PartialMatch(re2::StringPiece(v.GetString(), v.GetStringLength()), *re);
      } else if (k == "format") {
        if (v.IsString()) unknown(rule);
        continue;
      } else if (k == "minItems" || k == "maxItems" || k == "minProperties" ||
                 k == "maxProperties") {
        const bool items = k == "minItems" || k == "maxItems";
        if (items ? !v.IsArray() : !v.IsObject()) continue;
        uint64_t n = 0;
        if (GetCount(schema, k.c_str(), &n) != Count::kOk) {
          unknown(rule);
          continue;
        }
        uint64_t size = items ? v.Size() : v.MemberCount();
        no = k.rfind("min", 0) == 0 ? size < n : size > n;
      } else if (k == "required") {
        if (!v.IsObject()) continue;
        if (!kv.IsArray()) {
          unknown(rule);
          continue;
        }
        for (const Value& name : kv.GetArray()) {
          if (!name.IsString()) {
            unknown(rule);
          } else if (!v.HasMember(name)) {
            no = true;
          }
        }
      } else if (k == "items" && kv.IsObject() != kv.IsBool()) {
        if (!v.IsArray()) continue;
        for (const Value& e : v.GetArray()) {
          std::string inner;
          Tri t = Admits({&kv, resolved->root}, e, &inner, depth + 1);
          if (t == Tri::kNo) {
            no = true;
            break;
          }
          if (t == Tri::kUnknown) unknown(rule);
        }
      } else if (k == "properties" || k == "additionalProperties") {
        if (!v.IsObject()) continue;
        if (Member(schema, "patternProperties") != nullptr) {
          unknown(rule);
          continue;
        }
        const Value* props = Member(schema, "properties");
        if (props != nullptr && !props->IsObject()) {
          unknown(rule);
          continue;
        }
        for (auto m = v.MemberBegin(); m != v.MemberEnd() && !no; ++m) {
          const bool declared = props != nullptr && props->HasMember(m->name);
          if ((k == "properties") != declared) continue;
          const Value& sub = declared ? (*props)[m->name] : kv;
          std::string inner;
          Tri t = Admits({&sub, resolved->root}, m->value, &inner, depth + 1);
          if (t == Tri::kNo) no = true;
          if (t == Tri::kUnknown) unknown(rule);
        }
      } else if (k == "allOf" || k == "anyOf" || k == "oneOf") {
        if (!kv.IsArray()) {
          unknown(rule);
          continue;
        }
        int yes = 0, nos = 0, unknowns = 0;
        for (const Value& sub : kv.GetArray()) {
          std::string inner;
          switch (Admits({&sub, resolved->root}, v, &inner, depth + 1)) {
            case Tri::kYes:
              ++yes;
              break;
            case Tri::kNo:
              ++nos;
              break;
            case Tri::kUnknown:
              ++unknowns;
              break;
          }
        }
        if (k == "allOf") {
          no = nos > 0;
          if (!no && unknowns > 0) unknown(rule);
        } else if (k == "anyOf") {
          no = yes == 0 && unknowns == 0;
          if (yes == 0 && unknowns > 0) unknown(rule);
        } else {
          no = unknowns == 0 && yes != 1;
          if (unknowns > 0 && yes <= 1) unknown(rule);
        }
      } else if (k == "not") {
        std::string inner;
        Tri t = Admits({&kv, resolved->root}, v, &inner, depth + 1);
        if (t == Tri::kUnknown) unknown(rule);
        no = t == Tri::kYes;
      } else if ((k == "prefixItems" || k == "items" || k == "additionalItems" || k == "contains" ||
                  k == "minContains" || k == "maxContains" || k == "uniqueItems" ||
                  k == "unevaluatedItems") &&
                 !v.IsArray()) {
        continue;  // array keywords do not apply to other values
      } else if ((k == "patternProperties" || k == "propertyNames" || k == "dependencies" ||
                  k == "dependentRequired" || k == "dependentSchemas" ||
                  k == "unevaluatedProperties") &&
                 !v.IsObject()) {
        continue;
      } else {
        unknown(rule);
        continue;
      }
      if (no) {
        *why = rule;
        return Tri::kNo;
      }
    }
    return result;
  }

  // --- the subset check ---

  // Reports everything that keeps "every instance of `a` is an instance of `b`" from being
  // proven, at schema location `path`.
  void Sub(Node a, Node b, const std::string& path, int depth) {
    // Once the work budget is spent, one report has been made and every caller that could
    // lose it (an equivalence probe) reports on its own, so the rest stays silent instead of
    // flooding the result.
    if (exhausted_) return;
    if (++steps_ > kMaxSteps) {
      exhausted_ = true;
      Unproven(path, "schema", "schema (too complex to compare)");
      return;
    }
    if (depth > kMaxCompareDepth) {
      Unproven(path, "schema", "schema (too deeply nested to compare)");
      return;
    }
    std::string problem;
    std::optional<Node> ra = Resolve(a, false, &problem);
    if (!ra) {
      Unproven(path, problem, "schema");
      return;
    }
    std::optional<Node> rb = Resolve(b, true, &problem);
    if (!rb) {
      Unproven(path, "schema", problem);
      return;
    }
    const std::pair<const Value*, const Value*> key{ra->v, rb->v};
    // A pair under comparison further up (recursive $ref) is assumed to hold: a counterexample
    // is a finite instance, so it would fail a check at finite depth on the way down.
    if (proven_.count(key) > 0 || in_progress_.count(key) > 0) return;
    in_progress_.insert(key);
    const size_t mark = out_.size();
    SubResolved(*ra, *rb, path, depth);
    in_progress_.erase(key);
    if (out_.size() == mark) proven_.insert(key);
  }

  void SubResolved(Node a, Node b, const std::string& path, int depth) {
    static const Value kEmpty(rapidjson::kObjectType);
    const Value& A = *a.v;
    const Value& B = *b.v;
    if (IsFalse(A) || IsTrivialTrue(B)) return;
    if (A == B && !ContainsRef(A) && !ContainsRef(B)) return;
    if (!A.IsObject() && !A.IsBool()) {
      Unproven(path, "schema " + Json(A), "schema");
      return;
    }
    if (!B.IsObject() && !B.IsBool()) {
      Unproven(path, "schema", "schema " + Json(B));
      return;
    }
    const Value& AO = A.IsObject() ? A : kEmpty;  // A is `true` otherwise

    unsigned ta = kAllTypes;
    unsigned tb = kAllTypes;
    if (!DeclaredTypes(AO, &ta)) ta = kAllTypes;  // ignoring a constraint only widens A
    if (ta == 0) return;                          // "type": [] admits nothing

    // The values A can take when it lists them.
    std::vector<const Value*> finite;
    const bool a_finite = FiniteValues(AO, &finite);
    if (a_finite) {
      std::string why;
      std::string a_rule = Member(AO, "const") != nullptr ? Rule(AO, "const") : Rule(AO, "enum");
      for (const Value* v : finite) {
        if ((ValueType(*v) & ta) == 0) continue;
        if (Admits(a, *v, &why, depth) == Tri::kNo) continue;  // not an instance of A after all
        switch (Admits(b, *v, &why, depth)) {
          case Tri::kYes:
            break;
          case Tri::kNo:
            Narrowed(path, absl::StrCat(a_rule, " (value ", Json(*v), ")"), why);
            return;
          case Tri::kUnknown:
            Unproven(path, absl::StrCat(a_rule, " (value ", Json(*v), ")"), why);
            return;
        }
      }
      return;  // every instance of A is admitted by B
    }

    if (IsFalse(B)) {
      Narrowed(path, "schema " + Json(A), "schema false");
      return;
    }

    if (!DeclaredTypes(B, &tb)) {
      Unproven(path, TypeRule(AO), TypeRule(B));
      return;
    }

    // Keywords of B the structural rules below do not cover: accepted only where A has an
    // equivalent one (extra constraints on A's side only make A smaller, so those are fine).
    bool conditional_done = false, contains_done = false;
    for (auto it = B.MemberBegin(); it != B.MemberEnd(); ++it) {
      const std::string k(it->name.GetString(), it->name.GetStringLength());
      if (IsAnnotation(k) || IsStructural(k)) continue;
      unsigned relevant = kAllTypes;
      if (k == "contains" || k == "minContains" || k == "maxContains" || k == "unevaluatedItems") {
        relevant = kArray;
      } else if (k == "propertyNames" || k == "dependencies" || k == "dependentRequired" ||
                 k == "dependentSchemas" || k == "unevaluatedProperties") {
        relevant = kObject;
      }
      if ((ta & tb & relevant) == 0) continue;
      bool same = false;
      if (k == "unevaluatedItems" || k == "unevaluatedProperties") {
        same = false;  // depends on every sibling; only identical subschemas pass (above)
      } else if (k == "if" || k == "then" || k == "else") {
        if (std::exchange(conditional_done, true)) continue;  // one report for the group
        same = EquivalentKeyword(a, b, "if", depth) && EquivalentKeyword(a, b, "then", depth) &&
               EquivalentKeyword(a, b, "else", depth);
      } else if (k == "contains" || k == "minContains" || k == "maxContains") {
        if (std::exchange(contains_done, true)) continue;
        same = EquivalentKeyword(a, b, "contains", depth) &&
               EquivalentKeyword(a, b, "minContains", depth) &&
               EquivalentKeyword(a, b, "maxContains", depth);
      } else {
        same = EquivalentKeyword(a, b, k.c_str(), depth);
      }
      if (!same) Unproven(Child(path, k), Rule(AO, k.c_str()), Rule(B, k.c_str()));
    }

    // B lists its values and A does not.
    if (Member(B, "enum") != nullptr || Member(B, "const") != nullptr) {
      // Only null and booleans can be enumerated exhaustively.
      bool covered = (ta & ~(kNull | kBoolean)) == 0;
      std::string why;
      const Value null_value, true_value(true), false_value(false);
      if (covered && (ta & kNull)) covered = Admits(b, null_value, &why, depth) == Tri::kYes;
      if (covered && (ta & kBoolean)) {
        covered = Admits(b, true_value, &why, depth) == Tri::kYes &&
                  Admits(b, false_value, &why, depth) == Tri::kYes;
      }
      if (!covered) {
        const char* k = Member(B, "const") != nullptr ? "const" : "enum";
        Narrowed(path, absl::StrCat(k, " (none)"), Rule(B, k));
      }
      return;
    }

    // Types; integer is a subset of number.
    if ((ta & ~tb) != 0) Narrowed(path, TypeRule(AO), TypeRule(B));
    const unsigned common = ta & tb;
    if (common & kNumber) CompareNumbers(AO, B, ta, path);
    if (common & kString) CompareStrings(AO, B, path);
    if (common & kArray) CompareArrays(a, AO, b, path, depth);
    if (common & kObject) CompareObjects(a, AO, b, path, depth);
  }

  // enum and/or const of a schema: the values it is limited to. False when it has neither (or
  // they are malformed, which on A's side may be ignored).
  static bool FiniteValues(const Value& s, std::vector<const Value*>* out) {
    const Value* c = Member(s, "const");
    const Value* e = Member(s, "enum");
    if (e != nullptr && !e->IsArray()) e = nullptr;
    if (c != nullptr) {
      bool in_enum = e == nullptr;
      if (e != nullptr) {
        for (const Value& x : e->GetArray()) in_enum = in_enum || x == *c;
      }
      if (in_enum) out->push_back(c);
      return true;
    }
    if (e == nullptr) return false;
    for (const Value& x : e->GetArray()) out->push_back(&x);
    return true;
  }

  void CompareCounts(const Value& A, const Value& B, const char* keyword, bool is_min,
                     const std::string& path) {
    uint64_t bn = 0, an = 0;
    Count bc = GetCount(B, keyword, &bn);
    if (bc == Count::kAbsent) return;
    if (bc == Count::kBad) {
      Unproven(path, Rule(A, keyword), Rule(B, keyword));
      return;
    }
    Count ac = GetCount(A, keyword, &an);
    if (ac != Count::kOk) an = 0;
    bool ok = is_min ? (bn == 0 || (ac == Count::kOk && an >= bn)) : (ac == Count::kOk && an <= bn);
    if (!ok) Narrowed(path, Rule(A, keyword), Rule(B, keyword));
  }

  void CompareNumbers(const Value& A, const Value& B, unsigned ta, const std::string& path) {
    for (bool lower : {true, false}) {
      bool a_bad = false, b_bad = false;
      std::optional<Bound> ab = NumericBound(A, lower, &a_bad);
      std::optional<Bound> bb = NumericBound(B, lower, &b_bad);
      if (b_bad) {
        Unproven(path, BoundRule(ab, lower), BoundRule(bb, lower));
        continue;
      }
      if (!bb) continue;
      bool ok = false;
      if (ab) {
        if (lower) {
          ok = bb->value < ab->value ||
               (bb->value == ab->value && (!bb->exclusive || ab->exclusive));
        } else {
          ok = bb->value > ab->value ||
               (bb->value == ab->value && (!bb->exclusive || ab->exclusive));
        }
      }
      if (!ok) Narrowed(path, BoundRule(ab, lower), BoundRule(bb, lower));
    }
    const Value* bm = Member(B, "multipleOf");
    if (bm != nullptr) {
      if (!bm->IsNumber() || !(bm->GetDouble() > 0)) {
        Unproven(path, Rule(A, "multipleOf"), Rule(B, "multipleOf"));
        return;
      }
      const Value* am = Member(A, "multipleOf");
      bool ok = false;
      if (am != nullptr && am->IsNumber() && am->GetDouble() > 0) {
        ok = MultipleOf(am->GetDouble(), bm->GetDouble());
      }
      // Integers are multiples of any 1/k.
      if (!ok && (ta & kFraction) == 0) ok = MultipleOf(1.0, bm->GetDouble());
      if (!ok) Narrowed(path, Rule(A, "multipleOf"), Rule(B, "multipleOf"));
    }
  }

  // pattern and format: only equal (or absent in B) is accepted.
  void CompareExact(const Value& A, const Value& B, const char* keyword, const std::string& path) {
    const Value* bv = Member(B, keyword);
    if (bv == nullptr) return;
    const Value* av = Member(A, keyword);
    if (av == nullptr) {
      Narrowed(path, Rule(A, keyword), Rule(B, keyword));
    } else if (!(*av == *bv)) {
      Unproven(path, Rule(A, keyword), Rule(B, keyword));
    }
  }

  void CompareStrings(const Value& A, const Value& B, const std::string& path) {
    CompareCounts(A, B, "minLength", true, path);
    CompareCounts(A, B, "maxLength", false, path);
    CompareExact(A, B, "pattern", path);
    CompareExact(A, B, "format", path);
  }

  // The schema for array positions: prefix schemas, then the schema for the rest.
  struct ItemsModel {
    std::vector<const Value*> prefix;
    const Value* rest = nullptr;  // null: true
    std::string prefix_keyword = "prefixItems";
    std::string rest_keyword = "items";
    bool bad = false;
  };

  static ItemsModel Items(const Value& s) {
    ItemsModel m;
    const Value* prefix_items = Member(s, "prefixItems");
    const Value* items = Member(s, "items");
    const Value* additional = Member(s, "additionalItems");
    if (prefix_items != nullptr) {  // draft 2020-12
      if (!prefix_items->IsArray() || (items != nullptr && items->IsArray())) m.bad = true;
      if (prefix_items->IsArray()) {
        for (const Value& e : prefix_items->GetArray()) m.prefix.push_back(&e);
      }
      m.rest = items;
    } else if (items != nullptr && items->IsArray()) {  // drafts 4..2019-09 tuple form
      m.prefix_keyword = "items";
      m.rest_keyword = "additionalItems";
      for (const Value& e : items->GetArray()) m.prefix.push_back(&e);
      m.rest = additional;
    } else {
      m.rest = items;
    }
    return m;
  }

  void CompareArrays(Node a, const Value& A, Node b, const std::string& path, int depth) {
    const Value& B = *b.v;
    CompareCounts(A, B, "minItems", true, path);
    CompareCounts(A, B, "maxItems", false, path);
    const Value* bu = Member(B, "uniqueItems");
    if (bu != nullptr && bu->IsBool() && bu->GetBool()) {
      const Value* au = Member(A, "uniqueItems");
      uint64_t max_items = 0;
      bool ok = (au != nullptr && au->IsBool() && au->GetBool()) ||
                (GetCount(A, "maxItems", &max_items) == Count::kOk && max_items <= 1);
      if (!ok) Narrowed(path, Rule(A, "uniqueItems"), Rule(B, "uniqueItems"));
    }
    ItemsModel am = Items(A);
    ItemsModel bm = Items(B);
    if (bm.bad) {
      Unproven(Child(path, "items"), Rule(A, "items"), Rule(B, "items"));
      return;
    }
    static const Value kTrue(true);
    const size_t n = std::max(am.prefix.size(), bm.prefix.size());
    for (size_t i = 0; i < n; ++i) {
      const Value* ai = i < am.prefix.size() ? am.prefix[i] : am.rest;
      const Value* bi = i < bm.prefix.size() ? bm.prefix[i] : bm.rest;
      const std::string& keyword = i < bm.prefix.size() ? bm.prefix_keyword : am.prefix_keyword;
      Sub({ai != nullptr ? ai : &kTrue, a.root}, {bi != nullptr ? bi : &kTrue, b.root},
          Child(path, keyword, std::to_string(i)), depth + 1);
    }
    Sub({am.rest != nullptr ? am.rest : &kTrue, a.root},
        {bm.rest != nullptr ? bm.rest : &kTrue, b.root}, Child(path, bm.rest_keyword), depth + 1);
  }

  void CompareObjects(Node a, const Value& A, Node b, const std::string& path, int depth) {
    static const Value kTrue(true);
    const Value& B = *b.v;
    CompareCounts(A, B, "minProperties", true, path);
    CompareCounts(A, B, "maxProperties", false, path);

    // required: everything B requires, A must require.
    const Value* breq = Member(B, "required");
    const Value* areq = Member(A, "required");
    if (breq != nullptr && !breq->IsArray()) {
      Unproven(path, Rule(A, "required"), Rule(B, "required"));
    } else if (breq != nullptr) {
      for (const Value& name : breq->GetArray()) {
        if (!name.IsString()) {
          Unproven(path, Rule(A, "required"), Rule(B, "required"));
          break;
        }
        bool in_a = false;
        if (areq != nullptr && areq->IsArray()) {
          for (const Value& x : areq->GetArray()) in_a = in_a || x == name;
        }
        if (!in_a) {
          Narrowed(Child(path, "properties", name.GetString()),
                   absl::StrCat(Json(name), " optional"), absl::StrCat(Json(name), " required"));
        }
      }
    }

    const Value* aprops = Member(A, "properties");
    const Value* bprops = Member(B, "properties");
    const Value* apat = Member(A, "patternProperties");
    const Value* bpat = Member(B, "patternProperties");
    const Value* aadd = Member(A, "additionalProperties");
    const Value* badd = Member(B, "additionalProperties");
    if ((bprops != nullptr && !bprops->IsObject()) || (bpat != nullptr && !bpat->IsObject()) ||
        (badd != nullptr && !IsSchema(*badd))) {
      Unproven(path, "properties", "properties (malformed)");
      return;
    }
    if (aprops != nullptr && !aprops->IsObject()) aprops = nullptr;
    if (apat != nullptr && !apat->IsObject()) apat = nullptr;
    if (aadd != nullptr && !IsSchema(*aadd)) aadd = nullptr;

    // Every property either side declares, B's order first.
    std::vector<std::string> names;
    std::set<std::string> seen;
    for (const Value* props : {bprops, aprops}) {
      if (props == nullptr) continue;
      for (auto it = props->MemberBegin(); it != props->MemberEnd(); ++it) {
        std::string name(it->name.GetString(), it->name.GetStringLength());
        if (seen.insert(name).second) names.push_back(name);
      }
    }
    for (const std::string& name : names) {
      const Value* a_schema = nullptr;
      if (aprops != nullptr && aprops->HasMember(name.c_str())) {
        a_schema = &(*aprops)[name.c_str()];
      } else {
        // Any one schema that applies to the name in A describes a superset of A's values.
        bool unknown_pattern = false;
        if (apat != nullptr) {
          for (auto it = apat->MemberBegin(); it != apat->MemberEnd() && !a_schema; ++it) {
            const RE2* re = Regex(it->name.GetString());
            if (re == nullptr) {
              unknown_pattern = true;
            } else if (RE2::PartialMatch(name, *re)) {
              a_schema = &it->value;
            }
          }
        }
        if (a_schema == nullptr) a_schema = unknown_pattern ? &kTrue : (aadd ? aadd : &kTrue);
      }
      // In B every schema that applies to the name must admit A's values.
      std::vector<const Value*> b_schemas;
      if (bprops != nullptr && bprops->HasMember(name.c_str())) {
        b_schemas.push_back(&(*bprops)[name.c_str()]);
      }
      if (bpat != nullptr) {
        for (auto it = bpat->MemberBegin(); it != bpat->MemberEnd(); ++it) {
          const RE2* re = Regex(it->name.GetString());
          if (re == nullptr) {
            Unproven(Child(path, "patternProperties", it->name.GetString()),
                     Rule(A, "patternProperties"), "pattern not supported");
          } else if (RE2::PartialMatch(name, *re)) {
            b_schemas.push_back(&it->value);
          }
        }
      }
      const std::string child = Child(path, "properties", name);
      if (b_schemas.empty()) {
        if (badd != nullptr && IsFalse(*badd)) {
          if (!IsFalse(*a_schema)) {
            Narrowed(child, absl::StrCat("\"", name, "\" allowed"),
                     absl::StrCat("\"", name, "\" not allowed (additionalProperties false)"));
          }
          continue;
        }
        b_schemas.push_back(badd != nullptr ? badd : &kTrue);
      }
      for (const Value* s : b_schemas) Sub({a_schema, a.root}, {s, b.root}, child, depth + 1);
    }

    // Names neither side declares.
    if (bpat != nullptr) {
      if (!EquivalentKeyword(a, b, "patternProperties", depth)) {
        Unproven(Child(path, "patternProperties"), Rule(A, "patternProperties"),
                 Rule(B, "patternProperties"));
        return;
      }
    } else if (apat != nullptr) {
      for (auto it = apat->MemberBegin(); it != apat->MemberEnd(); ++it) {
        CompareRest({&it->value, a.root},
                    absl::StrCat("patternProperties ", Json(it->name), ": ", Json(it->value)), badd,
                    b.root, Child(path, "patternProperties", it->name.GetString()), depth);
      }
    }
    CompareRest({aadd != nullptr ? aadd : &kTrue, a.root}, Rule(A, "additionalProperties"), badd,
                b.root, Child(path, "additionalProperties"), depth);
  }

  // A's schema for undeclared names against B's additionalProperties.
  void CompareRest(Node a_schema, std::string a_rule, const Value* badd, const Value* b_root,
                   const std::string& path, int depth) {
    static const Value kTrue(true);
    if (badd != nullptr && IsFalse(*badd)) {
      if (!IsFalse(*a_schema.v)) Narrowed(path, std::move(a_rule), "additionalProperties false");
      return;
    }
    Sub(a_schema, {badd != nullptr ? badd : &kTrue, b_root}, path, depth + 1);
  }

  const Value& old_root_;
  const Value& new_root_;
  const bool backward_;
  const std::string suffix_;
  std::vector<Incompatibility> out_;
  std::set<std::pair<const Value*, const Value*>> in_progress_;
  std::set<std::pair<const Value*, const Value*>> proven_;
  std::map<const Value*, bool> contains_ref_;
  std::map<std::string, std::unique_ptr<RE2>> regexes_;
  size_t steps_ = 0;
  bool exhausted_ = false;
};

}  // namespace

absl::StatusOr<std::vector<Incompatibility>> CheckCompatibility(
    wharf::v1::CompatibilityMode mode, const std::vector<std::string>& previous,
    std::string_view candidate) {
  if (!wharf::v1::CompatibilityMode_IsValid(mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown compatibility mode ", static_cast<int>(mode)));
  }
  rapidjson::Document new_doc;
  if (absl::Status s = ParseSchema(candidate, "candidate", &new_doc); !s.ok()) return s;
  if (mode == wharf::v1::NONE || previous.empty()) return std::vector<Incompatibility>{};

  const bool transitive = mode == wharf::v1::BACKWARD_TRANSITIVE ||
                          mode == wharf::v1::FORWARD_TRANSITIVE ||
                          mode == wharf::v1::FULL_TRANSITIVE;
  const bool backward = mode != wharf::v1::FORWARD && mode != wharf::v1::FORWARD_TRANSITIVE;
  const bool forward = mode == wharf::v1::FORWARD || mode == wharf::v1::FORWARD_TRANSITIVE ||
                       mode == wharf::v1::FULL || mode == wharf::v1::FULL_TRANSITIVE;

  std::vector<Incompatibility> out;
  const size_t first = transitive ? 0 : previous.size() - 1;
  for (size_t i = first; i < previous.size(); ++i) {
    rapidjson::Document old_doc;
    if (absl::Status s = ParseSchema(previous[i], absl::StrCat("previous[", i, "]"), &old_doc);
        !s.ok()) {
      return s;
    }
    const std::string suffix =
        transitive && previous.size() > 1
            ? absl::StrCat(" [previous version ", i + 1, " of ", previous.size(), "]")
            : "";
    for (bool direction : {true, false}) {
      if (direction ? !backward : !forward) continue;
      std::vector<Incompatibility> found = Checker(old_doc, new_doc, direction, suffix).Run();
      out.insert(out.end(), std::make_move_iterator(found.begin()),
                 std::make_move_iterator(found.end()));
    }
  }
  return out;
}

std::string FormatIncompatibilities(const std::vector<Incompatibility>& incompatibilities) {
  std::vector<std::string> lines;
  for (const Incompatibility& inc : incompatibilities) {
    std::string rules;
    size_t old_space = inc.old_rule.find(' ');
    size_t new_space = inc.new_rule.find(' ');
    if (old_space != std::string::npos && new_space != std::string::npos &&
        inc.old_rule.compare(0, old_space, inc.new_rule, 0, new_space) == 0 &&
        old_space == new_space) {
      rules = absl::StrCat(inc.old_rule, " -> ", inc.new_rule.substr(new_space + 1));
    } else {
      rules = absl::StrCat(inc.old_rule, " -> ", inc.new_rule);
    }
    lines.push_back(
        absl::StrCat(inc.path.empty() ? "(root)" : inc.path, ": ", rules, " (", inc.reason, ")"));
  }
  return absl::StrJoin(lines, "\n");
}

}  // namespace wharf::pipeline::contract
