// wharfctl: the Wharf command line client.
//
//   wharfctl [--server HOST:PORT] [-o table|json] produce --dataset D [--file PATH] ...
//   wharfctl status [--dataset D]...
//   wharfctl destination pause|resume DATASET DESTINATION
//   wharfctl quarantine list DATASET [--reason R] [--since T] [--until T] [--limit N]
//                                    [--page-token TOKEN]
//   wharfctl quarantine show DATASET TOKEN
//   wharfctl quarantine replay DATASET [TOKEN...] [--all] [--reason R] [--dry-run]
//   wharfctl quarantine discard DATASET [TOKEN...] [--all] [--reason R] --yes
//   wharfctl apply -f DATASET.yaml            (apply the spec's contract; "-": stdin)
//   wharfctl schema check -f DATASET.yaml     (dry run of apply)
//   wharfctl get contract DATASET [--version N] [--history]

#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/time_util.h>
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "client/channel.h"
#include "client/control_client.h"
#include "client/producer.h"

namespace wharf::client {
namespace {

using Clock = std::chrono::steady_clock;

struct GlobalOptions {
  std::string server = "127.0.0.1:7400";
  std::string output = "table";
  double timeout_s = 10;

  bool json() const { return output == "json"; }
  std::chrono::milliseconds timeout() const {
    return std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
  }
};

struct ProduceOptions {
  std::string dataset;
  std::string file;
  size_t batch_size = 500;
  size_t max_batch_bytes = 3 << 20;
  size_t max_inflight = 8;
  std::string producer_id;
  uint64_t first_sequence = 0;
  std::string key_field;
  size_t max_record_bytes = 1 << 20;
  double retry_timeout_s = 60;
};

struct StatusOptions {
  std::vector<std::string> datasets;
};

struct QuarantineOptions {
  std::string dataset;
  uint32_t limit = 100;
  std::string reason;  // a QuarantineReason name, any case; empty: any
  std::string since;   // RFC 3339; empty: none
  std::string until;
  std::string page_token;
  std::string token;                // show
  std::vector<std::string> tokens;  // replay, discard
  bool all = false;
  bool dry_run = false;
  bool yes = false;
};

struct DestinationOptions {
  std::string dataset;
  std::string destination;
};

struct ContractOptions {
  std::string file;                        // apply, schema check: the dataset spec; "-": stdin
  std::string dataset;                     // get contract
  std::optional<uint32_t> schema_version;  // get contract --version
  bool history = false;                    // get contract --history
};

// Serializes writes to stderr between the progress line, error messages and the summary.
std::mutex stderr_mu;

void PrintError(const std::string& message) {
  std::lock_guard<std::mutex> lock(stderr_mu);
  std::cerr << "wharfctl: " << message << "\n";
}

// An RPC failure, worded for a person.
std::string DescribeRpcError(const GlobalOptions& global, const absl::Status& status) {
  if (status.code() == absl::StatusCode::kUnavailable ||
      status.code() == absl::StatusCode::kDeadlineExceeded) {
    return absl::StrCat("cannot reach ", global.server, ": ", status.message());
  }
  return absl::StatusCodeToString(status.code()) + ": " + std::string(status.message());
}

std::string HumanBytes(uint64_t bytes) {
  static const char* const kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double value = static_cast<double>(bytes);
  size_t unit = 0;
  while (value >= 1024 && unit + 1 < std::size(kUnits)) {
    value /= 1024;
    ++unit;
  }
  char buffer[32];
  if (unit == 0) {
    std::snprintf(buffer, sizeof(buffer), "%llu B", static_cast<unsigned long long>(bytes));
  } else {
    std::snprintf(buffer, sizeof(buffer), "%.1f %s", value, kUnits[unit]);
  }
  return buffer;
}

std::string HumanDuration(int64_t ms) {
  char buffer[32];
  if (ms < 1000) {
    std::snprintf(buffer, sizeof(buffer), "%lldms", static_cast<long long>(ms));
  } else if (ms < 60'000) {
    std::snprintf(buffer, sizeof(buffer), "%.1fs", static_cast<double>(ms) / 1000);
  } else if (ms < 3'600'000) {
    std::snprintf(buffer, sizeof(buffer), "%lldm%02llds", static_cast<long long>(ms / 60'000),
                  static_cast<long long>(ms / 1000 % 60));
  } else if (ms < 86'400'000) {
    std::snprintf(buffer, sizeof(buffer), "%lldh%02lldm", static_cast<long long>(ms / 3'600'000),
                  static_cast<long long>(ms / 60'000 % 60));
  } else {
    std::snprintf(buffer, sizeof(buffer), "%lldd%02lldh", static_cast<long long>(ms / 86'400'000),
                  static_cast<long long>(ms / 3'600'000 % 24));
  }
  return buffer;
}

std::string FormatDouble(double value, int precision) {
  char buffer[64];
  std::snprintf(buffer, sizeof(buffer), "%.*f", precision, value);
  return buffer;
}

// Cuts `text` to `width` characters (on a UTF-8 boundary) and keeps it on one line.
std::string Truncate(const std::string& text, size_t width) {
  std::string line = text;
  std::replace(line.begin(), line.end(), '\n', ' ');
  std::replace(line.begin(), line.end(), '\t', ' ');
  if (line.size() <= width) return line;
  size_t cut = width > 3 ? width - 3 : 0;
  while (cut > 0 && (static_cast<unsigned char>(line[cut]) & 0xC0) == 0x80) --cut;
  return line.substr(0, cut) + "...";
}

// A plain text table: columns padded to their widest cell.
class Table {
 public:
  explicit Table(std::vector<std::string> header) { rows_.push_back(std::move(header)); }
  void Add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  void Print(std::ostream& out) const {
    std::vector<size_t> widths;
    for (const auto& row : rows_) {
      if (widths.size() < row.size()) widths.resize(row.size(), 0);
      for (size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
    }
    for (const auto& row : rows_) {
      std::string line;
      for (size_t i = 0; i < row.size(); ++i) {
        line += row[i];
        if (i + 1 < row.size()) line += std::string(widths[i] - row[i].size() + 2, ' ');
      }
      out << line << "\n";
    }
  }

 private:
  std::vector<std::vector<std::string>> rows_;
};

// Writes one flat JSON object, a member per Add(), compactly.
class FlatJsonWriter {
 public:
  FlatJsonWriter() : writer_(buffer_) { writer_.StartObject(); }
  void Add(const char* key, const std::string& value) {
    writer_.Key(key);
    writer_.String(value.c_str());
  }
  void Add(const char* key, uint64_t value) {
    writer_.Key(key);
    writer_.Uint64(value);
  }
  void Add(const char* key, double value) {
    writer_.Key(key);
    writer_.Double(value);
  }
  // The object's text. Call once, after the last Add().
  std::string Finish() {
    writer_.EndObject();
    return std::string(buffer_.GetString(), buffer_.GetSize());
  }

 private:
  rapidjson::StringBuffer buffer_;
  rapidjson::Writer<rapidjson::StringBuffer> writer_;
};

// Prints `message` as JSON on stdout. Returns the exit code.
int PrintJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.always_print_primitive_fields = true;
  options.add_whitespace = true;
  std::string json;
  const auto status = google::protobuf::util::MessageToJsonString(message, &json, options);
  if (!status.ok()) {
    PrintError(std::string(status.message()));
    return 1;
  }
  std::cout << json << "\n";
  return 0;
}

// ---------------------------------------------------------------------------------------------
// produce

// The key of a JSON Lines record: the top-level field `field` as text. Strings are taken as they
// are, numbers as written in the line; other values as compact JSON. Empty when the line is not
// a JSON object or has no such field.
std::string ExtractKey(const std::string& line, const std::string& field) {
  rapidjson::Document document;
  document.Parse<rapidjson::kParseNumbersAsStringsFlag>(line.data(), line.size());
  if (document.HasParseError() || !document.IsObject()) return "";
  const rapidjson::Value name(rapidjson::StringRef(field.data(), field.size()));
  const auto member = document.FindMember(name);
  if (member == document.MemberEnd()) return "";
  const rapidjson::Value& value = member->value;
  if (value.IsString()) return std::string(value.GetString(), value.GetStringLength());
  if (value.IsNull()) return "";
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
  value.Accept(writer);
  return std::string(buffer.GetString(), buffer.GetSize());
}

bool IsBlank(const std::string& line) {
  return std::all_of(line.begin(), line.end(),
                     [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\f'; });
}

// Counters shared between the reading loop, producer callbacks and the progress line.
struct ProduceCounters {
  std::atomic<uint64_t> records_sent{0};
  std::atomic<uint64_t> bytes_sent{0};
  std::atomic<uint64_t> records_acked{0};
  std::atomic<uint64_t> bytes_acked{0};
  std::atomic<uint64_t> records_failed{0};
  std::atomic<uint64_t> duplicates{0};
  std::atomic<int> errors_printed{0};
};

constexpr int kMaxPrintedErrors = 20;

// Counts `records` records as failed and prints `message` (the first kMaxPrintedErrors only).
void ReportFailure(ProduceCounters& counters, uint64_t records, const std::string& message) {
  counters.records_failed += records;
  const int printed = counters.errors_printed.fetch_add(1);
  if (printed < kMaxPrintedErrors) {
    PrintError(message);
  } else if (printed == kMaxPrintedErrors) {
    PrintError("more failures; not printing them");
  }
}

// Redraws a progress line on stderr twice a second until stopped.
class ProgressLine {
 public:
  ProgressLine(const ProduceCounters& counters, Clock::time_point start)
      : counters_(counters), start_(start), thread_([this] { Run(); }) {}
  ~ProgressLine() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
    std::lock_guard<std::mutex> lock(stderr_mu);
    std::cerr << "\r\033[K" << std::flush;
  }

 private:
  void Run() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!cv_.wait_for(lock, std::chrono::milliseconds(500), [this] { return stop_; })) {
      const double seconds = std::chrono::duration<double>(Clock::now() - start_).count();
      const uint64_t acked = counters_.records_acked.load();
      std::string line =
          absl::StrCat("\r\033[K", acked, " records acked (", HumanBytes(counters_.bytes_acked),
                       "), ", FormatDouble(seconds > 0 ? acked / seconds : 0, 0), " records/s");
      if (const uint64_t failed = counters_.records_failed.load(); failed > 0) {
        absl::StrAppend(&line, ", ", failed, " failed");
      }
      std::lock_guard<std::mutex> err_lock(stderr_mu);
      std::cerr << line << std::flush;
    }
  }

  const ProduceCounters& counters_;
  const Clock::time_point start_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

int RunProduce(const GlobalOptions& global, const ProduceOptions& options) {
  std::ifstream file;
  std::istream* input = &std::cin;
  std::string input_name = "stdin";
  if (!options.file.empty() && options.file != "-") {
    file.open(options.file, std::ios::binary);
    if (!file) {
      PrintError(absl::StrCat("cannot open ", options.file));
      return 1;
    }
    input = &file;
    input_name = options.file;
  }

  std::shared_ptr<grpc::Channel> channel = CreateChannel(global.server);
  if (!channel->WaitForConnected(std::chrono::system_clock::now() + global.timeout())) {
    PrintError(absl::StrCat("cannot reach ", global.server, ": no connection within ",
                            FormatDouble(global.timeout_s, 0), " s"));
    return 1;
  }
  ProducerOptions producer_options;
  producer_options.dataset = options.dataset;
  producer_options.producer_id = options.producer_id;
  producer_options.first_sequence = options.first_sequence;
  producer_options.max_inflight_requests = options.max_inflight;
  // A single record may be as large as --max-record-bytes; batches otherwise stay below
  // --max-batch-bytes.
  producer_options.max_request_bytes =
      std::max<size_t>(producer_options.max_request_bytes, options.max_record_bytes + (64 << 10));
  producer_options.retry_timeout =
      std::chrono::milliseconds(static_cast<int64_t>(options.retry_timeout_s * 1000));
  absl::StatusOr<std::unique_ptr<Producer>> created =
      Producer::Create(channel, std::move(producer_options));
  if (!created.ok()) {
    PrintError(std::string(created.status().message()));
    return 1;
  }
  Producer& producer = **created;

  ProduceCounters counters;
  const Clock::time_point start = Clock::now();
  std::unique_ptr<ProgressLine> progress;
  if (isatty(STDERR_FILENO)) progress = std::make_unique<ProgressLine>(counters, start);

  std::vector<wharf::v1::Record> batch;
  size_t batch_bytes = 0;
  uint64_t batch_first_line = 0;
  uint64_t batch_last_line = 0;
  absl::Status fatal;

  auto send_batch = [&]() {
    if (batch.empty()) return;
    const size_t records = batch.size();
    const size_t bytes = batch_bytes;
    const std::string lines = absl::StrCat(input_name, ": lines ", batch_first_line, "-",
                                           batch_last_line, " (", records, " records)");
    counters.records_sent += records;
    counters.bytes_sent += bytes;
    absl::Status status = producer.Send(std::move(batch), [&counters, records, bytes,
                                                           lines](const SendResult& result) {
      if (result.status.ok()) {
        counters.records_acked += records;
        counters.bytes_acked += bytes;
        if (result.duplicate) ++counters.duplicates;
        return;
      }
      ReportFailure(counters, records, absl::StrCat(lines, " failed: ", result.status.ToString()));
    });
    batch.clear();
    batch_bytes = 0;
    if (status.code() == absl::StatusCode::kInvalidArgument) {
      // This request alone was refused (too large); the producer goes on.
      ReportFailure(counters, records, absl::StrCat(lines, " refused: ", status.message()));
    } else if (!status.ok()) {
      counters.records_failed += records;
      fatal = status;
    }
  };

  std::string line;
  uint64_t line_no = 0;
  while (fatal.ok() && std::getline(*input, line)) {
    ++line_no;
    if (IsBlank(line)) continue;
    if (line.size() > options.max_record_bytes) {
      ReportFailure(counters, 1,
                    absl::StrCat(input_name, ": line ", line_no, ": record of ", line.size(),
                                 " bytes exceeds --max-record-bytes ", options.max_record_bytes));
      continue;
    }
    if (!batch.empty() && (batch.size() >= options.batch_size ||
                           batch_bytes + line.size() > options.max_batch_bytes)) {
      send_batch();
      if (!fatal.ok()) break;
    }
    wharf::v1::Record record;
    if (!options.key_field.empty()) record.set_key(ExtractKey(line, options.key_field));
    batch_bytes += line.size();
    record.set_payload(std::move(line));
    if (batch.empty()) batch_first_line = line_no;
    batch_last_line = line_no;
    batch.push_back(std::move(record));
    line.clear();
  }
  if (fatal.ok() && input->bad()) {
    fatal = absl::DataLossError(absl::StrCat("error reading ", input_name));
  }
  if (fatal.ok()) send_batch();
  if (!fatal.ok()) {
    PrintError(absl::StrCat("stopped after line ", line_no, ": ", fatal.ToString()));
  }
  // Retries end at the producer's retry timeout (or never, with --retry-timeout 0).
  absl::Status flushed = producer.Flush(std::chrono::hours(24 * 365));
  producer.Close();
  progress.reset();
  if (!flushed.ok()) PrintError(flushed.ToString());

  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  const uint64_t acked = counters.records_acked;
  const uint64_t failed = counters.records_failed;
  const double rate = seconds > 0 ? acked / seconds : 0;
  const ProducerStats stats = producer.stats();
  if (global.json()) {
    FlatJsonWriter json;
    json.Add("dataset", options.dataset);
    json.Add("records_sent", counters.records_sent.load());
    json.Add("records_acked", acked);
    json.Add("records_failed", failed);
    json.Add("bytes_sent", counters.bytes_sent.load());
    json.Add("bytes_acked", counters.bytes_acked.load());
    json.Add("duration_s", seconds);
    json.Add("records_per_s", rate);
    json.Add("duplicate_requests", counters.duplicates.load());
    json.Add("retries", stats.retries);
    json.Add("reconnects", stats.reconnects);
    json.Add("producer_id", producer.producer_id());
    json.Add("next_sequence", producer.next_sequence());
    std::cout << json.Finish() << "\n";
  } else {
    Table table({"records sent", absl::StrCat(counters.records_sent.load())});
    table.Add({"records acked", absl::StrCat(acked)});
    table.Add({"records failed", absl::StrCat(failed)});
    table.Add(
        {"bytes", absl::StrCat(counters.bytes_acked.load(), " (", HumanBytes(counters.bytes_acked),
                               ") acked of ", counters.bytes_sent.load(), " sent")});
    table.Add({"duration", FormatDouble(seconds, 2) + " s"});
    table.Add({"rate", FormatDouble(rate, 0) + " records/s"});
    if (stats.retries > 0 || stats.reconnects > 0 || counters.duplicates > 0) {
      table.Add({"retries", absl::StrCat(stats.retries, " (", stats.reconnects, " reconnects, ",
                                         counters.duplicates.load(), " duplicate answers)")});
    }
    table.Add({"producer id", producer.producer_id()});
    table.Add({"next sequence", absl::StrCat(producer.next_sequence())});
    table.Print(std::cout);
  }
  return failed == 0 && fatal.ok() ? 0 : 1;
}

// ---------------------------------------------------------------------------------------------
// status

std::string StateName(wharf::v1::DestinationState state) {
  switch (state) {
    case wharf::v1::HEALTHY:
      return "HEALTHY";
    case wharf::v1::RETRYING:
      return "RETRYING";
    case wharf::v1::DOWN:
      return "DOWN";
    case wharf::v1::PAUSED:
      return "PAUSED";
    case wharf::v1::OPEN:
      return "OPEN";
    default:
      return "UNKNOWN";
  }
}

// When the next delivery attempt (or probe) is due, relative to now; "-" when none is scheduled.
std::string NextAttempt(const wharf::v1::DestinationStatus& dest) {
  if (!dest.has_next_attempt_time() || dest.next_attempt_time().seconds() <= 0) return "-";
  const int64_t at_ms =
      google::protobuf::util::TimeUtil::TimestampToMilliseconds(dest.next_attempt_time());
  const int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count();
  return at_ms <= now_ms ? "now" : "in " + HumanDuration(at_ms - now_ms);
}

int RunStatus(const GlobalOptions& global, const StatusOptions& options) {
  ControlClient client(CreateChannel(global.server));
  wharf::v1::GetStatusRequest request;
  for (const std::string& dataset : options.datasets) request.add_datasets(dataset);
  absl::StatusOr<wharf::v1::GetStatusResponse> response =
      client.GetStatus(request, global.timeout());
  if (!response.ok()) {
    PrintError(DescribeRpcError(global, response.status()));
    return 1;
  }
  if (global.json()) return PrintJson(*response);

  std::cout << "server      " << global.server << " (wharfd " << response->version() << ")\n";
  if (response->has_start_time()) {
    std::cout << "started     "
              << google::protobuf::util::TimeUtil::ToString(response->start_time()) << "\n";
  }
  std::cout << "durability  " << response->durability() << "\n";
  std::cout << "accepting   "
            << (response->accepting() ? "yes" : "NO: " + response->not_accepting_reason()) << "\n";
  std::cout << "store       " << HumanBytes(response->store_size_bytes()) << ", disk free "
            << HumanBytes(response->disk_free_bytes()) << "\n\n";

  if (response->datasets().empty()) {
    std::cout << "no datasets\n";
    return 0;
  }
  Table datasets({"DATASET", "PARTITIONS", "RECORDS", "BYTES", "QUARANTINED", "BATCHES",
                  "STAGED/QUOTA", "DUPLICATES", "REJECTED"});
  for (const wharf::v1::DatasetStatus& d : response->datasets()) {
    std::string staged = HumanBytes(d.staged_bytes());
    staged += d.quota_bytes() == 0 ? " / -" : " / " + HumanBytes(d.quota_bytes());
    datasets.Add({d.name(), absl::StrCat(d.partitions()), absl::StrCat(d.records_ingested()),
                  HumanBytes(d.bytes_ingested()), absl::StrCat(d.records_quarantined()),
                  absl::StrCat(d.batches_committed()), staged, absl::StrCat(d.duplicate_requests()),
                  absl::StrCat(d.rejected_requests())});
  }
  datasets.Print(std::cout);

  Table destinations({"DATASET", "DESTINATION", "TYPE", "STATE", "DELIVERED", "REJECTED", "BACKLOG",
                      "OLDEST UNDELIVERED", "FAILURES", "NEXT ATTEMPT", "LAST ERROR"});
  bool any_destination = false;
  for (const wharf::v1::DatasetStatus& d : response->datasets()) {
    for (const wharf::v1::DestinationStatus& dest : d.destinations()) {
      any_destination = true;
      destinations.Add(
          {d.name(), dest.name(), dest.type(), StateName(dest.state()),
           absl::StrCat(dest.records_delivered()), absl::StrCat(dest.records_rejected()),
           absl::StrCat(dest.backlog_records(), " (", dest.backlog_batches(), " batches)"),
           dest.oldest_undelivered_age_ms() > 0 ? HumanDuration(dest.oldest_undelivered_age_ms())
                                                : "-",
           absl::StrCat(dest.consecutive_failures(), "/", dest.delivery_failures()),
           NextAttempt(dest), dest.last_error().empty() ? "-" : Truncate(dest.last_error(), 80)});
    }
  }
  if (any_destination) {
    std::cout << "\n";
    destinations.Print(std::cout);
  }
  return 0;
}

// ---------------------------------------------------------------------------------------------
// quarantine

// A reason given on the command line ("parse_error", "PARSE_ERROR"); UNSPECIFIED when empty.
absl::StatusOr<wharf::v1::QuarantineReason> ParseReason(const std::string& text) {
  if (text.empty()) return wharf::v1::QUARANTINE_REASON_UNSPECIFIED;
  std::string upper = text;
  std::transform(upper.begin(), upper.end(), upper.begin(),
                 [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  wharf::v1::QuarantineReason reason;
  if (!wharf::v1::QuarantineReason_Parse(upper, &reason) ||
      reason == wharf::v1::QUARANTINE_REASON_UNSPECIFIED) {
    std::string known;
    for (int r = wharf::v1::QuarantineReason_MIN + 1; r <= wharf::v1::QuarantineReason_MAX; ++r) {
      if (!wharf::v1::QuarantineReason_IsValid(r)) continue;
      absl::StrAppend(
          &known, known.empty() ? "" : ", ",
          wharf::v1::QuarantineReason_Name(static_cast<wharf::v1::QuarantineReason>(r)));
    }
    return absl::InvalidArgumentError(
        absl::StrCat("unknown reason \"", text, "\" (expected one of ", known, ")"));
  }
  return reason;
}

absl::Status ParseTime(const std::string& flag, const std::string& text,
                       google::protobuf::Timestamp* out) {
  if (!google::protobuf::util::TimeUtil::FromString(text, out)) {
    return absl::InvalidArgumentError(absl::StrCat(
        flag, ": expected an RFC 3339 time such as 2024-05-01T12:00:00Z, got \"", text, "\""));
  }
  return absl::OkStatus();
}

std::string FormatTime(const google::protobuf::Timestamp& t) {
  if (t.seconds() == 0 && t.nanos() == 0) return "-";
  return google::protobuf::util::TimeUtil::ToString(t);
}

// Bytes as text when they are printable (UTF-8 allowed), else C-escaped.
std::string Printable(const std::string& bytes) {
  const bool printable = std::all_of(bytes.begin(), bytes.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u >= 0x20 ? u != 0x7f : c == '\t';
  });
  return printable ? bytes : absl::CHexEscape(bytes);
}

int RunQuarantineList(const GlobalOptions& global, const QuarantineOptions& options) {
  wharf::v1::ListQuarantineRequest request;
  request.set_dataset(options.dataset);
  request.set_page_token(options.page_token);
  absl::StatusOr<wharf::v1::QuarantineReason> reason = ParseReason(options.reason);
  if (!reason.ok()) {
    PrintError(std::string(reason.status().message()));
    return 2;
  }
  request.set_reason(*reason);
  absl::Status parsed = absl::OkStatus();
  if (!options.since.empty()) parsed = ParseTime("--since", options.since, request.mutable_since());
  if (parsed.ok() && !options.until.empty()) {
    parsed = ParseTime("--until", options.until, request.mutable_until());
  }
  if (!parsed.ok()) {
    PrintError(std::string(parsed.message()));
    return 2;
  }
  ControlClient client(CreateChannel(global.server));
  absl::StatusOr<wharf::v1::ListQuarantineResponse> response =
      client.ListAllQuarantine(request, options.limit, global.timeout());
  if (!response.ok()) {
    PrintError(DescribeRpcError(global, response.status()));
    return 1;
  }
  if (global.json()) return PrintJson(*response);
  if (response->entries().empty()) {
    std::cout << "no matching quarantined records in " << options.dataset << "\n";
    return 0;
  }
  Table table({"TOKEN", "REASON", "ATTEMPTS", "QUARANTINED", "FIELD", "MESSAGE"});
  for (const wharf::v1::QuarantineEntry& e : response->entries()) {
    table.Add({e.token(), wharf::v1::QuarantineReason_Name(e.reason()), absl::StrCat(e.attempts()),
               FormatTime(e.quarantine_time()),
               e.field_path().empty() ? "-" : Truncate(e.field_path(), 40),
               Truncate(e.message(), 72)});
  }
  table.Print(std::cout);
  if (!response->next_page_token().empty()) {
    std::cout << "(showing " << response->entries_size() << " entries; more with --page-token "
              << response->next_page_token() << ")\n";
  }
  return 0;
}

int RunQuarantineShow(const GlobalOptions& global, const QuarantineOptions& options) {
  ControlClient client(CreateChannel(global.server));
  wharf::v1::GetQuarantineEntryRequest request;
  request.set_dataset(options.dataset);
  request.set_token(options.token);
  absl::StatusOr<wharf::v1::QuarantineEntry> entry =
      client.GetQuarantineEntry(request, global.timeout());
  if (!entry.ok()) {
    PrintError(DescribeRpcError(global, entry.status()));
    return 1;
  }
  if (global.json()) return PrintJson(*entry);
  const wharf::v1::QuarantineEntry& e = *entry;
  const wharf::v1::StoredRecord& original = e.original();
  Table table({"token", e.token()});
  table.Add({"dataset", e.dataset()});
  table.Add({"partition", absl::StrCat(e.partition())});
  table.Add({"offset", absl::StrCat(e.offset())});
  table.Add({"reason", wharf::v1::QuarantineReason_Name(e.reason())});
  table.Add({"message", Printable(e.message())});
  table.Add({"field", e.field_path().empty() ? "-" : e.field_path()});
  table.Add({"rule", e.rule().empty() ? "-" : e.rule()});
  if (e.reason() == wharf::v1::PARSE_ERROR) {
    table.Add({"error position", absl::StrCat(e.error_position())});
  }
  if (e.reason() == wharf::v1::DESTINATION_REJECTED) {
    table.Add({"destination", e.destination()});
    table.Add({"batch", e.batch_id()});
  }
  table.Add({"schema version", absl::StrCat(e.schema_version())});
  table.Add({"transform version", absl::StrCat(e.transform_version())});
  table.Add({"attempts", absl::StrCat(e.attempts())});
  table.Add({"first error", FormatTime(e.first_error_time())});
  table.Add({"quarantined", FormatTime(e.quarantine_time())});
  table.Add({"ingested", FormatTime(original.ingest_time())});
  table.Add({"producer", original.producer_id().empty()
                             ? "-"
                             : absl::StrCat(original.producer_id(), " #", original.sequence())});
  if (original.replayed()) {
    table.Add({"replayed from",
               absl::StrCat(original.replay_partition(), "/", original.replay_offset())});
  }
  table.Add({"key", original.record().key().empty() ? "-" : Printable(original.record().key())});
  table.Add({"event time", FormatTime(original.record().event_time())});
  std::vector<std::pair<std::string, std::string>> headers(original.record().headers().begin(),
                                                           original.record().headers().end());
  std::sort(headers.begin(), headers.end());
  for (const auto& [name, value] : headers) {
    table.Add({"header", absl::StrCat(Printable(name), ": ", Printable(value))});
  }
  table.Add({"payload", absl::StrCat("(", original.record().payload().size(), " bytes)")});
  table.Print(std::cout);
  // The payload in full, on its own lines: it is what the operator came to see.
  std::cout << Printable(original.record().payload()) << "\n";
  return 0;
}

int RunQuarantineReplay(const GlobalOptions& global, const QuarantineOptions& options) {
  absl::StatusOr<wharf::v1::QuarantineReason> reason = ParseReason(options.reason);
  if (!reason.ok()) {
    PrintError(std::string(reason.status().message()));
    return 2;
  }
  if (options.tokens.empty() && !options.all && options.reason.empty()) {
    PrintError("name the entries to replay by token, or select them with --all or --reason");
    return 2;
  }
  wharf::v1::ReplayQuarantineRequest request;
  request.set_dataset(options.dataset);
  for (const std::string& token : options.tokens) request.add_tokens(token);
  request.set_reason(*reason);
  request.set_all(options.all);
  request.set_dry_run(options.dry_run);
  ControlClient client(CreateChannel(global.server));
  absl::StatusOr<wharf::v1::ReplayQuarantineResponse> response = client.ReplayQuarantine(
      request, std::max(global.timeout(), std::chrono::milliseconds(60000)));
  if (!response.ok()) {
    PrintError(DescribeRpcError(global, response.status()));
    return 1;
  }
  if (global.json()) return PrintJson(*response);
  if (options.dry_run) {
    std::cout << "dry run: " << response->matched() << " matching entries; "
              << response->would_pass() << " would pass, " << response->would_fail()
              << " would fail again\n";
    for (const std::string& failure : response->sample_failures()) {
      std::cout << "  " << Truncate(failure, 160) << "\n";
    }
  } else {
    std::cout << "replayed " << response->replayed() << " of " << response->matched()
              << " matching entries\n";
  }
  if (response->truncated()) {
    std::cout << "(stopped at the server's bound per call; the rest was not "
              << (options.dry_run ? "checked" : "replayed") << ")\n";
  }
  return 0;
}

int RunQuarantineDiscard(const GlobalOptions& global, const QuarantineOptions& options) {
  absl::StatusOr<wharf::v1::QuarantineReason> reason = ParseReason(options.reason);
  if (!reason.ok()) {
    PrintError(std::string(reason.status().message()));
    return 2;
  }
  if (options.tokens.empty() && !options.all && options.reason.empty()) {
    PrintError("name the entries to discard by token, or select them with --all or --reason");
    return 2;
  }
  if (!options.yes) {
    PrintError("discarding deletes quarantined records for good; add --yes to confirm");
    return 2;
  }
  wharf::v1::DiscardQuarantineRequest request;
  request.set_dataset(options.dataset);
  for (const std::string& token : options.tokens) request.add_tokens(token);
  request.set_reason(*reason);
  request.set_all(options.all);
  ControlClient client(CreateChannel(global.server));
  // Bulk selections are bounded per call by the server: repeat until it is done. Entries go
  // away as they are discarded, so this ends.
  wharf::v1::DiscardQuarantineResponse total;
  while (true) {
    absl::StatusOr<wharf::v1::DiscardQuarantineResponse> response = client.DiscardQuarantine(
        request, std::max(global.timeout(), std::chrono::milliseconds(60000)));
    if (!response.ok()) {
      PrintError(DescribeRpcError(global, response.status()));
      return 1;
    }
    total.set_discarded(total.discarded() + response->discarded());
    if (!response->truncated() || response->discarded() == 0) break;
  }
  if (global.json()) return PrintJson(total);
  std::cout << "discarded " << total.discarded() << " entries\n";
  return 0;
}

// ---------------------------------------------------------------------------------------------
// destination pause / resume

int RunDestinationPause(const GlobalOptions& global, const DestinationOptions& options,
                        bool paused) {
  ControlClient client(CreateChannel(global.server));
  absl::Status status =
      paused ? client.PauseDestination(options.dataset, options.destination, global.timeout())
             : client.ResumeDestination(options.dataset, options.destination, global.timeout());
  if (!status.ok()) {
    PrintError(DescribeRpcError(global, status));
    return 1;
  }
  if (global.json()) {
    FlatJsonWriter json;
    json.Add("dataset", options.dataset);
    json.Add("destination", options.destination);
    json.Add("paused", std::string(paused ? "true" : "false"));
    std::cout << json.Finish() << "\n";
  } else {
    std::cout << (paused ? "paused " : "resumed ") << options.dataset << "/" << options.destination
              << "\n";
  }
  return 0;
}

// ---------------------------------------------------------------------------------------------
// contracts: apply, schema check, get contract

// Prints an RPC refusal whose message may list several errors, one per line: the first line
// after "wharfctl: ", the others indented below it.
void PrintErrorLines(const GlobalOptions& global, const absl::Status& status) {
  const std::string text = DescribeRpcError(global, status);
  std::lock_guard<std::mutex> lock(stderr_mu);
  std::istringstream lines(text);
  std::string line;
  bool first = true;
  while (std::getline(lines, line)) {
    std::cerr << (first ? "wharfctl: " : "  ") << line << "\n";
    first = false;
  }
}

absl::StatusOr<std::string> ReadSpecFile(const std::string& path) {
  if (path == "-") {
    std::string text((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
    if (std::cin.bad()) return absl::UnavailableError("cannot read stdin");
    return text;
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return absl::UnavailableError(absl::StrCat("cannot read ", path));
  return text;
}

std::string VersionText(const wharf::v1::ContractVersion& v) {
  return absl::StrCat("schema version ", v.schema_version(), ", transform version ",
                      v.transform_version());
}

// `apply` (dry_run false) and `schema check` (dry_run true).
int RunApply(const GlobalOptions& global, const ContractOptions& options, bool dry_run) {
  absl::StatusOr<std::string> spec = ReadSpecFile(options.file);
  if (!spec.ok()) {
    PrintError(std::string(spec.status().message()));
    return 1;
  }
  ControlClient client(CreateChannel(global.server));
  absl::StatusOr<wharf::v1::ApplyContractResponse> response = client.ApplyContract(
      *spec, dry_run, std::max(global.timeout(), std::chrono::milliseconds(30000)));
  if (!response.ok()) {
    PrintErrorLines(global, response.status());
    return 1;
  }
  if (global.json()) return PrintJson(*response);
  const wharf::v1::ContractVersion& v = response->version();
  if (dry_run) {
    std::cout << "compatible: "
              << (response->changed() ? "would be " : "unchanged, the current version is ")
              << VersionText(v) << "\n";
  } else if (response->changed()) {
    std::cout << v.dataset() << ": contract applied: " << VersionText(v) << "\n";
  } else {
    std::cout << v.dataset() << ": unchanged (" << VersionText(v) << ")\n";
  }
  for (const std::string& note : response->notes()) std::cout << "  " << note << "\n";
  return 0;
}

int RunGetContract(const GlobalOptions& global, const ContractOptions& options) {
  wharf::v1::GetContractRequest request;
  request.set_dataset(options.dataset);
  if (options.schema_version.has_value()) request.set_schema_version(*options.schema_version);
  request.set_history(options.history);
  ControlClient client(CreateChannel(global.server));
  absl::StatusOr<wharf::v1::GetContractResponse> response =
      client.GetContract(request, global.timeout());
  if (!response.ok()) {
    PrintErrorLines(global, response.status());
    return 1;
  }
  if (global.json()) return PrintJson(*response);
  if (options.history) {
    Table table({"SCHEMA", "TRANSFORM", "APPLIED"});
    for (const wharf::v1::ContractVersion& v : response->versions()) {
      table.Add({absl::StrCat(v.schema_version()), absl::StrCat(v.transform_version()),
                 FormatTime(v.applied_time())});
    }
    table.Print(std::cout);
    return 0;
  }
  if (response->versions().empty()) {
    PrintError("the server answered without a version");
    return 1;
  }
  const wharf::v1::ContractVersion& v = response->versions(0);
  Table table({"dataset", v.dataset()});
  table.Add({"schema version", absl::StrCat(v.schema_version())});
  table.Add({"transform version", absl::StrCat(v.transform_version())});
  table.Add({"applied", FormatTime(v.applied_time())});
  table.Print(std::cout);
  // The YAML as it was applied, on its own lines.
  std::cout << "---\n" << v.source_yaml();
  if (!v.source_yaml().empty() && v.source_yaml().back() != '\n') std::cout << "\n";
  return 0;
}

int Main(int argc, char** argv) {
  CLI::App app{"wharfctl: produce records to a Wharf server and inspect it"};
  app.require_subcommand(1);
  app.fallthrough();

  GlobalOptions global;
  app.add_option("--server", global.server, "wharfd address HOST:PORT")
      ->envname("WHARF_SERVER")
      ->capture_default_str();
  app.add_option("-o,--output", global.output, "output format")
      ->check(CLI::IsMember({"table", "json"}))
      ->capture_default_str();
  app.add_option("--timeout", global.timeout_s, "seconds to wait for a connection or an answer")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();

  ProduceOptions produce;
  CLI::App* produce_cmd =
      app.add_subcommand("produce", "send JSON Lines (one record per line) to a dataset");
  produce_cmd->fallthrough();
  produce_cmd->add_option("--dataset", produce.dataset, "dataset to produce to")->required();
  produce_cmd->add_option("--file,file", produce.file,
                          "JSON Lines file; stdin when absent or \"-\"");
  produce_cmd->add_option("--batch-size", produce.batch_size, "records per request")
      ->check(CLI::Range(size_t{1}, size_t{100000}))
      ->capture_default_str();
  produce_cmd
      ->add_option("--max-batch-bytes", produce.max_batch_bytes,
                   "payload bytes per request (gRPC messages are limited to 4 MiB by default)")
      ->check(CLI::Range(size_t{1}, size_t{1} << 30))
      ->capture_default_str();
  produce_cmd->add_option("--max-inflight", produce.max_inflight, "requests awaiting an answer")
      ->check(CLI::Range(size_t{1}, size_t{64}))
      ->capture_default_str();
  produce_cmd->add_option("--producer-id", produce.producer_id,
                          "producer id for deduplication (default: random); to resume a "
                          "producer, pass its id and --first-sequence");
  produce_cmd
      ->add_option("--first-sequence", produce.first_sequence,
                   "sequence number of the first record")
      ->capture_default_str();
  produce_cmd->add_option("--key-field", produce.key_field,
                          "top-level JSON field whose value is the record key");
  produce_cmd
      ->add_option("--max-record-bytes", produce.max_record_bytes,
                   "longer lines are refused (and counted as failed)")
      ->check(CLI::Range(size_t{1}, size_t{1} << 30))
      ->capture_default_str();
  produce_cmd
      ->add_option("--retry-timeout", produce.retry_timeout_s,
                   "seconds to keep retrying a request before giving up; 0: forever")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();

  StatusOptions status;
  CLI::App* status_cmd = app.add_subcommand("status", "show datasets and destinations");
  status_cmd->fallthrough();
  status_cmd->add_option("--dataset", status.datasets, "only this dataset (repeatable)");

  DestinationOptions destination;
  CLI::App* destination_cmd =
      app.add_subcommand("destination", "pause or resume delivery to a destination");
  destination_cmd->fallthrough();
  destination_cmd->require_subcommand(1);
  CLI::App* pause_cmd = destination_cmd->add_subcommand(
      "pause", "stop delivering to a destination (persisted; records keep being staged)");
  CLI::App* resume_cmd = destination_cmd->add_subcommand("resume", "resume delivery");
  for (CLI::App* cmd : {pause_cmd, resume_cmd}) {
    cmd->fallthrough();
    cmd->add_option("dataset", destination.dataset, "dataset")->required();
    cmd->add_option("destination", destination.destination, "destination")->required();
  }

  QuarantineOptions quarantine;
  CLI::App* quarantine_cmd =
      app.add_subcommand("quarantine", "inspect, replay and discard quarantined records");
  quarantine_cmd->fallthrough();
  quarantine_cmd->require_subcommand(1);
  const std::string reason_help =
      "only entries with this reason (PARSE_ERROR, SCHEMA_VIOLATION, RULE_VIOLATION, "
      "PII_DETECTED, TRANSFORM_ERROR, DESTINATION_REJECTED)";
  CLI::App* list_cmd = quarantine_cmd->add_subcommand("list", "list quarantined records");
  list_cmd->fallthrough();
  list_cmd->add_option("dataset,--dataset", quarantine.dataset, "dataset")->required();
  list_cmd->add_option("--limit", quarantine.limit, "at most this many entries")
      ->check(CLI::Range(uint32_t{1}, uint32_t{1000000}))
      ->capture_default_str();
  list_cmd->add_option("--reason", quarantine.reason, reason_help);
  list_cmd->add_option("--since", quarantine.since,
                       "only entries quarantined at or after this RFC 3339 time");
  list_cmd->add_option("--until", quarantine.until,
                       "only entries quarantined before this RFC 3339 time");
  list_cmd->add_option("--page-token", quarantine.page_token,
                       "continue after this token (from a previous listing)");

  CLI::App* show_cmd =
      quarantine_cmd->add_subcommand("show", "show one entry with its original record");
  show_cmd->fallthrough();
  show_cmd->add_option("dataset", quarantine.dataset, "dataset")->required();
  show_cmd->add_option("token", quarantine.token, "entry token (from quarantine list)")->required();

  CLI::App* replay_cmd = quarantine_cmd->add_subcommand(
      "replay", "send quarantined records through the pipeline again");
  replay_cmd->fallthrough();
  replay_cmd->add_option("dataset", quarantine.dataset, "dataset")->required();
  replay_cmd->add_option("tokens", quarantine.tokens, "entry tokens");
  replay_cmd->add_flag("--all", quarantine.all, "every entry (with --reason: every such entry)");
  replay_cmd->add_option("--reason", quarantine.reason, reason_help);
  replay_cmd->add_flag("--dry-run", quarantine.dry_run,
                       "only check the records with the dataset's current processor");

  CLI::App* discard_cmd =
      quarantine_cmd->add_subcommand("discard", "delete quarantined records for good");
  discard_cmd->fallthrough();
  discard_cmd->add_option("dataset", quarantine.dataset, "dataset")->required();
  discard_cmd->add_option("tokens", quarantine.tokens, "entry tokens");
  discard_cmd->add_flag("--all", quarantine.all, "every entry (with --reason: every such entry)");
  discard_cmd->add_option("--reason", quarantine.reason, reason_help);
  discard_cmd->add_flag("--yes", quarantine.yes, "confirm the deletion");
  for (CLI::App* cmd : {replay_cmd, discard_cmd}) {
    cmd->get_option("--all")->excludes(cmd->get_option("tokens"));
  }

  ContractOptions contract;
  CLI::App* apply_cmd = app.add_subcommand(
      "apply",
      "apply the contract of a dataset spec (the spec's other keys must match the "
      "running configuration)");
  apply_cmd->fallthrough();
  apply_cmd->add_option("-f,--file", contract.file, "dataset spec YAML file; \"-\": stdin")
      ->required();
  CLI::App* schema_cmd = app.add_subcommand("schema", "check contracts without applying them");
  schema_cmd->fallthrough();
  schema_cmd->require_subcommand(1);
  CLI::App* check_cmd = schema_cmd->add_subcommand(
      "check", "dry run of apply: does the spec's contract compile and is it compatible?");
  check_cmd->fallthrough();
  check_cmd->add_option("-f,--file", contract.file, "dataset spec YAML file; \"-\": stdin")
      ->required();
  CLI::App* get_cmd = app.add_subcommand("get", "show stored objects");
  get_cmd->fallthrough();
  get_cmd->require_subcommand(1);
  CLI::App* get_contract_cmd =
      get_cmd->add_subcommand("contract",
                              "show a dataset's contract (current, one version, or "
                              "every version)");
  get_contract_cmd->fallthrough();
  get_contract_cmd->add_option("dataset", contract.dataset, "dataset")->required();
  CLI::Option* version_opt = get_contract_cmd->add_option(
      "--version", contract.schema_version, "the latest version with this schema version");
  CLI::Option* history_opt =
      get_contract_cmd->add_flag("--history", contract.history, "list every version, oldest first");
  version_opt->excludes(history_opt);

  CLI11_PARSE(app, argc, argv);

  if (*apply_cmd) return RunApply(global, contract, false);
  if (*check_cmd) return RunApply(global, contract, true);
  if (*get_contract_cmd) return RunGetContract(global, contract);

  if (*produce_cmd) return RunProduce(global, produce);
  if (*status_cmd) return RunStatus(global, status);
  if (*pause_cmd) return RunDestinationPause(global, destination, true);
  if (*resume_cmd) return RunDestinationPause(global, destination, false);
  if (*list_cmd) return RunQuarantineList(global, quarantine);
  if (*show_cmd) return RunQuarantineShow(global, quarantine);
  if (*replay_cmd) return RunQuarantineReplay(global, quarantine);
  if (*discard_cmd) return RunQuarantineDiscard(global, quarantine);
  return 1;
}

}  // namespace
}  // namespace wharf::client

int main(int argc, char** argv) { return wharf::client::Main(argc, argv); }
