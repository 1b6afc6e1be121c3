#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"

// OpenSSL's SSL_CTX, without including OpenSSL in every user of this header.
struct ssl_ctx_st;

namespace wharf::testing {

// The TLS mode of HttpTestServer (HTTPS with OpenSSL).
struct HttpTestServerTlsOptions {
  // PEM file with the server certificate (then any intermediates). Required, no default.
  std::string cert_file;
  // PEM file with the certificate's private key (unencrypted). Required, no default.
  std::string key_file;
  // PEM file of the CA(s) that issue client certificates. Default empty: no client certificate
  // is requested. When set, every client must present a certificate issued by one of these CAs;
  // the handshake fails without one.
  std::string client_ca_file;
};

// One request as the test server received it.
struct HttpRequest {
  std::string method;   // "POST", ...
  std::string target;   // request-target as sent, e.g. "/ingest?x=1"
  std::string path;     // `target` without the query
  std::string version;  // "HTTP/1.1" or "HTTP/1.0"
  // All header fields in arrival order, names as sent, values without surrounding whitespace.
  std::vector<std::pair<std::string, std::string>> headers;
  // The body after removing the chunked transfer coding and, with Content-Encoding: gzip, after
  // decompression: what the client meant to send.
  std::string body;
  // Size of the body as transferred (after de-chunking, before decompression).
  size_t wire_body_size = 0;
  bool chunked = false;  // Transfer-Encoding: chunked was used
  // When the complete request had been read.
  std::chrono::steady_clock::time_point arrival;
  // 1, 2, ... in the order the server accepted connections; equal for requests on one
  // keep-alive connection.
  uint64_t connection_id = 0;

  // The value of the first header field named `name` (ASCII case-insensitive), if any.
  std::optional<std::string> Header(std::string_view name) const;
  // Header(name) or "" when absent.
  std::string HeaderOr(std::string_view name) const;
};

// What the test server answers to one request.
struct HttpResponse {
  int status = 200;
  // Extra header fields. Content-Length is added unless given here.
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  // Waited before answering (a slow server). Stop() interrupts the wait; the connection is then
  // closed without an answer.
  std::chrono::milliseconds delay{0};
  // After `delay`, close the connection without answering.
  bool drop_connection = false;
  // If set, sent verbatim instead of a response built from the fields above (for malformed
  // responses); the connection is closed afterwards.
  std::optional<std::string> raw;
};

// A real HTTP/1.1 server on 127.0.0.1 for tests of HTTP clients.
//
// Listens on a free port chosen by the kernel. One thread accepts connections and one thread per
// connection serves it: keep-alive (HTTP/1.1 default, "Connection: close" honoured), request
// bodies by Content-Length or chunked transfer coding, "Expect: 100-continue", and
// Content-Encoding: gzip request bodies (decompressed with zlib for the record). Malformed
// requests (bad request line, header syntax, Content-Length, chunk sizes, gzip data; heads above
// 64 KiB, bodies above 64 MiB) are answered with 400 (431, 413, 415 where more precise) and the
// connection is closed; they are counted in MalformedCount() and not recorded as requests.
//
// Answers: a handler, if set, decides every answer; otherwise the next response of the scripted
// queue, and when the queue is empty the default response (200, empty body, unless changed).
//
// Idempotency keys: for every request with an "Idempotency-Key" header that was answered with a
// 2xx status the key's accepted count goes up (AcceptedCount). A key counts as accepted when the
// answer is decided, before any `delay`: like a real server that committed the request but was
// slow to answer. With SetAcceptKeysOnce(true), a request whose key was accepted before is
// answered 200 ("duplicate") at once, without consuming the queue or calling the handler, and
// counted in DuplicateCount() instead, as an idempotent receiver would; the accepted counts then
// say how often a client had a batch accepted, and tests can assert "once per key".
//
// TLS mode (constructed with HttpTestServerTlsOptions): every connection first completes a TLS
// handshake (TLS 1.2 or later; with client_ca_file, a verified client certificate is required),
// then requests are served exactly as above over the TLS stream. Connections whose handshake
// fails are closed and counted in TlsHandshakeFailures(); they never record a request.
//
// Stop() is bounded: every blocking wait (accept, reads, writes, delays) also waits for the stop
// event, so connection threads return promptly even with clients holding connections open.
//
// Thread safety: all methods are thread-safe. The handler is called on connection threads,
// possibly concurrently, without the server's lock held (it may call the accessors).
class HttpTestServer {
 public:
  using Handler = std::function<HttpResponse(const HttpRequest&)>;

  HttpTestServer();  // plain HTTP
  // HTTPS; Start() loads the certificate and key and fails if they are unusable.
  explicit HttpTestServer(HttpTestServerTlsOptions tls);
  ~HttpTestServer();  // Stop()s the server.
  HttpTestServer(const HttpTestServer&) = delete;
  HttpTestServer& operator=(const HttpTestServer&) = delete;

  // Binds 127.0.0.1 on a free port and starts serving. A server starts at most once.
  absl::Status Start();
  // Stops accepting, closes every connection and joins all threads. Idempotent.
  void Stop();

  int port() const { return port_; }
  // "http://127.0.0.1:<port><path>" ("https://..." in TLS mode).
  std::string Url(std::string_view path = "/") const;

  void EnqueueResponse(HttpResponse response);
  void SetDefaultResponse(HttpResponse response);
  // An empty handler removes it.
  void SetHandler(Handler handler);
  void SetAcceptKeysOnce(bool enabled);

  // Copies of all recorded requests, in the order they were completed.
  std::vector<HttpRequest> Requests() const;
  size_t RequestCount() const;
  // Waits until at least `n` requests were recorded; false on timeout.
  bool WaitForRequests(size_t n, std::chrono::milliseconds timeout) const;
  // How many requests with this Idempotency-Key were answered with a 2xx status (not counting
  // duplicates answered by the accept-once mode).
  int AcceptedCount(const std::string& key) const;
  // Every key with its accepted count (keys answered only with errors are absent).
  std::map<std::string, int> AcceptedKeys() const;
  size_t DuplicateCount() const;
  size_t MalformedCount() const;
  size_t ConnectionCount() const;
  size_t QueuedResponses() const;
  // Connections whose TLS handshake failed (always 0 without TLS). A failed handshake is counted
  // after the server sent its alert, so a client may see the failure slightly before this does.
  size_t TlsHandshakeFailures() const;

 private:
  struct Connection {
    int fd = -1;
    uint64_t id = 0;
    std::thread thread;
    bool done = false;  // guarded by mu_
  };

  void AcceptLoop();
  void Serve(Connection* connection);
  // Decides the answer to `request` and records it.
  HttpResponse Answer(HttpRequest request);
  void ReapFinishedConnections();  // requires mu_ held

  // Set by the constructor only (read without a lock afterwards).
  std::optional<HttpTestServerTlsOptions> tls_;
  // Created by Start() in TLS mode, freed by the destructor after all connections are joined;
  // immutable while serving (OpenSSL allows SSL_new on one SSL_CTX from several threads).
  ssl_ctx_st* ssl_ctx_ = nullptr;
  int listen_fd_ = -1;
  int wake_fd_ = -1;  // eventfd, readable once Stop() began
  int port_ = 0;
  std::thread accept_thread_;
  // Serialises Start() and Stop() (never held while mu_ is taken for long).
  std::mutex lifecycle_mu_;
  bool started_ = false;  // guarded by lifecycle_mu_
  bool stopped_ = false;  // guarded by lifecycle_mu_

  mutable std::mutex mu_;
  mutable std::condition_variable requests_cv_;  // signalled when a request is recorded
  std::list<Connection> connections_;            // guarded by mu_
  uint64_t next_connection_id_ = 1;              // guarded by mu_
  std::deque<HttpResponse> queue_;               // guarded by mu_
  HttpResponse default_response_;                // guarded by mu_
  Handler handler_;                              // guarded by mu_
  bool accept_keys_once_ = false;                // guarded by mu_
  std::vector<HttpRequest> requests_;            // guarded by mu_
  std::map<std::string, int> accepted_;          // guarded by mu_
  size_t duplicates_ = 0;                        // guarded by mu_
  size_t malformed_ = 0;                         // guarded by mu_
  size_t tls_failures_ = 0;                      // guarded by mu_
};

}  // namespace wharf::testing
