#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "client/control_client.h"
#include "tests/support/checker.h"

namespace wharf::testing {

class PostgresServer;

// A temporary directory, removed (recursively) on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A TCP port on 127.0.0.1 that was free a moment ago.
int FreePort();

// Writes `text` to `path`.
void WriteFile(const std::string& path, const std::string& text);
std::string ReadFile(const std::string& path);

// Options of the config a test wharfd runs with.
struct WharfdConfig {
  std::string data_dir;
  std::string out_dir;  // file destination directory of every dataset
  int port = 0;
  int metrics_port = 0;
  std::string durability = "sync";
  std::string min_free_disk = "64MiB";  // `min_free_disk`; default 64MiB
  uint32_t partitions = 4;
  std::string linger = "50ms";
  uint32_t max_records = 1000;
  std::string retention_raw = "24h";
  std::string retention_interval = "10s";
  std::string quota;          // empty: none
  std::string extra_top;      // appended at top level (YAML)
  std::string extra_dataset;  // appended to the first dataset (YAML, 4-space indent)
  std::string log_format = "text";
  std::vector<std::string> datasets = {"orders"};
  // false: the first dataset gets no `files` destination (extra_destinations must then hold at
  // least one). Default true.
  bool file_destination = true;
  // Appended to the first dataset's `destinations` list (YAML list items, 6-space indent).
  // Default none.
  std::string extra_destinations;
  // Extra environment variables of the wharfd child ("NAME=value"; a name given here replaces the
  // inherited value). Default none. Read at every Start(), so a restart can drop them.
  std::vector<std::string> env;
  // The wharfd executable to run. Default (empty): the build's wharfd.
  std::string binary;
};
std::string RenderConfig(const WharfdConfig& c);

// A wharfd child process. Kills it (SIGKILL) on destruction if still running.
class WharfdProcess {
 public:
  explicit WharfdProcess(WharfdConfig config);
  ~WharfdProcess();

  // Writes the config, starts wharfd and waits until GetStatus answers.
  absl::Status Start(std::chrono::milliseconds timeout = std::chrono::seconds(30));
  // SIGKILL and reap.
  void Kill9();
  // SIGTERM and wait; returns the exit code (or -signal), or an error on timeout.
  absl::StatusOr<int> Terminate(std::chrono::milliseconds timeout = std::chrono::seconds(30));

  bool running() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }
  std::string target() const;
  const WharfdConfig& config() const { return config_; }
  // For changes between restarts (env, YAML fields); the ports and data_dir must stay.
  WharfdConfig& mutable_config() { return config_; }
  // Reaps the child if it has exited on its own (e.g. a failpoint); true when it is not running.
  bool CheckExited();
  // The wait status of the last child reaped by CheckExited(), or by a Start() during which it
  // exited (-1 when none was).
  int exit_status() const { return exit_status_; }
  std::string log_path() const { return log_path_; }
  std::string Log() const;
  client::ControlClient& control();

 private:
  WharfdConfig config_;
  std::string config_path_;
  std::string log_path_;
  pid_t pid_ = -1;
  int exit_status_ = -1;
  std::unique_ptr<client::ControlClient> control_;
};

// Runs a command, returns (exit code, combined output).
std::pair<int, std::string> RunCommand(const std::vector<std::string>& argv);

// One destination file: partition, offset range and lines (without the newline).
struct DestinationFile {
  std::string name;
  uint32_t partition = 0;
  uint64_t first_offset = 0;
  uint64_t last_offset = 0;
  std::vector<std::string> lines;
};
// Every *.jsonl file of the dataset in `dir`, sorted by (partition, first offset).
std::vector<DestinationFile> ReadDestination(const std::string& dir, const std::string& dataset);

// A plain HTTP GET on 127.0.0.1:port; returns the body.
absl::StatusOr<std::string> HttpGet(int port, const std::string& path);

// Polls `pred` every 50 ms until it is true or the timeout passes.
bool WaitFor(const std::function<bool()>& pred, std::chrono::milliseconds timeout);

// Sum of records delivered to every destination of `dataset` (0 when unreachable).
uint64_t DeliveredRecords(client::ControlClient& control, const std::string& dataset);

// True when the environment asks for the long versions of the tests (WHARF_EXTENDED=1).
bool Extended();

// True when every partition of every dataset is validated up to its end and every destination
// has no backlog (false when wharfd does not answer).
bool AllDelivered(client::ControlClient& control);

// The status of one destination, or nullopt when wharfd does not answer or has no such one.
std::optional<wharf::v1::DestinationStatus> FindDestinationStatus(client::ControlClient& control,
                                                                  const std::string& dataset,
                                                                  const std::string& destination);

// Sum of the samples of metric `name` (Prometheus text format) whose label set contains every
// `labels` entry (each written as it appears, e.g. R"(destination="warehouse")"). 0 when none.
double MetricSum(const std::string& metrics_text, const std::string& name,
                 const std::vector<std::string>& labels);

// A JSON record of about `bytes` bytes: {"id":<id>,"producer":p,"i":i,"pad":"..."} with the
// unique id p * 1000000000 + i + 1.
std::string LoadPayload(int producer, int64_t i, size_t bytes = 200);
// The id of a LoadPayload() (0 when `payload` is not one).
uint64_t LoadPayloadId(const std::string& payload);

struct ProducerLoadOptions {
  std::string target;  // wharfd's gRPC target, required
  std::string dataset = "orders";
  int producers = 4;  // threads, each with its own client::Producer. Default 4.
  int batch = 100;    // records per Send(). Default 100.
  // Records each producer sends; 0 (default): until Stop().
  int64_t records_per_producer = 0;
  // Sleep between Sends (paces the load). Default 20 ms.
  std::chrono::milliseconds pause{20};
  size_t payload_bytes = 200;  // Default 200.
  // Payload of record i of producer p; default LoadPayload(p, i, payload_bytes).
  std::function<std::string(int, int64_t)> payload;
  // Bound on the final Flush() of each producer. Default 300 s.
  std::chrono::milliseconds flush_timeout{300000};
  // Key of record i of producer p; default none (records spread over partitions).
  std::function<std::string(int, int64_t)> key;
  // client::ProducerOptions::retry_timeout. Default 0: retry until acked, so that every outcome
  // is acked unless the server refuses a request. Non-zero: requests unanswered that long end
  // with an unknown outcome (History); the producer thread then starts a new client::Producer
  // (new producer id) and goes on with the next records, without resending the unknown ones.
  std::chrono::milliseconds retry_timeout{0};
};

// Producer threads streaming records to a wharfd that may be killed and restarted meanwhile:
// the producers retry until every record is acknowledged (or, with retry_timeout, give up on
// some). Records what was sent and acked, and logs every request's outcome in history() for the
// checker (tests/support/checker.h).
//
// Thread safety: Start() and Stop() from the test thread; the accessors may be called any time.
class ProducerLoad {
 public:
  explicit ProducerLoad(ProducerLoadOptions options);
  ~ProducerLoad();  // Stop()s.
  void Start();
  // Makes unbounded producers stop sending, then waits until every producer has flushed.
  void Stop();

  // (partition, offset) -> payload of every acknowledged record.
  std::map<std::pair<uint32_t, uint64_t>, std::string> acked() const;
  size_t sent_count() const;
  size_t acked_count() const;
  uint64_t failed() const { return failed_.load(); }
  uint64_t duplicate_acks() const { return duplicates_.load(); }
  // Every request's outcome, by record id (LoadPayloadId of its payloads).
  const History& history() const { return history_; }

 private:
  void Run(int producer);

  const ProducerLoadOptions options_;
  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;
  mutable std::mutex mu_;
  std::map<std::pair<uint32_t, uint64_t>, std::string> acked_;  // guarded by mu_
  std::set<std::string> sent_;                                  // guarded by mu_
  std::atomic<uint64_t> failed_{0};
  std::atomic<uint64_t> duplicates_{0};
  History history_;
};

// A `postgres` destination item for WharfdConfig::extra_destinations: columns id (bigint from
// /id), src_partition ($partition), src_offset ($offset) and doc (the whole record, jsonb); fast
// retries and a 1 s probe interval so that tests see recoveries quickly.
std::string PostgresDestinationYaml(const std::string& name, const std::string& conninfo,
                                    const std::string& table, bool create_table);
// An `http` destination item named "api" posting NDJSON to `url`; `request_timeout` is omitted
// when empty.
std::string HttpDestinationYaml(const std::string& url, const std::string& request_timeout = "");
// "partition/offset/id" of every acked record (id from LoadPayloadId), the identity the rows of
// a PostgresDestinationYaml() table are compared by.
std::vector<std::string> AckedIdentities(
    const std::map<std::pair<uint32_t, uint64_t>, std::string>& acked);

// The same identities of the rows of such a table (an empty list and a test failure when the
// query fails).
std::vector<std::string> PostgresRowIdentities(const PostgresServer& pg, const std::string& table);

// Exactly-once comparison of identities (payloads, or "partition/offset/id" strings).
struct ExactlyOnceCounts {
  size_t acked = 0;
  size_t delivered = 0;   // entries at the destination, copies included
  size_t lost = 0;        // acked, not delivered
  size_t duplicated = 0;  // delivered copies beyond the first
  size_t unexpected = 0;  // delivered, never acked
  bool ok() const { return lost == 0 && duplicated == 0 && unexpected == 0 && delivered == acked; }
  std::string ToString() const;
};
// `acked` must not hold an identity twice.
ExactlyOnceCounts CompareExactlyOnce(const std::vector<std::string>& acked,
                                     const std::vector<std::string>& delivered);

}  // namespace wharf::testing
