#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "client/control_client.h"

namespace wharf::testing {

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
  std::string log_path() const { return log_path_; }
  std::string Log() const;
  client::ControlClient& control();

 private:
  WharfdConfig config_;
  std::string config_path_;
  std::string log_path_;
  pid_t pid_ = -1;
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

}  // namespace wharf::testing
