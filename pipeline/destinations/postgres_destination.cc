#include "pipeline/destinations/postgres_destination.h"

#include <fcntl.h>
#include <libpq-fe.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/civil_time.h"
#include "absl/time/time.h"
#include "pipeline/contract/json_number.h"
#include "rapidjson/document.h"
#include "rapidjson/error/en.h"
#include "rapidjson/pointer.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"
#include "storage/failpoint.h"

namespace wharf::pipeline {
namespace {

using Type = PostgresColumn::Type;

// Debian's Abseil has its own absl::string_view (not an alias of std::string_view).
absl::string_view Absl(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// PostgreSQL truncates longer identifiers (NAMEDATALEN - 1 bytes); rejecting them avoids
// writing to a silently different name.
constexpr size_t kMaxIdentifierBytes = 63;
// COPY data is sent in chunks of about this size.
constexpr size_t kCopyChunkBytes = size_t{1} << 20;
// Statements of one delivery, for the bound on waiting for a pooled connection.
constexpr int kStatementsPerDelivery = 5;

std::string QuoteIdent(std::string_view name) {
  std::string out = "\"";
  for (char c : name) {
    if (c == '"') out += '"';
    out += c;
  }
  out += '"';
  return out;
}

absl::Status CheckIdentifier(std::string_view name, std::string_view what) {
  if (name.empty()) return absl::InvalidArgumentError(absl::StrCat(Absl(what), " is empty"));
  if (name.size() > kMaxIdentifierBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(Absl(what), " is longer than ", kMaxIdentifierBytes, " bytes: ", Absl(name)));
  }
  if (name.find('\0') != std::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat(Absl(what), " contains a NUL byte"));
  }
  return absl::OkStatus();
}

// A possibly schema-qualified table name.
struct TableName {
  std::string schema;  // empty: unqualified (resolved by the search_path)
  std::string name;
  std::string sql;  // quoted, qualified SQL spelling

  bool operator==(const TableName& o) const { return schema == o.schema && name == o.name; }
};

// Parses "[schema.]name" (see PostgresDestinationOptions::table): parts are separated by '.';
// a part starting with '"' is a quoted identifier ("" stands for one quote), any other part is
// taken literally up to the next '.'.
absl::StatusOr<TableName> ParseTableName(const std::string& text, std::string_view what) {
  std::vector<std::string> parts;
  size_t i = 0;
  while (true) {
    std::string part;
    if (i < text.size() && text[i] == '"') {
      ++i;
      bool closed = false;
      while (i < text.size()) {
        if (text[i] == '"') {
          if (i + 1 < text.size() && text[i + 1] == '"') {
            part += '"';
            i += 2;
            continue;
          }
          closed = true;
          ++i;
          break;
        }
        part += text[i++];
      }
      if (!closed) {
        return absl::InvalidArgumentError(
            absl::StrCat(Absl(what), " has an unterminated quoted identifier: ", text));
      }
      if (i < text.size() && text[i] != '.') {
        return absl::InvalidArgumentError(
            absl::StrCat(Absl(what), " has characters after a quoted identifier: ", text));
      }
    } else {
      const size_t dot = text.find('.', i);
      const size_t end = dot == std::string::npos ? text.size() : dot;
      part = text.substr(i, end - i);
      i = end;
    }
    absl::Status valid = CheckIdentifier(part, absl::StrCat(Absl(what), " part"));
    if (!valid.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(valid.message(), " in \"", text, "\""));
    }
    parts.push_back(std::move(part));
    if (i >= text.size()) break;
    ++i;  // the '.'
    if (i >= text.size()) {
      return absl::InvalidArgumentError(absl::StrCat(Absl(what), " ends with '.': ", text));
    }
  }
  if (parts.size() > 2) {
    return absl::InvalidArgumentError(
        absl::StrCat(Absl(what), " has more than schema and table: ", text));
  }
  TableName t;
  if (parts.size() == 2) {
    t.schema = parts[0];
    t.name = parts[1];
    t.sql = absl::StrCat(QuoteIdent(t.schema), ".", QuoteIdent(t.name));
  } else {
    t.name = parts[0];
    t.sql = QuoteIdent(t.name);
  }
  return t;
}

std::string_view TypeSql(Type type) {
  switch (type) {
    case Type::kText:
      return "text";
    case Type::kSmallint:
      return "smallint";
    case Type::kInteger:
      return "integer";
    case Type::kBigint:
      return "bigint";
    case Type::kNumeric:
      return "numeric";
    case Type::kBoolean:
      return "boolean";
    case Type::kTimestamptz:
      return "timestamptz";
    case Type::kJsonb:
      return "jsonb";
    case Type::kDouble:
      return "double precision";
  }
  return "text";
}

enum class SourceKind {
  kWhole,
  kPointer,
  kOffset,
  kPartition,
  kBatchId,
  kDataset,
  kKey,
  kIngestTime,
  kEventTime
};

struct MetadataSource {
  std::string_view name;
  SourceKind kind;
  std::vector<Type> types;  // column types the source converts to without possible failure
};

const std::vector<MetadataSource>& MetadataSources() {
  static const auto* sources = new std::vector<MetadataSource>{
      {"$offset", SourceKind::kOffset, {Type::kBigint, Type::kNumeric, Type::kText, Type::kJsonb}},
      {"$partition",
       SourceKind::kPartition,
       {Type::kInteger, Type::kBigint, Type::kNumeric, Type::kText, Type::kJsonb}},
      {"$batch_id", SourceKind::kBatchId, {Type::kText}},
      {"$dataset", SourceKind::kDataset, {Type::kText}},
      {"$key", SourceKind::kKey, {Type::kText}},
      {"$ingest_time", SourceKind::kIngestTime, {Type::kTimestamptz, Type::kText}},
      {"$event_time", SourceKind::kEventTime, {Type::kTimestamptz, Type::kText}},
  };
  return *sources;
}

struct ColumnPlan {
  std::string name;
  SourceKind kind = SourceKind::kWhole;
  std::optional<rapidjson::Pointer> pointer;  // kPointer only
  Type type = Type::kText;
};

// ---------------------------------------------------------------------------------------------
// Value conversion

// Writes `root` as compact JSON without recursion: records may be nested arbitrarily deep (they
// are parsed iteratively for the same reason), and Value::Accept would recurse.
std::string JsonText(const rapidjson::Value& root) {
  rapidjson::StringBuffer sb;
  rapidjson::Writer<rapidjson::StringBuffer> w(sb);
  struct Frame {
    const rapidjson::Value* value;
    rapidjson::SizeType next;
  };
  std::vector<Frame> stack;
  auto emit = [&](const rapidjson::Value& v) {
    switch (v.GetType()) {
      case rapidjson::kNullType:
        w.Null();
        break;
      case rapidjson::kFalseType:
        w.Bool(false);
        break;
      case rapidjson::kTrueType:
        w.Bool(true);
        break;
      case rapidjson::kStringType:
        w.String(v.GetString(), v.GetStringLength());
        break;
      case rapidjson::kNumberType:
        if (v.IsInt64()) {
          w.Int64(v.GetInt64());
        } else if (v.IsUint64()) {
          w.Uint64(v.GetUint64());
        } else {
          w.Double(v.GetDouble());
        }
        break;
      case rapidjson::kObjectType:
        w.StartObject();
        stack.push_back({&v, 0});
        break;
      case rapidjson::kArrayType:
        w.StartArray();
        stack.push_back({&v, 0});
        break;
    }
  };
  emit(root);
  while (!stack.empty()) {
    const rapidjson::Value* v = stack.back().value;
    const rapidjson::SizeType i = stack.back().next++;
    if (v->IsObject()) {
      if (i == v->MemberCount()) {
        w.EndObject();
        stack.pop_back();
        continue;
      }
      const auto& member = *(v->MemberBegin() + i);
      w.Key(member.name.GetString(), member.name.GetStringLength());
      emit(member.value);  // may grow the stack: no reference into it is held here
    } else {
      if (i == v->Size()) {
        w.EndArray();
        stack.pop_back();
        continue;
      }
      emit((*v)[i]);
    }
  }
  return std::string(sb.GetString(), sb.GetSize());
}

std::string_view JsonTypeName(const rapidjson::Value& v) {
  switch (v.GetType()) {
    case rapidjson::kNullType:
      return "null";
    case rapidjson::kFalseType:
    case rapidjson::kTrueType:
      return "a boolean";
    case rapidjson::kObjectType:
      return "an object";
    case rapidjson::kArrayType:
      return "an array";
    case rapidjson::kStringType:
      return "a string";
    case rapidjson::kNumberType:
      return "a number";
  }
  return "a value";
}

bool IsDigits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// `-?[0-9]+`
bool IsIntegerText(std::string_view s) {
  if (!s.empty() && s.front() == '-') s.remove_prefix(1);
  return IsDigits(s);
}

// JSON number syntax, leading zeros allowed: -?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?
bool IsNumberText(std::string_view s) {
  if (!s.empty() && s.front() == '-') s.remove_prefix(1);
  size_t i = 0;
  auto digits = [&]() {
    const size_t start = i;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i;
    return i > start;
  };
  if (!digits()) return false;
  if (i < s.size() && s[i] == '.') {
    ++i;
    if (!digits()) return false;
  }
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
    if (!digits()) return false;
  }
  return i == s.size();
}

// Reads an integral value: an integral JSON number, or (with `allow_string`) a string of decimal
// digits. Returns the reason on failure.
std::optional<std::string> ReadIntegral(const rapidjson::Value& v, bool allow_string,
                                        int64_t* out) {
  if (v.IsInt64()) {
    *out = v.GetInt64();
    return std::nullopt;
  }
  if (v.IsUint64()) return "integer out of range";
  if (v.IsDouble()) {
    const double d = v.GetDouble();
    if (!std::isfinite(d) || std::trunc(d) != d) return "expected an integer, got a fraction";
    // [-2^63, 2^63): both bounds are exact doubles.
    if (d < -9223372036854775808.0 || d >= 9223372036854775808.0) return "integer out of range";
    *out = static_cast<int64_t>(d);
    return std::nullopt;
  }
  if (allow_string && v.IsString()) {
    const std::string_view s(v.GetString(), v.GetStringLength());
    if (!IsIntegerText(s)) return "expected an integer, got a non-numeric string";
    if (!absl::SimpleAtoi(Absl(s), out)) return "integer out of range";
    return std::nullopt;
  }
  return absl::StrCat("expected an integer, got ", Absl(JsonTypeName(v)));
}

std::optional<std::string> CheckIntegerRange(int64_t n, Type type) {
  int64_t lo = std::numeric_limits<int64_t>::min();
  int64_t hi = std::numeric_limits<int64_t>::max();
  if (type == Type::kSmallint) {
    lo = std::numeric_limits<int16_t>::min();
    hi = std::numeric_limits<int16_t>::max();
  } else if (type == Type::kInteger) {
    lo = std::numeric_limits<int32_t>::min();
    hi = std::numeric_limits<int32_t>::max();
  }
  if (n < lo || n > hi) return absl::StrCat("integer out of range for ", Absl(TypeSql(type)));
  return std::nullopt;
}

// PostgreSQL's timestamptz input, in UTC, with four-digit years and microseconds (PostgreSQL's
// precision; finer digits are truncated). Years outside 1..9999 are refused: PostgreSQL would
// need "BC" or five-digit years, and such values are almost certainly unit mistakes.
std::optional<std::string> FormatTimestamp(absl::Time t, std::string* out) {
  static const absl::Time kMin = absl::FromCivil(absl::CivilSecond(1, 1, 1), absl::UTCTimeZone());
  static const absl::Time kEnd =
      absl::FromCivil(absl::CivilSecond(10000, 1, 1), absl::UTCTimeZone());
  if (t < kMin || t >= kEnd) return "timestamp outside the years 1 to 9999";
  const absl::CivilSecond cs = absl::ToCivilSecond(t, absl::UTCTimeZone());
  const int64_t micros = absl::ToInt64Microseconds(t - absl::FromCivil(cs, absl::UTCTimeZone()));
  *out = absl::StrFormat("%04d-%02d-%02d %02d:%02d:%02d.%06d+00", cs.year(), cs.month(), cs.day(),
                         cs.hour(), cs.minute(), cs.second(), micros);
  return std::nullopt;
}

absl::Time ProtoTime(const google::protobuf::Timestamp& ts) {
  return absl::FromUnixSeconds(ts.seconds()) + absl::Nanoseconds(ts.nanos());
}

bool IsValidUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    size_t n = 0;
    uint32_t cp = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      n = 1;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      n = 2;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      n = 3;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + n >= s.size()) return false;  // truncated sequence
    for (size_t k = 1; k <= n; ++k) {
      const unsigned char cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    static constexpr uint32_t kMinForLength[] = {0, 0x80, 0x800, 0x10000};
    if (cp < kMinForLength[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += n + 1;
  }
  return true;
}

// One converted field: NULL or a value in PostgreSQL's input syntax for the column type.
struct Field {
  bool null = true;
  std::string text;
};

// Converts a JSON value (nullptr: the pointer did not resolve) for `type`. Returns the reason
// when the value does not fit the type; the reason never contains the value itself.
std::optional<std::string> ConvertJson(const rapidjson::Value* v, Type type, Field* f) {
  f->null = v == nullptr || v->IsNull();
  f->text.clear();
  if (f->null) return std::nullopt;
  switch (type) {
    case Type::kText:
      if (v->IsString()) {
        const std::string_view s(v->GetString(), v->GetStringLength());
        if (s.find('\0') != std::string_view::npos) {
          return "string contains a NUL character, which PostgreSQL text cannot hold";
        }
        f->text.assign(s);
      } else {
        f->text = JsonText(*v);
      }
      return std::nullopt;
    case Type::kSmallint:
    case Type::kInteger:
    case Type::kBigint: {
      int64_t n = 0;
      if (auto why = ReadIntegral(*v, /*allow_string=*/true, &n)) return why;
      if (auto why = CheckIntegerRange(n, type)) return why;
      f->text = absl::StrCat(n);
      return std::nullopt;
    }
    case Type::kNumeric:
    case Type::kDouble:
      if (v->IsNumber()) {
        f->text = JsonText(*v);
        return std::nullopt;
      }
      if (v->IsString() && IsNumberText(std::string_view(v->GetString(), v->GetStringLength()))) {
        f->text.assign(v->GetString(), v->GetStringLength());
        return std::nullopt;
      }
      return absl::StrCat("expected a number, got ",
                          v->IsString() ? "a non-numeric string" : Absl(JsonTypeName(*v)));
    case Type::kBoolean:
      if (!v->IsBool()) return absl::StrCat("expected a boolean, got ", Absl(JsonTypeName(*v)));
      f->text = v->GetBool() ? "t" : "f";
      return std::nullopt;
    case Type::kTimestamptz: {
      absl::Time t;
      if (v->IsString()) {
        std::string err;
        if (!absl::ParseTime(absl::RFC3339_full, std::string(v->GetString(), v->GetStringLength()),
                             &t, &err)) {
          return "expected an RFC 3339 timestamp with time zone";
        }
      } else if (v->IsNumber()) {
        int64_t millis = 0;
        if (auto why = ReadIntegral(*v, /*allow_string=*/false, &millis)) {
          return absl::StrCat("epoch milliseconds: ", *why);
        }
        t = absl::FromUnixMillis(millis);
      } else {
        return absl::StrCat("expected a timestamp string or epoch milliseconds, got ",
                            Absl(JsonTypeName(*v)));
      }
      return FormatTimestamp(t, &f->text);
    }
    case Type::kJsonb:
      f->text = JsonText(*v);
      return std::nullopt;
  }
  return "unknown column type";
}

// COPY text format: backslash, newline, carriage return and tab are escaped; everything else is
// literal (the data is UTF-8, the connection's client_encoding).
void AppendCopyField(const Field& f, std::string* out) {
  if (f.null) {
    out->append("\\N");
    return;
  }
  for (char c : f.text) {
    switch (c) {
      case '\\':
        out->append("\\\\");
        break;
      case '\n':
        out->append("\\n");
        break;
      case '\r':
        out->append("\\r");
        break;
      case '\t':
        out->append("\\t");
        break;
      default:
        out->push_back(c);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// libpq helpers

struct ConnDeleter {
  void operator()(PGconn* c) const { PQfinish(c); }
};
using ConnPtr = std::unique_ptr<PGconn, ConnDeleter>;
struct ResultDeleter {
  void operator()(PGresult* r) const { PQclear(r); }
};
using ResultPtr = std::unique_ptr<PGresult, ResultDeleter>;

std::string ErrorField(const PGresult* res, int field) {
  const char* v = res == nullptr ? nullptr : PQresultErrorField(res, field);
  return v == nullptr ? "" : v;
}

// libpq messages span lines ("...\n\tIs the server running on that host..."); status lines and
// logs want one line.
std::string OneLine(std::string msg) {
  absl::StripTrailingAsciiWhitespace(&msg);
  for (char& c : msg) {
    if (c == '\n' || c == '\r' || c == '\t') c = ' ';
  }
  return msg;
}

std::string TrimmedConnError(const PGconn* conn) {
  return OneLine(conn == nullptr ? "out of memory" : PQerrorMessage(conn));
}

bool HasPrefix(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

// Errors after which the session is gone or unusable.
bool IsConnectionLoss(std::string_view state) {
  return HasPrefix(state, "08") || state == "57P01" || state == "57P02" || state == "57P03" ||
         state == "25P03";
}

// See the class comment for the mapping. `content` is true for the COPY into the target table,
// the only statement whose data exceptions and constraint violations are caused by the records.
absl::StatusCode ClassifySqlState(std::string_view state, bool content) {
  if (state.empty() || IsConnectionLoss(state) || HasPrefix(state, "53") ||
      HasPrefix(state, "58") || HasPrefix(state, "40") || state == "57014" || state == "55P03") {
    return absl::StatusCode::kUnavailable;
  }
  if (HasPrefix(state, "22") || HasPrefix(state, "23")) {
    // 22P04 (bad COPY file format) would be a bug in the COPY encoding here, not the records'.
    if (state == "22P04") return absl::StatusCode::kInternal;
    return content ? absl::StatusCode::kInvalidArgument : absl::StatusCode::kFailedPrecondition;
  }
  return absl::StatusCode::kFailedPrecondition;
}

// The 1-based COPY line number from an error context ("COPY t, line 3, column v: ..."), or 0.
uint64_t CopyLine(const std::string& context) {
  const size_t copy = context.find("COPY ");
  if (copy == std::string::npos) return 0;
  const size_t line = context.find(", line ", copy);
  if (line == std::string::npos) return 0;
  size_t i = line + 7;
  uint64_t n = 0;
  bool any = false;
  while (i < context.size() && context[i] >= '0' && context[i] <= '9' &&
         n < std::numeric_limits<uint64_t>::max() / 10) {
    n = n * 10 + static_cast<uint64_t>(context[i] - '0');
    any = true;
    ++i;
  }
  return any ? n : 0;
}

// Failed connections carry no SQLSTATE; recognise the server's refusals that are configuration
// problems (authentication, unknown database or role). Everything else (refused, timed out,
// starting up, too many clients) is transient.
bool IsConfigConnectFailure(PGconn* conn, const std::string& message) {
  if (conn != nullptr && PQconnectionNeedsPassword(conn)) return true;
  for (std::string_view marker : {"authentication failed", "no pg_hba.conf entry", "does not exist",
                                  "permission denied", "password"}) {
    if (message.find(marker) != std::string::npos) return true;
  }
  return false;
}

// How much longer than statement_timeout a statement may go unanswered before the connection
// is given up as hung (network latency, the server's own cancel taking effect).
constexpr std::chrono::milliseconds kHangGrace{2000};

// Client-side bound on statements, for a server that cannot enforce its own statement_timeout:
// a stopped (SIGSTOP), frozen or swapped-out server, a paused VM. Its kernel still acknowledges
// TCP, so neither TCP keepalives nor TCP_USER_TIMEOUT notice anything, and libpq's blocking
// calls (PQexec, PQgetResult) wait without a time limit: the delivery thread hung until the
// server came back, and a wharfd asked to stop hung with it. The delivery arms the watchdog
// for its connection and extends the deadline before each statement; a connection still
// armed past its deadline has its socket shut down (shutdown(2) on a dup of libpq's
// descriptor: the dup stays valid whatever libpq does with its own, so no reused descriptor
// number is ever touched), which makes libpq's wait end with a lost connection: UNAVAILABLE,
// retried by the pipeline. Exactly once is unaffected: a COMMIT whose answer is lost this way
// is resolved by the redelivery's ledger lookup, as for any lost connection.
//
// Times are steady-clock: a wall-clock step neither fires nor delays it.
//
// Thread safety: thread-safe; one thread of its own waits for the deadlines.
class HangWatchdog {
 public:
  using Clock = std::chrono::steady_clock;

  HangWatchdog() : thread_([this] { Run(); }) {}
  ~HangWatchdog() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
    for (auto& [conn, w] : armed_) ::close(w.fd);
  }
  HangWatchdog(const HangWatchdog&) = delete;
  HangWatchdog& operator=(const HangWatchdog&) = delete;

  // Starts watching `conn` (a connected PGconn): shut down unless disarmed or extended before
  // `timeout` from now. Returns false when the socket could not be duplicated (then the
  // connection is not watched; the caller goes on, bounded only by the server's timeouts).
  bool Arm(PGconn* conn, std::chrono::milliseconds timeout) {
    const int fd = ::fcntl(PQsocket(conn), F_DUPFD_CLOEXEC, 0);
    if (fd < 0) return false;
    std::lock_guard<std::mutex> lock(mu_);
    Watched& w = armed_[conn];
    if (w.fd >= 0) ::close(w.fd);
    w = Watched{fd, Clock::now() + timeout, false};
    cv_.notify_all();
    return true;
  }
  // Moves the deadline of a watched connection to `timeout` from now (no-op when not watched).
  void Extend(PGconn* conn, std::chrono::milliseconds timeout) {
    std::lock_guard<std::mutex> lock(mu_);
    const auto it = armed_.find(conn);
    if (it == armed_.end() || it->second.fired) return;
    it->second.deadline = Clock::now() + timeout;
    // A later deadline never needs the thread woken: it re-checks when the old one passes.
  }
  // Stops watching `conn`. Returns true when its deadline passed and its socket was shut down.
  bool Disarm(PGconn* conn) {
    std::lock_guard<std::mutex> lock(mu_);
    const auto it = armed_.find(conn);
    if (it == armed_.end()) return false;
    const bool fired = it->second.fired;
    ::close(it->second.fd);
    armed_.erase(it);
    return fired;
  }

 private:
  struct Watched {
    int fd = -1;  // our dup of the connection's socket
    Clock::time_point deadline;
    bool fired = false;
  };

  void Run() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!stop_) {
      const auto now = Clock::now();
      auto next = Clock::time_point::max();
      for (auto& [conn, w] : armed_) {
        if (w.fired) continue;
        if (w.deadline <= now) {
          // Ends libpq's poll() on the socket at once; the connection is then dead (libpq
          // reports it lost) and is dropped by Release().
          ::shutdown(w.fd, SHUT_RDWR);
          w.fired = true;
        } else {
          next = std::min(next, w.deadline);
        }
      }
      if (next == Clock::time_point::max()) {
        cv_.wait(lock);
      } else {
        cv_.wait_until(lock, next);
      }
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::map<PGconn*, Watched> armed_;  // guarded by mu_
  bool stop_ = false;                 // guarded by mu_
  std::thread thread_;                // last: starts after the members above exist
};

}  // namespace

// ---------------------------------------------------------------------------------------------

class PostgresDestination::Impl {
 public:
  Impl(PostgresDestinationOptions options, TableName table, TableName ledger,
       std::vector<ColumnPlan> columns)
      : options_(std::move(options)),
        table_(std::move(table)),
        ledger_(std::move(ledger)),
        columns_(std::move(columns)) {
    std::vector<std::string> quoted;
    std::vector<std::string> defs;
    for (const ColumnPlan& c : columns_) {
      quoted.push_back(QuoteIdent(c.name));
      defs.push_back(absl::StrCat(QuoteIdent(c.name), " ", Absl(TypeSql(c.type))));
    }
    copy_sql_ =
        absl::StrCat("COPY ", table_.sql, " (", absl::StrJoin(quoted, ", "), ") FROM STDIN");
    create_table_sql_ = absl::StrCat("CREATE TABLE IF NOT EXISTS ", table_.sql, " (",
                                     absl::StrJoin(defs, ", "), ")");
    create_ledger_sql_ =
        absl::StrCat("CREATE TABLE IF NOT EXISTS ", ledger_.sql,
                     " (dataset text NOT NULL, destination text NOT NULL, batch_id text NOT NULL, "
                     "first_offset bigint, last_offset bigint, record_count bigint, "
                     "committed_at timestamptz NOT NULL DEFAULT now(), "
                     "PRIMARY KEY (dataset, destination, batch_id))");
    ledger_check_sql_ = absl::StrCat("SELECT 1 FROM ", ledger_.sql,
                                     " WHERE dataset = $1 AND destination = $2 AND batch_id = $3");
    ledger_insert_sql_ =
        absl::StrCat("INSERT INTO ", ledger_.sql,
                     " (dataset, destination, batch_id, first_offset, last_offset, record_count) "
                     "VALUES ($1, $2, $3, $4, $5, $6) RETURNING txid_current()::text");
    begin_sql_ =
        absl::StrCat("BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL statement_timeout = ",
                     options_.statement_timeout.count());
  }

  absl::Status Deliver(const wharf::v1::StoredBatch& batch, DeliveryReport* report);

 private:
  // The outcome of one statement, classified.
  struct StatementError {
    absl::Status status;
    bool connection_lost = false;
  };

  // How long one statement may go unanswered before its connection is given up.
  std::chrono::milliseconds StatementBound() const {
    return options_.statement_timeout + kHangGrace;
  }

  absl::Status Prefix(absl::StatusCode code, std::string_view message) const {
    return absl::Status(code,
                        absl::StrCat("postgres destination ", options_.name, ": ", Absl(message)));
  }

  // Converts the batch into COPY text data. Returns INVALID_ARGUMENT for content problems.
  absl::Status BuildCopyData(const wharf::v1::StoredBatch& batch, std::string* data) const;
  absl::Status ConvertRecord(const wharf::v1::StoredBatch& batch, int index, Field* field,
                             std::string* data) const;

  absl::StatusOr<ConnPtr> Acquire();
  void Release(ConnPtr conn);
  absl::StatusOr<ConnPtr> Connect() const;
  absl::Status EnsureSchema(PGconn* conn);
  absl::Status CreateIfMissing(PGconn* conn, const TableName& table, const std::string& ddl);

  // Runs the delivery transaction on `conn`. `content_error` (not OK) is the conversion error
  // to return unless the ledger shows the batch as delivered.
  absl::Status Transaction(PGconn* conn, const wharf::v1::StoredBatch& batch,
                           const std::string& copy_data, const absl::Status& content_error,
                           DeliveryReport* report);
  absl::Status Copy(PGconn* conn, const wharf::v1::StoredBatch& batch, const std::string& data);

  // Status for a failed statement (res may be null). `content`: see ClassifySqlState.
  absl::Status StatementFailure(PGconn* conn, const PGresult* res, std::string_view what,
                                bool content, const wharf::v1::StoredBatch* batch = nullptr);
  // Runs a parameterless statement expecting `expected`.
  absl::StatusOr<ResultPtr> Exec(PGconn* conn, const std::string& sql, ExecStatusType expected,
                                 std::string_view what);
  absl::StatusOr<ResultPtr> ExecParams(PGconn* conn, const std::string& sql,
                                       const std::vector<std::string>& params,
                                       std::string_view what);

  const PostgresDestinationOptions options_;
  const TableName table_;
  const TableName ledger_;
  const std::vector<ColumnPlan> columns_;
  std::string copy_sql_, create_table_sql_, create_ledger_sql_, ledger_check_sql_,
      ledger_insert_sql_, begin_sql_;

  // Set once the ledger (and, with create_table, the target) is known to exist; cleared when a
  // statement reports an undefined table, so a dropped table is recreated.
  std::atomic<bool> schema_ready_{false};

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<ConnPtr> idle_;  // guarded by mu_
  size_t open_ = 0;            // guarded by mu_: idle + in use + being opened

  // Bounds every statement of a delivery on the client side (see HangWatchdog).
  HangWatchdog watchdog_;
};

absl::Status PostgresDestination::Impl::ConvertRecord(const wharf::v1::StoredBatch& batch,
                                                      int index, Field* field,
                                                      std::string* data) const {
  const wharf::v1::BatchRecord& rec = batch.records(index);
  const wharf::v1::BatchManifest& m = batch.manifest();
  const std::string& payload = rec.payload();
  rapidjson::Document doc;
  // Exact numbers (json_number.h): numeric and double columns get the value the producer sent.
  const rapidjson::ParseResult parsed = contract::ParseJsonExact(payload, &doc);
  if (parsed.IsError()) {
    return Prefix(
        absl::StatusCode::kInvalidArgument,
        absl::StrCat("record at offset ", rec.offset(), ": payload is not valid JSON: ",
                     rapidjson::GetParseError_En(parsed.Code()), " at byte ", parsed.Offset()));
  }
  for (size_t c = 0; c < columns_.size(); ++c) {
    const ColumnPlan& col = columns_[c];
    std::optional<std::string> why;
    field->null = false;
    field->text.clear();
    switch (col.kind) {
      case SourceKind::kWhole:
        // The payload is valid JSON (parsed above) and its exact text: no re-serialisation, so
        // numbers keep every digit.
        if (payload.find('\0') != std::string::npos) {
          why = "payload contains a NUL byte";
        } else {
          field->text = payload;
        }
        break;
      case SourceKind::kPointer:
        why = ConvertJson(col.pointer->Get(doc), col.type, field);
        break;
      case SourceKind::kOffset:
        if (col.type == Type::kBigint &&
            rec.offset() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
          why = "offset out of range for bigint";
        }
        field->text = absl::StrCat(rec.offset());
        break;
      case SourceKind::kPartition:
        if (col.type == Type::kInteger &&
            m.partition() > static_cast<uint32_t>(std::numeric_limits<int32_t>::max())) {
          why = "partition out of range for integer";
        }
        field->text = absl::StrCat(m.partition());
        break;
      case SourceKind::kBatchId:
        field->text = m.batch_id();
        break;
      case SourceKind::kDataset:
        field->text = m.dataset();
        break;
      case SourceKind::kKey:
        if (rec.key().empty()) {
          field->null = true;
        } else if (rec.key().find('\0') != std::string::npos || !IsValidUtf8(rec.key())) {
          why = "record key is not UTF-8 text without NUL bytes";
        } else {
          field->text = rec.key();
        }
        break;
      case SourceKind::kIngestTime:
      case SourceKind::kEventTime: {
        const bool ingest = col.kind == SourceKind::kIngestTime;
        if (ingest ? !rec.has_ingest_time() : !rec.has_event_time()) {
          field->null = true;
          break;
        }
        const absl::Time t = ProtoTime(ingest ? rec.ingest_time() : rec.event_time());
        if (col.type == Type::kTimestamptz) {
          why = FormatTimestamp(t, &field->text);
        } else {
          field->text = absl::FormatTime(absl::RFC3339_full, t, absl::UTCTimeZone());
        }
        break;
      }
    }
    if (why.has_value()) {
      return Prefix(
          absl::StatusCode::kInvalidArgument,
          absl::StrCat("record at offset ", rec.offset(), ", column \"", col.name, "\": ", *why));
    }
    if (c > 0) data->push_back('\t');
    AppendCopyField(*field, data);
  }
  data->push_back('\n');
  return absl::OkStatus();
}

absl::Status PostgresDestination::Impl::BuildCopyData(const wharf::v1::StoredBatch& batch,
                                                      std::string* data) const {
  Field field;
  for (int i = 0; i < batch.records_size(); ++i) {
    absl::Status s = ConvertRecord(batch, i, &field, data);
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::StatusOr<ConnPtr> PostgresDestination::Impl::Connect() const {
  const std::string connect_timeout =
      absl::StrCat(std::max<int64_t>(1, (options_.connect_timeout.count() + 999) / 1000));
  // Keepalives first and the conninfo after them, so the conninfo may override them; the
  // timeout, encoding and password after it, so they cannot be overridden.
  std::vector<const char*> keys = {"keepalives",       "keepalives_idle",  "keepalives_interval",
                                   "keepalives_count", "application_name", "dbname",
                                   "connect_timeout",  "client_encoding"};
  std::vector<const char*> values = {
      "1", "30", "10", "3", "wharf", options_.conninfo.c_str(), connect_timeout.c_str(), "UTF8"};
  if (!options_.password.empty()) {
    keys.push_back("password");
    values.push_back(options_.password.c_str());
  }
  keys.push_back(nullptr);
  values.push_back(nullptr);
  // Connected asynchronously against a steady-clock deadline rather than by PQconnectdbParams:
  // libpq's own connect_timeout is measured with time(NULL), the wall clock, so a backward
  // clock step while connecting to an unresponsive server (one that accepts TCP but never
  // answers, e.g. stopped) extended the wait by the size of the step.
  ConnPtr conn(PQconnectStartParams(keys.data(), values.data(), /*expand_dbname=*/1));
  if (conn != nullptr && PQstatus(conn.get()) != CONNECTION_BAD) {
    const auto deadline = std::chrono::steady_clock::now() + options_.connect_timeout;
    PostgresPollingStatusType polled = PGRES_POLLING_WRITING;  // as libpq documents for a start
    while (polled != PGRES_POLLING_OK && polled != PGRES_POLLING_FAILED) {
      const auto left =
          std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) {
        return Prefix(absl::StatusCode::kUnavailable,
                      absl::StrCat("cannot connect: no answer within ",
                                   options_.connect_timeout.count(), " ms (connect_timeout)"));
      }
      pollfd pfd{};
      pfd.fd = PQsocket(conn.get());  // may change between calls (several hosts)
      pfd.events = polled == PGRES_POLLING_READING ? POLLIN : POLLOUT;
      const int ready = ::poll(&pfd, 1, static_cast<int>(std::min<int64_t>(left.count(), 1000)));
      if (ready < 0 && errno != EINTR) {
        return Prefix(absl::StatusCode::kUnavailable,
                      absl::StrCat("cannot connect: poll: ", std::strerror(errno)));
      }
      if (ready <= 0) continue;
      polled = PQconnectPoll(conn.get());
    }
  }
  if (conn == nullptr || PQstatus(conn.get()) != CONNECTION_OK) {
    // libpq's messages never contain the password.
    const std::string message = TrimmedConnError(conn.get());
    const absl::StatusCode code = IsConfigConnectFailure(conn.get(), message)
                                      ? absl::StatusCode::kFailedPrecondition
                                      : absl::StatusCode::kUnavailable;
    return Prefix(code, absl::StrCat("cannot connect: ", message));
  }
  // libpq prints notices and errors that arrive outside a query (e.g. "terminating connection"
  // on an idle pooled connection) to stderr by default. They are not actionable here: failures
  // reach the pipeline as statuses, and a dead connection is detected and dropped on reuse.
  PQsetNoticeReceiver(
      conn.get(), [](void*, const PGresult*) {}, nullptr);
  return conn;
}

absl::StatusOr<ConnPtr> PostgresDestination::Impl::Acquire() {
  const auto wait_bound =
      options_.connect_timeout + options_.statement_timeout * kStatementsPerDelivery;
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    while (!idle_.empty()) {
      ConnPtr conn = std::move(idle_.back());
      idle_.pop_back();
      // An idle connection whose server went away (restart, kill) has its EOF or a FATAL
      // message pending: reading it marks the connection bad, so it is dropped here instead of
      // failing the delivery.
      if (PQconsumeInput(conn.get()) == 1 && PQstatus(conn.get()) == CONNECTION_OK) return conn;
      --open_;
    }
    if (open_ < options_.max_connections) {
      ++open_;
      lock.unlock();
      absl::StatusOr<ConnPtr> conn = Connect();
      if (!conn.ok()) {
        lock.lock();
        --open_;
        cv_.notify_one();
      }
      return conn;
    }
    if (cv_.wait_for(lock, wait_bound) == std::cv_status::timeout && idle_.empty() &&
        open_ >= options_.max_connections) {
      return Prefix(absl::StatusCode::kUnavailable,
                    absl::StrCat("all ", options_.max_connections, " connections stayed busy"));
    }
  }
}

void PostgresDestination::Impl::Release(ConnPtr conn) {
  // Only a healthy connection outside any transaction goes back; anything else is closed.
  const bool reusable =
      PQstatus(conn.get()) == CONNECTION_OK && PQtransactionStatus(conn.get()) == PQTRANS_IDLE;
  if (!reusable) conn.reset();
  std::lock_guard<std::mutex> lock(mu_);
  if (reusable) {
    idle_.push_back(std::move(conn));
  } else {
    --open_;
    // The server probably went away: the other idle connections are likely dead too.
    for (ConnPtr& c : idle_) {
      if (PQconsumeInput(c.get()) != 1 || PQstatus(c.get()) != CONNECTION_OK) {
        c.reset();
        --open_;
      }
    }
    idle_.erase(std::remove(idle_.begin(), idle_.end(), nullptr), idle_.end());
  }
  cv_.notify_one();
}

absl::Status PostgresDestination::Impl::StatementFailure(PGconn* conn, const PGresult* res,
                                                         std::string_view what, bool content,
                                                         const wharf::v1::StoredBatch* batch) {
  const std::string state = ErrorField(res, PG_DIAG_SQLSTATE);
  std::string primary = ErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
  if (primary.empty()) primary = TrimmedConnError(conn);
  std::string detail = OneLine(ErrorField(res, PG_DIAG_MESSAGE_DETAIL));
  // "Failing row contains (...)" repeats the record's values: they must not reach logs, status
  // or quarantine messages (the quarantine entry holds the record itself).
  if (HasPrefix(detail, "Failing row contains")) detail.clear();
  primary = OneLine(std::move(primary));
  if (state == "42P01") schema_ready_.store(false);
  absl::StatusCode code = ClassifySqlState(state, content);
  if (PQstatus(conn) != CONNECTION_OK) code = absl::StatusCode::kUnavailable;
  std::string message = absl::StrCat(Absl(what), ": ", primary);
  if (!detail.empty()) absl::StrAppend(&message, " (", detail, ")");
  if (batch != nullptr) {
    const uint64_t line = CopyLine(ErrorField(res, PG_DIAG_CONTEXT));
    if (line >= 1 && line <= static_cast<uint64_t>(batch->records_size())) {
      absl::StrAppend(&message, "; record at offset ",
                      batch->records(static_cast<int>(line - 1)).offset());
    }
  }
  if (!state.empty()) absl::StrAppend(&message, " [SQLSTATE ", state, "]");
  return Prefix(code, message);
}

absl::StatusOr<ResultPtr> PostgresDestination::Impl::Exec(PGconn* conn, const std::string& sql,
                                                          ExecStatusType expected,
                                                          std::string_view what) {
  watchdog_.Extend(conn, StatementBound());
  ResultPtr res(PQexec(conn, sql.c_str()));
  if (res == nullptr || PQresultStatus(res.get()) != expected) {
    return StatementFailure(conn, res.get(), what, /*content=*/false);
  }
  return res;
}

absl::StatusOr<ResultPtr> PostgresDestination::Impl::ExecParams(
    PGconn* conn, const std::string& sql, const std::vector<std::string>& params,
    std::string_view what) {
  std::vector<const char*> values;
  for (const std::string& p : params) values.push_back(p.c_str());
  watchdog_.Extend(conn, StatementBound());
  ResultPtr res(PQexecParams(conn, sql.c_str(), static_cast<int>(values.size()), nullptr,
                             values.data(), nullptr, nullptr, /*resultFormat=*/0));
  const ExecStatusType st = res == nullptr ? PGRES_FATAL_ERROR : PQresultStatus(res.get());
  if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
    return StatementFailure(conn, res.get(), what, /*content=*/false);
  }
  return res;
}

absl::Status PostgresDestination::Impl::CreateIfMissing(PGconn* conn, const TableName& table,
                                                        const std::string& ddl) {
  // Checking first means a role without CREATE privilege can use existing tables. Concurrent
  // creation (another wharfd, another thread) can make CREATE TABLE IF NOT EXISTS fail with a
  // unique violation on the catalog (23505), "relation already exists" (42P07) or "type already
  // exists" (42710, the table's row type): then the table exists, check again.
  for (int attempt = 0; attempt < 3; ++attempt) {
    absl::StatusOr<ResultPtr> exists =
        ExecParams(conn, "SELECT to_regclass($1) IS NOT NULL", {table.sql}, "checking for a table");
    if (!exists.ok()) return exists.status();
    if (PQntuples(exists->get()) == 1 && std::string(PQgetvalue(exists->get(), 0, 0)) == "t") {
      return absl::OkStatus();
    }
    watchdog_.Extend(conn, StatementBound());
    ResultPtr res(PQexec(conn, ddl.c_str()));
    if (res != nullptr && PQresultStatus(res.get()) == PGRES_COMMAND_OK) return absl::OkStatus();
    const std::string state = ErrorField(res.get(), PG_DIAG_SQLSTATE);
    if (state != "23505" && state != "42P07" && state != "42710") {
      return StatementFailure(conn, res.get(), absl::StrCat("creating table ", table.sql),
                              /*content=*/false);
    }
  }
  return Prefix(absl::StatusCode::kUnavailable,
                absl::StrCat("creating table ", table.sql, " kept conflicting"));
}

absl::Status PostgresDestination::Impl::EnsureSchema(PGconn* conn) {
  if (schema_ready_.load()) return absl::OkStatus();
  if (options_.create_table) {
    absl::Status s = CreateIfMissing(conn, table_, create_table_sql_);
    if (!s.ok()) return s;
  }
  absl::Status s = CreateIfMissing(conn, ledger_, create_ledger_sql_);
  if (!s.ok()) return s;
  schema_ready_.store(true);
  return absl::OkStatus();
}

absl::Status PostgresDestination::Impl::Copy(PGconn* conn, const wharf::v1::StoredBatch& batch,
                                             const std::string& data) {
  {
    watchdog_.Extend(conn, StatementBound());
    ResultPtr res(PQexec(conn, copy_sql_.c_str()));
    if (res == nullptr || PQresultStatus(res.get()) != PGRES_COPY_IN) {
      return StatementFailure(conn, res.get(), "COPY", /*content=*/true, &batch);
    }
  }
  bool send_failed = false;
  for (size_t pos = 0; pos < data.size() && !send_failed; pos += kCopyChunkBytes) {
    const size_t n = std::min(kCopyChunkBytes, data.size() - pos);
    send_failed = PQputCopyData(conn, data.data() + pos, static_cast<int>(n)) != 1;
  }
  if (!send_failed) send_failed = PQputCopyEnd(conn, nullptr) != 1;
  // The server's answer to the whole COPY: a statement_timeout from now, as for a statement.
  watchdog_.Extend(conn, StatementBound());
  // The COPY's result (an error the server raised mid-stream shows here), then the end marker.
  absl::Status status = absl::OkStatus();
  bool first = true;
  while (true) {
    ResultPtr res(PQgetResult(conn));
    if (res == nullptr) break;
    if (first && PQresultStatus(res.get()) != PGRES_COMMAND_OK) {
      status = StatementFailure(conn, res.get(), "COPY", /*content=*/true, &batch);
    }
    first = false;
    if (PQstatus(conn) != CONNECTION_OK) break;
  }
  if (status.ok() && (send_failed || first)) {
    return StatementFailure(conn, nullptr, "COPY", /*content=*/true, &batch);
  }
  return status;
}

absl::Status PostgresDestination::Impl::Transaction(PGconn* conn,
                                                    const wharf::v1::StoredBatch& batch,
                                                    const std::string& copy_data,
                                                    const absl::Status& content_error,
                                                    DeliveryReport* report) {
  const wharf::v1::BatchManifest& m = batch.manifest();
  absl::StatusOr<ResultPtr> begin = Exec(conn, begin_sql_, PGRES_COMMAND_OK, "BEGIN");
  if (!begin.ok()) return begin.status();

  absl::StatusOr<ResultPtr> found = ExecParams(
      conn, ledger_check_sql_, {m.dataset(), options_.name, m.batch_id()}, "ledger lookup");
  if (!found.ok()) return found.status();
  if (PQntuples(found->get()) > 0) {
    report->already_delivered = true;
    return Exec(conn, "ROLLBACK", PGRES_COMMAND_OK, "ROLLBACK").status();
  }
  if (!content_error.ok()) return content_error;

  if (batch.records_size() > 0) {
    absl::Status copied = Copy(conn, batch, copy_data);
    if (!copied.ok()) return copied;
  }

  const std::vector<std::string> ledger_row = {m.dataset(),
                                               options_.name,
                                               m.batch_id(),
                                               absl::StrCat(m.first_offset()),
                                               absl::StrCat(m.last_offset()),
                                               absl::StrCat(batch.records_size())};
  std::vector<const char*> values;
  for (const std::string& p : ledger_row) values.push_back(p.c_str());
  watchdog_.Extend(conn, StatementBound());
  ResultPtr inserted(PQexecParams(conn, ledger_insert_sql_.c_str(), static_cast<int>(values.size()),
                                  nullptr, values.data(), nullptr, nullptr, 0));
  if (inserted == nullptr || PQresultStatus(inserted.get()) != PGRES_TUPLES_OK ||
      PQntuples(inserted.get()) != 1) {
    if (ErrorField(inserted.get(), PG_DIAG_SQLSTATE) == "23505") {
      // A concurrent delivery of the same batch committed its ledger row first (this INSERT
      // waited for it on the primary key): its rows are in, ours are rolled back.
      report->already_delivered = true;
      return Exec(conn, "ROLLBACK", PGRES_COMMAND_OK, "ROLLBACK").status();
    }
    return StatementFailure(conn, inserted.get(), "ledger insert", /*content=*/false);
  }
  const std::string txid = PQgetvalue(inserted.get(), 0, 0);

  // Durability: PostgreSQL makes the COMMIT durable (WAL flushed, with the server's fsync and
  // synchronous_commit settings) before acknowledging it. If the acknowledgement is lost, the
  // outcome is unknown to us: UNAVAILABLE, and the redelivery's ledger lookup resolves it.
  absl::StatusOr<ResultPtr> commit = Exec(conn, "COMMIT", PGRES_COMMAND_OK, "COMMIT");
  if (!commit.ok()) return commit.status();
  if (std::string_view(PQcmdStatus(commit->get())) != "COMMIT") {
    return Prefix(absl::StatusCode::kInternal,
                  absl::StrCat("COMMIT answered ", PQcmdStatus(commit->get())));
  }
  // Test crash point: the batch is committed, the pipeline's cursor has not moved.
  storage::MaybeCrashAt("postgres_after_commit");
  report->commit_id = txid;
  return absl::OkStatus();
}

absl::Status PostgresDestination::Impl::Deliver(const wharf::v1::StoredBatch& batch,
                                                DeliveryReport* report) {
  const wharf::v1::BatchManifest& m = batch.manifest();
  if (m.dataset().empty() || m.batch_id().empty()) {
    return Prefix(absl::StatusCode::kInternal, "batch without dataset or batch id");
  }
  // Convert before taking a connection: no transaction stays open while records are parsed.
  std::string copy_data;
  const absl::Status content_error = BuildCopyData(batch, &copy_data);
  if (!content_error.ok()) copy_data.clear();

  absl::StatusOr<ConnPtr> conn = Acquire();
  if (!conn.ok()) return conn.status();
  // Not watched if the descriptor cannot be duplicated (out of descriptors): the server-side
  // statement_timeout still bounds a responsive server.
  (void)watchdog_.Arm(conn->get(), StatementBound());
  absl::Status status = EnsureSchema(conn->get());
  if (status.ok()) {
    // Even with a conversion error the ledger is consulted first: a batch delivered before a
    // configuration change must be reported delivered, not quarantined.
    status = Transaction(conn->get(), batch, copy_data, content_error, report);
  }
  if (PQstatus(conn->get()) == CONNECTION_OK && PQtransactionStatus(conn->get()) != PQTRANS_IDLE) {
    watchdog_.Extend(conn->get(), StatementBound());
    ResultPtr res(PQexec(conn->get(), "ROLLBACK"));
  }
  if (watchdog_.Disarm(conn->get()) && !status.ok()) {
    // The connection was shut down under a hung statement; libpq's own message ("server closed
    // the connection unexpectedly") would hide why. Whether a COMMIT in flight took effect is
    // unknown: the redelivery's ledger lookup decides. (Fired just after the last answer
    // arrived: the delivery stands; the dead connection is dropped at its next use.)
    status = Prefix(absl::StatusCode::kUnavailable,
                    absl::StrCat("no answer from the server within ", StatementBound().count(),
                                 " ms (statement_timeout + ", kHangGrace.count(),
                                 " ms); connection given up (server stopped or unreachable?)"));
  }
  Release(*std::move(conn));
  return status;
}

// ---------------------------------------------------------------------------------------------

PostgresDestination::PostgresDestination(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

PostgresDestination::~PostgresDestination() = default;

absl::Status PostgresDestination::Deliver(const wharf::v1::StoredBatch& batch,
                                          DeliveryReport* report) {
  return impl_->Deliver(batch, report);
}

absl::StatusOr<std::unique_ptr<PostgresDestination>> PostgresDestination::Create(
    PostgresDestinationOptions options) {
  if (options.name.empty()) {
    return absl::InvalidArgumentError("postgres destination: name is empty");
  }
  auto invalid = [&](absl::string_view message) {
    return absl::InvalidArgumentError(
        absl::StrCat("postgres destination ", options.name, ": ", message));
  };
  if (options.max_connections < 1) return invalid("max_connections must be at least 1");
  if (options.connect_timeout.count() <= 0) return invalid("connect_timeout must be positive");
  if (options.statement_timeout.count() <= 0) {
    return invalid("statement_timeout must be positive");
  }

  char* parse_error = nullptr;
  PQconninfoOption* conninfo = PQconninfoParse(options.conninfo.c_str(), &parse_error);
  if (conninfo == nullptr) {
    std::string message = parse_error == nullptr ? "out of memory" : parse_error;
    PQfreemem(parse_error);
    absl::StripTrailingAsciiWhitespace(&message);
    return invalid(absl::StrCat("invalid conninfo: ", message));
  }
  bool has_password = false;
  for (PQconninfoOption* o = conninfo; o->keyword != nullptr; ++o) {
    if (std::string_view(o->keyword) == "password" && o->val != nullptr && o->val[0] != '\0') {
      has_password = true;
    }
  }
  PQconninfoFree(conninfo);
  if (has_password) {
    return invalid("conninfo must not contain a password; use the password option");
  }

  absl::StatusOr<TableName> table = ParseTableName(options.table, "table");
  if (!table.ok()) return invalid(table.status().message());
  absl::StatusOr<TableName> ledger = ParseTableName(options.ledger_table, "ledger_table");
  if (!ledger.ok()) return invalid(ledger.status().message());
  if (*table == *ledger) return invalid("table and ledger_table are the same table");

  if (options.columns.empty()) {
    options.columns.push_back(PostgresColumn{"record", "", Type::kJsonb});
  }
  std::vector<ColumnPlan> plans;
  std::set<std::string> names;
  for (const PostgresColumn& column : options.columns) {
    absl::Status valid = CheckIdentifier(column.name, "column name");
    if (!valid.ok()) return invalid(valid.message());
    if (!names.insert(column.name).second) {
      return invalid(absl::StrCat("duplicate column \"", column.name, "\""));
    }
    ColumnPlan plan;
    plan.name = column.name;
    plan.type = column.type;
    const std::string where = absl::StrCat("column \"", column.name, "\": ");
    if (column.source.empty()) {
      plan.kind = SourceKind::kWhole;
      if (column.type != Type::kJsonb && column.type != Type::kText) {
        return invalid(absl::StrCat(where, "the whole record needs type jsonb or text"));
      }
    } else if (column.source.front() == '/') {
      plan.kind = SourceKind::kPointer;
      plan.pointer.emplace(column.source.c_str(), column.source.size());
      if (!plan.pointer->IsValid()) {
        return invalid(absl::StrCat(where, "invalid JSON pointer \"", column.source, "\""));
      }
    } else if (column.source.front() == '$') {
      const MetadataSource* found = nullptr;
      for (const MetadataSource& m : MetadataSources()) {
        if (m.name == column.source) found = &m;
      }
      if (found == nullptr) {
        return invalid(absl::StrCat(where, "unknown metadata source \"", column.source, "\""));
      }
      if (std::find(found->types.begin(), found->types.end(), column.type) == found->types.end()) {
        return invalid(absl::StrCat(where, column.source, " cannot be stored as ",
                                    Absl(TypeSql(column.type))));
      }
      plan.kind = found->kind;
    } else {
      return invalid(absl::StrCat(where, "source must be \"\", a JSON pointer (\"/a/b\") or a ",
                                  "metadata source (\"$offset\", ...), got \"", column.source,
                                  "\""));
    }
    plans.push_back(std::move(plan));
  }

  auto impl = std::make_unique<Impl>(std::move(options), *std::move(table), *std::move(ledger),
                                     std::move(plans));
  return std::unique_ptr<PostgresDestination>(new PostgresDestination(std::move(impl)));
}

}  // namespace wharf::pipeline
