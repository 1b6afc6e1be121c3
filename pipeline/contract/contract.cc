#include "pipeline/contract/contract.h"

#include <cstring>
#include <memory>
#include <optional>
#include <set>
#include <string_view>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/util/time_util.h"
#include "pipeline/contract/compact_json.h"
#include "pipeline/contract/json_number.h"
#include "rapidjson/document.h"
#include "rapidjson/error/en.h"
#include "rapidjson/memorystream.h"
#include "rapidjson/reader.h"

namespace wharf::pipeline::contract {
namespace {

using google::protobuf::util::TimeUtil;

// Builds the DOM from SAX events (forwarding to the document's own handler) while counting the
// nesting depth, so that a record nested deeper than Contract::kMaxDepth is refused during the
// parse, before any recursive DOM operation can see it.
class DepthLimitedHandler {
 public:
  explicit DepthLimitedHandler(rapidjson::Document* doc) : doc_(doc) {}

  bool too_deep() const { return too_deep_; }
  bool number_too_big() const { return number_too_big_; }

  bool Null() { return doc_->Null(); }
  bool Bool(bool b) { return doc_->Bool(b); }
  bool Int(int i) { return doc_->Int(i); }
  bool Uint(unsigned u) { return doc_->Uint(u); }
  bool Int64(int64_t i) { return doc_->Int64(i); }
  bool Uint64(uint64_t u) { return doc_->Uint64(u); }
  bool Double(double d) { return doc_->Double(d); }
  // Numbers arrive as text (kParseNumbersAsStringsFlag) and are converted exactly: see
  // json_number.h for why RapidJSON's own conversion is not used.
  bool RawNumber(const char* s, rapidjson::SizeType n, bool /*copy*/) {
    return EmitJsonNumber(s, n, *this, &number_too_big_);
  }
  bool String(const char* s, rapidjson::SizeType n, bool copy) { return doc_->String(s, n, copy); }
  bool Key(const char* s, rapidjson::SizeType n, bool copy) { return doc_->Key(s, n, copy); }
  bool StartObject() { return Enter() && doc_->StartObject(); }
  bool EndObject(rapidjson::SizeType n) {
    --depth_;
    return doc_->EndObject(n);
  }
  bool StartArray() { return Enter() && doc_->StartArray(); }
  bool EndArray(rapidjson::SizeType n) {
    --depth_;
    return doc_->EndArray(n);
  }

 private:
  bool Enter() {
    if (++depth_ > Contract::kMaxDepth) {
      too_deep_ = true;
      return false;  // the reader stops with kParseErrorTermination at the opening bracket
    }
    return true;
  }

  rapidjson::Document* doc_;
  int depth_ = 0;
  bool too_deep_ = false;
  bool number_too_big_ = false;
};

bool IsJsonSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// True when every byte is below 0x80. UTF-8 validation accepts every such byte as it is
// (RapidJSON's UTF8::Validate and its plain copy do the same for them), so for such payloads the
// parse may skip the per-character validation without changing its outcome.
bool IsAscii(const std::string& s) {
  const char* p = s.data();
  const size_t n = s.size();
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t word;
    std::memcpy(&word, p + i, sizeof(word));
    if ((word & 0x8080808080808080ull) != 0) return false;
  }
  for (; i < n; ++i) {
    if ((static_cast<unsigned char>(p[i]) & 0x80) != 0) return false;
  }
  return true;
}

// kParseIterativeFlag: the recursive parser recurses once per nesting level and would overflow
// the stack on a payload of a million '['. kParseNumbersAsStringsFlag: numbers are converted
// exactly by the handler (json_number.h), so doubles that are written back (transforms, PII
// rewrites) keep the value the producer sent. kParseValidateEncodingFlag is added for payloads
// that are not pure ASCII (see IsAscii).
constexpr unsigned kParseFlags = rapidjson::kParseStopWhenDoneFlag |
                                 rapidjson::kParseIterativeFlag |
                                 rapidjson::kParseNumbersAsStringsFlag;

// Parses `payload` into *doc with `reader` (reused across records: its state stack keeps its
// memory). On failure fills the PARSE_ERROR fields of *quarantine (reason, error_position,
// message) exactly as the plain JSON parse processor does (record_processor.cc), plus the depth
// limit, and returns false.
//
// A pure-ASCII payload is parsed in place (kParseInsituFlag) in `insitu_copy`, a copy of it that
// must outlive *doc: the DOM's strings point into it instead of being copied once onto the
// parser's stack and again into the document's pool. Nothing else changes: the copy is
// NUL-terminated where the memory stream reports '\0' at its end, the parser never consumes a
// '\0', offsets count from the same first byte (no BOM can be skipped in ASCII), and UTF-8
// validation has nothing to refuse in ASCII (see IsAscii). Other payloads take the memory
// stream with validation, which also skips a leading UTF-8 BOM as before.
bool ParsePayload(const std::string& payload, rapidjson::Reader* reader, std::string* insitu_copy,
                  rapidjson::Document* doc, wharf::v1::QuarantineEntry* quarantine) {
  DepthLimitedHandler handler(doc);
  rapidjson::ParseResult ok;
  size_t end = 0;  // where the parser stopped
  auto generator = [&](rapidjson::Document&) {
    if (IsAscii(payload)) {
      insitu_copy->assign(payload);
      rapidjson::InsituStringStream is(insitu_copy->data());
      ok = reader->Parse<kParseFlags | rapidjson::kParseInsituFlag>(is, handler);
      end = is.Tell();
    } else {
      rapidjson::MemoryStream ms(payload.data(), payload.size());
      rapidjson::EncodedInputStream<rapidjson::UTF8<>, rapidjson::MemoryStream> is(ms);
      ok = reader->Parse<kParseFlags | rapidjson::kParseValidateEncodingFlag>(is, handler);
      end = is.Tell();
    }
    return !ok.IsError();
  };
  doc->Populate(generator);
  if (ok.IsError()) {
    quarantine->set_reason(wharf::v1::PARSE_ERROR);
    quarantine->set_error_position(ok.Offset());
    if (handler.too_deep()) {
      quarantine->set_message(absl::StrCat("payload is nested deeper than ", Contract::kMaxDepth,
                                           " levels at byte ", ok.Offset()));
    } else if (handler.number_too_big()) {
      quarantine->set_message(
          absl::StrCat("payload is not valid JSON: ",
                       rapidjson::GetParseError_En(rapidjson::kParseErrorNumberTooBig), " at byte ",
                       ok.Offset()));
    } else {
      quarantine->set_message(
          absl::StrCat("payload is not valid JSON: ", rapidjson::GetParseError_En(ok.Code()),
                       " at byte ", ok.Offset()));
    }
    return false;
  }
  // kParseStopWhenDoneFlag stops after the first value: anything but whitespace after it is an
  // error (two concatenated documents are not one record).
  for (size_t i = end; i < payload.size(); ++i) {
    if (!IsJsonSpace(payload[i])) {
      quarantine->set_reason(wharf::v1::PARSE_ERROR);
      quarantine->set_error_position(i);
      quarantine->set_message(
          absl::StrCat("payload is not valid JSON: unexpected data after the value at byte ", i));
      return false;
    }
  }
  if (!doc->IsObject()) {
    size_t start = 0;
    while (start < payload.size() && IsJsonSpace(payload[start])) ++start;
    quarantine->set_reason(wharf::v1::PARSE_ERROR);
    quarantine->set_error_position(start);
    quarantine->set_message(absl::StrCat("payload is valid JSON but not an object at byte ", start,
                                         "; records must be objects"));
    return false;
  }
  return true;
}

// Per-thread memory reused from record to record, so that the step does not allocate (and free)
// a DOM pool chunk, a parser stack and an output buffer for every record.
// ProcessRecord handles one record at a time per thread; `in_use` makes a nested call (there is
// none today) fall back to memory of its own instead of sharing.
struct Scratch {
  // The DOM's first pool chunk: a ~200-byte record needs about 2 KiB. Larger records take further
  // chunks from the heap, which the pool frees when the record is done.
  static constexpr size_t kPoolBytes = 16 << 10;
  // Buffers (out, insitu) above this size are released after the record instead of kept.
  static constexpr size_t kMaxKeptBufferBytes = 1 << 20;
  // The document's parse stack (RapidJSON's default capacity; it grows as needed).
  static constexpr size_t kDocumentStackBytes = 1024;
  std::unique_ptr<char[]> pool{new char[kPoolBytes]};
  rapidjson::CrtAllocator stack_allocator;  // stateless; spares the document a `new` per record
  rapidjson::Reader reader;
  std::string out;     // the serialised record
  std::string insitu;  // the in-place parse's copy of the payload (the DOM's strings point in)
  bool in_use = false;
};

// Claims this thread's Scratch for one ProcessRecord call (null: already claimed).
class ScratchLease {
 public:
  ScratchLease() {
    thread_local Scratch scratch;
    if (!scratch.in_use) {
      scratch_ = &scratch;
      scratch_->in_use = true;
    }
  }
  ~ScratchLease() {
    if (scratch_ == nullptr) return;
    // A rare huge record must not pin its buffers' memory on this thread for good.
    if (scratch_->out.capacity() > Scratch::kMaxKeptBufferBytes) std::string().swap(scratch_->out);
    if (scratch_->insitu.capacity() > Scratch::kMaxKeptBufferBytes) {
      std::string().swap(scratch_->insitu);
    }
    scratch_->in_use = false;
  }
  ScratchLease(const ScratchLease&) = delete;
  ScratchLease& operator=(const ScratchLease&) = delete;

  Scratch* get() const { return scratch_; }

 private:
  Scratch* scratch_ = nullptr;
};

// Pointers are shown with the root as "/" (as JSON Schema violations print it).
std::string ShownPointer(const std::string& pointer) { return pointer.empty() ? "/" : pointer; }

}  // namespace

absl::StatusOr<std::shared_ptr<const Contract>> Contract::Compile(
    const wharf::v1::ContractVersion& version, std::string hash_key) {
  const wharf::v1::ContractSpec& spec = version.spec();
  std::shared_ptr<Contract> contract(new Contract());
  contract->version_ = version;
  std::vector<std::string> errors;

  if (!wharf::v1::CompatibilityMode_IsValid(spec.compatibility())) {
    errors.push_back(absl::StrCat("compatibility: unknown mode ", spec.compatibility()));
  }
  // Whitespace-only schema text is "no schema", as schema_compat.h treats it.
  if (!absl::StripAsciiWhitespace(spec.json_schema()).empty()) {
    JsonSchemaOptions options;
    options.format_assertions = spec.has_format_assertions() ? spec.format_assertions() : true;
    auto schema = JsonSchema::Compile(spec.json_schema(), options);
    if (schema.ok()) {
      contract->schema_ = *std::move(schema);
    } else {
      errors.push_back(absl::StrCat("schema: ", schema.status().message()));
    }
  }

  std::set<std::string> names;
  for (int i = 0; i < spec.rules_size(); ++i) {
    const wharf::v1::RuleSpec& rule = spec.rules(i);
    const std::string where = rule.name().empty()
                                  ? absl::StrCat("rules[", i, "]")
                                  : absl::StrCat("rules[", i, "] (", rule.name(), ")");
    if (rule.name().empty()) {
      errors.push_back(absl::StrCat(where, ": name is empty"));
    } else if (!names.insert(rule.name()).second) {
      errors.push_back(absl::StrCat(where, ": duplicate rule name \"", rule.name(), "\""));
    }
    auto expr = Expression::Compile(rule.expr());
    if (expr.ok()) {
      contract->rules_.push_back(Rule{rule.name(), *std::move(expr)});
    } else {
      errors.push_back(absl::StrCat(where, ": ", expr.status().message()));
    }
  }

  if (spec.pii_size() > 0) {
    // PiiScanner's messages already say "pii[<index>]: ..." for every problem.
    auto pii = PiiScanner::Compile(spec.pii(), hash_key);
    if (pii.ok()) {
      contract->pii_ = *std::move(pii);
    } else {
      errors.push_back(std::string(pii.status().message()));
    }
  }

  if (spec.transforms_size() > 0) {
    auto chain = TransformChain::Compile(spec.transforms(), hash_key);
    if (chain.ok()) {
      contract->transforms_ = *std::move(chain);
    } else {
      errors.push_back(absl::StrCat("transforms: ", chain.status().message()));
    }
  }

  if (!errors.empty()) return absl::InvalidArgumentError(absl::StrJoin(errors, "; "));
  return std::shared_ptr<const Contract>(std::move(contract));
}

ProcessResult Contract::Quarantine(wharf::v1::QuarantineReason reason, std::string field_path,
                                   std::string rule, std::string message,
                                   wharf::v1::QuarantineEntry* quarantine) const {
  quarantine->set_reason(reason);
  quarantine->set_field_path(std::move(field_path));
  quarantine->set_rule(std::move(rule));
  quarantine->set_message(std::move(message));
  quarantine->set_schema_version(schema_version());
  quarantine->set_transform_version(transform_version());
  return ProcessResult::kQuarantine;
}

ProcessResult Contract::ProcessRecord(const RecordContext& context,
                                      const wharf::v1::StoredRecord& record,
                                      std::string* payload_out,
                                      wharf::v1::QuarantineEntry* quarantine) const {
  const std::string& payload = record.record().payload();
  const ScratchLease lease;
  std::optional<Scratch> own;  // only when this thread's scratch is taken (a nested call)
  Scratch* scratch = lease.get();
  if (scratch == nullptr) scratch = &own.emplace();
  // The pool starts in the reused buffer; declared before the document, which points into it.
  rapidjson::MemoryPoolAllocator<> pool(scratch->pool.get(), Scratch::kPoolBytes);
  rapidjson::Document doc(&pool, Scratch::kDocumentStackBytes, &scratch->stack_allocator);
  if (!ParsePayload(payload, &scratch->reader, &scratch->insitu, &doc, quarantine)) {
    quarantine->set_schema_version(schema_version());
    quarantine->set_transform_version(transform_version());
    return ProcessResult::kQuarantine;
  }

  if (schema_ != nullptr) {
    SchemaViolation violation;
    if (!schema_->Validate(doc, &violation)) {
      return Quarantine(wharf::v1::SCHEMA_VIOLATION, std::move(violation.pointer),
                        std::move(violation.keyword), std::move(violation.message), quarantine);
    }
  }

  for (const Rule& rule : rules_) {
    // Evaluate() rather than EvaluateBool(): the message tells false from null (usually a
    // missing field), which is what an operator looking at the quarantine needs to know.
    absl::StatusOr<ExprValue> value = rule.expr->Evaluate(doc);
    if (value.ok() && value->is_bool() && value->bool_value()) continue;
    const std::string head = absl::StrCat("rule \"", rule.name, "\" (", rule.expr->text(), ")");
    std::string message;
    if (!value.ok()) {
      message = absl::StrCat(head, ": ", value.status().message());
    } else if (value->is_bool()) {
      message = absl::StrCat(head, " is false");
    } else if (value->is_null()) {
      message = absl::StrCat(head, " evaluated to null");
    } else {
      message = absl::StrCat(head, ": expression must evaluate to a bool, got ",
                             std::string(value->TypeName()));
    }
    return Quarantine(wharf::v1::RULE_VIOLATION, "", rule.name, std::move(message), quarantine);
  }

  bool modified = false;
  if (pii_ != nullptr) {
    PiiFinding finding;
    switch (pii_->Apply(&doc, &finding)) {
      case PiiScanner::Result::kQuarantine: {
        // Detector and location only: the value itself must not get a second home in the
        // quarantine entry's message (the original record is kept there, access-controlled).
        std::string detector(PiiScanner::DetectorName(finding.detector));
        std::string message = absl::StrCat("PII detected: ", detector, " at ",
                                           ShownPointer(finding.pointer), " (action quarantine)");
        return Quarantine(wharf::v1::PII_DETECTED, std::move(finding.pointer), std::move(detector),
                          std::move(message), quarantine);
      }
      case PiiScanner::Result::kModified:
        modified = true;
        break;
      case PiiScanner::Result::kClean:
        break;
    }
  }

  if (transforms_ != nullptr) {
    RecordMetadata meta;
    meta.dataset = context.dataset;
    meta.partition = context.partition;
    meta.offset = context.offset;
    meta.producer_id = record.producer_id();
    meta.ingest_time_millis = TimeUtil::TimestampToMilliseconds(record.ingest_time());
    if (record.record().has_event_time()) {
      meta.event_time_millis = TimeUtil::TimestampToMilliseconds(record.record().event_time());
    }
    meta.schema_version = schema_version();
    meta.transform_version = transform_version();
    TransformFailure failure;
    switch (transforms_->Apply(&doc, meta, &failure)) {
      case TransformChain::Result::kFailed:
        return Quarantine(wharf::v1::TRANSFORM_ERROR, std::move(failure.path),
                          absl::StrCat("step ", failure.step, " (", failure.op, ")"),
                          std::move(failure.message), quarantine);
      case TransformChain::Result::kFiltered:
        return ProcessResult::kFilter;
      case TransformChain::Result::kKeep:
        modified = true;  // the chain does not report whether it changed anything
        break;
    }
  }

  if (!modified) {
    *payload_out = payload;
    return ProcessResult::kDeliver;
  }
  // Written into the thread's buffer, which keeps its memory from record to record, and copied
  // out only once complete: a record that cannot be written leaves *payload_out untouched.
  std::string& text = scratch->out;
  text.clear();
  // AppendCompactJson fails only on values JSON cannot represent (a non-finite double); the
  // parser and the transforms never produce one, but a record that cannot be written must not be
  // delivered.
  if (!AppendCompactJson(doc, &text)) {
    return Quarantine(wharf::v1::TRANSFORM_ERROR, "", "serialize",
                      "the transformed record cannot be written as JSON (non-finite number)",
                      quarantine);
  }
  payload_out->assign(text);
  return ProcessResult::kDeliver;
}

bool Contract::Process(const wharf::v1::StoredRecord& record, std::string* payload_out,
                       wharf::v1::QuarantineEntry* quarantine) const {
  switch (ProcessRecord(RecordContext{}, record, payload_out, quarantine)) {
    case ProcessResult::kDeliver:
      return true;
    case ProcessResult::kQuarantine:
      return false;
    case ProcessResult::kFilter:
      break;
  }
  quarantine->set_reason(wharf::v1::QUARANTINE_REASON_UNSPECIFIED);
  quarantine->set_message("record dropped by a filter transform");
  quarantine->set_schema_version(schema_version());
  quarantine->set_transform_version(transform_version());
  return false;
}

}  // namespace wharf::pipeline::contract
