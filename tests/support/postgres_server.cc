#include "tests/support/postgres_server.h"

#include <fcntl.h>
#include <grp.h>
#include <libpq-fe.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "tests/support/wharfd_process.h"

namespace wharf::testing {
namespace {

using Clock = std::chrono::steady_clock;

// The bin directory of the highest PostgreSQL version under /usr/lib/postgresql (Debian layout:
// /usr/lib/postgresql/<version>/bin), or "" when there is none.
std::string FindBinDir() {
  std::string best;
  std::vector<int> best_version;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/usr/lib/postgresql", ec)) {
    const std::string name = entry.path().filename().string();
    std::vector<int> version;
    bool ok = true;
    for (absl::string_view part : absl::StrSplit(name, '.')) {
      int n = 0;
      if (!absl::SimpleAtoi(part, &n)) ok = false;
      version.push_back(n);
    }
    if (!ok) continue;
    const std::string bin = entry.path().string() + "/bin";
    if (::access((bin + "/postgres").c_str(), X_OK) != 0 ||
        ::access((bin + "/initdb").c_str(), X_OK) != 0) {
      continue;
    }
    if (best.empty() || version > best_version) {
      best = bin;
      best_version = version;
    }
  }
  return best;
}

std::string Tail(const std::string& text, size_t n) {
  return text.size() <= n ? text : text.substr(text.size() - n);
}

// Forks and execs `argv` with stdout and stderr appended to `log_path`, stdin from /dev/null,
// working directory `cwd`, as (uid, gid) when `drop` is set. The child gets SIGQUIT (PostgreSQL's
// immediate shutdown) when the test process dies, so a killed test run leaves no server behind.
absl::StatusOr<pid_t> Spawn(const std::vector<std::string>& argv, const std::string& log_path,
                            const std::string& cwd, bool drop, uid_t uid, gid_t gid) {
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const int log_fd = ::open(log_path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (log_fd < 0) return absl::InternalError(absl::StrCat("open ", log_path, ": ", errno));
  const int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(log_fd);
    if (null_fd >= 0) ::close(null_fd);
    return absl::InternalError(absl::StrCat("fork: errno ", errno));
  }
  if (pid == 0) {
    // Child: only async-signal-safe calls until execv.
    if (null_fd >= 0) ::dup2(null_fd, 0);
    ::dup2(log_fd, 1);
    ::dup2(log_fd, 2);
    if (drop) {
      if (::setgroups(1, &gid) != 0 || ::setgid(gid) != 0 || ::setuid(uid) != 0) _exit(126);
    }
    // After setuid: a credential change clears the parent-death signal.
    ::prctl(PR_SET_PDEATHSIG, SIGQUIT);
    if (::getppid() != parent) _exit(125);
    if (::chdir(cwd.c_str()) != 0) _exit(124);
    ::execv(args[0], args.data());
    _exit(127);
  }
  ::close(log_fd);
  if (null_fd >= 0) ::close(null_fd);
  return pid;
}

// Waits up to `timeout` for `pid` to exit. Returns true (and the wait status) if it did.
bool WaitExit(pid_t pid, std::chrono::milliseconds timeout, int* status) {
  const auto deadline = Clock::now() + timeout;
  while (true) {
    const pid_t r = ::waitpid(pid, status, WNOHANG);
    if (r == pid || (r < 0 && errno == ECHILD)) return true;
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

std::string StatusText(int status) {
  if (WIFEXITED(status)) return absl::StrCat("exit code ", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return absl::StrCat("signal ", WTERMSIG(status));
  return absl::StrCat("wait status ", status);
}

bool ValidRoleName(const std::string& name) {
  if (name.empty() || name.size() > 63) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool lower = c >= 'a' && c <= 'z';
    const bool digit = c >= '0' && c <= '9';
    if (!(lower || c == '_' || (digit && i > 0))) return false;
  }
  return true;
}

}  // namespace

PostgresServer::PostgresServer(PostgresServerOptions options) : options_(std::move(options)) {}

PostgresServer::~PostgresServer() { Stop(); }

absl::Status PostgresServer::Init() {
  for (const auto& [role, password] : options_.password_roles) {
    if (!ValidRoleName(role)) {
      return absl::InvalidArgumentError(absl::StrCat("invalid password role name ", role));
    }
  }
  bin_dir_ = FindBinDir();
  if (bin_dir_.empty()) {
    return absl::FailedPreconditionError(
        "no PostgreSQL installation found under /usr/lib/postgresql/*/bin");
  }
  if (::geteuid() == 0) {
    // PostgreSQL refuses to run as root: run initdb and the server as `postgres`.
    struct passwd pw;
    struct passwd* found = nullptr;
    char buf[4096];
    if (::getpwnam_r("postgres", &pw, buf, sizeof(buf), &found) != 0 || found == nullptr) {
      return absl::FailedPreconditionError("running as root but there is no OS user postgres");
    }
    drop_privileges_ = true;
    uid_ = pw.pw_uid;
    gid_ = pw.pw_gid;
  }
  char tmpl[] = "/tmp/wharf-pg-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) return absl::InternalError("mkdtemp failed");
  dir_ = tmpl;
  if (drop_privileges_ && ::chown(dir_.c_str(), uid_, gid_) != 0) {
    return absl::InternalError(absl::StrCat("chown ", dir_, ": errno ", errno));
  }
  data_dir_ = dir_ + "/data";
  log_path_ = dir_ + "/postgres.log";
  port_ = FreePort();

  // --no-sync: see the class comment on fsync; a test cluster need not survive power loss.
  absl::StatusOr<pid_t> pid =
      Spawn({bin_dir_ + "/initdb", "--pgdata=" + data_dir_, "--username=postgres", "--auth=trust",
             "--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions"},
            log_path_, dir_, drop_privileges_, uid_, gid_);
  if (!pid.ok()) return pid.status();
  int status = 0;
  if (!WaitExit(*pid, std::chrono::seconds(120), &status)) {
    ::kill(*pid, SIGKILL);
    ::waitpid(*pid, &status, 0);
    return absl::DeadlineExceededError(absl::StrCat("initdb timed out: ", Tail(Log(), 2000)));
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return absl::InternalError(
        absl::StrCat("initdb failed (", StatusText(status), "): ", Tail(Log(), 2000)));
  }

  // Local socket connections and TCP connections are trusted, except the password roles' TCP
  // connections, which must authenticate (first matching line wins).
  std::string hba = "local all all trust\n";
  for (const auto& [role, password] : options_.password_roles) {
    absl::StrAppend(&hba, "host all ", role, " 127.0.0.1/32 scram-sha-256\n");
  }
  hba += "host all all 127.0.0.1/32 trust\n";
  const std::string hba_path = data_dir_ + "/pg_hba.conf";
  WriteFile(hba_path, hba);
  if (drop_privileges_ && ::chown(hba_path.c_str(), uid_, gid_) != 0) {
    return absl::InternalError(absl::StrCat("chown ", hba_path, ": errno ", errno));
  }
  return absl::OkStatus();
}

absl::Status PostgresServer::Start() {
  if (running()) return absl::OkStatus();
  if (dir_.empty()) {
    absl::Status init = Init();
    if (!init.ok()) {
      Stop();
      return init;
    }
  }
  absl::Status started = StartPostmaster();
  if (!started.ok()) return started;
  if (!roles_created_) {
    absl::Status roles = CreatePasswordRoles();
    if (!roles.ok()) return roles;
    roles_created_ = true;
  }
  return absl::OkStatus();
}

absl::Status PostgresServer::StartPostmaster() {
  const auto deadline = Clock::now() + options_.start_timeout;
  const std::string ping_conninfo = ConnInfo() + " connect_timeout=2";
  while (true) {
    absl::StatusOr<pid_t> pid =
        Spawn({bin_dir_ + "/postgres", "-D", data_dir_, "-p", std::to_string(port_), "-k", dir_,
               "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "shared_buffers=16MB",
               "-c", "max_connections=60"},
              log_path_, dir_, drop_privileges_, uid_, gid_);
    if (!pid.ok()) return pid.status();
    pid_ = *pid;
    bool exited = false;
    while (Clock::now() < deadline) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        exited = true;
        break;
      }
      if (PQping(ping_conninfo.c_str()) == PQPING_OK) return absl::OkStatus();
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    if (!exited) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
      pid_ = -1;
      return absl::DeadlineExceededError(
          absl::StrCat("postgres did not accept connections in time: ", Tail(Log(), 2000)));
    }
    pid_ = -1;
    // The server exited during startup. After Kill9 that happens while backends of the killed
    // server still hold its shared memory (they exit on their own within moments): try again
    // until the deadline.
    if (Clock::now() >= deadline) {
      return absl::InternalError(
          absl::StrCat("postgres exited during startup: ", Tail(Log(), 2000)));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

absl::Status PostgresServer::CreatePasswordRoles() {
  for (const auto& [role, password] : options_.password_roles) {
    // Test-only SQL: the role name is validated above; the password literal doubles quotes.
    const std::string literal = absl::StrReplaceAll(password, {{"'", "''"}});
    absl::StatusOr<std::vector<std::vector<std::string>>> r =
        Query(absl::StrCat("CREATE ROLE ", role, " LOGIN PASSWORD '", literal, "'"));
    if (!r.ok()) return r.status();
  }
  return absl::OkStatus();
}

absl::Status PostgresServer::Shutdown() {
  if (!running()) return absl::OkStatus();
  ::kill(pid_, SIGINT);  // fast shutdown: abort sessions, checkpoint, exit
  int status = 0;
  const bool exited = WaitExit(pid_, options_.stop_timeout, &status);
  if (!exited) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, &status, 0);
  }
  pid_ = -1;
  if (!exited) return absl::DeadlineExceededError("postgres did not shut down in time; killed");
  return absl::OkStatus();
}

void PostgresServer::Kill9() {
  if (!running()) return;
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

absl::Status PostgresServer::Restart() {
  absl::Status down = Shutdown();
  if (!down.ok()) return down;
  return Start();
}

void PostgresServer::Stop() {
  (void)Shutdown();
  if (!dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
    dir_.clear();
  }
}

std::string PostgresServer::ConnInfo() const { return ConnInfoFor("postgres"); }

std::string PostgresServer::ConnInfoFor(const std::string& user) const {
  return absl::StrCat("host=127.0.0.1 port=", port_, " user=", user, " dbname=postgres");
}

absl::StatusOr<std::vector<std::vector<std::string>>> PostgresServer::Query(
    const std::string& sql) const {
  const std::string conninfo = ConnInfo() + " connect_timeout=10";
  std::unique_ptr<PGconn, decltype(&PQfinish)> conn(PQconnectdb(conninfo.c_str()), &PQfinish);
  if (conn == nullptr || PQstatus(conn.get()) != CONNECTION_OK) {
    return absl::UnavailableError(
        absl::StrCat("connect: ", conn ? PQerrorMessage(conn.get()) : "out of memory"));
  }
  std::unique_ptr<PGresult, decltype(&PQclear)> res(PQexec(conn.get(), sql.c_str()), &PQclear);
  const ExecStatusType st = res ? PQresultStatus(res.get()) : PGRES_FATAL_ERROR;
  if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
    return absl::InternalError(absl::StrCat("query failed: ", PQerrorMessage(conn.get())));
  }
  std::vector<std::vector<std::string>> rows;
  for (int r = 0; r < PQntuples(res.get()); ++r) {
    std::vector<std::string> row;
    for (int c = 0; c < PQnfields(res.get()); ++c) {
      if (PQgetisnull(res.get(), r, c)) {
        row.emplace_back(kNull);
      } else {
        row.emplace_back(PQgetvalue(res.get(), r, c), PQgetlength(res.get(), r, c));
      }
    }
    rows.push_back(std::move(row));
  }
  return rows;
}

absl::StatusOr<std::string> PostgresServer::QueryValue(const std::string& sql) const {
  absl::StatusOr<std::vector<std::vector<std::string>>> rows = Query(sql);
  if (!rows.ok()) return rows.status();
  if (rows->empty() || rows->front().empty()) {
    return absl::NotFoundError(absl::StrCat("no value from: ", sql));
  }
  return rows->front().front();
}

std::string PostgresServer::Log() const { return log_path_.empty() ? "" : ReadFile(log_path_); }

}  // namespace wharf::testing
