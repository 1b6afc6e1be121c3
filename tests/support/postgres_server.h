#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace wharf::testing {

struct PostgresServerOptions {
  // Roles (name, password) created with LOGIN at the first Start(). Their TCP connections
  // authenticate with scram-sha-256, so a client must present the password; every other role
  // (notably the superuser `postgres`) is trusted. Names must match [a-z_][a-z0-9_]*. Default:
  // none.
  std::vector<std::pair<std::string, std::string>> password_roles;
  // Bound on waiting for the server to accept connections after it was started. Default 30 s.
  std::chrono::milliseconds start_timeout{30000};
  // Bound on waiting for a fast shutdown (SIGINT) before the server is SIGKILLed. Default 30 s.
  std::chrono::milliseconds stop_timeout{30000};
};

// A throwaway PostgreSQL cluster for tests: `initdb` into a temporary directory, one `postgres`
// process listening on 127.0.0.1:<free port> and on a Unix socket in that directory.
//
// The binaries are taken from the highest version under /usr/lib/postgresql/*/bin. When the test
// runs as root (PostgreSQL refuses to run as root) initdb and the server run as the OS user
// `postgres`, which then owns the temporary directory.
//
// The server runs with fsync=off: a test cluster never has to survive a power failure, and
// skipping fsync keeps the suites fast. A SIGKILL of the server (Kill9) is still crash-safe with
// fsync=off, because the WAL is in the OS page cache, which survives a process crash; only an OS
// crash could lose data.
//
// Stop() (and the destructor) stop the server by its PID (SIGINT = fast shutdown, then SIGKILL
// after `stop_timeout`) and remove the directory.
//
// Thread safety: not thread-safe; one test thread controls the server. Query() and ConnInfo()
// may be called from several threads while no control method (Start/Stop/...) runs.
class PostgresServer {
 public:
  // How Query() returns a SQL NULL (the COPY text-format spelling).
  static constexpr char kNull[] = "\\N";

  explicit PostgresServer(PostgresServerOptions options = {});
  ~PostgresServer();
  PostgresServer(const PostgresServer&) = delete;
  PostgresServer& operator=(const PostgresServer&) = delete;

  // First call: creates the directory, picks a free port, runs initdb. Every call: starts the
  // server (if not running) and waits until it accepts connections; the first call then creates
  // the password roles.
  absl::Status Start();
  // Stops the server, keeping the data directory and port, so Start() or Restart() brings the
  // same cluster back (an outage of the database).
  absl::Status Shutdown();
  // SIGKILLs the server (the postmaster) and reaps it; the data directory stays.
  void Kill9();
  // Shutdown() if running, then Start() on the same port and data directory.
  absl::Status Restart();
  // Shutdown() and removal of the directory. Idempotent.
  void Stop();

  bool running() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }
  int port() const { return port_; }
  const std::string& dir() const { return dir_; }

  // "host=127.0.0.1 port=<port> user=postgres dbname=postgres" (trusted superuser over TCP).
  std::string ConnInfo() const;
  // The same for another user (without a password).
  std::string ConnInfoFor(const std::string& user) const;

  // Runs `sql` (one or more statements, simple query protocol) as `postgres` on a new
  // connection and returns the rows of the last statement, each value as text, NULL as kNull.
  // Statements without rows return no rows.
  absl::StatusOr<std::vector<std::vector<std::string>>> Query(const std::string& sql) const;
  // The first value of the first row of Query(sql), or an error when there is none.
  absl::StatusOr<std::string> QueryValue(const std::string& sql) const;

  // The server's log (stdout and stderr of initdb and postgres).
  std::string Log() const;

 private:
  absl::Status Init();
  absl::Status StartPostmaster();
  absl::Status CreatePasswordRoles();

  const PostgresServerOptions options_;
  std::string bin_dir_;  // .../bin of the PostgreSQL installation
  std::string dir_;      // temporary directory: socket, log, data/
  std::string data_dir_;
  std::string log_path_;
  int port_ = 0;
  pid_t pid_ = -1;
  bool drop_privileges_ = false;  // running as root: exec as `postgres`
  uid_t uid_ = 0;
  gid_t gid_ = 0;
  bool roles_created_ = false;
};

}  // namespace wharf::testing
