#include "tests/support/wharfd_process.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>
#include <unordered_map>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "client/channel.h"
#include "client/producer.h"
#include "tests/support/postgres_server.h"

extern char** environ;

namespace wharf::testing {

TempDir::TempDir() {
  char tmpl[] = "/tmp/wharf-test-XXXXXX";
  char* p = mkdtemp(tmpl);
  if (p == nullptr) std::abort();
  path_ = p;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) std::abort();
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  const int port = ntohs(addr.sin_port);
  close(fd);
  return port;
}

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string RenderConfig(const WharfdConfig& c) {
  std::string y = absl::StrCat(
      "listen: 127.0.0.1:", c.port, "\n", "metrics_listen: 127.0.0.1:", c.metrics_port, "\n",
      "data_dir: ", c.data_dir, "\n", "durability: ", c.durability, "\n", "min_free_disk: 64MiB\n",
      "shutdown_timeout: 10s\n", "batching:\n", "  max_records: ", c.max_records, "\n",
      "  linger: ", c.linger, "\n", "retention:\n", "  raw: ", c.retention_raw, "\n",
      "  interval: ", c.retention_interval, "\n", "delivery:\n", "  initial_backoff: 50ms\n",
      "  max_backoff: 1s\n", "log:\n", "  level: info\n", "  format: ", c.log_format, "\n");
  if (c.min_free_disk != "64MiB") {
    const std::string kDefault = "min_free_disk: 64MiB";
    y.replace(y.find(kDefault), kDefault.size(), "min_free_disk: " + c.min_free_disk);
  }
  y += c.extra_top;
  y += "datasets:\n";
  for (size_t i = 0; i < c.datasets.size(); ++i) {
    absl::StrAppend(&y, "  - name: ", c.datasets[i], "\n", "    partitions: ", c.partitions, "\n");
    if (!c.quota.empty()) absl::StrAppend(&y, "    quota: ", c.quota, "\n");
    if (i == 0) y += c.extra_dataset;
    y += "    destinations:\n";
    if (i != 0 || c.file_destination) {
      absl::StrAppend(&y, "      - name: files\n", "        type: file\n",
                      "        directory: ", c.out_dir, "\n");
    }
    if (i == 0) y += c.extra_destinations;
  }
  return y;
}

WharfdProcess::WharfdProcess(WharfdConfig config) : config_(std::move(config)) {
  if (config_.port == 0) config_.port = FreePort();
  if (config_.metrics_port == 0) config_.metrics_port = FreePort();
  config_path_ = config_.data_dir + ".yaml";
  log_path_ = config_.data_dir + ".log";
}

WharfdProcess::~WharfdProcess() {
  if (pid_ > 0) Kill9();
}

std::string WharfdProcess::target() const { return absl::StrCat("127.0.0.1:", config_.port); }

std::string WharfdProcess::Log() const { return ReadFile(log_path_); }

client::ControlClient& WharfdProcess::control() {
  if (!control_) {
    control_ = std::make_unique<client::ControlClient>(client::CreateChannel(target()));
  }
  return *control_;
}

namespace {
bool PortOpen(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  const bool ok = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  close(fd);
  return ok;
}
}  // namespace

absl::Status WharfdProcess::Start(std::chrono::milliseconds timeout) {
  if (pid_ > 0) return absl::FailedPreconditionError("already running");
  WriteFile(config_path_, RenderConfig(config_));
  // The child's environment is built before fork(): only async-signal-safe calls after it.
  std::vector<std::string> env_strings;
  std::vector<char*> envp;
  if (!config_.env.empty()) {
    std::set<std::string> overridden;
    for (const auto& e : config_.env) overridden.insert(e.substr(0, e.find('=')));
    for (char** e = environ; *e != nullptr; ++e) {
      const std::string entry(*e);
      if (overridden.count(entry.substr(0, entry.find('='))) == 0) env_strings.push_back(entry);
    }
    env_strings.insert(env_strings.end(), config_.env.begin(), config_.env.end());
    for (auto& e : env_strings) envp.push_back(e.data());
    envp.push_back(nullptr);
  }
  const char* binary = config_.binary.empty() ? WHARFD_PATH : config_.binary.c_str();
  pid_t pid = fork();
  if (pid < 0) return absl::InternalError("fork failed");
  if (pid == 0) {
    int fd = open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
      close(fd);
    }
    if (!envp.empty()) {
      char* const argv[] = {const_cast<char*>(binary), const_cast<char*>("--config"),
                            const_cast<char*>(config_path_.c_str()), nullptr};
      execve(binary, argv, envp.data());
    } else {
      execl(binary, binary, "--config", config_path_.c_str(), nullptr);
    }
    _exit(127);
  }
  pid_ = pid;
  control_.reset();
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      exit_status_ = status;
      return absl::InternalError(
          absl::StrCat("wharfd exited during start-up (status ", status, "); log:\n", Log()));
    }
    // Probe the port with a plain TCP connect first: gRPC channels back off after refused
    // connections, which would make every start look seconds slower than it is.
    if (PortOpen(config_.port)) {
      auto st = control().GetStatus({}, std::chrono::seconds(5));
      if (st.ok()) return absl::OkStatus();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return absl::DeadlineExceededError("wharfd did not answer GetStatus in time; log:\n" + Log());
}

void WharfdProcess::Kill9() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
}

bool WharfdProcess::CheckExited() {
  if (pid_ <= 0) return true;
  int status = 0;
  if (waitpid(pid_, &status, WNOHANG) != pid_) return false;
  pid_ = -1;
  exit_status_ = status;
  return true;
}

absl::StatusOr<int> WharfdProcess::Terminate(std::chrono::milliseconds timeout) {
  if (pid_ <= 0) return absl::FailedPreconditionError("not running");
  kill(pid_, SIGTERM);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      if (WIFEXITED(status)) return WEXITSTATUS(status);
      return -WTERMSIG(status);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  Kill9();
  return absl::DeadlineExceededError("wharfd did not stop after SIGTERM");
}

std::pair<int, std::string> RunCommand(const std::vector<std::string>& argv) {
  int pipefd[2];
  if (pipe(pipefd) != 0) return {-1, "pipe failed"};
  pid_t pid = fork();
  if (pid == 0) {
    dup2(pipefd[1], 1);
    dup2(pipefd[1], 2);
    close(pipefd[0]);
    close(pipefd[1]);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  close(pipefd[1]);
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = read(pipefd[0], buf, sizeof(buf))) > 0) out.append(buf, static_cast<size_t>(n));
  close(pipefd[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

std::vector<DestinationFile> ReadDestination(const std::string& dir, const std::string& dataset) {
  std::vector<DestinationFile> files;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    const std::string prefix = dataset + "-p";
    if (name.rfind(prefix, 0) != 0 || name.size() < 6 || name.substr(name.size() - 6) != ".jsonl") {
      continue;
    }
    DestinationFile f;
    f.name = name;
    unsigned int partition = 0;
    unsigned long long first = 0, last = 0;
    if (std::sscanf(name.c_str() + prefix.size(), "%u-%llu-%llu.jsonl", &partition, &first,
                    &last) != 3) {
      continue;
    }
    f.partition = partition;
    f.first_offset = first;
    f.last_offset = last;
    std::istringstream in(ReadFile(entry.path().string()));
    std::string line;
    while (std::getline(in, line)) f.lines.push_back(line);
    files.push_back(std::move(f));
  }
  std::sort(files.begin(), files.end(), [](const DestinationFile& a, const DestinationFile& b) {
    return std::tie(a.partition, a.first_offset) < std::tie(b.partition, b.first_offset);
  });
  return files;
}

absl::StatusOr<std::string> HttpGet(int port, const std::string& path) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return absl::UnavailableError(absl::StrCat("connect to port ", port, " failed"));
  }
  const std::string req =
      absl::StrCat("GET ", path, " HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
  if (write(fd, req.data(), req.size()) != static_cast<ssize_t>(req.size())) {
    close(fd);
    return absl::UnavailableError("write failed");
  }
  std::string resp;
  char buf[8192];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) resp.append(buf, static_cast<size_t>(n));
  close(fd);
  const size_t body = resp.find("\r\n\r\n");
  if (body == std::string::npos) return absl::DataLossError("malformed HTTP response");
  return resp.substr(body + 4);
}

bool WaitFor(const std::function<bool()>& pred, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    if (pred()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

uint64_t DeliveredRecords(client::ControlClient& control, const std::string& dataset) {
  wharf::v1::GetStatusRequest req;
  req.add_datasets(dataset);
  auto st = control.GetStatus(req, std::chrono::seconds(2));
  if (!st.ok() || st->datasets_size() != 1) return 0;
  uint64_t min = UINT64_MAX;
  for (const auto& d : st->datasets(0).destinations()) min = std::min(min, d.records_delivered());
  return min == UINT64_MAX ? 0 : min;
}

bool Extended() {
  const char* e = std::getenv("WHARF_EXTENDED");
  return e != nullptr && std::string(e) == "1";
}

bool AllDelivered(client::ControlClient& control) {
  wharf::v1::GetStatusRequest req;
  auto st = control.GetStatus(req, std::chrono::seconds(2));
  if (!st.ok() || st->datasets_size() == 0) return false;
  for (const auto& ds : st->datasets()) {
    for (const auto& p : ds.partition_status()) {
      if (p.validated_offset() != p.next_offset()) return false;
    }
    for (const auto& d : ds.destinations()) {
      if (d.backlog_records() != 0) return false;
    }
  }
  return true;
}

std::optional<wharf::v1::DestinationStatus> FindDestinationStatus(client::ControlClient& control,
                                                                  const std::string& dataset,
                                                                  const std::string& destination) {
  wharf::v1::GetStatusRequest req;
  req.add_datasets(dataset);
  auto st = control.GetStatus(req, std::chrono::seconds(2));
  if (!st.ok()) return std::nullopt;
  for (const auto& ds : st->datasets()) {
    if (ds.name() != dataset) continue;
    for (const auto& d : ds.destinations()) {
      if (d.name() == destination) return d;
    }
  }
  return std::nullopt;
}

double MetricSum(const std::string& metrics_text, const std::string& name,
                 const std::vector<std::string>& labels) {
  double sum = 0;
  std::istringstream in(metrics_text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    // "name{labels} value" or "name value"; the name must match exactly.
    const size_t name_end = line.find_first_of("{ ");
    if (name_end == std::string::npos || line.compare(0, name_end, name) != 0 ||
        name_end != name.size()) {
      continue;
    }
    std::string label_text;
    size_t value_start = name_end;
    if (line[name_end] == '{') {
      const size_t close = line.find('}', name_end);
      if (close == std::string::npos) continue;
      label_text = line.substr(name_end + 1, close - name_end - 1);
      value_start = close + 1;
    }
    bool match = true;
    for (const auto& l : labels) {
      if (label_text.find(l) == std::string::npos) match = false;
    }
    if (!match) continue;
    sum += std::strtod(line.c_str() + value_start, nullptr);
  }
  return sum;
}

std::string LoadPayload(int producer, int64_t i, size_t bytes) {
  const uint64_t id =
      static_cast<uint64_t>(producer) * 1000000000ull + static_cast<uint64_t>(i) + 1;
  std::string p =
      absl::StrCat(R"({"id":)", id, R"(,"producer":)", producer, R"(,"i":)", i, R"(,"pad":")");
  const size_t tail = 2;  // "}
  if (p.size() + tail < bytes) p.append(bytes - p.size() - tail, 'x');
  p += "\"}";
  return p;
}

uint64_t LoadPayloadId(const std::string& payload) {
  // Strictly `{"id":<digits>,`: sscanf("%llu") would also take a sign or leading blanks, and
  // would not require the comma.
  constexpr absl::string_view kPrefix = R"({"id":)";
  if (payload.compare(0, kPrefix.size(), kPrefix.data(), kPrefix.size()) != 0) return 0;
  const size_t comma = payload.find(',', kPrefix.size());
  if (comma == std::string::npos || comma == kPrefix.size()) return 0;
  const std::string digits = payload.substr(kPrefix.size(), comma - kPrefix.size());
  uint64_t id = 0;
  if (digits.find_first_not_of("0123456789") != std::string::npos ||
      !absl::SimpleAtoi(digits, &id)) {
    return 0;
  }
  return id;
}

ProducerLoad::ProducerLoad(ProducerLoadOptions options) : options_(std::move(options)) {}

ProducerLoad::~ProducerLoad() { Stop(); }

void ProducerLoad::Start() {
  for (int p = 0; p < options_.producers; ++p) threads_.emplace_back([this, p] { Run(p); });
}

void ProducerLoad::Stop() {
  stop_.store(true);
  for (auto& t : threads_) t.join();
  threads_.clear();
}

void ProducerLoad::Run(int p) {
  client::ProducerOptions opts;
  opts.dataset = options_.dataset;
  opts.max_inflight_requests = 8;
  opts.initial_backoff = std::chrono::milliseconds(20);
  opts.max_backoff = std::chrono::milliseconds(500);
  opts.retry_timeout = options_.retry_timeout;
  auto create = [&]() -> std::unique_ptr<client::Producer> {
    opts.producer_id = absl::StrCat("load-", client::RandomProducerId(), "-", p);
    auto producer = client::Producer::Create(client::CreateChannel(options_.target), opts);
    if (!producer.ok()) {
      ADD_FAILURE() << "producer: " << producer.status();
      return nullptr;
    }
    return std::move(*producer);
  };
  std::unique_ptr<client::Producer> producer = create();
  if (producer == nullptr) return;
  const int64_t limit = options_.records_per_producer;
  for (int64_t start = 0; limit > 0 ? start < limit : !stop_.load(); start += options_.batch) {
    if (options_.pause.count() > 0) std::this_thread::sleep_for(options_.pause);
    const int64_t end =
        limit > 0 ? std::min<int64_t>(limit, start + options_.batch) : start + options_.batch;
    std::vector<wharf::v1::Record> recs;
    auto payloads = std::make_shared<std::vector<std::string>>();
    auto ids = std::make_shared<std::vector<uint64_t>>();
    for (int64_t i = start; i < end; ++i) {
      payloads->push_back(options_.payload ? options_.payload(p, i)
                                           : LoadPayload(p, i, options_.payload_bytes));
      ids->push_back(LoadPayloadId(payloads->back()));
      wharf::v1::Record r;
      r.set_payload(payloads->back());
      if (options_.key) r.set_key(options_.key(p, i));
      recs.push_back(std::move(r));
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      sent_.insert(payloads->begin(), payloads->end());
    }
    auto done = [this, payloads, ids](const client::SendResult& r) {
      history_.Log(*ids, r);
      if (!r.status.ok()) {
        failed_++;
        return;
      }
      if (r.duplicate) duplicates_++;
      std::lock_guard<std::mutex> lock(mu_);
      for (size_t i = 0; i < r.acks.size() && i < payloads->size(); ++i) {
        auto [it, inserted] = acked_.emplace(
            std::make_pair(r.acks[i].partition(), r.acks[i].offset()), (*payloads)[i]);
        if (!inserted && it->second != (*payloads)[i]) {
          ADD_FAILURE() << "two records acked at the same offset";
        }
      }
    };
    absl::Status st = producer->Send(std::move(recs), done);
    if (!st.ok() && options_.retry_timeout.count() > 0) {
      // The producer gave up (retry timeout): its unanswered requests ended with an unknown
      // outcome. These records were never queued; a new producer sends them.
      (void)producer->Flush(options_.flush_timeout);
      producer->Close();
      producer = create();
      if (producer == nullptr) break;
      std::vector<wharf::v1::Record> again;
      for (int64_t i = start; i < end; ++i) {
        wharf::v1::Record r;
        r.set_payload((*payloads)[static_cast<size_t>(i - start)]);
        if (options_.key) r.set_key(options_.key(p, i));
        again.push_back(std::move(r));
      }
      st = producer->Send(std::move(again), done);
    }
    if (!st.ok()) {
      history_.LogRefused(*ids);
      ADD_FAILURE() << "Send: " << st;
      break;
    }
  }
  absl::Status flushed = producer->Flush(options_.flush_timeout);
  if (!flushed.ok()) ADD_FAILURE() << "Flush: " << flushed;
  producer->Close();
}

std::map<std::pair<uint32_t, uint64_t>, std::string> ProducerLoad::acked() const {
  std::lock_guard<std::mutex> lock(mu_);
  return acked_;
}

size_t ProducerLoad::sent_count() const {
  std::lock_guard<std::mutex> lock(mu_);
  return sent_.size();
}

size_t ProducerLoad::acked_count() const {
  std::lock_guard<std::mutex> lock(mu_);
  return acked_.size();
}

std::string HttpDestinationYaml(const std::string& url, const std::string& request_timeout) {
  std::string y = absl::StrCat("      - name: api\n", "        type: http\n", "        url: ", url,
                               "\n", "        format: ndjson\n");
  if (!request_timeout.empty()) {
    absl::StrAppend(&y, "        request_timeout: ", request_timeout, "\n");
  }
  return y;
}

std::string PostgresDestinationYaml(const std::string& name, const std::string& conninfo,
                                    const std::string& table, bool create_table) {
  return absl::StrCat("      - name: ", name, "\n", "        type: postgres\n",
                      "        conninfo: \"", conninfo, "\"\n", "        table: ", table, "\n",
                      "        create_table: ", create_table ? "true" : "false", "\n",
                      "        columns:\n", "          - {name: id, source: /id, type: bigint}\n",
                      "          - {name: src_partition, source: $partition, type: integer}\n",
                      "          - {name: src_offset, source: $offset, type: bigint}\n",
                      "          - {name: doc, source: \"\", type: jsonb}\n",
                      "        retry: {initial_backoff: 50ms, max_backoff: 1s, down_after: 5, ",
                      "probe_interval: 1s}\n");
}

std::vector<std::string> AckedIdentities(
    const std::map<std::pair<uint32_t, uint64_t>, std::string>& acked) {
  std::vector<std::string> out;
  out.reserve(acked.size());
  for (const auto& [pos, payload] : acked) {
    out.push_back(absl::StrCat(pos.first, "/", pos.second, "/", LoadPayloadId(payload)));
  }
  return out;
}

std::vector<std::string> PostgresRowIdentities(const PostgresServer& pg, const std::string& table) {
  auto rows = pg.Query(absl::StrCat("SELECT src_partition, src_offset, id FROM ", table));
  EXPECT_TRUE(rows.ok()) << rows.status();
  std::vector<std::string> out;
  if (!rows.ok()) return out;
  out.reserve(rows->size());
  for (const auto& r : *rows) out.push_back(absl::StrCat(r[0], "/", r[1], "/", r[2]));
  return out;
}

std::string ExactlyOnceCounts::ToString() const {
  return absl::StrCat("acked=", acked, " delivered=", delivered, " lost=", lost,
                      " duplicated=", duplicated, " unexpected=", unexpected);
}

ExactlyOnceCounts CompareExactlyOnce(const std::vector<std::string>& acked,
                                     const std::vector<std::string>& delivered) {
  ExactlyOnceCounts c;
  c.acked = acked.size();
  c.delivered = delivered.size();
  std::unordered_map<std::string, int> copies;
  copies.reserve(acked.size());
  for (const auto& a : acked) copies.emplace(a, 0);
  for (const auto& d : delivered) {
    auto it = copies.find(d);
    if (it == copies.end()) {
      ++c.unexpected;
      continue;
    }
    if (++it->second > 1) ++c.duplicated;
  }
  for (const auto& [id, n] : copies) {
    if (n == 0) ++c.lost;
  }
  return c;
}

}  // namespace wharf::testing
