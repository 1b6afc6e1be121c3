#include "server/config.h"

#include <fcntl.h>
#include <limits.h>
#include <unistd.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "rapidjson/document.h"
#include "rapidjson/error/en.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"
#include "re2/re2.h"
#include "storage/keys.h"

namespace wharf::server {
namespace {

using Millis = std::chrono::milliseconds;

constexpr uint64_t kKiB = 1024;
constexpr uint64_t kMiB = kKiB * 1024;
constexpr uint64_t kGiB = kMiB * 1024;
constexpr uint64_t kTiB = kGiB * 1024;

// Largest config file read; anything bigger is certainly not a config file.
constexpr size_t kMaxFileBytes = 16 * kMiB;

// Upper bounds this file chooses for keys whose range config.h leaves open.
constexpr uint64_t kMaxAnySize = 1024 * kTiB;
constexpr Millis kMaxRetention = std::chrono::hours(24 * 3650);
constexpr uint32_t kMaxDownAfter = 1000000;

// Known keys of every map, in the order they are documented.
constexpr absl::string_view kTopKeys[] = {
    "node_id",    "listen",        "metrics_listen",   "data_dir",
    "durability", "min_free_disk", "shutdown_timeout", "pipeline_threads",
    "batching",   "retention",     "delivery",         "limits",
    "log",        "datasets",      "hash_key_file"};
constexpr absl::string_view kBatchingKeys[] = {"max_records", "max_bytes", "linger"};
constexpr absl::string_view kRetentionKeys[] = {"raw", "interval"};
constexpr absl::string_view kDeliveryKeys[] = {"initial_backoff", "max_backoff", "multiplier",
                                               "jitter",          "down_after",  "probe_interval"};
constexpr absl::string_view kLimitsKeys[] = {
    "max_message_bytes",       "max_records_per_request", "max_record_bytes",
    "max_inflight_per_stream", "max_inflight_bytes",      "max_grpc_memory",
    "keepalive_time",          "keepalive_timeout",       "stream_window"};
constexpr absl::string_view kLogKeys[] = {"level", "format"};
constexpr absl::string_view kDatasetKeys[] = {"name",         "partitions", "format",  "quota",
                                              "destinations", "quarantine", "contract"};
// A `datasets[]` entry of the config: the keys of a dataset spec, or `spec_file` alone.
constexpr absl::string_view kDatasetEntryKeys[] = {
    "name", "partitions", "format", "quota", "destinations", "quarantine", "contract", "spec_file"};
constexpr absl::string_view kContractKeys[] = {"schema", "compatibility", "format_assertions",
                                               "rules",  "pii",           "transforms"};
constexpr absl::string_view kRuleKeys[] = {"name", "expr"};
constexpr absl::string_view kPiiKeys[] = {"detector", "fields", "action"};
constexpr absl::string_view kTransformKeys[] = {
    "op",   "path",          "paths",         "to",     "value",     "expr",
    "type", "input_formats", "output_format", "length", "separator", "fields"};
// The ops of pipeline/contract/transform.h; which keys each one takes is checked when the chain
// is compiled (ContractRegistry::Apply), with every error listed.
constexpr absl::string_view kTransformOps[] = {
    "rename", "drop",   "keep",     "set",       "default", "cast",    "timestamp",    "mask",
    "hash",   "redact", "truncate", "lowercase", "trim",    "flatten", "add_metadata", "filter"};
constexpr absl::string_view kCompatibilities[] = {
    "NONE", "BACKWARD",       "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE",
    "FULL", "FULL_TRANSITIVE"};
constexpr absl::string_view kPiiDetectors[] = {"email", "phone",  "payment_card",
                                               "iban",  "us_ssn", "ip_address"};
constexpr absl::string_view kPiiActions[] = {"quarantine", "mask", "hash", "drop"};
// Nesting bound of YAML values turned into JSON (schemas, transform values): deeper documents
// are refused instead of recursing without limit.
constexpr int kMaxJsonDepth = 128;
// Bound on the values one YAML value turns into: YAML aliases repeat a subtree without repeating
// its text, so a few hundred bytes (nine levels of ten aliases, "billion laughs") would expand to
// 10^9 values - hours of CPU and gigabytes of JSON - within the depth bound. Spec files also
// arrive over the Control API (`wharfctl apply -f`). See docs/reliability/fuzzing.md.
constexpr size_t kMaxJsonValues = 100000;
constexpr absl::string_view kQuarantineKeys[] = {"quota", "retention"};
// Every key of any destination type (for unknown-key errors and suggestions)...
constexpr absl::string_view kDestinationKeys[] = {"name",
                                                  "type",
                                                  "retry",
                                                  "directory",
                                                  "roll",
                                                  "path_template",
                                                  "gzip",
                                                  "conninfo",
                                                  "password_file",
                                                  "password_env",
                                                  "table",
                                                  "create_table",
                                                  "ledger_table",
                                                  "columns",
                                                  "connect_timeout",
                                                  "statement_timeout",
                                                  "max_connections",
                                                  "url",
                                                  "format",
                                                  "headers",
                                                  "bearer_token_file",
                                                  "request_timeout",
                                                  "tls",
                                                  "target",
                                                  "dataset",
                                                  "rpc_timeout",
                                                  "max_request_bytes"};
// ...and the keys valid for each type.
constexpr absl::string_view kFileKeys[] = {"name", "type",          "retry", "directory",
                                           "roll", "path_template", "gzip"};
constexpr absl::string_view kPostgresKeys[] = {
    "name",           "type",         "retry",           "conninfo",
    "password_file",  "password_env", "table",           "create_table",
    "ledger_table",   "columns",      "connect_timeout", "statement_timeout",
    "max_connections"};
constexpr absl::string_view kHttpKeys[] = {"name",
                                           "type",
                                           "retry",
                                           "url",
                                           "format",
                                           "gzip",
                                           "headers",
                                           "bearer_token_file",
                                           "connect_timeout",
                                           "request_timeout",
                                           "tls"};
constexpr absl::string_view kWharfKeys[] = {
    "name", "type", "retry", "target", "dataset", "rpc_timeout", "max_request_bytes"};
constexpr absl::string_view kRollKeys[] = {"max_bytes", "max_age"};
constexpr absl::string_view kColumnKeys[] = {"name", "source", "type"};
constexpr absl::string_view kTlsKeys[] = {"ca_file", "insecure_skip_verify", "client_cert_file",
                                          "client_key_file"};

constexpr absl::string_view kDurabilities[] = {"sync", "async"};
constexpr absl::string_view kLogLevels[] = {"trace", "debug",    "info", "warn",
                                            "error", "critical", "off"};
constexpr absl::string_view kLogFormats[] = {"text", "json"};
constexpr absl::string_view kDatasetFormats[] = {"json", "raw"};
constexpr absl::string_view kDestinationTypes[] = {"file", "postgres", "http", "wharf"};
constexpr absl::string_view kColumnTypes[] = {"text",        "smallint", "integer",
                                              "bigint",      "numeric",  "boolean",
                                              "timestamptz", "jsonb",    "double"};
constexpr absl::string_view kHttpFormats[] = {"ndjson", "json_array"};
constexpr absl::string_view kBools[] = {"true", "false"};

// The sections a misplaced top-level key may belong to.
struct Section {
  absl::string_view name;
  std::span<const absl::string_view> keys;
};
constexpr Section kSections[] = {{"batching", kBatchingKeys},
                                 {"retention", kRetentionKeys},
                                 {"delivery", kDeliveryKeys},
                                 {"limits", kLimitsKeys},
                                 {"log", kLogKeys}};

struct Unit {
  absl::string_view suffix;
  uint64_t factor;
};
constexpr Unit kSizeUnits[] = {
    {"B", 1},
    {"KB", 1000},
    {"MB", 1000ull * 1000},
    {"GB", 1000ull * 1000 * 1000},
    {"TB", 1000ull * 1000 * 1000 * 1000},
    {"KiB", kKiB},
    {"MiB", kMiB},
    {"GiB", kGiB},
    {"TiB", kTiB},
};
constexpr Unit kDurationUnits[] = {
    {"ms", 1}, {"s", 1000}, {"m", 60 * 1000}, {"h", 3600 * 1000}, {"d", 24 * 3600 * 1000}};

constexpr absl::string_view kSizeForm =
    "a size in bytes or a number with a unit B, KB, MB, GB, TB, KiB, MiB, GiB or TiB (e.g. "
    "\"64MiB\")";
constexpr absl::string_view kDurationForm =
    "a duration: a number with a unit ms, s, m, h or d (e.g. \"250ms\", \"5s\", \"24h\")";

// ---------------------------------------------------------------------------------------------
// Scalar parsing. All of it is on the scalar's text: decimal digits only (no sign, no 0x, no
// exponent), so "-1" never wraps around and "1e3" is never a size.

enum class NumberError { kNone, kInvalid, kNegative, kOverflow, kMissingUnit };

NumberError ParseUnsigned(absl::string_view text, uint64_t* out) {
  if (text.empty()) return NumberError::kInvalid;
  if (text[0] == '-') {
    uint64_t ignored;
    return ParseUnsigned(text.substr(1), &ignored) == NumberError::kInvalid
               ? NumberError::kInvalid
               : NumberError::kNegative;
  }
  if (!std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return NumberError::kInvalid;
  }
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), *out);
  if (ec == std::errc::result_out_of_range) return NumberError::kOverflow;
  if (ec != std::errc() || end != text.data() + text.size()) return NumberError::kInvalid;
  return NumberError::kNone;
}

// "<digits>[ ]*<unit>" with a unit from `units`; the unit is optional when `unit_optional`.
NumberError ParseWithUnit(absl::string_view text, std::span<const Unit> units, bool unit_optional,
                          uint64_t* out) {
  bool negative = false;
  if (!text.empty() && text[0] == '-') {
    negative = true;
    text.remove_prefix(1);
  }
  size_t digits = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') ++digits;
  if (digits == 0) return NumberError::kInvalid;
  absl::string_view suffix = text.substr(digits);
  while (!suffix.empty() && suffix[0] == ' ') suffix.remove_prefix(1);
  uint64_t factor = 0;
  if (suffix.empty()) {
    if (!unit_optional) return NumberError::kMissingUnit;
    factor = 1;
  } else {
    for (const Unit& unit : units) {
      if (unit.suffix == suffix) factor = unit.factor;
    }
    if (factor == 0) return NumberError::kInvalid;
  }
  uint64_t number = 0;
  NumberError error = ParseUnsigned(text.substr(0, digits), &number);
  if (error != NumberError::kNone) return error;
  if (negative && number != 0) return NumberError::kNegative;
  if (number > std::numeric_limits<uint64_t>::max() / factor) return NumberError::kOverflow;
  *out = number * factor;
  return NumberError::kNone;
}

// Renders `value` with the largest unit of `units` that divides it exactly.
std::string FormatWithUnit(uint64_t value, std::span<const Unit> units,
                           absl::string_view zero_unit) {
  if (value == 0) return absl::StrCat("0", zero_unit);
  const Unit* best = nullptr;
  for (const Unit& unit : units) {
    if (value % unit.factor == 0 && (best == nullptr || unit.factor > best->factor)) best = &unit;
  }
  return absl::StrCat(value / best->factor, best->suffix);
}

// Binary units only, so that "1KiB".."256MiB" reads naturally.
std::string FormatSize(uint64_t bytes) {
  static constexpr Unit kBinary[] = {
      {"B", 1}, {"KiB", kKiB}, {"MiB", kMiB}, {"GiB", kGiB}, {"TiB", kTiB}};
  return FormatWithUnit(bytes, kBinary, "B");
}

std::string FormatDuration(Millis duration) {
  return FormatWithUnit(static_cast<uint64_t>(duration.count()), kDurationUnits, "s");
}

std::string FormatDouble(double value) {
  std::string text = absl::StrCat(value);
  if (text.find_first_of(".e") == std::string::npos) text += ".0";
  return text;
}

// How a value is shown after "got": scalars quoted and escaped, other nodes by their kind.
std::string Quote(absl::string_view text) {
  constexpr size_t kMaxShown = 60;
  if (text.size() > kMaxShown) {
    return absl::StrCat("\"", absl::CHexEscape(text.substr(0, kMaxShown)), "...\"");
  }
  return absl::StrCat("\"", absl::CHexEscape(text), "\"");
}

std::string Describe(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Scalar:
      return Quote(node.Scalar());
    case YAML::NodeType::Sequence:
      return node.size() == 0 ? "an empty list" : "a list";
    case YAML::NodeType::Map:
      return node.size() == 0 ? "an empty map" : "a map";
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined:
      break;
  }
  return "nothing";
}

std::string OneOf(std::span<const absl::string_view> choices) {
  std::vector<std::string> quoted;
  for (absl::string_view choice : choices) quoted.push_back(absl::StrCat("\"", choice, "\""));
  if (quoted.size() == 1) return quoted[0];
  if (quoted.size() == 2) return absl::StrCat(quoted[0], " or ", quoted[1]);
  return absl::StrCat("one of ", absl::StrJoin(quoted, ", "));
}

size_t EditDistance(absl::string_view a, absl::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

// The known key `key` was most likely meant as, or "" when none is close.
absl::string_view ClosestKey(absl::string_view key, std::span<const absl::string_view> known) {
  absl::string_view best;
  size_t best_distance = std::numeric_limits<size_t>::max();
  for (absl::string_view candidate : known) {
    size_t distance = EditDistance(key, candidate);
    if (distance < best_distance) {
      best = candidate;
      best_distance = distance;
    }
  }
  // A typo: a couple of edits, and less than half of the key.
  if (!best.empty() && best_distance <= 2 && best_distance * 2 < key.size()) return best;
  // A truncated or extended key ("partition", "directory_path").
  for (absl::string_view candidate : known) {
    if (key.size() >= 3 && (absl::StartsWith(candidate, key) || absl::StartsWith(key, candidate))) {
      return candidate;
    }
  }
  return {};
}

// ---------------------------------------------------------------------------------------------
// Checks of individual values.

bool IsNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '.' || c == '-';
}

// [A-Za-z0-9_.-]{1,64}
bool IsValidNodeId(absl::string_view id) {
  return !id.empty() && id.size() <= 64 && std::all_of(id.begin(), id.end(), IsNameChar);
}

// An environment variable name as a shell accepts it: [A-Za-z_][A-Za-z0-9_]*.
bool IsEnvName(absl::string_view name) {
  if (name.empty() || (name[0] >= '0' && name[0] <= '9')) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
  });
}

// An HTTP field name (RFC 9110 token).
bool IsHttpToken(absl::string_view name) {
  constexpr absl::string_view kSpecials = "!#$%&'*+-.^_`|~";
  return !name.empty() && std::all_of(name.begin(), name.end(), [&](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           kSpecials.find(c) != absl::string_view::npos;
  });
}

// True when a libpq connection string carries a password: a `password` keyword in key=value
// form or in a URI's query, or "user:secret@" in a URI.
bool ConninfoHasPassword(absl::string_view conninfo) {
  const std::string lower = absl::AsciiStrToLower(conninfo);
  for (size_t at = lower.find("password"); at != std::string::npos;
       at = lower.find("password", at + 1)) {
    size_t next = at + 8;
    while (next < lower.size() && (lower[next] == ' ' || lower[next] == '\t')) ++next;
    if (next < lower.size() && lower[next] == '=') return true;
  }
  for (absl::string_view scheme : {"postgresql://", "postgres://"}) {
    if (!absl::StartsWith(lower, scheme)) continue;
    absl::string_view rest = absl::string_view(lower).substr(scheme.size());
    rest = rest.substr(0, rest.find_first_of("/?#"));
    const size_t at = rest.rfind('@');
    return at != absl::string_view::npos && rest.substr(0, at).find(':') != absl::string_view::npos;
  }
  return false;
}

// "host:port" or "[v6 address]:port", port 1..65535.
bool IsHostPort(absl::string_view target) {
  const size_t colon = target.rfind(':');
  if (colon == absl::string_view::npos || colon == 0) return false;
  absl::string_view host = target.substr(0, colon);
  if (host.front() == '[' ? host.back() != ']' || host.size() < 3
                          : host.find(':') != absl::string_view::npos) {
    return false;
  }
  if (std::any_of(host.begin(), host.end(), [](char c) {
        return c == ' ' || c == '/' || static_cast<unsigned char>(c) < 0x20;
      })) {
    return false;
  }
  uint64_t port = 0;
  return ParseUnsigned(target.substr(colon + 1), &port) == NumberError::kNone && port >= 1 &&
         port <= 65535;
}

// The whole file at `path` (a `what`, e.g. "config file", for messages): NOT_FOUND /
// PERMISSION_DENIED per errno, INVALID_ARGUMENT when larger than kMaxFileBytes.
absl::StatusOr<std::string> ReadTextFile(const std::string& path, absl::string_view what) {
  const std::string context = absl::StrCat("cannot read ", what, " ", path);
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::ErrnoToStatus(errno, context);
  std::string text;
  char buffer[64 * 1024];
  while (true) {
    const ssize_t n = read(fd, buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int error = errno;
      close(fd);
      return absl::ErrnoToStatus(error, context);
    }
    if (n == 0) break;
    text.append(buffer, static_cast<size_t>(n));
    if (text.size() > kMaxFileBytes) {
      close(fd);
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": expected a ", what, " of at most 16MiB, got a larger file"));
    }
  }
  close(fd);
  return text;
}

// ---------------------------------------------------------------------------------------------
// Map access.

struct Entry {
  YAML::Node key;
  YAML::Node value;
  int line = 0;  // 1-based line of the key; where errors about the value point
};

// A YAML map whose keys have been checked: unique, plain scalars, all known.
struct Fields {
  std::string path;  // key path of the map itself; "" at the top level
  int line = 0;      // 1-based line of the map, for errors about missing keys
  std::map<std::string, Entry, std::less<>> entries;

  const Entry* Find(absl::string_view key) const {
    auto it = entries.find(key);
    return it == entries.end() ? nullptr : &it->second;
  }
  std::string PathOf(absl::string_view key) const {
    return path.empty() ? std::string(key) : absl::StrCat(path, ".", key);
  }
};

int LineOf(const YAML::Node& node) {
  const YAML::Mark mark = node.Mark();
  return mark.is_null() ? 0 : mark.line + 1;
}

class Parser {
 public:
  explicit Parser(absl::string_view name) : name_(name) {}

  absl::StatusOr<Config> Parse(const std::string& text) {
    absl::StatusOr<YAML::Node> root = LoadDocument(text, "a map of settings");
    if (!root.ok()) return root.status();
    try {
      return ParseTop(*root);
    } catch (const YAML::Exception& e) {
      // Not expected: every node is type-checked before it is read.
      return Error(e.mark.is_null() ? 0 : e.mark.line + 1, "", e.msg);
    }
  }

  // A dataset spec document (ParseDatasetSpec).
  absl::StatusOr<DatasetConfig> ParseSpec(const std::string& text, const DeliveryConfig& delivery) {
    absl::StatusOr<YAML::Node> root = LoadDocument(text, "a map describing a dataset");
    if (!root.ok()) return root.status();
    try {
      absl::StatusOr<Fields> fields =
          ReadMap(*root, std::max(LineOf(*root), 1), "", "a map describing a dataset",
                  /*null_is_empty=*/false, kDatasetKeys);
      if (!fields.ok()) return fields.status();
      std::map<std::string, int> names;
      DatasetConfig dataset;
      if (absl::Status status = ParseDataset(*fields, delivery, &names, &dataset); !status.ok()) {
        return status;
      }
      dataset.source_yaml = text;
      return dataset;
    } catch (const YAML::Exception& e) {
      return Error(e.mark.is_null() ? 0 : e.mark.line + 1, "", e.msg);
    }
  }

 private:
  // The single YAML document of `text`, which must not be empty (`what` says what it should be).
  //
  // Not YAML::LoadAll: yaml-cpp 0.7.0 (Debian's) never returns from it on some malformed input (a
  // tag or anchor followed by a stray ',' at block level, e.g. the 4 bytes "!m,": the parser
  // reports an empty document at the stray token without consuming it, again and again, and
  // LoadAll keeps collecting them until memory runs out; fuzz finding F5 in
  // docs/reliability/fuzzing.md). A config is read by wharfd at start and a dataset spec by the
  // ApplyContract RPC, so such a document must be an error, not a hung thread. Counting at most
  // four documents with a parser that builds nothing bounds the work; Load() then builds the
  // first document with a single call of the same parser, which returns.
  absl::StatusOr<YAML::Node> LoadDocument(const std::string& text, absl::string_view what) const {
    DocumentCounter counter;
    try {
      std::istringstream stream(text);
      YAML::Parser parser(stream);
      while (counter.starts.size() < 4 && parser.HandleNextDocument(counter)) {
      }
    } catch (const YAML::Exception& e) {  // YAML::ParserException: a syntax error
      return Error(e.mark.is_null() ? 0 : e.mark.line + 1, "", e.msg);
    }
    for (size_t i = 1; i < counter.starts.size(); ++i) {
      if (counter.starts[i].pos != counter.starts[i - 1].pos) continue;
      // No progress from one document to the next: the stray token described above.
      const YAML::Mark& at = counter.starts[i];
      return Error(at.line + 1, "",
                   absl::StrCat("unexpected character at column ", at.column + 1,
                                " (it starts no YAML value; a stray ',' after a tag or anchor?)"));
    }
    if (counter.starts.size() > 1) {
      return Error(counter.starts[1].line + 1, "",
                   "expected a single YAML document, got a second one (remove the \"---\")");
    }
    YAML::Node document;
    try {
      document = YAML::Load(text);
    } catch (const YAML::Exception& e) {
      return Error(e.mark.is_null() ? 0 : e.mark.line + 1, "", e.msg);
    }
    if (counter.starts.empty() || document.IsNull()) {
      return Error(1, "", absl::StrCat("expected ", what, ", got an empty file"));
    }
    return document;
  }

  // Records where each document's first value starts (its first event after the document start:
  // a null or scalar for a stray token) and ignores everything else.
  struct DocumentCounter : YAML::EventHandler {
    std::vector<YAML::Mark> starts;
    bool first_seen = false;
    void First(const YAML::Mark& mark) {
      if (!first_seen) starts.back() = mark;
      first_seen = true;
    }
    void OnDocumentStart(const YAML::Mark& mark) override {
      starts.push_back(mark);
      first_seen = false;
    }
    void OnDocumentEnd() override {}
    void OnNull(const YAML::Mark& mark, YAML::anchor_t) override { First(mark); }
    void OnAlias(const YAML::Mark& mark, YAML::anchor_t) override { First(mark); }
    void OnScalar(const YAML::Mark& mark, const std::string&, YAML::anchor_t,
                  const std::string&) override {
      First(mark);
    }
    void OnSequenceStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t,
                         YAML::EmitterStyle::value) override {
      First(mark);
    }
    void OnSequenceEnd() override {}
    void OnMapStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t,
                    YAML::EmitterStyle::value) override {
      First(mark);
    }
    void OnMapEnd() override {}
  };

  absl::Status Error(int line, absl::string_view path, absl::string_view message) const {
    std::string text(name_);
    if (line > 0) absl::StrAppend(&text, ":", line);
    absl::StrAppend(&text, ": ");
    if (!path.empty()) absl::StrAppend(&text, path, ": ");
    absl::StrAppend(&text, message);
    return absl::InvalidArgumentError(text);
  }

  absl::Status Expected(int line, absl::string_view path, absl::string_view expected,
                        absl::string_view got) const {
    return Error(line, path, absl::StrCat("expected ", expected, ", got ", got));
  }

  // Checks that `node` is a map (or, when `null_is_empty`, nothing at all) whose keys are unique,
  // plain scalars from `known`.
  absl::StatusOr<Fields> ReadMap(const YAML::Node& node, int line, std::string path,
                                 absl::string_view what, bool null_is_empty,
                                 std::span<const absl::string_view> known) const {
    Fields fields;
    fields.path = std::move(path);
    fields.line = line;
    if (node.IsNull() && null_is_empty) return fields;
    if (!node.IsMap()) return Expected(line, fields.path, what, Describe(node));
    for (const auto& pair : node) {
      // Copies: the nodes are handles into the document, which outlives them.
      const YAML::Node key = pair.first;
      const YAML::Node value = pair.second;
      const int key_line = LineOf(key) > 0 ? LineOf(key) : line;
      if (!key.IsScalar()) {
        return Expected(key_line, fields.path, "keys that are plain names",
                        absl::StrCat("a key that is ", Describe(key)));
      }
      const std::string name = key.Scalar();
      if (std::find(known.begin(), known.end(), name) == known.end()) {
        return UnknownKey(key_line, fields, name, known);
      }
      auto [previous, inserted] = fields.entries.try_emplace(name, Entry{key, value, key_line});
      if (!inserted) {
        return Error(key_line, fields.PathOf(name),
                     absl::StrCat("duplicate key (first set at line ", previous->second.line, ")"));
      }
    }
    return fields;
  }

  absl::Status UnknownKey(int line, const Fields& fields, const std::string& key,
                          std::span<const absl::string_view> known) const {
    std::string message = "unknown key";
    if (absl::string_view closest = ClosestKey(key, known); !closest.empty()) {
      absl::StrAppend(&message, "; did you mean \"", fields.PathOf(closest), "\"?");
      return Error(line, fields.PathOf(key), message);
    }
    if (fields.path.empty()) {
      for (const Section& section : kSections) {
        absl::string_view closest = ClosestKey(key, section.keys);
        if (!closest.empty()) {
          absl::StrAppend(&message, "; did you mean \"", section.name, ".", closest, "\" (in the ",
                          section.name, " section)?");
          return Error(line, fields.PathOf(key), message);
        }
      }
    }
    absl::StrAppend(&message, " (known keys: ", absl::StrJoin(known, ", "), ")");
    return Error(line, fields.PathOf(key), message);
  }

  absl::Status Missing(const Fields& fields, absl::string_view key, absl::string_view hint) const {
    return Error(fields.line, fields.PathOf(key), absl::StrCat("required key is missing", hint));
  }

  // The error for the value of `key`, a key present in `fields`: "expected <expected>, got <the
  // value><detail>", pointing at the key's line.
  absl::Status Refuse(const Fields& fields, absl::string_view key, absl::string_view expected,
                      absl::string_view detail = "") const {
    const Entry* entry = fields.Find(key);
    return Expected(entry->line, fields.PathOf(key), expected,
                    absl::StrCat(Describe(entry->value), detail));
  }

  // Reads `key` of `fields` when it is present: a scalar (else the error says `form` was
  // expected), whose text `parse` checks and stores, returning the error (made with Refuse) when
  // the text is not acceptable.
  template <typename Parse>
  absl::Status ReadScalar(const Fields& fields, absl::string_view key, absl::string_view form,
                          Parse parse) const {
    const Entry* entry = fields.Find(key);
    if (entry == nullptr) return absl::OkStatus();
    if (!entry->value.IsScalar()) return Refuse(fields, key, form);
    return parse(entry->value.Scalar());
  }

  absl::Status ReadString(const Fields& fields, absl::string_view key, std::string* out) const {
    constexpr absl::string_view kExpected = "a non-empty string";
    return ReadScalar(fields, key, kExpected, [&](const std::string& text) {
      if (text.empty()) return Refuse(fields, key, kExpected);
      *out = text;
      return absl::OkStatus();
    });
  }

  // A string that may be empty.
  absl::Status ReadText(const Fields& fields, absl::string_view key, std::string* out) const {
    return ReadScalar(fields, key, "a string", [&](const std::string& text) {
      *out = text;
      return absl::OkStatus();
    });
  }

  absl::Status ReadBool(const Fields& fields, absl::string_view key, bool* out) const {
    std::string text = *out ? "true" : "false";
    absl::Status status = ReadChoice(fields, key, kBools, &text);
    *out = text == "true";
    return status;
  }

  absl::Status ReadChoice(const Fields& fields, absl::string_view key,
                          std::span<const absl::string_view> choices, std::string* out) const {
    const std::string expected = OneOf(choices);
    return ReadScalar(fields, key, expected, [&](const std::string& text) {
      if (std::find(choices.begin(), choices.end(), text) == choices.end()) {
        return Refuse(fields, key, expected);
      }
      *out = text;
      return absl::OkStatus();
    });
  }

  absl::Status ReadUint32(const Fields& fields, absl::string_view key, uint32_t min, uint32_t max,
                          uint32_t* out) const {
    const std::string expected = absl::StrCat("an integer from ", min, " to ", max);
    return ReadScalar(fields, key, expected, [&](const std::string& text) {
      uint64_t value = 0;
      if (ParseUnsigned(text, &value) != NumberError::kNone || value < min || value > max) {
        return Refuse(fields, key, expected);
      }
      *out = static_cast<uint32_t>(value);
      return absl::OkStatus();
    });
  }

  absl::Status ReadSize(const Fields& fields, absl::string_view key, uint64_t min, uint64_t max,
                        uint64_t* out) const {
    return ReadScalar(fields, key, kSizeForm, [&](const std::string& text) {
      uint64_t value = 0;
      NumberError error = ParseWithUnit(text, kSizeUnits, true, &value);
      if (error == NumberError::kInvalid) return Refuse(fields, key, kSizeForm);
      if (error != NumberError::kNone || value < min || value > max) {
        return Refuse(fields, key,
                      absl::StrCat("a size from ", FormatSize(min), " to ", FormatSize(max)));
      }
      *out = value;
      return absl::OkStatus();
    });
  }

  absl::Status ReadDuration(const Fields& fields, absl::string_view key, Millis min, Millis max,
                            Millis* out) const {
    return ReadScalar(fields, key, kDurationForm, [&](const std::string& text) {
      uint64_t value = 0;
      // A bare 0 is the same in every unit.
      NumberError error =
          text == "0" ? NumberError::kNone : ParseWithUnit(text, kDurationUnits, false, &value);
      if (error == NumberError::kMissingUnit) {
        return Refuse(fields, key, kDurationForm,
                      absl::StrCat(", a number without a unit (add one, e.g. \"", text, "s\")"));
      }
      if (error == NumberError::kInvalid) return Refuse(fields, key, kDurationForm);
      if (error != NumberError::kNone || value < static_cast<uint64_t>(min.count()) ||
          value > static_cast<uint64_t>(max.count())) {
        return Refuse(
            fields, key,
            absl::StrCat("a duration from ", FormatDuration(min), " to ", FormatDuration(max)));
      }
      *out = Millis(static_cast<int64_t>(value));
      return absl::OkStatus();
    });
  }

  absl::Status ReadDouble(const Fields& fields, absl::string_view key, double min, double max,
                          double* out) const {
    const std::string expected =
        absl::StrCat("a number from ", FormatDouble(min), " to ", FormatDouble(max));
    return ReadScalar(fields, key, expected, [&](const std::string& text) {
      double value = 0;
      auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
      if (ec != std::errc() || end != text.data() + text.size() || !std::isfinite(value) ||
          value < min || value > max) {
        return Refuse(fields, key, expected);
      }
      *out = value;
      return absl::OkStatus();
    });
  }

  // The value of section `key` of the map `parent` (the top level or a nested map), as Fields
  // (empty when absent or empty).
  absl::StatusOr<Fields> ReadSection(const Fields& parent, absl::string_view key,
                                     std::span<const absl::string_view> known) const {
    const Entry* entry = parent.Find(key);
    if (entry == nullptr) {
      Fields fields;
      fields.path = parent.PathOf(key);
      fields.line = parent.line;
      return fields;
    }
    return ReadMap(entry->value, entry->line, parent.PathOf(key),
                   absl::StrCat("a map of ", key, " settings"), /*null_is_empty=*/true, known);
  }

  absl::StatusOr<Config> ParseTop(const YAML::Node& root) {
    absl::StatusOr<Fields> top =
        ReadMap(root, std::max(LineOf(root), 1), "", "a map of settings at the top level",
                /*null_is_empty=*/false, kTopKeys);
    if (!top.ok()) return top.status();

    Config config;
    config.path = std::string(name_);
    absl::Status status = ParseNodeId(*top, &config.node_id);
    if (status.ok()) status = ReadString(*top, "listen", &config.listen);
    if (status.ok()) status = ReadString(*top, "metrics_listen", &config.metrics_listen);
    if (status.ok()) status = ReadString(*top, "data_dir", &config.data_dir);
    std::string durability = "sync";
    if (status.ok()) status = ReadChoice(*top, "durability", kDurabilities, &durability);
    config.durability =
        durability == "async" ? storage::Durability::kAsync : storage::Durability::kSync;
    if (status.ok()) {
      status = ReadSize(*top, "min_free_disk", 0, kMaxAnySize, &config.min_free_bytes);
    }
    if (status.ok()) {
      status = ReadDuration(*top, "shutdown_timeout", std::chrono::seconds(1),
                            std::chrono::minutes(10), &config.shutdown_timeout);
    }
    if (status.ok()) {
      status = ReadUint32(*top, "pipeline_threads", 1, 64, &config.pipeline_threads);
    }
    if (status.ok()) status = ParseBatching(*top, &config.batching);
    if (status.ok()) status = ParseRetention(*top, &config.retention);
    if (status.ok()) status = ParseDelivery(*top, &config.delivery);
    if (status.ok()) status = ParseLimits(*top, &config.limits);
    if (status.ok()) status = ParseLog(*top, &config.log);
    if (status.ok()) status = ReadString(*top, "hash_key_file", &config.hash_key_file);
    if (status.ok()) status = ParseDatasets(*top, config.delivery, &config.datasets);
    if (!status.ok()) return status;
    return config;
  }

  absl::Status ParseNodeId(const Fields& top, std::string* out) const {
    constexpr absl::string_view kExpected = "1 to 64 characters of [A-Za-z0-9_.-]";
    if (top.Find("node_id") != nullptr) {
      absl::Status status = ReadString(top, "node_id", out);
      if (status.ok() && !IsValidNodeId(*out)) status = Refuse(top, "node_id", kExpected);
      return status;
    }
    char host[HOST_NAME_MAX + 1] = {};
    if (gethostname(host, sizeof(host) - 1) != 0 || !IsValidNodeId(host)) {
      return Missing(top, "node_id",
                     absl::StrCat(" (the default, the host name ", Quote(host),
                                  ", is not a valid node id: set node_id to ", kExpected, ")"));
    }
    *out = host;
    return absl::OkStatus();
  }

  absl::Status ParseBatching(const Fields& top, BatchingConfig* out) const {
    absl::StatusOr<Fields> fields = ReadSection(top, "batching", kBatchingKeys);
    if (!fields.ok()) return fields.status();
    absl::Status status = ReadUint32(*fields, "max_records", 1, 1000000, &out->max_records);
    if (status.ok()) status = ReadSize(*fields, "max_bytes", kKiB, 256 * kMiB, &out->max_bytes);
    if (status.ok()) {
      status = ReadDuration(*fields, "linger", Millis(0), std::chrono::hours(1), &out->linger);
    }
    return status;
  }

  absl::Status ParseRetention(const Fields& top, RetentionConfig* out) const {
    absl::StatusOr<Fields> fields = ReadSection(top, "retention", kRetentionKeys);
    if (!fields.ok()) return fields.status();
    absl::Status status = ReadDuration(*fields, "raw", Millis(0), kMaxRetention, &out->raw);
    if (status.ok()) {
      status =
          ReadDuration(*fields, "interval", Millis(100), std::chrono::hours(1), &out->interval);
    }
    return status;
  }

  absl::Status ParseDelivery(const Fields& top, DeliveryConfig* out) const {
    absl::StatusOr<Fields> fields = ReadSection(top, "delivery", kDeliveryKeys);
    if (!fields.ok()) return fields.status();
    return ReadDeliveryKeys(*fields, out);
  }

  // The keys of the `delivery` section (or of a destination's `retry`, which starts from the
  // `delivery` section's values) into `out`.
  absl::Status ReadDeliveryKeys(const Fields& fields, DeliveryConfig* out) const {
    absl::Status status = ReadDuration(fields, "initial_backoff", Millis(1), std::chrono::hours(1),
                                       &out->initial_backoff);
    if (status.ok()) {
      status =
          ReadDuration(fields, "max_backoff", Millis(1), std::chrono::hours(24), &out->max_backoff);
    }
    if (status.ok()) status = ReadDouble(fields, "multiplier", 1.0, 10.0, &out->multiplier);
    if (status.ok()) status = ReadDouble(fields, "jitter", 0.0, 1.0, &out->jitter);
    if (status.ok()) {
      status = ReadUint32(fields, "down_after", 1, kMaxDownAfter, &out->down_after);
    }
    if (status.ok()) {
      status = ReadDuration(fields, "probe_interval", Millis(100), std::chrono::hours(24),
                            &out->probe_interval);
    }
    if (!status.ok()) return status;
    if (out->max_backoff < out->initial_backoff) {
      return OutOfOrder(fields, "a duration",
                        {"initial_backoff", FormatDuration(out->initial_backoff)},
                        {"max_backoff", FormatDuration(out->max_backoff)}, "max_backoff");
    }
    return absl::OkStatus();
  }

  absl::Status ParseLimits(const Fields& top, LimitsConfig* out) const {
    absl::StatusOr<Fields> fields = ReadSection(top, "limits", kLimitsKeys);
    if (!fields.ok()) return fields.status();
    absl::Status status =
        ReadSize(*fields, "max_message_bytes", kKiB, 256 * kMiB, &out->max_message_bytes);
    if (status.ok()) {
      status =
          ReadUint32(*fields, "max_records_per_request", 1, 1000000, &out->max_records_per_request);
    }
    if (status.ok()) {
      status = ReadSize(*fields, "max_record_bytes", 1, 256 * kMiB, &out->max_record_bytes);
    }
    if (status.ok()) {
      status =
          ReadUint32(*fields, "max_inflight_per_stream", 1, 10000, &out->max_inflight_per_stream);
    }
    if (status.ok()) {
      status = ReadSize(*fields, "max_inflight_bytes", kKiB, kMaxAnySize, &out->max_inflight_bytes);
    }
    if (status.ok()) {
      status = ReadSize(*fields, "max_grpc_memory", 8 * kMiB, kMaxAnySize, &out->max_grpc_memory);
    }
    if (status.ok()) {
      status = ReadSize(*fields, "stream_window", 64 * kKiB, 16 * kMiB, &out->stream_window);
    }
    if (status.ok()) {
      status = ReadDuration(*fields, "keepalive_time", std::chrono::seconds(1),
                            std::chrono::hours(24), &out->keepalive_time);
    }
    if (status.ok()) {
      status = ReadDuration(*fields, "keepalive_timeout", std::chrono::seconds(1),
                            std::chrono::minutes(10), &out->keepalive_timeout);
    }
    if (!status.ok()) return status;
    if (out->max_record_bytes > out->max_message_bytes) {
      return OutOfOrder(*fields, "a size", {"max_record_bytes", FormatSize(out->max_record_bytes)},
                        {"max_message_bytes", FormatSize(out->max_message_bytes)},
                        "max_record_bytes");
    }
    return absl::OkStatus();
  }

  absl::Status ParseLog(const Fields& top, LogConfig* out) const {
    absl::StatusOr<Fields> fields = ReadSection(top, "log", kLogKeys);
    if (!fields.ok()) return fields.status();
    absl::Status status = ReadChoice(*fields, "level", kLogLevels, &out->level);
    if (status.ok()) status = ReadChoice(*fields, "format", kLogFormats, &out->format);
    return status;
  }

  // One side of a cross-field bound: a key of a map and its value as messages show it.
  struct Bound {
    absl::string_view key;
    std::string shown;
  };

  // The error for two keys of `fields` whose values are out of order (`low` above `high`).
  // It points at `blame` when the file set it, else at the other key (which the file then set,
  // since the defaults are in order). `kind` is the kind of value, e.g. "a size".
  absl::Status OutOfOrder(const Fields& fields, absl::string_view kind, const Bound& low,
                          const Bound& high, absl::string_view blame) const {
    if (fields.Find(blame) == nullptr) blame = blame == low.key ? high.key : low.key;
    const bool blame_low = blame == low.key;
    const Bound& other = blame_low ? high : low;
    return Refuse(fields, blame,
                  absl::StrCat(kind, blame_low ? " of at most " : " of at least ", other.key, " (",
                               other.shown, ")"));
  }

  // Reads the required, non-empty list at `key` of `fields`, whose items are maps describing a
  // `what` with keys from `known`, and hands each item's Fields to `read`, in order, until it
  // returns an error.
  template <typename Read>
  absl::Status ReadListOfMaps(const Fields& fields, absl::string_view key, absl::string_view what,
                              std::span<const absl::string_view> known, Read read) const {
    const Entry* list = fields.Find(key);
    if (list == nullptr) {
      return Missing(fields, key, absl::StrCat(" (expected a list of at least one ", what, ")"));
    }
    if (!list->value.IsSequence() || list->value.size() == 0) {
      return Refuse(fields, key, absl::StrCat("a list of at least one ", what));
    }
    size_t i = 0;
    for (auto it = list->value.begin(); it != list->value.end(); ++it, ++i) {
      const YAML::Node item = *it;
      const int line = LineOf(item) > 0 ? LineOf(item) : list->line;
      absl::StatusOr<Fields> item_fields =
          ReadMap(item, line, absl::StrCat(fields.PathOf(key), "[", i, "]"),
                  absl::StrCat("a map describing a ", what), /*null_is_empty=*/false, known);
      if (!item_fields.ok()) return item_fields.status();
      if (absl::Status status = read(*item_fields); !status.ok()) return status;
    }
    return absl::OkStatus();
  }

  // The name of a dataset or destination: required, valid, unique among `seen`.
  absl::Status ReadName(const Fields& fields, absl::string_view kind,
                        std::map<std::string, int>* seen, std::string* out) const {
    if (fields.Find("name") == nullptr) return Missing(fields, "name", "");
    absl::Status status = ReadString(fields, "name", out);
    if (!status.ok()) return status;
    const Entry* entry = fields.Find("name");
    if (absl::Status valid =
            storage::ValidateName(std::string_view(kind.data(), kind.size()), *out);
        !valid.ok()) {
      return Error(entry->line, fields.PathOf("name"), valid.message());
    }
    auto [previous, inserted] = seen->try_emplace(*out, entry->line);
    if (!inserted) {
      return Error(entry->line, fields.PathOf("name"),
                   absl::StrCat("duplicate ", kind, " name ", Quote(*out),
                                " (first defined at line ", previous->second, ")"));
    }
    return absl::OkStatus();
  }

  absl::Status ParseDatasets(const Fields& top, const DeliveryConfig& delivery,
                             std::vector<DatasetConfig>* out) const {
    std::map<std::string, int> names;
    return ReadListOfMaps(top, "datasets", "dataset", kDatasetEntryKeys, [&](const Fields& fields) {
      DatasetConfig dataset;
      absl::Status status = fields.Find("spec_file") != nullptr
                                ? ReadSpecFile(fields, delivery, &names, &dataset)
                                : ParseDataset(fields, delivery, &names, &dataset);
      if (status.ok()) out->push_back(std::move(dataset));
      return status;
    });
  }

  // A `datasets[]` entry {spec_file: path}: the dataset spec in that file.
  absl::Status ReadSpecFile(const Fields& fields, const DeliveryConfig& delivery,
                            std::map<std::string, int>* names, DatasetConfig* out) const {
    for (const auto& [key, entry] : fields.entries) {
      if (key != "spec_file") {
        return Error(entry.line, fields.PathOf(key),
                     "a dataset entry with spec_file takes no other keys (the dataset is "
                     "described in that file)");
      }
    }
    std::string path;
    if (absl::Status status = ReadString(fields, "spec_file", &path); !status.ok()) return status;
    const int line = fields.Find("spec_file")->line;
    // Relative to the directory of the config file.
    if (path[0] != '/') {
      const size_t slash = name_.rfind('/');
      if (slash != absl::string_view::npos) {
        path = absl::StrCat(name_.substr(0, slash + 1), path);
      }
    }
    absl::StatusOr<std::string> text = ReadTextFile(path, "dataset spec file");
    if (!text.ok()) {
      return Error(line, fields.PathOf("spec_file"), text.status().message());
    }
    absl::StatusOr<DatasetConfig> dataset = Parser(path).ParseSpec(*text, delivery);
    if (!dataset.ok()) return dataset.status();
    auto [previous, inserted] = names->try_emplace(dataset->name, line);
    if (!inserted) {
      return Error(line, fields.PathOf("spec_file"),
                   absl::StrCat("duplicate dataset name ", Quote(dataset->name), " in ", path,
                                " (first defined at line ", previous->second, ")"));
    }
    *out = std::move(*dataset);
    out->spec_file = path;
    return absl::OkStatus();
  }

  // The keys of a dataset (a `datasets[]` entry or a dataset spec document).
  absl::Status ParseDataset(const Fields& fields, const DeliveryConfig& delivery,
                            std::map<std::string, int>* names, DatasetConfig* dataset) const {
    absl::Status status = ReadName(fields, "dataset", names, &dataset->name);
    if (status.ok()) status = ReadUint32(fields, "partitions", 1, 1024, &dataset->partitions);
    if (status.ok()) status = ReadChoice(fields, "format", kDatasetFormats, &dataset->format);
    if (status.ok()) status = ReadSize(fields, "quota", 0, kMaxAnySize, &dataset->quota_bytes);
    if (status.ok()) status = ParseQuarantine(fields, dataset);
    if (status.ok()) {
      status = ParseDestinations(fields, dataset->name, delivery, &dataset->destinations);
    }
    if (status.ok()) status = ParseContract(fields, dataset);
    if (status.ok() && dataset->contract.has_value()) {
      // Replaced by the whole text for a spec document (ParseSpec).
      YAML::Emitter emitter;
      emitter << YAML::BeginMap << YAML::Key << "name" << YAML::Value << dataset->name << YAML::Key
              << "contract" << YAML::Value << fields.Find("contract")->value << YAML::EndMap;
      if (emitter.good()) dataset->source_yaml = emitter.c_str();
    }
    return status;
  }

  // -------------------------------------------------------------------------------------------
  // `contract`

  absl::Status ParseContract(const Fields& dataset, DatasetConfig* out) const {
    const Entry* entry = dataset.Find("contract");
    if (entry == nullptr) return absl::OkStatus();
    if (out->format == "raw") {
      return Error(entry->line, dataset.PathOf("contract"),
                   "a contract needs format json (raw payloads are not parsed)");
    }
    absl::StatusOr<Fields> fields = ReadSection(dataset, "contract", kContractKeys);
    if (!fields.ok()) return fields.status();
    wharf::v1::ContractSpec spec;
    absl::Status status = ParseSchema(*fields, &spec);
    if (status.ok() && fields->Find("compatibility") != nullptr) {
      std::string mode;
      status = ReadChoice(*fields, "compatibility", kCompatibilities, &mode);
      wharf::v1::CompatibilityMode value = wharf::v1::COMPATIBILITY_MODE_UNSPECIFIED;
      if (status.ok() && wharf::v1::CompatibilityMode_Parse(mode, &value)) {
        spec.set_compatibility(value);
      }
    }
    if (status.ok() && fields->Find("format_assertions") != nullptr) {
      bool assertions = true;
      status = ReadBool(*fields, "format_assertions", &assertions);
      spec.set_format_assertions(assertions);
    }
    if (status.ok()) {
      status = ReadOptionalListOfMaps(*fields, "rules", "rule", kRuleKeys, [&](const Fields& rule) {
        wharf::v1::RuleSpec* r = spec.add_rules();
        absl::Status st = Require(rule, "name", "");
        if (st.ok()) st = ReadString(rule, "name", r->mutable_name());
        if (st.ok()) st = Require(rule, "expr", " (the rule's boolean expression)");
        if (st.ok()) st = ReadString(rule, "expr", r->mutable_expr());
        return st;
      });
    }
    if (status.ok()) {
      status = ReadOptionalListOfMaps(*fields, "pii", "PII detector", kPiiKeys,
                                      [&](const Fields& pii) { return ParsePii(pii, &spec); });
    }
    if (status.ok()) {
      status = ReadOptionalListOfMaps(
          *fields, "transforms", "transform step", kTransformKeys,
          [&](const Fields& step) { return ParseTransform(step, spec.add_transforms()); });
    }
    if (!status.ok()) return status;
    out->contract = std::move(spec);
    return absl::OkStatus();
  }

  // `schema`: a JSON Schema written as YAML, or a string holding its JSON text.
  absl::Status ParseSchema(const Fields& contract, wharf::v1::ContractSpec* spec) const {
    const Entry* entry = contract.Find("schema");
    if (entry == nullptr) return absl::OkStatus();
    const std::string path = contract.PathOf("schema");
    if (entry->value.IsScalar() && entry->value.Tag() != "?") {
      // A quoted or block string: JSON text.
      const std::string& text = entry->value.Scalar();
      rapidjson::Document document;
      document.Parse<rapidjson::kParseIterativeFlag>(text.data(), text.size());
      if (document.HasParseError()) {
        return Error(entry->line, path,
                     absl::StrCat("expected a JSON Schema (a YAML map, or a string of JSON text), "
                                  "got a string that is not JSON: ",
                                  rapidjson::GetParseError_En(document.GetParseError()),
                                  " at character ", document.GetErrorOffset()));
      }
      if (!document.IsObject() && !document.IsBool()) {
        return Error(entry->line, path,
                     "expected a JSON Schema (a JSON object or true/false), got other JSON");
      }
      spec->set_json_schema(text);
      return absl::OkStatus();
    }
    if (!entry->value.IsMap() && !entry->value.IsScalar()) {
      return Expected(entry->line, path, "a JSON Schema (a YAML map, or a string of JSON text)",
                      Describe(entry->value));
    }
    absl::StatusOr<std::string> json = ToJson(entry->value, entry->line, path);
    if (!json.ok()) return json.status();
    if (entry->value.IsScalar() && *json != "true" && *json != "false") {
      return Expected(entry->line, path, "a JSON Schema (a YAML map, or a string of JSON text)",
                      Describe(entry->value));
    }
    spec->set_json_schema(*std::move(json));
    return absl::OkStatus();
  }

  absl::Status ParsePii(const Fields& fields, wharf::v1::ContractSpec* spec) const {
    wharf::v1::PiiSpec* pii = spec->add_pii();
    std::string detector;
    absl::Status status =
        Require(fields, "detector", absl::StrCat(" (expected ", OneOf(kPiiDetectors), ")"));
    if (status.ok()) status = ReadChoice(fields, "detector", kPiiDetectors, &detector);
    if (!status.ok()) return status;
    static constexpr std::pair<absl::string_view, wharf::v1::PiiDetector> kDetectors[] = {
        {"email", wharf::v1::PII_EMAIL},
        {"phone", wharf::v1::PII_PHONE},
        {"payment_card", wharf::v1::PII_PAYMENT_CARD},
        {"iban", wharf::v1::PII_IBAN},
        {"us_ssn", wharf::v1::PII_US_SSN},
        {"ip_address", wharf::v1::PII_IP_ADDRESS}};
    for (const auto& [name, value] : kDetectors) {
      if (name == detector) pii->set_detector(value);
    }
    status = ReadStringList(fields, "fields", pii->mutable_fields());
    std::string action;
    if (status.ok()) {
      status = Require(fields, "action", absl::StrCat(" (expected ", OneOf(kPiiActions), ")"));
    }
    if (status.ok()) status = ReadChoice(fields, "action", kPiiActions, &action);
    if (!status.ok()) return status;
    static constexpr std::pair<absl::string_view, wharf::v1::PiiAction> kActions[] = {
        {"quarantine", wharf::v1::PII_QUARANTINE},
        {"mask", wharf::v1::PII_MASK},
        {"hash", wharf::v1::PII_HASH},
        {"drop", wharf::v1::PII_DROP}};
    for (const auto& [name, value] : kActions) {
      if (name == action) pii->set_action(value);
    }
    return absl::OkStatus();
  }

  absl::Status ParseTransform(const Fields& fields, wharf::v1::TransformSpec* step) const {
    absl::Status status =
        Require(fields, "op", absl::StrCat(" (expected ", OneOf(kTransformOps), ")"));
    if (status.ok()) status = ReadChoice(fields, "op", kTransformOps, step->mutable_op());
    if (status.ok()) status = ReadString(fields, "path", step->mutable_path());
    if (status.ok()) status = ReadStringList(fields, "paths", step->mutable_paths());
    if (status.ok()) status = ReadString(fields, "to", step->mutable_to());
    if (status.ok()) {
      if (const Entry* value = fields.Find("value"); value != nullptr) {
        absl::StatusOr<std::string> json =
            ToJson(value->value, value->line, fields.PathOf("value"));
        if (!json.ok()) return json.status();
        step->set_value_json(*std::move(json));
      }
    }
    if (status.ok()) status = ReadString(fields, "expr", step->mutable_expr());
    if (status.ok()) status = ReadString(fields, "type", step->mutable_type());
    if (status.ok())
      status = ReadStringList(fields, "input_formats", step->mutable_input_formats());
    if (status.ok()) status = ReadString(fields, "output_format", step->mutable_output_format());
    if (status.ok() && fields.Find("length") != nullptr) {
      uint32_t length = 0;
      status = ReadUint32(fields, "length", 0, 1u << 30, &length);
      step->set_length(length);
    }
    if (status.ok()) status = ReadText(fields, "separator", step->mutable_separator());
    if (status.ok()) status = ReadStringMap(fields, "fields", step->mutable_fields());
    return status;
  }

  // Like ReadListOfMaps, but the list may be absent or empty.
  template <typename Read>
  absl::Status ReadOptionalListOfMaps(const Fields& fields, absl::string_view key,
                                      absl::string_view what,
                                      std::span<const absl::string_view> known, Read read) const {
    const Entry* list = fields.Find(key);
    if (list == nullptr || list->value.IsNull()) return absl::OkStatus();
    if (!list->value.IsSequence()) {
      return Refuse(fields, key, absl::StrCat("a list of ", what, "s"));
    }
    if (list->value.size() == 0) return absl::OkStatus();
    return ReadListOfMaps(fields, key, what, known, read);
  }

  // A list of non-empty strings at `key` (absent: nothing added).
  absl::Status ReadStringList(const Fields& fields, absl::string_view key,
                              google::protobuf::RepeatedPtrField<std::string>* out) const {
    const Entry* entry = fields.Find(key);
    if (entry == nullptr) return absl::OkStatus();
    if (!entry->value.IsSequence()) return Refuse(fields, key, "a list of strings");
    size_t i = 0;
    for (auto it = entry->value.begin(); it != entry->value.end(); ++it, ++i) {
      const YAML::Node item = *it;
      if (!item.IsScalar() || item.Scalar().empty()) {
        return Expected(LineOf(item) > 0 ? LineOf(item) : entry->line,
                        absl::StrCat(fields.PathOf(key), "[", i, "]"), "a non-empty string",
                        Describe(item));
      }
      out->Add(std::string(item.Scalar()));
    }
    return absl::OkStatus();
  }

  // A map of non-empty strings to non-empty strings at `key`, keys unique.
  absl::Status ReadStringMap(const Fields& fields, absl::string_view key,
                             google::protobuf::Map<std::string, std::string>* out) const {
    const Entry* entry = fields.Find(key);
    if (entry == nullptr) return absl::OkStatus();
    if (!entry->value.IsMap()) return Refuse(fields, key, "a map of names to strings");
    for (const auto& pair : entry->value) {
      const YAML::Node name = pair.first;
      const YAML::Node value = pair.second;
      const int line = LineOf(name) > 0 ? LineOf(name) : entry->line;
      if (!name.IsScalar() || name.Scalar().empty()) {
        return Expected(line, fields.PathOf(key), "keys that are names", Describe(name));
      }
      const std::string path = absl::StrCat(fields.PathOf(key), ".", name.Scalar());
      if (!value.IsScalar() || value.Scalar().empty()) {
        return Expected(line, path, "a non-empty string", Describe(value));
      }
      if (!out->insert({name.Scalar(), value.Scalar()}).second) {
        return Error(line, path, "duplicate key");
      }
    }
    return absl::OkStatus();
  }

  // `node` as JSON text. Plain scalars follow YAML's core schema where it agrees with JSON:
  // null / ~ / empty, true / false and JSON numbers; any other plain scalar is a string, except
  // numbers JSON cannot write as YAML wrote them (0x1F, +1, .5, .inf), which are refused rather
  // than guessed. Quoted scalars are strings. Map keys are strings.
  absl::StatusOr<std::string> ToJson(const YAML::Node& node, int line,
                                     const std::string& path) const {
    rapidjson::StringBuffer buffer;
    rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
    size_t values_left = kMaxJsonValues;
    if (absl::Status status = WriteJson(node, line, path, 0, &values_left, &writer); !status.ok()) {
      return status;
    }
    return std::string(buffer.GetString(), buffer.GetSize());
  }

  absl::Status WriteJson(const YAML::Node& node, int line, const std::string& path, int depth,
                         size_t* values_left,
                         rapidjson::Writer<rapidjson::StringBuffer>* writer) const {
    if (depth > kMaxJsonDepth) {
      return Error(line, path, absl::StrCat("nested deeper than ", kMaxJsonDepth, " levels"));
    }
    if (*values_left == 0) {
      return Error(line, path,
                   absl::StrCat("expands to more than ", kMaxJsonValues,
                                " values (a YAML alias repeated too often?)"));
    }
    --*values_left;
    if (LineOf(node) > 0) line = LineOf(node);
    switch (node.Type()) {
      case YAML::NodeType::Null:
      case YAML::NodeType::Undefined:
        writer->Null();
        return absl::OkStatus();
      case YAML::NodeType::Scalar:
        return WriteScalar(node, line, path, writer);
      case YAML::NodeType::Sequence: {
        writer->StartArray();
        size_t i = 0;
        for (auto it = node.begin(); it != node.end(); ++it, ++i) {
          absl::Status status =
              WriteJson(*it, line, absl::StrCat(path, "[", i, "]"), depth + 1, values_left, writer);
          if (!status.ok()) return status;
        }
        writer->EndArray();
        return absl::OkStatus();
      }
      case YAML::NodeType::Map: {
        writer->StartObject();
        std::map<std::string, int, std::less<>> seen;
        for (const auto& pair : node) {
          const YAML::Node key = pair.first;
          const int key_line = LineOf(key) > 0 ? LineOf(key) : line;
          if (!key.IsScalar()) {
            return Expected(key_line, path, "keys that are strings",
                            absl::StrCat("a key that is ", Describe(key)));
          }
          const std::string& name = key.Scalar();
          if (auto [previous, inserted] = seen.try_emplace(name, key_line); !inserted) {
            return Error(key_line, absl::StrCat(path, ".", name),
                         absl::StrCat("duplicate key (first set at line ", previous->second, ")"));
          }
          writer->Key(name.data(), static_cast<rapidjson::SizeType>(name.size()));
          absl::Status status = WriteJson(pair.second, key_line, absl::StrCat(path, ".", name),
                                          depth + 1, values_left, writer);
          if (!status.ok()) return status;
        }
        writer->EndObject();
        return absl::OkStatus();
      }
    }
    return absl::OkStatus();
  }

  absl::Status WriteScalar(const YAML::Node& node, int line, const std::string& path,
                           rapidjson::Writer<rapidjson::StringBuffer>* writer) const {
    const std::string& text = node.Scalar();
    const auto write_string = [&] {
      writer->String(text.data(), static_cast<rapidjson::SizeType>(text.size()));
      return absl::OkStatus();
    };
    if (node.Tag() != "?") return write_string();  // quoted, or an explicit tag such as !!str
    if (text.empty() || text == "~" || text == "null" || text == "Null" || text == "NULL") {
      writer->Null();
      return absl::OkStatus();
    }
    if (text == "true" || text == "True" || text == "TRUE") {
      writer->Bool(true);
      return absl::OkStatus();
    }
    if (text == "false" || text == "False" || text == "FALSE") {
      writer->Bool(false);
      return absl::OkStatus();
    }
    static const RE2 kJsonNumber(R"(-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?)");
    static const RE2 kYamlNumber(
        R"([-+]?(0x[0-9a-fA-F]+|0o[0-7]+|[0-9][0-9_]*(\.[0-9_]*)?([eE][-+]?[0-9]+)?|\.[0-9]+([eE][-+]?[0-9]+)?|\.(inf|Inf|INF)|\.(nan|NaN|NAN)))");
    if (RE2::FullMatch(text, kJsonNumber)) {
      writer->RawValue(text.data(), text.size(), rapidjson::kNumberType);
      return absl::OkStatus();
    }
    if (RE2::FullMatch(text, kYamlNumber)) {
      return Error(line, path,
                   absl::StrCat("the number ", Quote(text),
                                " has no JSON form as written: write it as a JSON number (e.g. "
                                "-12, 0.5, 1e3) or quote it to mean a string"));
    }
    return write_string();
  }

  absl::Status ParseQuarantine(const Fields& dataset, DatasetConfig* out) const {
    absl::StatusOr<Fields> fields = ReadSection(dataset, "quarantine", kQuarantineKeys);
    if (!fields.ok()) return fields.status();
    absl::Status status = ReadSize(*fields, "quota", 0, kMaxAnySize, &out->quarantine_quota_bytes);
    if (status.ok()) {
      status =
          ReadDuration(*fields, "retention", Millis(0), kMaxRetention, &out->quarantine_retention);
    }
    return status;
  }

  // A key that must be present (`hint` explains why, after "required key is missing").
  absl::Status Require(const Fields& fields, absl::string_view key, absl::string_view hint) const {
    if (fields.Find(key) == nullptr) return Missing(fields, key, hint);
    return absl::OkStatus();
  }

  absl::Status ParseDestinations(const Fields& dataset, const std::string& dataset_name,
                                 const DeliveryConfig& delivery,
                                 std::vector<DestinationConfig>* out) const {
    std::map<std::string, int> names;
    return ReadListOfMaps(
        dataset, "destinations", "destination", kDestinationKeys,
        [&](const Fields& fields) -> absl::Status {
          DestinationConfig destination;
          absl::Status status = ReadName(fields, "destination", &names, &destination.name);
          if (!status.ok()) return status;
          if (fields.Find("type") == nullptr) {
            return Missing(fields, "type",
                           absl::StrCat(" (expected ", OneOf(kDestinationTypes), ")"));
          }
          status = ReadChoice(fields, "type", kDestinationTypes, &destination.type);
          if (!status.ok()) return status;
          std::span<const absl::string_view> valid;
          if (destination.type == "file") valid = kFileKeys;
          if (destination.type == "postgres") valid = kPostgresKeys;
          if (destination.type == "http") valid = kHttpKeys;
          if (destination.type == "wharf") valid = kWharfKeys;
          // The first key (in file order) that belongs to another type.
          const Entry* invalid = nullptr;
          std::string invalid_key;
          for (const auto& [key, entry] : fields.entries) {
            if (std::find(valid.begin(), valid.end(), key) == valid.end() &&
                (invalid == nullptr || entry.line < invalid->line)) {
              invalid = &entry;
              invalid_key = key;
            }
          }
          if (invalid != nullptr) {
            return Error(
                invalid->line, fields.PathOf(invalid_key),
                absl::StrCat("key \"", invalid_key, "\" is not valid for a destination of type ",
                             destination.type, " (its keys: ", absl::StrJoin(valid, ", "), ")"));
          }
          if (fields.Find("retry") != nullptr) {
            absl::StatusOr<Fields> retry = ReadSection(fields, "retry", kDeliveryKeys);
            if (!retry.ok()) return retry.status();
            destination.retry = delivery;
            status = ReadDeliveryKeys(*retry, &*destination.retry);
            if (!status.ok()) return status;
          }
          if (destination.type == "file") {
            status = ParseFile(fields, dataset_name, &destination);
          }
          if (destination.type == "postgres") status = ParsePostgres(fields, &destination);
          if (destination.type == "http") status = ParseHttp(fields, &destination);
          if (destination.type == "wharf") status = ParseWharf(fields, &destination);
          if (!status.ok()) return status;
          out->push_back(std::move(destination));
          return absl::OkStatus();
        });
  }

  absl::Status ParseFile(const Fields& fields, const std::string& dataset_name,
                         DestinationConfig* out) const {
    absl::Status status = Require(fields, "directory", " (a file destination needs a directory)");
    if (status.ok()) status = ReadString(fields, "directory", &out->file_directory);
    if (!status.ok()) return status;
    if (fields.Find("roll") == nullptr) {
      for (absl::string_view key : {"path_template", "gzip"}) {
        if (const Entry* entry = fields.Find(key); entry != nullptr) {
          return Error(entry->line, fields.PathOf(key),
                       "only valid for a rolling file destination (add a roll section, e.g. "
                       "\"roll: {max_bytes: 64MiB, max_age: 5m}\")");
        }
      }
      return absl::OkStatus();
    }
    absl::StatusOr<Fields> roll = ReadSection(fields, "roll", kRollKeys);
    if (!roll.ok()) return roll.status();
    RollConfig config;
    status = ReadSize(*roll, "max_bytes", 0, kMaxAnySize, &config.max_bytes);
    Millis max_age = config.max_age;
    if (status.ok()) {
      status = ReadDuration(*roll, "max_age", Millis(0), kMaxRetention, &max_age);
    }
    if (!status.ok()) return status;
    if (max_age.count() % 1000 != 0) {
      return Refuse(*roll, "max_age", "a duration in whole seconds");
    }
    config.max_age = std::chrono::duration_cast<std::chrono::seconds>(max_age);
    if (config.max_bytes == 0 && config.max_age.count() == 0) {
      const absl::string_view blame = roll->Find("max_age") != nullptr ? "max_age" : "max_bytes";
      return Refuse(*roll, blame, "a value above 0 for max_bytes or max_age (a file must roll)");
    }
    // The rolling destination's state files are named after "<destination>.<dataset>", which
    // must be a valid name itself.
    if (const size_t length = out->name.size() + 1 + dataset_name.size(); length > 64) {
      return Error(roll->line, fields.PathOf("roll"),
                   absl::StrCat("a rolling file destination needs a name that, with its dataset's "
                                "name, is at most 63 characters long (its state is named \"",
                                out->name, ".", dataset_name, "\", ", length, " characters)"));
    }
    out->roll = config;
    if (status.ok()) status = ReadString(fields, "path_template", &out->path_template);
    if (status.ok()) status = ReadBool(fields, "gzip", &out->file_gzip);
    return status;
  }

  absl::Status ParsePostgres(const Fields& fields, DestinationConfig* out) const {
    absl::Status status =
        Require(fields, "conninfo", " (a libpq connection string, e.g. \"host=db dbname=wh\")");
    if (status.ok()) status = ReadString(fields, "conninfo", &out->pg_conninfo);
    if (status.ok() && ConninfoHasPassword(out->pg_conninfo)) {
      // The value itself is not shown: it holds a password.
      const Entry* entry = fields.Find("conninfo");
      return Error(entry->line, fields.PathOf("conninfo"),
                   "must not contain a password (connection strings end up in logs): put it in a "
                   "file named by password_file or an environment variable named by "
                   "password_env");
    }
    if (status.ok()) status = ReadString(fields, "password_file", &out->pg_password_file);
    if (status.ok()) status = ReadString(fields, "password_env", &out->pg_password_env);
    if (status.ok() && !out->pg_password_env.empty() && !IsEnvName(out->pg_password_env)) {
      status =
          Refuse(fields, "password_env", "an environment variable name ([A-Za-z_][A-Za-z0-9_]*)");
    }
    if (status.ok() && fields.Find("password_file") != nullptr &&
        fields.Find("password_env") != nullptr) {
      const Entry* file = fields.Find("password_file");
      const Entry* env = fields.Find("password_env");
      const bool env_last = env->line >= file->line;
      return Error(env_last ? env->line : file->line,
                   fields.PathOf(env_last ? "password_env" : "password_file"),
                   "password_file and password_env are exclusive: give at most one");
    }
    if (status.ok()) status = Require(fields, "table", " (the target table, e.g. public.orders)");
    if (status.ok()) status = ReadString(fields, "table", &out->pg_table);
    if (status.ok()) status = ReadBool(fields, "create_table", &out->pg_create_table);
    if (status.ok()) status = ReadString(fields, "ledger_table", &out->pg_ledger_table);
    if (status.ok() && fields.Find("columns") != nullptr) {
      std::map<std::string, int> names;
      status = ReadListOfMaps(
          fields, "columns", "column", kColumnKeys, [&](const Fields& column) -> absl::Status {
            PostgresColumnConfig config;
            absl::Status st = Require(column, "name", "");
            if (st.ok()) st = ReadString(column, "name", &config.name);
            if (!st.ok()) return st;
            const Entry* name = column.Find("name");
            if (auto [previous, inserted] = names.try_emplace(config.name, name->line); !inserted) {
              return Error(name->line, column.PathOf("name"),
                           absl::StrCat("duplicate column name ", Quote(config.name),
                                        " (first defined at line ", previous->second, ")"));
            }
            st = ReadText(column, "source", &config.source);
            if (st.ok()) st = ReadChoice(column, "type", kColumnTypes, &config.type);
            if (st.ok()) out->pg_columns.push_back(std::move(config));
            return st;
          });
    }
    if (status.ok()) {
      status = ReadDuration(fields, "connect_timeout", std::chrono::seconds(1),
                            std::chrono::minutes(10), &out->pg_connect_timeout);
    }
    if (status.ok()) {
      status = ReadDuration(fields, "statement_timeout", Millis(1), std::chrono::hours(24),
                            &out->pg_statement_timeout);
    }
    if (status.ok()) {
      status = ReadUint32(fields, "max_connections", 1, 1024, &out->pg_max_connections);
    }
    return status;
  }

  absl::Status ParseHttp(const Fields& fields, DestinationConfig* out) const {
    absl::Status status =
        Require(fields, "url", " (the endpoint, e.g. \"https://ingest.example.com/v1\")");
    if (status.ok()) status = ReadString(fields, "url", &out->http_url);
    if (status.ok()) {
      const std::string lower = absl::AsciiStrToLower(out->http_url);
      if ((!absl::StartsWith(lower, "http://") || lower.size() == 7) &&
          (!absl::StartsWith(lower, "https://") || lower.size() == 8)) {
        // Not quoted back: a URL may carry credentials.
        const Entry* entry = fields.Find("url");
        return Error(entry->line, fields.PathOf("url"),
                     "expected an http:// or https:// URL with a host");
      }
    }
    if (status.ok()) status = ReadChoice(fields, "format", kHttpFormats, &out->http_format);
    if (status.ok()) status = ReadBool(fields, "gzip", &out->http_gzip);
    if (status.ok()) status = ParseHeaders(fields, &out->http_headers);
    if (status.ok()) {
      status = ReadString(fields, "bearer_token_file", &out->http_bearer_token_file);
    }
    if (status.ok()) {
      status = ReadDuration(fields, "connect_timeout", Millis(1), std::chrono::minutes(10),
                            &out->http_connect_timeout);
    }
    if (status.ok()) {
      status = ReadDuration(fields, "request_timeout", Millis(1), std::chrono::hours(1),
                            &out->http_request_timeout);
    }
    if (!status.ok() || fields.Find("tls") == nullptr) return status;
    absl::StatusOr<Fields> tls = ReadSection(fields, "tls", kTlsKeys);
    if (!tls.ok()) return tls.status();
    status = ReadString(*tls, "ca_file", &out->http_ca_file);
    if (status.ok())
      status = ReadBool(*tls, "insecure_skip_verify", &out->http_insecure_skip_verify);
    if (status.ok()) status = ReadString(*tls, "client_cert_file", &out->http_client_cert_file);
    if (status.ok()) status = ReadString(*tls, "client_key_file", &out->http_client_key_file);
    if (status.ok() && !out->http_client_key_file.empty() && out->http_client_cert_file.empty()) {
      return Error(tls->Find("client_key_file")->line, tls->PathOf("client_key_file"),
                   "needs client_cert_file (a key without a certificate is useless)");
    }
    return status;
  }

  // `headers`: a map of field name to value, in file order.
  absl::Status ParseHeaders(const Fields& fields,
                            std::vector<std::pair<std::string, std::string>>* out) const {
    const Entry* entry = fields.Find("headers");
    if (entry == nullptr || entry->value.IsNull()) return absl::OkStatus();
    const std::string path = fields.PathOf("headers");
    if (!entry->value.IsMap()) {
      return Expected(entry->line, path, "a map of header names to values", Describe(entry->value));
    }
    std::map<std::string, int> seen;  // lower-case name -> line
    for (const auto& pair : entry->value) {
      const YAML::Node key = pair.first;
      const YAML::Node value = pair.second;
      const int line = LineOf(key) > 0 ? LineOf(key) : entry->line;
      if (!key.IsScalar() || !IsHttpToken(key.Scalar())) {
        return Expected(line, path, "header names that are HTTP tokens (e.g. X-Team)",
                        Describe(key));
      }
      const std::string name = key.Scalar();
      const std::string field_path = absl::StrCat(path, ".", name);
      if (auto [previous, inserted] = seen.try_emplace(absl::AsciiStrToLower(name), line);
          !inserted) {
        return Error(line, field_path,
                     absl::StrCat("duplicate header (first set at line ", previous->second,
                                  "; names are case-insensitive)"));
      }
      if (!value.IsScalar()) {
        return Expected(line, field_path, "a header value (a string)", Describe(value));
      }
      const std::string& text = value.Scalar();
      if (text.find_first_of(std::string("\r\n\0", 3)) != std::string::npos) {
        return Expected(line, field_path, "a header value without CR, LF or NUL", Quote(text));
      }
      out->emplace_back(name, text);
    }
    return absl::OkStatus();
  }

  absl::Status ParseWharf(const Fields& fields, DestinationConfig* out) const {
    absl::Status status =
        Require(fields, "target", " (the central wharfd's host:port, e.g. 10.0.0.5:7400)");
    if (status.ok()) status = ReadString(fields, "target", &out->forward_target);
    if (status.ok() && !IsHostPort(out->forward_target)) {
      return Refuse(fields, "target", "host:port with a port from 1 to 65535");
    }
    if (status.ok()) status = ReadString(fields, "dataset", &out->forward_dataset);
    if (status.ok() && !out->forward_dataset.empty()) {
      if (absl::Status valid = storage::ValidateName("dataset", out->forward_dataset);
          !valid.ok()) {
        return Error(fields.Find("dataset")->line, fields.PathOf("dataset"), valid.message());
      }
    }
    if (status.ok()) {
      status = ReadDuration(fields, "rpc_timeout", Millis(100), std::chrono::hours(1),
                            &out->forward_rpc_timeout);
    }
    if (status.ok()) {
      status =
          ReadSize(fields, "max_request_bytes", kKiB, 256 * kMiB, &out->forward_max_request_bytes);
    }
    return status;
  }

  absl::string_view name_;
};

}  // namespace

absl::StatusOr<Config> ParseConfig(const std::string& yaml_text, const std::string& name) {
  return Parser(name).Parse(yaml_text);
}

absl::StatusOr<Config> LoadConfig(const std::string& path) {
  absl::StatusOr<std::string> text = ReadTextFile(path, "config file");
  if (!text.ok()) return text.status();
  return ParseConfig(*text, path);
}

absl::StatusOr<DatasetConfig> ParseDatasetSpec(const std::string& yaml_text,
                                               const std::string& name,
                                               const DeliveryConfig& delivery) {
  return Parser(name).ParseSpec(yaml_text, delivery);
}

}  // namespace wharf::server
