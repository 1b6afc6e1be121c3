#include "pipeline/contract/transform.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <unordered_set>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "pipeline/contract/expression.h"
#include "pipeline/contract/hmac.h"
#include "pipeline/contract/transform_timestamp.h"
#include "rapidjson/error/en.h"
#include "rapidjson/pointer.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"

namespace wharf::pipeline::contract {

namespace transform_internal {

enum class Op {
  kRename,
  kDrop,
  kKeep,
  kSet,
  kDefault,
  kCast,
  kTimestamp,
  kMask,
  kHash,
  kRedact,
  kTruncate,
  kLowercase,
  kTrim,
  kFlatten,
  kAddMetadata,
  kFilter,
};

enum class CastType { kInt, kFloat, kString, kBool, kTimestamp };

enum class MetaField {
  kIngestTime,
  kEventTime,
  kPartition,
  kOffset,
  kProducerId,
  kDataset,
  kSchemaVersion,
  kTransformVersion,
};

struct Step {
  size_t number = 0;  // 1-based
  Op op = Op::kRename;
  std::string op_name;
  std::string label;  // "step 3 (cast /amount)", prefix of runtime messages
  std::string path_text;
  rapidjson::Pointer path;
  rapidjson::Pointer to;
  std::vector<rapidjson::Pointer> paths;
  rapidjson::Document value;  // set/default constant (has_value)
  bool has_value = false;
  std::shared_ptr<const Expression> expr;
  CastType cast_type = CastType::kInt;
  std::optional<TimestampParser> timestamps;
  bool output_millis = false;
  uint32_t length = 0;
  std::string separator = ".";
  std::vector<std::pair<MetaField, rapidjson::Pointer>> metadata;
};

}  // namespace transform_internal

namespace {

using rapidjson::Value;
using transform_internal::CastType;
using transform_internal::MetaField;
using transform_internal::Op;
using transform_internal::Step;
using Allocator = rapidjson::Document::AllocatorType;

// ---------------------------------------------------------------------------------------------
// Spec checking
// ---------------------------------------------------------------------------------------------

// The TransformSpec fields besides `op`, as bits, to state which ones an op uses.
enum FieldBit : uint32_t {
  kPath = 1 << 0,
  kPaths = 1 << 1,
  kTo = 1 << 2,
  kValueJson = 1 << 3,
  kExpr = 1 << 4,
  kType = 1 << 5,
  kInputFormats = 1 << 6,
  kOutputFormat = 1 << 7,
  kLength = 1 << 8,
  kSeparator = 1 << 9,
  kFields = 1 << 10,
};

struct OpInfo {
  const char* name;
  Op op;
  uint32_t allowed;
};

constexpr OpInfo kOps[] = {
    {"rename", Op::kRename, kPath | kTo},
    {"drop", Op::kDrop, kPaths},
    {"keep", Op::kKeep, kPaths},
    {"set", Op::kSet, kPath | kValueJson | kExpr},
    {"default", Op::kDefault, kPath | kValueJson},
    {"cast", Op::kCast, kPath | kType | kInputFormats},
    {"timestamp", Op::kTimestamp, kPath | kInputFormats | kOutputFormat},
    {"mask", Op::kMask, kPath | kLength},
    {"hash", Op::kHash, kPath},
    {"redact", Op::kRedact, kPath},
    {"truncate", Op::kTruncate, kPath | kLength},
    {"lowercase", Op::kLowercase, kPath},
    {"trim", Op::kTrim, kPath},
    {"flatten", Op::kFlatten, kPath | kSeparator},
    {"add_metadata", Op::kAddMetadata, kFields},
    {"filter", Op::kFilter, kExpr},
};

struct MetaInfo {
  const char* name;
  MetaField field;
};

constexpr MetaInfo kMetaFields[] = {
    {"ingest_time", MetaField::kIngestTime},
    {"event_time", MetaField::kEventTime},
    {"partition", MetaField::kPartition},
    {"offset", MetaField::kOffset},
    {"producer_id", MetaField::kProducerId},
    {"dataset", MetaField::kDataset},
    {"schema_version", MetaField::kSchemaVersion},
    {"transform_version", MetaField::kTransformVersion},
};

uint32_t PresentFields(const wharf::v1::TransformSpec& spec) {
  uint32_t bits = 0;
  if (!spec.path().empty()) bits |= kPath;
  if (spec.paths_size() > 0) bits |= kPaths;
  if (!spec.to().empty()) bits |= kTo;
  if (!spec.value_json().empty()) bits |= kValueJson;
  if (!spec.expr().empty()) bits |= kExpr;
  if (!spec.type().empty()) bits |= kType;
  if (spec.input_formats_size() > 0) bits |= kInputFormats;
  if (!spec.output_format().empty()) bits |= kOutputFormat;
  if (spec.length() != 0) bits |= kLength;
  if (!spec.separator().empty()) bits |= kSeparator;
  if (spec.fields_size() > 0) bits |= kFields;
  return bits;
}

const char* FieldName(uint32_t bit) {
  switch (bit) {
    case kPath:
      return "path";
    case kPaths:
      return "paths";
    case kTo:
      return "to";
    case kValueJson:
      return "value_json";
    case kExpr:
      return "expr";
    case kType:
      return "type";
    case kInputFormats:
      return "input_formats";
    case kOutputFormat:
      return "output_format";
    case kLength:
      return "length";
    case kSeparator:
      return "separator";
    default:
      return "fields";
  }
}

// Collects the problems of one step; each becomes "step N (op): problem".
class StepErrors {
 public:
  explicit StepErrors(std::string prefix) : prefix_(std::move(prefix)) {}
  void Add(std::string_view problem) {
    errors_.push_back(absl::StrCat(prefix_, ": ", std::string(problem)));
  }
  bool empty() const { return errors_.empty(); }
  std::vector<std::string>& errors() { return errors_; }

 private:
  std::string prefix_;
  std::vector<std::string> errors_;
};

// Parses a JSON pointer (RFC 6901, not the URI fragment form). An empty text is the root.
bool CompilePointer(const std::string& text, std::string_view field, rapidjson::Pointer* out,
                    StepErrors* errors) {
  if (!text.empty() && text[0] != '/') {
    errors->Add(absl::StrCat(std::string(field), ": invalid JSON pointer \"", text,
                             "\" (must start with '/')"));
    return false;
  }
  rapidjson::Pointer pointer(text.data(), text.size());
  if (!pointer.IsValid()) {
    errors->Add(absl::StrCat(std::string(field), ": invalid JSON pointer \"", text,
                             "\" ('~' must be followed by 0 or 1, at character ",
                             pointer.GetParseErrorOffset() + 1, ")"));
    return false;
  }
  *out = pointer;
  return true;
}

void CompileStep(const wharf::v1::TransformSpec& spec, size_t number, const std::string& hash_key,
                 Step* step, StepErrors* errors) {
  const OpInfo* info = nullptr;
  for (const OpInfo& o : kOps) {
    if (spec.op() == o.name) info = &o;
  }
  if (info == nullptr) {
    std::vector<std::string> names;
    for (const OpInfo& o : kOps) names.push_back(o.name);
    errors->Add(spec.op().empty()
                    ? absl::StrCat("missing op (one of ", absl::StrJoin(names, ", "), ")")
                    : absl::StrCat("unknown op \"", spec.op(), "\" (one of ",
                                   absl::StrJoin(names, ", "), ")"));
    return;
  }
  step->number = number;
  step->op = info->op;
  step->op_name = info->name;
  step->path_text = spec.path();
  step->label = spec.path().empty()
                    ? absl::StrCat("step ", number, " (", info->name, ")")
                    : absl::StrCat("step ", number, " (", info->name, " ", spec.path(), ")");

  const uint32_t present = PresentFields(spec);
  for (uint32_t bit = 1; bit <= kFields; bit <<= 1) {
    if ((present & bit) != 0 && (info->allowed & bit) == 0) {
      errors->Add(absl::StrCat("field \"", FieldName(bit), "\" is not used by ", info->name));
    }
  }
  auto require = [&](uint32_t bit) {
    if ((present & bit) == 0) {
      errors->Add(absl::StrCat(info->name, " needs \"", FieldName(bit), "\""));
      return false;
    }
    return true;
  };

  // The single path: required by every op that allows it, except flatten (empty = record).
  if ((info->allowed & kPath) != 0) {
    if (info->op == Op::kFlatten || require(kPath)) {
      CompilePointer(spec.path(), "path", &step->path, errors);
    }
  }
  if ((info->allowed & kPaths) != 0 && require(kPaths)) {
    for (const std::string& p : spec.paths()) {
      rapidjson::Pointer pointer;
      if (p.empty()) {
        errors->Add(
            absl::StrCat("paths: the whole record (\"\") cannot be used with ", info->name));
      } else if (CompilePointer(p, "paths", &pointer, errors)) {
        step->paths.push_back(pointer);
      }
    }
  }

  switch (info->op) {
    case Op::kRename:
      if (require(kTo)) CompilePointer(spec.to(), "to", &step->to, errors);
      break;
    case Op::kSet:
    case Op::kDefault:
      if (info->op == Op::kSet && ((present & kValueJson) != 0) == ((present & kExpr) != 0)) {
        errors->Add("set needs exactly one of \"value_json\" and \"expr\"");
        break;
      }
      if (info->op == Op::kDefault && !require(kValueJson)) break;
      if ((present & kValueJson) != 0) {
        step->value.Parse<rapidjson::kParseIterativeFlag>(spec.value_json().data(),
                                                          spec.value_json().size());
        if (step->value.HasParseError()) {
          errors->Add(absl::StrCat("value_json is not valid JSON: ",
                                   rapidjson::GetParseError_En(step->value.GetParseError()),
                                   " (at byte ", step->value.GetErrorOffset(), ")"));
        } else {
          step->has_value = true;
        }
      }
      break;
    case Op::kCast:
      if (!require(kType)) break;
      if (spec.type() == "int") {
        step->cast_type = CastType::kInt;
      } else if (spec.type() == "float") {
        step->cast_type = CastType::kFloat;
      } else if (spec.type() == "string") {
        step->cast_type = CastType::kString;
      } else if (spec.type() == "bool") {
        step->cast_type = CastType::kBool;
      } else if (spec.type() == "timestamp") {
        step->cast_type = CastType::kTimestamp;
      } else {
        errors->Add(absl::StrCat("unknown type \"", spec.type(),
                                 "\" (one of int, float, string, bool, timestamp)"));
        break;
      }
      if (step->cast_type != CastType::kTimestamp && spec.input_formats_size() > 0) {
        errors->Add("input_formats is only used by casts to timestamp");
      }
      break;
    case Op::kTimestamp:
      if (spec.output_format() == "epoch_millis") {
        step->output_millis = true;
      } else if (!spec.output_format().empty() && spec.output_format() != "rfc3339") {
        errors->Add(absl::StrCat("unknown output_format \"", spec.output_format(),
                                 "\" (rfc3339 or epoch_millis)"));
      }
      break;
    case Op::kTruncate:
      if (spec.length() == 0) errors->Add("truncate needs \"length\" greater than 0");
      step->length = spec.length();
      break;
    case Op::kMask:
      step->length = spec.length();
      break;
    case Op::kHash:
      if (hash_key.empty()) errors->Add("hash needs a hash key (config: hash_key_file)");
      break;
    case Op::kFlatten:
      if (!spec.separator().empty()) step->separator = spec.separator();
      break;
    case Op::kAddMetadata: {
      if (!require(kFields)) break;
      // Sorted by name: protobuf map order is unspecified and writes should be deterministic.
      std::vector<std::pair<std::string, std::string>> sorted(spec.fields().begin(),
                                                              spec.fields().end());
      std::sort(sorted.begin(), sorted.end());
      for (const auto& [name, target] : sorted) {
        const MetaInfo* meta = nullptr;
        for (const MetaInfo& m : kMetaFields) {
          if (name == m.name) meta = &m;
        }
        if (meta == nullptr) {
          std::vector<std::string> known;
          for (const MetaInfo& m : kMetaFields) known.push_back(m.name);
          errors->Add(absl::StrCat("unknown metadata field \"", name, "\" (one of ",
                                   absl::StrJoin(known, ", "), ")"));
          continue;
        }
        rapidjson::Pointer pointer;
        if (target.empty()) {
          errors->Add(absl::StrCat("fields: metadata field \"", name, "\" needs a target pointer"));
        } else if (CompilePointer(target, absl::StrCat("fields[", name, "]"), &pointer, errors)) {
          step->metadata.emplace_back(meta->field, pointer);
        }
      }
      break;
    }
    case Op::kFilter:
      require(kExpr);
      break;
    default:
      break;
  }

  if ((present & kExpr) != 0 && (info->allowed & kExpr) != 0) {
    absl::StatusOr<std::shared_ptr<const Expression>> expr = Expression::Compile(spec.expr());
    if (expr.ok()) {
      step->expr = *std::move(expr);
    } else {
      errors->Add(std::string(expr.status().message()));
    }
  }
  if ((info->op == Op::kCast && step->cast_type == CastType::kTimestamp) ||
      info->op == Op::kTimestamp) {
    absl::StatusOr<TimestampParser> parser = TimestampParser::Create(spec.input_formats());
    if (parser.ok()) {
      step->timestamps = *std::move(parser);
    } else {
      errors->Add(std::string(parser.status().message()));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Helpers for applying steps
// ---------------------------------------------------------------------------------------------

std::string JsonText(const Value& v) {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
  v.Accept(writer);
  return std::string(buffer.GetString(), buffer.GetSize());
}

// A value for messages: its JSON text, cut (at a character boundary) to keep messages short.
std::string Shown(const Value& v) {
  constexpr size_t kMax = 64;
  std::string text = JsonText(v);
  if (text.size() <= kMax) return text;
  size_t cut = kMax;
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
  text.resize(cut);
  return text + "...";
}

const char* TypeName(const Value& v) {
  switch (v.GetType()) {
    case rapidjson::kNullType:
      return "null";
    case rapidjson::kFalseType:
    case rapidjson::kTrueType:
      return "bool";
    case rapidjson::kObjectType:
      return "object";
    case rapidjson::kArrayType:
      return "array";
    case rapidjson::kStringType:
      return "string";
    case rapidjson::kNumberType:
      return "number";
  }
  return "null";
}

std::string_view StringOf(const Value& v) { return {v.GetString(), v.GetStringLength()}; }

void SetString(Value* v, std::string_view s, Allocator& a) {
  // An empty string_view may have a null data(): RapidJSON asserts on null even for length 0.
  v->SetString(s.empty() ? "" : s.data(), static_cast<rapidjson::SizeType>(s.size()), a);
}

Value KeyRef(const rapidjson::Pointer::Token& t) {
  return Value(rapidjson::StringRef(t.name, t.length));
}

// The pointer text of the first `count` tokens of `p`, for messages.
std::string PointerPrefix(const rapidjson::Pointer& p, size_t count) {
  std::string out;
  for (size_t k = 0; k < count; ++k) {
    out.push_back('/');
    const rapidjson::Pointer::Token& t = p.GetTokens()[k];
    for (rapidjson::SizeType i = 0; i < t.length; ++i) {
      if (t.name[i] == '~') {
        out += "~0";
      } else if (t.name[i] == '/') {
        out += "~1";
      } else {
        out.push_back(t.name[i]);
      }
    }
  }
  return out;
}

// Writes `value` at `p`, creating missing parent objects. Never replaces an existing
// non-container on the way (rapidjson's Pointer::Set would, and would also grow arrays to any
// index named), so data is not clobbered and a pointer cannot allocate without bound.
absl::Status Put(const rapidjson::Pointer& p, Value value, Value* root, Allocator& a) {
  const size_t n = p.GetTokenCount();
  if (n == 0) {
    *root = value;
    return absl::OkStatus();
  }
  Value* cur = root;
  for (size_t k = 0; k < n; ++k) {
    const rapidjson::Pointer::Token& t = p.GetTokens()[k];
    const bool last = k + 1 == n;
    if (cur->IsObject()) {
      auto it = cur->FindMember(KeyRef(t));
      if (it != cur->MemberEnd()) {
        cur = &it->value;
      } else {
        cur->AddMember(Value(t.name, t.length, a),
                       last ? Value(rapidjson::kNullType) : Value(rapidjson::kObjectType), a);
        cur = &(cur->MemberEnd() - 1)->value;
      }
    } else if (cur->IsArray()) {
      if (last && t.length == 1 && t.name[0] == '-') {
        cur->PushBack(Value(rapidjson::kNullType), a);
        cur = &(*cur)[cur->Size() - 1];
      } else if (t.index != rapidjson::kPointerInvalidIndex && t.index < cur->Size()) {
        cur = &(*cur)[t.index];
      } else {
        return absl::InvalidArgumentError(absl::StrCat(
            "cannot write ", PointerPrefix(p, n), ": the array at ", PointerPrefix(p, k),
            " has no element \"", std::string(t.name, t.length), "\""));
      }
    } else {
      return absl::InvalidArgumentError(absl::StrCat("cannot write ", PointerPrefix(p, n), ": ",
                                                     k == 0 ? "the record" : PointerPrefix(p, k),
                                                     " is ", TypeName(*cur), ", not an object"));
    }
  }
  *cur = value;
  return absl::OkStatus();
}

bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

size_t CodePointCount(std::string_view s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

// Byte offset at which code point number `index` starts (s.size() if there are fewer).
size_t CodePointOffset(std::string_view s, size_t index) {
  size_t seen = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    if ((static_cast<unsigned char>(s[i]) & 0xC0) != 0x80) {
      if (seen == index) return i;
      ++seen;
    }
  }
  return s.size();
}

absl::Status Fail(std::string message) { return absl::InvalidArgumentError(std::move(message)); }

// ---------------------------------------------------------------------------------------------
// The ops
// ---------------------------------------------------------------------------------------------

absl::Status CastValue(const Step& step, Value* v, Allocator& a) {
  auto cannot = [&](const char* to) {
    return Fail(absl::StrCat("cannot cast ", Shown(*v), " to ", to));
  };
  switch (step.cast_type) {
    case CastType::kInt:
      if (v->IsInt64() || v->IsUint64()) return absl::OkStatus();
      if (v->IsDouble()) {
        const double d = v->GetDouble();
        if (std::trunc(d) != d || !(d >= -9223372036854775808.0 && d < 9223372036854775808.0)) {
          return cannot("int");
        }
        v->SetInt64(static_cast<int64_t>(d));
        return absl::OkStatus();
      }
      if (v->IsBool()) {
        v->SetInt64(v->GetBool() ? 1 : 0);
        return absl::OkStatus();
      }
      if (v->IsString()) {
        const std::string_view s = StringOf(*v);
        const size_t first = !s.empty() && s[0] == '-' ? 1 : 0;
        bool digits = s.size() > first;
        for (size_t i = first; i < s.size(); ++i) digits = digits && s[i] >= '0' && s[i] <= '9';
        int64_t i = 0;
        if (digits) {
          auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), i);
          digits = ec == std::errc() && p == s.data() + s.size();
        }
        if (!digits) return cannot("int");
        v->SetInt64(i);
        return absl::OkStatus();
      }
      return cannot("int");
    case CastType::kFloat:
      if (v->IsNumber()) {
        v->SetDouble(v->GetDouble());
        return absl::OkStatus();
      }
      if (v->IsBool()) {
        v->SetDouble(v->GetBool() ? 1.0 : 0.0);
        return absl::OkStatus();
      }
      if (v->IsString()) {
        const std::string_view s = StringOf(*v);
        // from_chars also reads "inf"/"nan"; demand a digit (or '.') up front.
        const char lead = s.size() > 1 && s[0] == '-' ? s[1] : (s.empty() ? 'x' : s[0]);
        double d = 0;
        if ((lead >= '0' && lead <= '9') || lead == '.') {
          auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), d);
          if (ec == std::errc() && p == s.data() + s.size() && std::isfinite(d)) {
            v->SetDouble(d);
            return absl::OkStatus();
          }
        }
      }
      return cannot("float");
    case CastType::kString:
      if (!v->IsString()) {
        const std::string text = JsonText(*v);
        SetString(v, text, a);
      }
      return absl::OkStatus();
    case CastType::kBool:
      if (v->IsBool()) return absl::OkStatus();
      if (v->IsNumber() && (v->GetDouble() == 0.0 || v->GetDouble() == 1.0)) {
        v->SetBool(v->GetDouble() == 1.0);
        return absl::OkStatus();
      }
      if (v->IsString() && (StringOf(*v) == "true" || StringOf(*v) == "false")) {
        v->SetBool(StringOf(*v) == "true");
        return absl::OkStatus();
      }
      return cannot("bool");
    case CastType::kTimestamp:
      break;
  }
  absl::StatusOr<int64_t> millis = step.timestamps->Parse(*v);
  absl::StatusOr<std::string> text =
      millis.ok() ? FormatRfc3339Millis(*millis) : absl::StatusOr<std::string>(millis.status());
  if (!text.ok()) {
    return Fail(absl::StrCat("cannot cast ", Shown(*v), " to timestamp (formats: ",
                             step.timestamps->description(), "): ", text.status().message()));
  }
  SetString(v, *text, a);
  return absl::OkStatus();
}

absl::Status Normalize(const Step& step, Value* v, Allocator& a) {
  absl::StatusOr<int64_t> millis = step.timestamps->Parse(*v);
  if (!millis.ok()) {
    return Fail(absl::StrCat("cannot read ", Shown(*v), " as a timestamp (formats: ",
                             step.timestamps->description(), "): ", millis.status().message()));
  }
  if (step.output_millis) {
    v->SetInt64(*millis);
    return absl::OkStatus();
  }
  absl::StatusOr<std::string> text = FormatRfc3339Millis(*millis);
  if (!text.ok()) return Fail(std::string(text.status().message()));
  SetString(v, *text, a);
  return absl::OkStatus();
}

absl::Status Mask(const Step& step, Value* v, Allocator& a) {
  std::string text;
  if (v->IsString()) {
    text = std::string(StringOf(*v));
  } else if (v->IsNumber() || v->IsBool()) {
    text = JsonText(*v);
  } else {
    return Fail(absl::StrCat("mask expects a string, number or bool, got ", TypeName(*v)));
  }
  const size_t count = CodePointCount(text);
  const size_t clear = std::min<size_t>(step.length, count);
  const size_t masked = count - clear;
  std::string out(masked, '*');
  out.append(text, CodePointOffset(text, masked), std::string::npos);
  SetString(v, out, a);
  return absl::OkStatus();
}

absl::Status StringOp(const Step& step, Value* v, Allocator& a) {
  if (!v->IsString()) {
    return Fail(absl::StrCat(step.op_name, " expects a string, got ", TypeName(*v)));
  }
  std::string_view s = StringOf(*v);
  switch (step.op) {
    case Op::kTruncate: {
      const size_t cut = CodePointOffset(s, step.length);
      if (cut < s.size()) {
        const std::string out(s.substr(0, cut));  // copy first: s points into *v
        SetString(v, out, a);
      }
      break;
    }
    case Op::kLowercase: {
      std::string out(s);
      for (char& c : out) {
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
      }
      SetString(v, out, a);
      break;
    }
    default: {  // trim
      while (!s.empty() && IsSpace(s.front())) s.remove_prefix(1);
      while (!s.empty() && IsSpace(s.back())) s.remove_suffix(1);
      const std::string out(s);  // copy first: s points into *v
      SetString(v, out, a);
      break;
    }
  }
  return absl::OkStatus();
}

// Flattens the object *target in place, iteratively (records can nest deeply).
absl::Status Flatten(const Step& step, Value* target, Allocator& a) {
  if (!target->IsObject()) {
    return Fail(absl::StrCat("flatten expects an object, got ", TypeName(*target)));
  }
  struct Frame {
    Value* object;
    rapidjson::SizeType next;
    std::string prefix;
    bool top;
  };
  Value out(rapidjson::kObjectType);
  std::unordered_set<std::string> seen;
  std::vector<Frame> stack;
  stack.push_back(Frame{target, 0, "", true});
  while (!stack.empty()) {
    Frame& f = stack.back();
    if (f.next >= f.object->MemberCount()) {
      stack.pop_back();
      continue;
    }
    auto member = f.object->MemberBegin() + f.next;
    ++f.next;
    std::string key(StringOf(member->name));
    if (!f.top) key = absl::StrCat(f.prefix, step.separator, key);
    if (member->value.IsObject() && member->value.MemberCount() > 0) {
      Value* child = &member->value;
      stack.push_back(Frame{child, 0, std::move(key), false});  // invalidates f
      continue;
    }
    if (!seen.insert(key).second) {
      return Fail(absl::StrCat("flatten: key \"", key, "\" would occur twice"));
    }
    out.AddMember(Value(key.data(), static_cast<rapidjson::SizeType>(key.size()), a), member->value,
                  a);  // moves the value out of the source object
  }
  *target = out;
  return absl::OkStatus();
}

absl::Status Keep(const Step& step, Value* root, Allocator& a) {
  Value result(rapidjson::kObjectType);
  for (const rapidjson::Pointer& p : step.paths) {
    const size_t n = p.GetTokenCount();
    const Value* cur = root;
    size_t k = 0;
    bool found = true;
    for (; k < n; ++k) {
      if (cur->IsArray()) break;  // keep the whole array (partial arrays are not kept)
      if (!cur->IsObject()) {
        found = false;
        break;
      }
      auto it = cur->FindMember(KeyRef(p.GetTokens()[k]));
      if (it == cur->MemberEnd()) {
        found = false;
        break;
      }
      cur = &it->value;
    }
    if (!found) continue;
    // Mirror the first k tokens (all objects in the source) into the result.
    Value* out = &result;
    for (size_t j = 0; j < k; ++j) {
      const rapidjson::Pointer::Token& t = p.GetTokens()[j];
      if (!out->IsObject()) out->SetObject();
      auto it = out->FindMember(KeyRef(t));
      if (it == out->MemberEnd()) {
        out->AddMember(Value(t.name, t.length, a), Value(rapidjson::kObjectType), a);
        it = out->MemberEnd() - 1;
      }
      out = &it->value;
    }
    out->CopyFrom(*cur, a);
  }
  *root = result;
  return absl::OkStatus();
}

absl::Status AddMetadata(const Step& step, const RecordMetadata& meta, Value* root, Allocator& a) {
  for (const auto& [field, pointer] : step.metadata) {
    Value v;
    switch (field) {
      case MetaField::kIngestTime: {
        absl::StatusOr<std::string> text = FormatRfc3339Millis(meta.ingest_time_millis);
        if (!text.ok()) return Fail(absl::StrCat("ingest_time: ", text.status().message()));
        SetString(&v, *text, a);
        break;
      }
      case MetaField::kEventTime:
        if (meta.event_time_millis.has_value()) {
          absl::StatusOr<std::string> text = FormatRfc3339Millis(*meta.event_time_millis);
          if (!text.ok()) return Fail(absl::StrCat("event_time: ", text.status().message()));
          SetString(&v, *text, a);
        }
        break;
      case MetaField::kPartition:
        v.SetUint(meta.partition);
        break;
      case MetaField::kOffset:
        v.SetUint64(meta.offset);
        break;
      case MetaField::kProducerId:
        SetString(&v, meta.producer_id, a);
        break;
      case MetaField::kDataset:
        SetString(&v, meta.dataset, a);
        break;
      case MetaField::kSchemaVersion:
        v.SetUint(meta.schema_version);
        break;
      case MetaField::kTransformVersion:
        v.SetUint(meta.transform_version);
        break;
    }
    if (absl::Status s = Put(pointer, std::move(v), root, a); !s.ok()) return s;
  }
  return absl::OkStatus();
}

// Runs one step. *filtered is set when a filter matched.
absl::Status RunStep(const Step& step, rapidjson::Document* record, const RecordMetadata& meta,
                     const HmacSha256& hasher, bool* filtered) {
  Allocator& a = record->GetAllocator();
  Value* root = record;
  switch (step.op) {
    case Op::kRename: {
      Value* source = step.path.Get(*root);
      if (source == nullptr) return absl::OkStatus();
      Value moved(std::move(*source));
      step.path.Erase(*root);
      return Put(step.to, std::move(moved), root, a);
    }
    case Op::kDrop:
      for (const rapidjson::Pointer& p : step.paths) p.Erase(*root);
      return absl::OkStatus();
    case Op::kKeep:
      return Keep(step, root, a);
    case Op::kSet: {
      Value v;
      if (step.has_value) {
        v.CopyFrom(step.value, a);
      } else {
        // Copy the result out before writing: it may reference the record.
        absl::StatusOr<ExprValue> result = step.expr->Evaluate(*root);
        if (!result.ok()) return result.status();
        v = result->ToJson(a);
      }
      return Put(step.path, std::move(v), root, a);
    }
    case Op::kDefault: {
      const Value* current = step.path.Get(*root);
      if (current != nullptr && !current->IsNull()) return absl::OkStatus();
      Value v;
      v.CopyFrom(step.value, a);
      return Put(step.path, std::move(v), root, a);
    }
    case Op::kFilter: {
      absl::StatusOr<bool> matched = step.expr->EvaluateBool(*root);
      if (!matched.ok()) return matched.status();
      *filtered = *matched;
      return absl::OkStatus();
    }
    case Op::kAddMetadata:
      return AddMetadata(step, meta, root, a);
    default:
      break;
  }
  // Single-path value ops: absent or null means nothing to do.
  Value* v = step.path.Get(*root);
  if (v == nullptr || v->IsNull()) return absl::OkStatus();
  switch (step.op) {
    case Op::kCast:
      return CastValue(step, v, a);
    case Op::kTimestamp:
      return Normalize(step, v, a);
    case Op::kMask:
      return Mask(step, v, a);
    case Op::kHash: {
      const std::string digest =
          v->IsString() ? hasher.Hex(StringOf(*v)) : hasher.Hex(JsonText(*v));
      SetString(v, digest, a);
      return absl::OkStatus();
    }
    case Op::kRedact:
      v->SetString(rapidjson::StringRef("[REDACTED]"));  // static storage, no copy needed
      return absl::OkStatus();
    case Op::kTruncate:
    case Op::kLowercase:
    case Op::kTrim:
      return StringOp(step, v, a);
    case Op::kFlatten:
      return Flatten(step, v, a);
    default:
      return absl::InternalError("unhandled transform op");
  }
}

}  // namespace

TransformChain::TransformChain() = default;
TransformChain::~TransformChain() = default;

absl::StatusOr<std::shared_ptr<const TransformChain>> TransformChain::Compile(
    const google::protobuf::RepeatedPtrField<wharf::v1::TransformSpec>& steps,
    std::string hash_key) {
  std::shared_ptr<TransformChain> chain(new TransformChain());
  std::vector<std::string> errors;
  for (int i = 0; i < steps.size(); ++i) {
    const size_t number = static_cast<size_t>(i) + 1;
    const std::string& op = steps[i].op();
    StepErrors step_errors(op.empty() ? absl::StrCat("step ", number)
                                      : absl::StrCat("step ", number, " (", op, ")"));
    auto step = std::make_unique<Step>();
    CompileStep(steps[i], number, hash_key, step.get(), &step_errors);
    if (step_errors.empty()) {
      chain->steps_.push_back(std::move(step));
    } else {
      for (std::string& e : step_errors.errors()) errors.push_back(std::move(e));
    }
  }
  if (!errors.empty()) return absl::InvalidArgumentError(absl::StrJoin(errors, "; "));
  chain->hasher_ = std::make_unique<const HmacSha256>(hash_key);
  return std::shared_ptr<const TransformChain>(std::move(chain));
}

TransformChain::Result TransformChain::Apply(rapidjson::Document* record,
                                             const RecordMetadata& meta,
                                             TransformFailure* failure) const {
  if (steps_.empty()) return Result::kKeep;
  if (!record->IsObject()) {
    if (failure != nullptr) {
      *failure = TransformFailure{0, "", "", "the record is not a JSON object"};
    }
    return Result::kFailed;
  }
  for (const auto& step : steps_) {
    bool filtered = false;
    absl::Status s = RunStep(*step, record, meta, *hasher_, &filtered);
    if (!s.ok()) {
      if (failure != nullptr) {
        failure->step = step->number;
        failure->op = step->op_name;
        failure->path = step->path_text;
        failure->message = absl::StrCat(step->label, ": ", s.message());
      }
      return Result::kFailed;
    }
    if (filtered) return Result::kFiltered;
  }
  return Result::kKeep;
}

}  // namespace wharf::pipeline::contract
