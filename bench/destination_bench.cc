// wharf-destination-bench: delivery throughput of one destination adapter.
//
// Generates --records JSON records (the generator of wharf-bench, with deterministic timestamps,
// so every run and --dump-copy-file produce the same records), spreads them round-robin over
// --partitions partitions, cuts each partition into committed batches (StoredBatch) of
// --batch-size records, and then delivers them through the chosen Destination the way the
// pipeline does: each partition's batches in offset order, one at a time, the partitions in
// parallel threads. Only the delivery is timed (batches are built before the clock starts; the
// rolling file destination's final Close(), which publishes the open files, is timed too).
// Afterwards it checks that every record arrived (files: lines in the output; postgres: count(*);
// the built-in HTTP sink: lines received), outside the timing.
//
// --dump-copy-file FILE instead writes the same records as a PostgreSQL COPY text file with the
// columns the postgres destination fills (id, ts, user, amount, doc), for the plain-COPY ceiling
// that bench/run.sh loads with psql.
//
// Output: a final line "RESULT destination=<type> records=... batches=... ...".

#include <libpq-fe.h>
#include <rapidjson/document.h>
#include <rapidjson/error/en.h>
#include <unistd.h>
#include <zlib.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "bench/http_sink.h"
#include "bench/record_generator.h"
#include "google/protobuf/util/time_util.h"
#include "pipeline/destination.h"
#include "pipeline/destinations/file_destination.h"
#include "pipeline/destinations/http_destination.h"
#include "pipeline/destinations/postgres_destination.h"
#include "pipeline/destinations/rolling_file_destination.h"
#include "pipeline/destinations/wharf_forward_destination.h"
#include "storage/crc32c.h"

namespace wharf::bench {
namespace {

using google::protobuf::util::TimeUtil;
using pipeline::Destination;
using Clock = std::chrono::steady_clock;

// 2026-01-01T00:00:00Z: the timestamp of record 0; record i is i milliseconds later. Fixed, so
// that runs are comparable and the COPY dump holds exactly the delivered records.
constexpr int64_t kBaseTimeUs = 1'767'225'600'000'000;

// Retries of one batch after a retryable error before the run is declared failed.
constexpr int kMaxAttempts = 20;

struct Options {
  std::string destination;
  uint64_t records = 200'000;
  size_t batch_size = 1000;
  uint32_t partitions = 4;
  size_t record_size = 200;
  std::string dataset = "bench";
  std::string dir;
  bool gzip = false;
  std::string pg_conninfo;
  std::string pg_table = "bench_events";
  std::string http_url;
  std::string wharf_target;
  std::string node_id;
  std::string dump_copy_file;
};

std::string Fixed(double value) {
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "%.2f", value);
  return buffer;
}

// Record i of the run (payload and key).
class Records {
 public:
  explicit Records(size_t record_size) : generator_(/*producer=*/0, record_size) {}
  wharf::v1::Record Next() {
    const uint64_t id = next_id_++;
    return generator_.Next(id, kBaseTimeUs + static_cast<int64_t>(id) * 1000);
  }

 private:
  RecordGenerator generator_;
  uint64_t next_id_ = 0;
};

struct Workload {
  std::vector<std::vector<wharf::v1::StoredBatch>> partitions;  // batches in offset order
  uint64_t records = 0;
  uint64_t batches = 0;
  uint64_t payload_bytes = 0;
};

// Builds the committed batches as the pipeline would: contiguous offsets per partition, batch id
// "<dataset>.p<partition>.<first>-<last>", record count, bytes and CRC32C in the manifest.
Workload BuildWorkload(const Options& options) {
  Records generator(options.record_size);
  std::vector<std::vector<wharf::v1::BatchRecord>> records(options.partitions);
  Workload workload;
  for (uint64_t i = 0; i < options.records; ++i) {
    wharf::v1::Record record = generator.Next();
    const uint32_t p = static_cast<uint32_t>(i % options.partitions);
    wharf::v1::BatchRecord r;
    r.set_offset(records[p].size());
    r.set_key(std::move(*record.mutable_key()));
    r.set_payload(std::move(*record.mutable_payload()));
    *r.mutable_ingest_time() =
        TimeUtil::MicrosecondsToTimestamp(kBaseTimeUs + static_cast<int64_t>(i) * 1000);
    workload.payload_bytes += r.payload().size();
    records[p].push_back(std::move(r));
  }
  workload.records = options.records;
  workload.partitions.resize(options.partitions);
  for (uint32_t p = 0; p < options.partitions; ++p) {
    for (size_t start = 0; start < records[p].size(); start += options.batch_size) {
      const size_t end = std::min(records[p].size(), start + options.batch_size);
      wharf::v1::StoredBatch batch;
      uint32_t crc = 0;
      uint64_t bytes = 0;
      for (size_t i = start; i < end; ++i) {
        crc = storage::Crc32c(records[p][i].payload(), crc);
        bytes += records[p][i].payload().size();
        *batch.add_records() = std::move(records[p][i]);
      }
      wharf::v1::BatchManifest* m = batch.mutable_manifest();
      m->set_batch_id(absl::StrCat(options.dataset, ".p", p, ".", start, "-", end - 1));
      m->set_dataset(options.dataset);
      m->set_partition(p);
      m->set_first_offset(start);
      m->set_last_offset(end - 1);
      m->set_record_count(end - start);
      m->set_bytes(bytes);
      m->set_checksum(crc);
      *m->mutable_create_time() = batch.records(0).ingest_time();
      *m->mutable_min_ingest_time() = batch.records(0).ingest_time();
      workload.partitions[p].push_back(std::move(batch));
      ++workload.batches;
    }
  }
  return workload;
}

// Appends `value` to `out` in COPY text format (backslash escapes for '\\', tab, LF, CR).
void AppendCopyText(std::string_view value, std::string* out) {
  for (const char c : value) {
    switch (c) {
      case '\\':
        *out += "\\\\";
        break;
      case '\t':
        *out += "\\t";
        break;
      case '\n':
        *out += "\\n";
        break;
      case '\r':
        *out += "\\r";
        break;
      default:
        *out += c;
    }
  }
}

// Writes the records as COPY text rows (id, ts, user, amount, doc): the same values the
// postgres destination extracts with the bench's column mapping (numbers as their JSON text).
int DumpCopyFile(const Options& options) {
  std::ofstream out(options.dump_copy_file, std::ios::binary | std::ios::trunc);
  if (!out) {
    std::cerr << "wharf-destination-bench: cannot write " << options.dump_copy_file << "\n";
    return 2;
  }
  Records generator(options.record_size);
  uint64_t bytes = 0;
  std::string row;
  for (uint64_t i = 0; i < options.records; ++i) {
    const wharf::v1::Record record = generator.Next();
    const std::string& payload = record.payload();
    rapidjson::Document doc;
    doc.Parse<rapidjson::kParseIterativeFlag | rapidjson::kParseNumbersAsStringsFlag>(
        payload.data(), payload.size());
    if (doc.HasParseError() || !doc.IsObject()) {
      std::cerr << "wharf-destination-bench: generated record " << i
                << " is not a JSON object: " << rapidjson::GetParseError_En(doc.GetParseError())
                << "\n";
      return 1;
    }
    row.clear();
    for (const char* field : {"id", "ts", "user", "amount"}) {
      const auto member = doc.FindMember(field);
      if (member == doc.MemberEnd() || !member->value.IsString()) {
        std::cerr << "wharf-destination-bench: generated record " << i << " has no " << field
                  << "\n";
        return 1;
      }
      AppendCopyText(std::string_view(member->value.GetString(), member->value.GetStringLength()),
                     &row);
      row += '\t';
    }
    AppendCopyText(payload, &row);
    row += '\n';
    out.write(row.data(), static_cast<std::streamsize>(row.size()));
    bytes += payload.size();
  }
  out.close();
  if (!out) {
    std::cerr << "wharf-destination-bench: writing " << options.dump_copy_file << " failed\n";
    return 1;
  }
  std::printf("DUMP records=%" PRIu64 " bytes=%" PRIu64 " file=%s\n", options.records, bytes,
              options.dump_copy_file.c_str());
  return 0;
}

// The destination under test, plus what is needed to finish and check the delivery.
struct Target {
  std::unique_ptr<Destination> destination;
  pipeline::RollingFileDestination* rolling = nullptr;  // set for the rolling file destination
  std::unique_ptr<HttpSink> sink;                       // the built-in receiver, if used
  std::string label;                                    // destination=... in the RESULT line
};

absl::StatusOr<Target> MakeTarget(const Options& options) {
  Target target;
  const std::string& type = options.destination;
  if ((type == "file" || type == "rolling_file") && options.dir.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("--destination ", type, " needs --dir"));
  }
  if (type == "file") {
    pipeline::FileDestinationOptions o;
    o.directory = options.dir;
    o.fsync = true;
    auto d = pipeline::FileDestination::Create(std::move(o));
    if (!d.ok()) return d.status();
    target.destination = std::move(*d);
    target.label = "file";
  } else if (type == "rolling_file") {
    pipeline::RollingFileDestinationOptions o;
    o.name = "bench";
    o.directory = options.dir;
    o.max_bytes = 64 << 20;
    o.gzip = options.gzip;
    o.fsync = true;
    auto d = pipeline::RollingFileDestination::Create(std::move(o));
    if (!d.ok()) return d.status();
    target.rolling = d->get();
    target.destination = std::move(*d);
    target.label = options.gzip ? "rolling_file_gzip" : "rolling_file";
  } else if (type == "postgres") {
    if (options.pg_conninfo.empty()) return absl::InvalidArgumentError("postgres: --pg-conninfo");
    pipeline::PostgresDestinationOptions o;
    o.name = "bench";
    o.conninfo = options.pg_conninfo;
    o.table = options.pg_table;
    using Type = pipeline::PostgresColumn::Type;
    o.columns = {{"id", "/id", Type::kBigint},
                 {"ts", "/ts", Type::kTimestamptz},
                 {"user", "/user", Type::kText},
                 {"amount", "/amount", Type::kNumeric},
                 {"doc", "", Type::kJsonb}};
    o.create_table = true;
    o.max_connections = options.partitions;
    auto d = pipeline::PostgresDestination::Create(std::move(o));
    if (!d.ok()) return d.status();
    target.destination = std::move(*d);
    target.label = "postgres";
  } else if (type == "http") {
    std::string url = options.http_url;
    if (url.empty()) {
      auto sink = HttpSink::Start();
      if (!sink.ok()) return sink.status();
      target.sink = std::move(*sink);
      url = target.sink->url();
    }
    pipeline::HttpDestinationOptions o;
    o.name = "bench";
    o.url = url;
    auto d = pipeline::HttpDestination::Create(std::move(o));
    if (!d.ok()) return d.status();
    target.destination = std::move(*d);
    target.label = "http";
  } else if (type == "wharf") {
    if (options.wharf_target.empty()) return absl::InvalidArgumentError("wharf: --wharf-target");
    pipeline::WharfForwardOptions o;
    o.name = "bench";
    // A new producer identity per run: the central deduplicates by (producer, sequence), so a
    // second run with the same identity would be acknowledged as duplicates without work.
    o.node_id = options.node_id.empty()
                    ? absl::StrCat("bench-", ::getpid(), "-",
                                   std::chrono::system_clock::now().time_since_epoch().count())
                    : options.node_id;
    o.target = options.wharf_target;
    auto d = pipeline::WharfForwardDestination::Create(std::move(o));
    if (!d.ok()) return d.status();
    target.destination = std::move(*d);
    target.label = "wharf";
  } else {
    return absl::InvalidArgumentError(absl::StrCat("unknown destination ", type));
  }
  return target;
}

struct Outcome {
  std::atomic<uint64_t> retries{0};
  std::atomic<uint64_t> already_delivered{0};
  std::atomic<bool> failed{false};
  std::mutex mu;
  absl::Status error;  // guarded by mu: the first failure
};

void Fail(Outcome& outcome, absl::Status status) {
  std::lock_guard<std::mutex> lock(outcome.mu);
  if (outcome.error.ok()) outcome.error = std::move(status);
  outcome.failed = true;
}

// Delivers one partition's batches in order, retrying retryable errors like the pipeline does
// (bounded here: a benchmark that keeps failing is a failed benchmark).
void DeliverPartition(Destination& destination, const std::vector<wharf::v1::StoredBatch>& batches,
                      Outcome& outcome) {
  for (const wharf::v1::StoredBatch& batch : batches) {
    for (int attempt = 1;; ++attempt) {
      if (outcome.failed.load()) return;
      pipeline::DeliveryReport report;
      const absl::Status status = destination.Deliver(batch, &report);
      if (status.ok()) {
        if (report.already_delivered) ++outcome.already_delivered;
        break;
      }
      if (status.code() == absl::StatusCode::kInvalidArgument || attempt >= kMaxAttempts) {
        Fail(outcome, status);
        return;
      }
      ++outcome.retries;
      std::this_thread::sleep_for(report.retry_after > std::chrono::milliseconds(0)
                                      ? report.retry_after
                                      : std::chrono::milliseconds(100));
    }
  }
}

// Lines in the regular files under `dir` whose name ends in ".jsonl" or ".jsonl.gz" (decompressed
// for .gz), skipping hidden files (in-progress or temporary ones).
absl::StatusOr<uint64_t> CountLines(const std::string& dir) {
  uint64_t lines = 0;
  std::error_code ec;
  std::vector<char> buffer(1 << 20);
  for (auto it = std::filesystem::recursive_directory_iterator(dir, ec);
       !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (!it->is_regular_file() || name.front() == '.') continue;
    const bool gz = name.ends_with(".jsonl.gz");
    if (!gz && !name.ends_with(".jsonl")) continue;
    gzFile file = gzopen(it->path().c_str(), "rb");  // reads plain files as they are
    if (file == nullptr)
      return absl::InternalError(absl::StrCat("cannot open ", it->path().string()));
    int n;
    while ((n = gzread(file, buffer.data(), static_cast<unsigned>(buffer.size()))) > 0) {
      lines += std::count(buffer.data(), buffer.data() + n, '\n');
    }
    const bool read_error = n < 0;
    gzclose(file);
    if (read_error) return absl::DataLossError(absl::StrCat("cannot read ", it->path().string()));
  }
  if (ec) return absl::InternalError(absl::StrCat("listing ", dir, ": ", ec.message()));
  return lines;
}

// count(*) of the target table.
absl::StatusOr<uint64_t> CountRows(const Options& options) {
  PGconn* conn = PQconnectdb(options.pg_conninfo.c_str());
  absl::StatusOr<uint64_t> result = absl::InternalError("no answer");
  if (PQstatus(conn) != CONNECTION_OK) {
    result = absl::UnavailableError(PQerrorMessage(conn));
  } else {
    // The table name is the bench's own flag; quoted as one identifier like the destination does
    // for a name without '.'.
    char* quoted = PQescapeIdentifier(conn, options.pg_table.data(), options.pg_table.size());
    PGresult* res = PQexec(conn, absl::StrCat("SELECT count(*) FROM ", quoted).c_str());
    PQfreemem(quoted);
    uint64_t rows = 0;
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 &&
        absl::SimpleAtoi(PQgetvalue(res, 0, 0), &rows)) {
      result = rows;
    } else {
      result = absl::InternalError(PQerrorMessage(conn));
    }
    PQclear(res);
  }
  PQfinish(conn);
  return result;
}

// Records that arrived at the destination, when the bench can see them; -1 when it cannot.
absl::StatusOr<int64_t> Arrived(const Options& options, const Target& target) {
  if (options.destination == "file" || options.destination == "rolling_file") {
    auto lines = CountLines(options.dir);
    if (!lines.ok()) return lines.status();
    return static_cast<int64_t>(*lines);
  }
  if (options.destination == "postgres") {
    auto rows = CountRows(options);
    if (!rows.ok()) return rows.status();
    return static_cast<int64_t>(*rows);
  }
  if (target.sink != nullptr) return static_cast<int64_t>(target.sink->lines());
  return -1;  // an external HTTP receiver or a central wharfd: its acks are the evidence
}

int Main(int argc, char** argv) {
  CLI::App app{"wharf-destination-bench: delivery throughput of one destination"};
  Options options;
  app.add_option("--destination", options.destination, "destination type")
      ->check(CLI::IsMember({"file", "rolling_file", "postgres", "http", "wharf"}));
  app.add_option("--records", options.records, "records to deliver")
      ->check(CLI::Range(uint64_t{1}, uint64_t{100'000'000}))
      ->capture_default_str();
  app.add_option("--batch-size", options.batch_size, "records per batch")
      ->check(CLI::Range(size_t{1}, size_t{1'000'000}))
      ->capture_default_str();
  app.add_option("--partitions", options.partitions,
                 "partitions, delivered in parallel threads (1: sequential)")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  app.add_option("--record-size", options.record_size, "approximate bytes per JSON record")
      ->check(CLI::Range(size_t{1}, size_t{1} << 20))
      ->capture_default_str();
  app.add_option("--dataset", options.dataset, "dataset name in the batches")
      ->capture_default_str();
  app.add_option("--dir", options.dir, "output directory (file, rolling_file); should be empty");
  app.add_flag("--gzip", options.gzip, "rolling_file: gzip every batch");
  app.add_option("--pg-conninfo", options.pg_conninfo, "postgres: libpq connection string");
  app.add_option("--pg-table", options.pg_table, "postgres: target table (created if missing)")
      ->capture_default_str();
  app.add_option("--http-url", options.http_url,
                 "http: receiver URL; default: a built-in sink on 127.0.0.1");
  app.add_option("--wharf-target", options.wharf_target, "wharf: central wharfd HOST:PORT");
  app.add_option("--node-id", options.node_id, "wharf: node id (default: unique per run)");
  app.add_option("--dump-copy-file", options.dump_copy_file,
                 "write the records as a COPY text file (id, ts, user, amount, doc) and exit");
  CLI11_PARSE(app, argc, argv);

  if (!options.dump_copy_file.empty()) return DumpCopyFile(options);
  if (options.destination.empty()) {
    std::cerr << "wharf-destination-bench: --destination or --dump-copy-file is required\n";
    return 2;
  }

  absl::StatusOr<Target> target = MakeTarget(options);
  if (!target.ok()) {
    std::cerr << "wharf-destination-bench: " << target.status() << "\n";
    return 2;
  }
  const Workload workload = BuildWorkload(options);

  Outcome outcome;
  const Clock::time_point start = Clock::now();
  std::vector<std::thread> threads;
  for (const auto& batches : workload.partitions) {
    threads.emplace_back(DeliverPartition, std::ref(*target->destination), std::cref(batches),
                         std::ref(outcome));
  }
  for (std::thread& thread : threads) thread.join();
  if (target->rolling != nullptr && !outcome.failed.load()) {
    if (absl::Status closed = target->rolling->Close(); !closed.ok()) Fail(outcome, closed);
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();

  if (outcome.failed.load()) {
    std::cerr << "wharf-destination-bench: delivery failed: " << outcome.error << "\n";
    return 1;
  }
  if (outcome.already_delivered.load() > 0) {
    std::cerr << "wharf-destination-bench: " << outcome.already_delivered.load()
              << " batches were already delivered: the target is not fresh (use an empty "
                 "directory, a new table or a new node id)\n";
    return 1;
  }
  if (target->sink != nullptr) target->destination.reset();  // closes the kept-alive connections
  absl::StatusOr<int64_t> arrived = Arrived(options, *target);
  if (target->sink != nullptr) target->sink->Stop();
  if (!arrived.ok()) {
    std::cerr << "wharf-destination-bench: checking the delivery: " << arrived.status() << "\n";
    return 1;
  }
  if (*arrived >= 0 && static_cast<uint64_t>(*arrived) != workload.records) {
    std::cerr << "wharf-destination-bench: " << workload.records << " records delivered but "
              << *arrived << " found at the destination\n";
    return 1;
  }

  const double records_per_s = workload.records / seconds;
  const double mb_per_s = workload.payload_bytes / seconds / 1e6;
  std::printf("RESULT destination=%s records=%" PRIu64 " batches=%" PRIu64
              " partitions=%u seconds=%.3f records_per_s=%s mb_per_s=%s bytes=%" PRIu64
              " retries=%" PRIu64 " verified=%s\n",
              target->label.c_str(), workload.records, workload.batches, options.partitions,
              seconds, Fixed(records_per_s).c_str(), Fixed(mb_per_s).c_str(),
              workload.payload_bytes, outcome.retries.load(), *arrived >= 0 ? "yes" : "acks");
  return 0;
}

}  // namespace
}  // namespace wharf::bench

int main(int argc, char** argv) { return wharf::bench::Main(argc, argv); }
