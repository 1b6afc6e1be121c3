#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "pipeline/destination.h"
#include "wharf/v1/record.pb.h"

namespace wharf::pipeline {

struct HttpDestinationOptions {
  // Destination name from the config, used in error messages. Default empty.
  std::string name;
  // Endpoint every batch is POSTed to: an absolute http:// or https:// URL with a host. User
  // information and the query are never repeated in error messages (they may hold secrets).
  std::string url;
  // Body format. Default kNdjson: one payload per line, each line '\n'-terminated
  // (application/x-ndjson). kJsonArray: the payloads as the elements of one JSON array
  // (application/json).
  enum class Format { kNdjson, kJsonArray } format = Format::kNdjson;
  // Default false. true: the body is gzip-compressed and sent with Content-Encoding: gzip.
  bool gzip = false;
  // Extra request header fields, sent with every request. Default none. Names must be tokens,
  // values must not contain CR, LF or NUL. Fields Wharf sets itself (Content-Length,
  // Content-Encoding, Transfer-Encoding, Host, Connection, Expect, Idempotency-Key, X-Wharf-*)
  // cannot be given; a Content-Type given here replaces the default one; Authorization only
  // without `bearer_token`.
  std::vector<std::pair<std::string, std::string>> headers;
  // Default empty (no Authorization header). Sent as "Authorization: Bearer <token>". Resolved by
  // the caller (e.g. read from a file, without its trailing newline). Never logged and never part
  // of an error message.
  std::string bearer_token;
  // Time allowed to establish the connection (TCP and TLS). Default 5 s.
  std::chrono::milliseconds connect_timeout{5000};
  // Time allowed for the whole request, connection included. Default 30 s.
  std::chrono::milliseconds request_timeout{30000};
  // TLS, for https:// URLs (ignored for http://). ca_file: PEM bundle of trusted CAs; default
  // empty: the system's trust store. insecure_skip_verify (default false): do not verify the
  // server's certificate and host name - for tests only. client_cert_file / client_key_file
  // (default empty): PEM client certificate and key for mutual TLS; a key requires a certificate
  // (a certificate file may contain its key).
  std::string ca_file;
  bool insecure_skip_verify = false;
  std::string client_cert_file;
  std::string client_key_file;
  // Upper bound for a server's Retry-After (a misbehaving server must not stall a partition for
  // days). Default 5 minutes.
  std::chrono::milliseconds max_retry_after{300000};
};

// Delivers each batch as one HTTP POST request (libcurl).
//
// Request: the records' payloads as NDJSON or a JSON array (optionally gzip-compressed), always
// with a Content-Length (never chunked), and the header fields
//   Content-Type          application/x-ndjson or application/json (unless configured)
//   Idempotency-Key       the batch id; X-Wharf-Batch-Id the same
//   X-Wharf-Dataset, X-Wharf-Partition, X-Wharf-First-Offset, X-Wharf-Last-Offset
//   X-Wharf-Record-Count  records in this request's body (of a sub-batch: of the sub-batch)
//   Authorization         Bearer <token>, if configured; plus the configured extra fields.
// In NDJSON, CR and LF bytes inside a payload are replaced by spaces (in valid JSON they can only
// be insignificant whitespace), so every record is exactly one line. Payloads are otherwise sent
// byte-identical; a payload that is not JSON is the receiver's to refuse (then quarantined as
// below). A batch without records is not sent at all (OK): there is nothing to deliver.
//
// Idempotency: the receiver is expected to deduplicate by Idempotency-Key. Batch ids (also of
// sub-batches) are stable across retries and restarts, so a request whose answer was lost (a
// timeout, a crash before the delivery cursor moved) is repeated with the same key and body.
//
// Classification of the outcome (see Destination for what the pipeline does with each code):
//   2xx                      OK; report->commit_id = the response's X-Request-Id (else empty).
//   400, 422                 INVALID_ARGUMENT: the receiver refused the content; the message has
//                            the status and the first 200 bytes of the response body.
//   413 (Content Too Large)  INVALID_ARGUMENT too, deliberately: the pipeline's bisection then
//                            halves the batch until the parts fit the receiver's size limit,
//                            and only a single record that alone exceeds the limit ends up in
//                            quarantine (replayable once the limit is raised). Treating 413 as
//                            a configuration error would retry the same oversized batch forever
//                            and block the partition, since nothing else makes a batch smaller.
//   408, 425, 429, 5xx       UNAVAILABLE; report->retry_after from Retry-After (delta-seconds or
//                            HTTP-date), capped at max_retry_after; zero when absent or invalid.
//   other 1xx/3xx/4xx        FAILED_PRECONDITION (authentication, wrong URL or method,
//                            redirects, which are not followed): a configuration problem. It is
//                            retried and never quarantines data. Retry-After is honoured too.
//   transport errors         DEADLINE_EXCEEDED for timeouts; FAILED_PRECONDITION for TLS
//                            certificate, TLS setup and URL problems; UNAVAILABLE for the rest
//                            (refused or reset connections, DNS, TLS handshake failures, ...).
// Messages name the destination, the URL without user information and query, the batch id
// and the HTTP status or the libcurl error; never the bearer token or header values (a token
// echoed in a response body is masked).
//
// Thread safety: thread-safe. Deliver() may be called concurrently from any number of threads;
// each call uses its own curl easy handle, taken from a small pool of idle handles (guarded by
// mu_) so that connections are kept alive between calls. The options are immutable after
// Create(). The object must outlive all Deliver() calls.
class HttpDestination final : public Destination {
 public:
  // Validates the options: URL (http or https scheme, host present, no whitespace or control
  // characters), header names and values, the bearer token, timeouts, and that the TLS files
  // exist and are readable. Initialises libcurl once per process (std::call_once). All failures
  // are INVALID_ARGUMENT (bad options) or FAILED_PRECONDITION (libcurl cannot do https).
  static absl::StatusOr<std::unique_ptr<HttpDestination>> Create(HttpDestinationOptions options);

  ~HttpDestination() override;
  HttpDestination(const HttpDestination&) = delete;
  HttpDestination& operator=(const HttpDestination&) = delete;

  std::string_view type() const override { return "http"; }

  absl::Status Deliver(const wharf::v1::StoredBatch& batch, DeliveryReport* report) override;

 private:
  HttpDestination(HttpDestinationOptions options, std::string display_url);
  // Create() without the "http destination <name>: " prefix of error messages.
  static absl::StatusOr<std::unique_ptr<HttpDestination>> CreateValidated(
      HttpDestinationOptions options);

  // A curl easy handle for one call (without options, but with its connection cache), or null if
  // libcurl is out of memory.
  void* AcquireHandle();
  void ReleaseHandle(void* handle);

  const HttpDestinationOptions options_;
  // The URL for messages: without user information, query and fragment.
  const std::string display_url_;
  // Header lines built once from the options (configured fields and Authorization); like the
  // flag, set by the constructor and read-only afterwards.
  std::vector<std::string> static_header_lines_;
  bool has_content_type_ = false;  // the configuration sets Content-Type

  std::mutex mu_;
  // Idle easy handles (CURL*), at most kMaxIdleHandles; each keeps its own connections alive.
  std::vector<void*> idle_handles_ ABSL_GUARDED_BY(mu_);
};

}  // namespace wharf::pipeline
