#include "pipeline/destinations/http_destination.h"

#include <curl/curl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstring>
#include <ctime>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "absl/strings/str_cat.h"

namespace wharf::pipeline {
namespace {

// Idle easy handles kept per destination: enough for the usual number of delivery threads;
// handles beyond it are cleaned up after their call (and their connections closed).
constexpr size_t kMaxIdleHandles = 8;
// Bytes of a refused request's response body quoted in the error message.
constexpr size_t kExcerptBytes = 200;
// Bytes of a response body kept at all (the rest is read and discarded).
constexpr size_t kKeptBodyBytes = 4096;
// Longest X-Request-Id taken as commit id.
constexpr size_t kMaxCommitIdBytes = 200;

absl::string_view Absl(std::string_view s) { return absl::string_view(s.data(), s.size()); }

char AsciiLower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (AsciiLower(a[i]) != AsciiLower(b[i])) return false;
  }
  return true;
}

bool StartsWithIgnoreCase(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && EqualsIgnoreCase(s.substr(0, prefix.size()), prefix);
}

std::string_view TrimWhitespace(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// RFC 9110 token (header field names).
bool IsToken(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    const bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    if (!alnum && std::string_view("!#$%&'*+-.^_`|~").find(c) == std::string_view::npos) {
      return false;
    }
  }
  return true;
}

// CR, LF and NUL would end or corrupt a header line (header injection); other ASCII controls
// except tab are not allowed in field values either.
bool IsSafeHeaderValue(std::string_view s) {
  return std::none_of(s.begin(), s.end(), [](char c) {
    const unsigned char u = static_cast<unsigned char>(c);
    return (u < 0x20 && c != '\t') || u == 0x7f;
  });
}

// Header fields Wharf sets (or that belong to the transfer) and the configuration cannot.
bool IsReservedHeader(std::string_view name) {
  for (std::string_view reserved : {"Content-Length", "Content-Encoding", "Transfer-Encoding",
                                    "Host", "Connection", "Expect", "Idempotency-Key"}) {
    if (EqualsIgnoreCase(name, reserved)) return true;
  }
  return StartsWithIgnoreCase(name, "X-Wharf-");
}

// Length of the valid UTF-8 sequence at the start of `s`, 0 if it is not one.
size_t Utf8SequenceLength(std::string_view s) {
  const auto byte = [&](size_t i) { return static_cast<unsigned char>(s[i]); };
  const auto cont = [&](size_t i) { return i < s.size() && (byte(i) & 0xC0) == 0x80; };
  const unsigned char lead = byte(0);
  if (lead < 0x80) return 1;
  if (lead >= 0xC2 && lead <= 0xDF) return cont(1) ? 2 : 0;
  if (lead >= 0xE0 && lead <= 0xEF) {
    if (s.size() < 3 || !cont(1) || !cont(2)) return 0;
    if (lead == 0xE0 && byte(1) < 0xA0) return 0;  // overlong
    if (lead == 0xED && byte(1) > 0x9F) return 0;  // UTF-16 surrogate
    return 3;
  }
  if (lead >= 0xF0 && lead <= 0xF4) {
    if (s.size() < 4 || !cont(1) || !cont(2) || !cont(3)) return 0;
    if (lead == 0xF0 && byte(1) < 0x90) return 0;  // overlong
    if (lead == 0xF4 && byte(1) > 0x8F) return 0;  // above U+10FFFF
    return 4;
  }
  return 0;
}

// At most `max_bytes` of `text` as valid UTF-8 on one line: control characters become spaces,
// invalid bytes '?', and "..." marks a cut. Status messages end up in protobuf string fields
// (quarantine entries), which must be valid UTF-8.
std::string SanitizeForMessage(std::string_view text, size_t max_bytes) {
  std::string out;
  size_t i = 0;
  while (i < text.size()) {
    size_t n = Utf8SequenceLength(text.substr(i));
    const size_t out_len = n == 0 ? 1 : n;
    if (out.size() + out_len > max_bytes) {
      out += "...";
      return out;
    }
    if (n == 0) {
      out.push_back('?');
      n = 1;
    } else if (n == 1) {
      const unsigned char c = static_cast<unsigned char>(text[i]);
      out.push_back(c < 0x20 || c == 0x7f ? ' ' : text[i]);
    } else {
      out.append(text.substr(i, n));
    }
    i += n;
  }
  return out;
}

// Replaces every occurrence of `secret` (if not empty) in `text`.
void MaskSecret(std::string* text, const std::string& secret) {
  if (secret.empty()) return;
  size_t pos = 0;
  while ((pos = text->find(secret, pos)) != std::string::npos) {
    text->replace(pos, secret.size(), "[redacted]");
    pos += 10;
  }
}

// Process-wide libcurl initialisation. curl_global_init is not thread-safe and must run once
// before any other libcurl call; curl_global_cleanup is never called (handles may live until
// exit).
CURLcode GlobalInitOnce() {
  static std::once_flag once;
  static CURLcode result = CURLE_OK;
  std::call_once(once, [] { result = curl_global_init(CURL_GLOBAL_DEFAULT); });
  return result;
}

absl::Status CheckReadableFile(std::string_view option, const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("", Absl(option), " ", path, ": ", std::strerror(errno)));
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat("", Absl(option), " ", path, " is not a regular file"));
  }
  if (::access(path.c_str(), R_OK) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("", Absl(option), " ", path, " is not readable: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

// Owns a CURLU handle and the strings it hands out.
// Thread safety: not thread-safe; local use only.
class UrlParts {
 public:
  UrlParts() : url_(curl_url()) {}
  ~UrlParts() {
    if (url_ != nullptr) curl_url_cleanup(url_);
  }
  UrlParts(const UrlParts&) = delete;
  UrlParts& operator=(const UrlParts&) = delete;

  CURLU* get() const { return url_; }
  // The part, or "" if absent.
  std::string Get(CURLUPart part) const {
    char* value = nullptr;
    if (curl_url_get(url_, part, &value, 0) != CURLUE_OK || value == nullptr) return "";
    std::string result(value);
    curl_free(value);
    return result;
  }

 private:
  CURLU* url_;
};

// Validates the URL; returns it for messages (scheme, host, port, path only).
absl::StatusOr<std::string> ValidateUrl(const std::string& url) {
  if (url.empty()) return absl::InvalidArgumentError("url must be set");
  if (std::any_of(url.begin(), url.end(), [](char c) {
        const unsigned char u = static_cast<unsigned char>(c);
        return u <= 0x20 || u == 0x7f;
      })) {
    return absl::InvalidArgumentError("url must not contain whitespace or control characters");
  }
  if (!StartsWithIgnoreCase(url, "http://") && !StartsWithIgnoreCase(url, "https://")) {
    // Not quoted: the URL may carry credentials.
    return absl::InvalidArgumentError("url must start with http:// or https://");
  }
  // libcurl's parser is lenient and would read "http:///x" as host "x".
  const size_t authority = url.find("://") + 3;
  if (authority >= url.size() || url[authority] == '/' || url[authority] == '?' ||
      url[authority] == '#') {
    return absl::InvalidArgumentError("url has no host");
  }
  UrlParts parts;
  if (parts.get() == nullptr) return absl::ResourceExhaustedError("out of memory");
  const CURLUcode rc = curl_url_set(parts.get(), CURLUPART_URL, url.c_str(), 0);
  if (rc != CURLUE_OK) {
    return absl::InvalidArgumentError(absl::StrCat("url is not valid: ", curl_url_strerror(rc)));
  }
  const std::string host = parts.Get(CURLUPART_HOST);
  if (host.empty()) return absl::InvalidArgumentError("url has no host");
  std::string display = absl::StrCat(parts.Get(CURLUPART_SCHEME), "://", host);
  if (const std::string port = parts.Get(CURLUPART_PORT); !port.empty()) {
    absl::StrAppend(&display, ":", port);
  }
  absl::StrAppend(&display, parts.Get(CURLUPART_PATH));
  return display;
}

// Compresses `in` into one gzip member (RFC 1952).
absl::StatusOr<std::string> Gzip(const std::string& in) {
  z_stream zs{};
  // 15 + 16: maximum window with a gzip header and trailer instead of zlib's.
  if (deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) !=
      Z_OK) {
    return absl::ResourceExhaustedError("cannot initialise gzip compression");
  }
  std::string out;
  out.reserve(in.size() / 3 + 64);
  size_t consumed = 0;
  char buf[65536];
  int rc = Z_OK;
  while (rc != Z_STREAM_END) {
    if (zs.avail_in == 0 && consumed < in.size()) {
      // avail_in is 32 bits wide: feed very large bodies in pieces.
      const size_t piece = std::min<size_t>(in.size() - consumed, UINT_MAX);
      zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data() + consumed));
      zs.avail_in = static_cast<uInt>(piece);
      consumed += piece;
    }
    zs.next_out = reinterpret_cast<Bytef*>(buf);
    zs.avail_out = sizeof(buf);
    rc = deflate(&zs, consumed == in.size() ? Z_FINISH : Z_NO_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR) {
      deflateEnd(&zs);
      return absl::InternalError(absl::StrCat("gzip compression failed: ", rc));
    }
    out.append(buf, sizeof(buf) - zs.avail_out);
  }
  deflateEnd(&zs);
  return out;
}

// What the header and write callbacks collect about the (final) response.
struct ResponseCapture {
  std::string retry_after;
  std::string request_id;
  std::string body;  // the first `keep` bytes
  size_t keep = kKeptBodyBytes;
};

size_t OnHeader(char* data, size_t size, size_t count, void* user) {
  auto* capture = static_cast<ResponseCapture*>(user);
  const size_t n = size * count;
  std::string_view line(data, n);
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.remove_suffix(1);
  if (line.starts_with("HTTP/")) {
    // A new response (after a 100 Continue or similar): only the last one's fields count.
    capture->retry_after.clear();
    capture->request_id.clear();
    return n;
  }
  const size_t colon = line.find(':');
  if (colon == std::string_view::npos) return n;
  const std::string_view name = line.substr(0, colon);
  const std::string_view value = TrimWhitespace(line.substr(colon + 1));
  if (EqualsIgnoreCase(name, "Retry-After")) {
    capture->retry_after = std::string(value);
  } else if (EqualsIgnoreCase(name, "X-Request-Id")) {
    capture->request_id = std::string(value);
  }
  return n;
}

size_t OnBody(char* data, size_t size, size_t count, void* user) {
  auto* capture = static_cast<ResponseCapture*>(user);
  const size_t n = size * count;
  if (capture->body.size() < capture->keep) {
    capture->body.append(data, std::min(n, capture->keep - capture->body.size()));
  }
  return n;  // Everything counts as consumed; the rest is discarded.
}

// Retry-After (RFC 9110 10.2.3): delta-seconds or an HTTP-date. Zero when absent, invalid or in
// the past; capped at `cap`.
std::chrono::milliseconds ParseRetryAfter(std::string_view value, std::chrono::milliseconds cap) {
  value = TrimWhitespace(value);
  if (value.empty()) return std::chrono::milliseconds(0);
  int64_t seconds = 0;
  if (std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    const int64_t cap_seconds = cap.count() / 1000 + 1;
    for (char c : value) {
      seconds = seconds * 10 + (c - '0');
      if (seconds > cap_seconds) break;  // no overflow; the cap applies anyway
    }
  } else {
    // An HTTP-date starts with a day name; curl_getdate is lenient and would also take things
    // like "+5" or "tomorrow", which are not valid here.
    if (!((value[0] >= 'A' && value[0] <= 'Z') || (value[0] >= 'a' && value[0] <= 'z'))) {
      return std::chrono::milliseconds(0);
    }
    const time_t when = curl_getdate(std::string(value).c_str(), nullptr);
    if (when == -1) return std::chrono::milliseconds(0);
    seconds = static_cast<int64_t>(when) - static_cast<int64_t>(std::time(nullptr));
    if (seconds <= 0) return std::chrono::milliseconds(0);
  }
  const std::chrono::milliseconds delay = std::chrono::seconds(seconds);
  return std::min(delay, cap);
}

// Printable ASCII only (lineage stores it in a protobuf string), at most kMaxCommitIdBytes.
std::string SanitizeCommitId(std::string_view value) {
  std::string out;
  for (char c : value.substr(0, kMaxCommitIdBytes)) {
    const unsigned char u = static_cast<unsigned char>(c);
    out.push_back(u >= 0x21 && u <= 0x7e ? c : '?');
  }
  return out;
}

bool IsTlsConfigurationError(CURLcode code) {
  switch (code) {
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
    case CURLE_NOT_BUILT_IN:
    case CURLE_UNKNOWN_OPTION:
      return true;
    default:
      return false;
  }
}

// curl_slist with RAII. Thread safety: not thread-safe; local use only.
class HeaderList {
 public:
  HeaderList() = default;
  ~HeaderList() { curl_slist_free_all(list_); }
  HeaderList(const HeaderList&) = delete;
  HeaderList& operator=(const HeaderList&) = delete;

  // False if out of memory (the list is then unchanged).
  bool Add(const std::string& line) {
    curl_slist* next = curl_slist_append(list_, line.c_str());
    if (next == nullptr) return false;
    list_ = next;
    return true;
  }
  curl_slist* get() const { return list_; }

 private:
  curl_slist* list_ = nullptr;
};

}  // namespace

absl::StatusOr<std::unique_ptr<HttpDestination>> HttpDestination::Create(
    HttpDestinationOptions options) {
  const std::string prefix = SanitizeForMessage(
      options.name.empty() ? "http destination: "
                           : absl::StrCat("http destination ", options.name, ": "),
      300);
  absl::StatusOr<std::unique_ptr<HttpDestination>> destination =
      CreateValidated(std::move(options));
  if (destination.ok()) return destination;
  return absl::Status(destination.status().code(),
                      absl::StrCat(prefix, destination.status().message()));
}

absl::StatusOr<std::unique_ptr<HttpDestination>> HttpDestination::CreateValidated(
    HttpDestinationOptions options) {
  if (const CURLcode rc = GlobalInitOnce(); rc != CURLE_OK) {
    return absl::InternalError(absl::StrCat("curl_global_init failed: ", curl_easy_strerror(rc)));
  }
  absl::StatusOr<std::string> display_url = ValidateUrl(options.url);
  if (!display_url.ok()) return display_url.status();
  if (StartsWithIgnoreCase(options.url, "https://")) {
    const curl_version_info_data* info = curl_version_info(CURLVERSION_NOW);
    if (info == nullptr || (info->features & CURL_VERSION_SSL) == 0) {
      return absl::FailedPreconditionError(
          "this libcurl has no TLS support; https:// URLs cannot be used");
    }
  }
  bool has_authorization = false;
  for (const auto& [name, value] : options.headers) {
    if (!IsToken(name)) {
      return absl::InvalidArgumentError(
          absl::StrCat("header name \"", SanitizeForMessage(name, 100),
                       "\" is not a valid field name (letters, digits and !#$%&'*+-.^_`|~ only)"));
    }
    if (IsReservedHeader(name)) {
      return absl::InvalidArgumentError(
          absl::StrCat("header ", name, " is set by Wharf and cannot be configured"));
    }
    // The value is not quoted: it may be a secret.
    if (!IsSafeHeaderValue(value)) {
      return absl::InvalidArgumentError(
          absl::StrCat("the value of header ", name,
                       " contains a control character (CR, LF, NUL, ...), which is not allowed"));
    }
    if (EqualsIgnoreCase(name, "Authorization")) has_authorization = true;
  }
  if (!options.bearer_token.empty()) {
    if (has_authorization) {
      return absl::InvalidArgumentError(
          "both bearer_token and an Authorization header are configured");
    }
    if (std::any_of(options.bearer_token.begin(), options.bearer_token.end(), [](char c) {
          const unsigned char u = static_cast<unsigned char>(c);
          return u <= 0x20 || u >= 0x7f;
        })) {
      return absl::InvalidArgumentError(
          "bearer_token contains whitespace, control or non-ASCII characters "
          "(a trailing newline of the token file?)");
    }
  }
  if (options.connect_timeout.count() <= 0 || options.request_timeout.count() <= 0) {
    return absl::InvalidArgumentError("connect_timeout and request_timeout must be positive");
  }
  if (options.max_retry_after.count() < 0) {
    return absl::InvalidArgumentError("max_retry_after must not be negative");
  }
  if (!options.ca_file.empty()) {
    if (absl::Status s = CheckReadableFile("ca_file", options.ca_file); !s.ok()) return s;
  }
  if (!options.client_key_file.empty() && options.client_cert_file.empty()) {
    return absl::InvalidArgumentError("client_key_file is set but client_cert_file is not");
  }
  if (!options.client_cert_file.empty()) {
    if (absl::Status s = CheckReadableFile("client_cert_file", options.client_cert_file); !s.ok()) {
      return s;
    }
  }
  if (!options.client_key_file.empty()) {
    if (absl::Status s = CheckReadableFile("client_key_file", options.client_key_file); !s.ok()) {
      return s;
    }
  }
  std::string display = *std::move(display_url);
  return std::unique_ptr<HttpDestination>(new HttpDestination(std::move(options), display));
}

HttpDestination::HttpDestination(HttpDestinationOptions options, std::string display_url)
    : options_(std::move(options)), display_url_(std::move(display_url)) {
  for (const auto& [name, value] : options_.headers) {
    // libcurl reads "Name:" with nothing after the colon as "do not send Name"; "Name;" is its
    // spelling of a field with an empty value.
    static_header_lines_.push_back(value.empty() ? absl::StrCat(name, ";")
                                                 : absl::StrCat(name, ": ", value));
    if (EqualsIgnoreCase(name, "Content-Type")) has_content_type_ = true;
  }
  if (!options_.bearer_token.empty()) {
    static_header_lines_.push_back(absl::StrCat("Authorization: Bearer ", options_.bearer_token));
  }
  // No "Expect: 100-continue": it costs a round trip (or a 1 s wait with servers that ignore it)
  // for every large body, and the body is sent in any case.
  static_header_lines_.push_back("Expect:");
}

HttpDestination::~HttpDestination() {
  std::lock_guard<std::mutex> lock(mu_);
  for (void* handle : idle_handles_) curl_easy_cleanup(static_cast<CURL*>(handle));
  idle_handles_.clear();
}

void* HttpDestination::AcquireHandle() {
  CURL* handle = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!idle_handles_.empty()) {
      handle = static_cast<CURL*>(idle_handles_.back());
      idle_handles_.pop_back();
    }
  }
  if (handle == nullptr) return curl_easy_init();
  return handle;
}

void HttpDestination::ReleaseHandle(void* handle) {
  // Clears every option of the finished call, so no idle handle points to the call's (stack)
  // buffers, but keeps the handle's live connections and DNS cache for the next call.
  curl_easy_reset(static_cast<CURL*>(handle));
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (idle_handles_.size() < kMaxIdleHandles) {
      idle_handles_.push_back(handle);
      return;
    }
  }
  curl_easy_cleanup(static_cast<CURL*>(handle));
}

absl::Status HttpDestination::Deliver(const wharf::v1::StoredBatch& batch, DeliveryReport* report) {
  const wharf::v1::BatchManifest& m = batch.manifest();
  const std::string context =
      SanitizeForMessage(absl::StrCat("http destination ", options_.name, ": POST ", display_url_,
                                      " (batch ", m.batch_id(), ")"),
                         1024);
  if (batch.records_size() == 0) return absl::OkStatus();  // Nothing to deliver.
  // Manifest strings become header values: refuse anything that could inject header lines.
  // Not INVALID_ARGUMENT: the records are fine, this is not about their content.
  if (m.batch_id().empty() || !IsSafeHeaderValue(m.batch_id()) || !IsSafeHeaderValue(m.dataset())) {
    return absl::FailedPreconditionError(absl::StrCat(
        context, ": batch id or dataset name is empty or contains control characters"));
  }

  // The body.
  std::string body;
  size_t size = 2;
  for (const wharf::v1::BatchRecord& record : batch.records()) size += record.payload().size() + 1;
  body.reserve(size);
  if (options_.format == HttpDestinationOptions::Format::kNdjson) {
    for (const wharf::v1::BatchRecord& record : batch.records()) {
      const size_t start = body.size();
      body.append(record.payload());
      std::replace_if(
          body.begin() + static_cast<std::ptrdiff_t>(start), body.end(),
          [](char c) { return c == '\n' || c == '\r'; }, ' ');
      body.push_back('\n');
    }
  } else {
    body.push_back('[');
    for (int i = 0; i < batch.records_size(); ++i) {
      if (i > 0) body.push_back(',');
      body.append(batch.records(i).payload());
    }
    body.push_back(']');
  }
  if (options_.gzip) {
    absl::StatusOr<std::string> compressed = Gzip(body);
    if (!compressed.ok()) {
      return absl::Status(compressed.status().code(),
                          absl::StrCat(context, ": ", compressed.status().message()));
    }
    body = *std::move(compressed);
  }

  // The header fields.
  HeaderList headers;
  bool headers_ok = true;
  auto add = [&](const std::string& line) { headers_ok = headers_ok && headers.Add(line); };
  if (!has_content_type_) {
    add(options_.format == HttpDestinationOptions::Format::kNdjson
            ? "Content-Type: application/x-ndjson"
            : "Content-Type: application/json");
  }
  if (options_.gzip) add("Content-Encoding: gzip");
  add(absl::StrCat("Idempotency-Key: ", m.batch_id()));
  add(absl::StrCat("X-Wharf-Batch-Id: ", m.batch_id()));
  add(absl::StrCat("X-Wharf-Dataset: ", m.dataset()));
  add(absl::StrCat("X-Wharf-Partition: ", m.partition()));
  add(absl::StrCat("X-Wharf-First-Offset: ", m.first_offset()));
  add(absl::StrCat("X-Wharf-Last-Offset: ", m.last_offset()));
  add(absl::StrCat("X-Wharf-Record-Count: ", batch.records_size()));
  for (const std::string& line : static_header_lines_) add(line);
  if (!headers_ok) return absl::ResourceExhaustedError(absl::StrCat(context, ": out of memory"));

  CURL* curl = static_cast<CURL*>(AcquireHandle());
  if (curl == nullptr) {
    return absl::ResourceExhaustedError(absl::StrCat(context, ": curl_easy_init failed"));
  }
  ResponseCapture capture;
  // Room to mask a token echoed across the excerpt's end.
  capture.keep = std::max(kKeptBodyBytes, kExcerptBytes + options_.bearer_token.size());
  char error[CURL_ERROR_SIZE];
  error[0] = '\0';
  CURLcode rc = CURLE_OK;
  auto set = [&](auto&& setter) {
    if (rc == CURLE_OK) rc = setter();
  };
  set([&] { return curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, error); });
  // Timeouts must not use signals: Deliver runs on arbitrary threads of a multithreaded process.
  set([&] { return curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L); });
  set([&] { return curl_easy_setopt(curl, CURLOPT_URL, options_.url.c_str()); });
  set([&] { return curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https"); });
  set([&] { return curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L); });
  set([&] { return curl_easy_setopt(curl, CURLOPT_POST, 1L); });
  // With a known size curl sends Content-Length and never chunks the body.
  set([&] {
    return curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE,
                            static_cast<curl_off_t>(body.size()));
  });
  set([&] { return curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body.data()); });
  set([&] { return curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers.get()); });
  set([&] { return curl_easy_setopt(curl, CURLOPT_USERAGENT, "wharf"); });
  set([&] {
    return curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS,
                            static_cast<long>(options_.connect_timeout.count()));
  });
  set([&] {
    return curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS,
                            static_cast<long>(options_.request_timeout.count()));
  });
  set([&] { return curl_easy_setopt(curl, CURLOPT_TCP_KEEPALIVE, 1L); });
  set([&] { return curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, &OnHeader); });
  set([&] { return curl_easy_setopt(curl, CURLOPT_HEADERDATA, &capture); });
  set([&] { return curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, &OnBody); });
  set([&] { return curl_easy_setopt(curl, CURLOPT_WRITEDATA, &capture); });
  if (!options_.ca_file.empty()) {
    set([&] { return curl_easy_setopt(curl, CURLOPT_CAINFO, options_.ca_file.c_str()); });
  }
  if (options_.insecure_skip_verify) {
    set([&] { return curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 0L); });
    set([&] { return curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 0L); });
  }
  if (!options_.client_cert_file.empty()) {
    set([&] { return curl_easy_setopt(curl, CURLOPT_SSLCERT, options_.client_cert_file.c_str()); });
  }
  if (!options_.client_key_file.empty()) {
    set([&] { return curl_easy_setopt(curl, CURLOPT_SSLKEY, options_.client_key_file.c_str()); });
  }
  if (rc != CURLE_OK) {
    ReleaseHandle(curl);
    return absl::FailedPreconditionError(
        absl::StrCat(context, ": cannot configure libcurl: ", curl_easy_strerror(rc)));
  }

  rc = curl_easy_perform(curl);
  long status = 0;
  if (rc == CURLE_OK) curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
  ReleaseHandle(curl);

  if (rc != CURLE_OK) {
    const std::string detail =
        error[0] != '\0' ? SanitizeForMessage(error, CURL_ERROR_SIZE) : curl_easy_strerror(rc);
    const std::string message =
        absl::StrCat(context, ": ", detail, " (libcurl error ", static_cast<int>(rc), ")");
    if (rc == CURLE_OPERATION_TIMEDOUT) return absl::DeadlineExceededError(message);
    if (IsTlsConfigurationError(rc)) return absl::FailedPreconditionError(message);
    return absl::UnavailableError(message);
  }
  if (status >= 200 && status <= 299) {
    report->commit_id = SanitizeCommitId(capture.request_id);
    return absl::OkStatus();
  }
  MaskSecret(&capture.body, options_.bearer_token);
  std::string message = absl::StrCat(context, ": HTTP ", status);
  if (!capture.body.empty()) {
    absl::StrAppend(&message, ": ", SanitizeForMessage(capture.body, kExcerptBytes));
  }
  if (status == 400 || status == 413 || status == 422) {
    return absl::InvalidArgumentError(message);
  }
  report->retry_after = ParseRetryAfter(capture.retry_after, options_.max_retry_after);
  if (status == 408 || status == 425 || status == 429 || (status >= 500 && status <= 599)) {
    return absl::UnavailableError(message);
  }
  return absl::FailedPreconditionError(message);
}

}  // namespace wharf::pipeline
