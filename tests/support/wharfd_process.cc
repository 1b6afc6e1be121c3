#include "tests/support/wharfd_process.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
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
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "client/channel.h"

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
  y += c.extra_top;
  y += "datasets:\n";
  for (size_t i = 0; i < c.datasets.size(); ++i) {
    absl::StrAppend(&y, "  - name: ", c.datasets[i], "\n", "    partitions: ", c.partitions, "\n");
    if (!c.quota.empty()) absl::StrAppend(&y, "    quota: ", c.quota, "\n");
    if (i == 0) y += c.extra_dataset;
    absl::StrAppend(&y, "    destinations:\n", "      - name: files\n", "        type: file\n",
                    "        directory: ", c.out_dir, "\n");
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
  pid_t pid = fork();
  if (pid < 0) return absl::InternalError("fork failed");
  if (pid == 0) {
    int fd = open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
      close(fd);
    }
    execl(WHARFD_PATH, WHARFD_PATH, "--config", config_path_.c_str(), nullptr);
    _exit(127);
  }
  pid_ = pid;
  control_.reset();
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
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

}  // namespace wharf::testing
