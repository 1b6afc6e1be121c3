#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"

namespace wharf::bench {

// A minimal HTTP/1.1 receiver for the delivery benchmark: listens on 127.0.0.1:<free port>,
// serves each connection on its own thread (keep-alive), reads requests framed by
// Content-Length, counts their bodies' bytes and '\n' bytes (records of an NDJSON body) and
// answers "200 OK" with an empty body. It keeps nothing of the bodies, so it costs the sender as
// little as a receiver can.
//
// Refused (answered with an error status, then the connection is closed, counted in
// bad_requests()): a malformed request line or header field, a header block over 64 KiB, a
// missing, malformed or duplicate Content-Length on a request with a body method (POST/PUT/PATCH),
// a body over 1 GiB, and any Transfer-Encoding (chunked bodies are not supported: the Wharf HTTP
// destination never sends them).
//
// Thread safety: thread-safe. The counters may be read from any thread; Stop() (also run by the
// destructor) may be called from any thread but once at a time. The connection list is guarded
// by mu_.
class HttpSink {
 public:
  // Binds and starts accepting. UNAVAILABLE/INTERNAL when the socket cannot be set up.
  static absl::StatusOr<std::unique_ptr<HttpSink>> Start();
  ~HttpSink();
  HttpSink(const HttpSink&) = delete;
  HttpSink& operator=(const HttpSink&) = delete;

  // Stops accepting, shuts down open connections and joins every thread. Idempotent.
  void Stop();

  int port() const { return port_; }
  std::string url() const;  // "http://127.0.0.1:<port>/ingest"

  uint64_t requests() const { return requests_.load(); }
  uint64_t body_bytes() const { return body_bytes_.load(); }
  uint64_t lines() const { return lines_.load(); }
  uint64_t bad_requests() const { return bad_requests_.load(); }

 private:
  HttpSink(int listen_fd, int port);
  void AcceptLoop();
  void Serve(int fd);
  // Reads and answers requests on `fd` until the peer closes it, an error, or Stop().
  void ServeRequests(int fd);

  const int listen_fd_;
  const int port_;
  std::atomic<bool> stopping_{false};
  std::atomic<uint64_t> requests_{0};
  std::atomic<uint64_t> body_bytes_{0};
  std::atomic<uint64_t> lines_{0};
  std::atomic<uint64_t> bad_requests_{0};
  std::thread acceptor_;
  std::mutex mu_;
  std::vector<std::thread> workers_;  // guarded by mu_
  std::vector<int> open_fds_;         // guarded by mu_; connections not yet closed
};

}  // namespace wharf::bench
