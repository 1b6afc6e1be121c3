#pragma once

// A loopback TCP proxy with injectable network faults, for the network-abuse tests
// (tests/integration/network_abuse_test.cc): producers connect to the proxy, the proxy connects
// each of them to wharfd, and the test adds latency, resets every connection or stalls the
// traffic while they stream.
//
// Faults (all settable at runtime, from any thread):
//  - latency: every chunk read from one side is written to the other side no earlier than
//    `latency` after it was read (both directions; order is kept);
//  - ResetAll(): every current connection is closed with a TCP RST on both sides (SO_LINGER 0),
//    as a crashed middlebox or a NAT timeout would;
//  - Stall(direction, duration): forwarding in that direction stops for `duration` without
//    closing anything: the proxy neither reads nor writes, so the sender's socket buffers fill
//    and TCP pushes back, as on a partitioned network that still delivers later.
//
// Memory: at most kMaxQueuedBytes are queued per connection and direction; beyond that the proxy
// stops reading that side (backpressure), so a slow peer cannot make the proxy grow.
//
// Thread safety: thread-safe. Start() and Stop() from the owning thread (Stop() joins the
// forwarding thread; the destructor calls it); every other method may be called from any thread
// while the proxy runs. One forwarding thread does all socket I/O (poll()).

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

#include "absl/status/status.h"

namespace wharf::testing {

class TcpProxy {
 public:
  enum class Direction {
    kBoth,
    kClientToServer,
    kServerToClient,
  };

  static constexpr size_t kMaxQueuedBytes = 1 << 20;

  // Forwards to 127.0.0.1:upstream_port.
  explicit TcpProxy(int upstream_port);
  ~TcpProxy();
  TcpProxy(const TcpProxy&) = delete;
  TcpProxy& operator=(const TcpProxy&) = delete;

  // Listens on 127.0.0.1 (an ephemeral port, see port()) and starts the forwarding thread.
  absl::Status Start();
  // Closes every connection (RST) and the listener, and joins the thread. Idempotent.
  void Stop();

  int port() const { return port_; }
  // "127.0.0.1:<port>", a gRPC target.
  std::string target() const;

  // Added delay per chunk, both directions. 0 (default): none.
  void SetLatency(std::chrono::milliseconds latency);
  // Resets every current connection (both sides get an RST); returns once done (new connections
  // are accepted again right away). Returns the number of connections reset.
  size_t ResetAll();
  // Stops forwarding in `direction` for `duration` from now (replacing an earlier stall of that
  // direction). Stall(d, 0ms) ends it.
  void Stall(Direction direction, std::chrono::milliseconds duration);

  // Counters since Start().
  uint64_t connections_accepted() const { return accepted_.load(); }
  uint64_t connections_reset() const { return reset_.load(); }
  // Connections whose server side closed or failed first (e.g. wharfd ending a connection whose
  // peer stopped answering keepalive pings).
  uint64_t closed_by_server() const { return closed_by_server_.load(); }
  uint64_t bytes_to_server() const { return bytes_up_.load(); }
  uint64_t bytes_to_client() const { return bytes_down_.load(); }
  size_t open_connections() const { return open_.load(); }

 private:
  struct Conn;
  void Loop();
  void Wake();

  const int upstream_port_;
  int listen_fd_ = -1;
  int wake_fds_[2] = {-1, -1};  // self-pipe: wakes poll() for settings, resets and Stop()
  int port_ = 0;
  std::thread thread_;
  std::atomic<bool> stop_{false};

  mutable std::mutex mu_;
  std::chrono::milliseconds latency_{0};                    // guarded by mu_
  std::chrono::steady_clock::time_point stall_up_until_;    // guarded by mu_
  std::chrono::steady_clock::time_point stall_down_until_;  // guarded by mu_
  uint64_t reset_requested_ = 0;                            // guarded by mu_
  uint64_t reset_done_ = 0;                                 // guarded by mu_
  size_t last_reset_count_ = 0;                             // guarded by mu_
  std::condition_variable reset_cv_;

  std::atomic<uint64_t> accepted_{0};
  std::atomic<uint64_t> reset_{0};
  std::atomic<uint64_t> closed_by_server_{0};
  std::atomic<uint64_t> bytes_up_{0};
  std::atomic<uint64_t> bytes_down_{0};
  std::atomic<size_t> open_{0};
};

}  // namespace wharf::testing
