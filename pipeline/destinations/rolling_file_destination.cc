#include "pipeline/destinations/rolling_file_destination.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"
#include "storage/failpoint.h"
#include "storage/keys.h"

namespace wharf::pipeline {
namespace {

using file_util::Absl;
using file_util::FsyncRetrying;
using file_util::JoinPath;
using file_util::OpenRetrying;
using file_util::ParentOf;
using file_util::ScopedFd;

constexpr std::string_view kWho = "rolling file destination";
constexpr std::string_view kDefaultTemplate =
    "{dataset}/{date}/{dataset}-p{partition}-{first_offset}.jsonl";
constexpr std::string_view kLastOffsetPlaceholder = "{last_offset}";
constexpr std::string_view kInProgressSuffix = ".inprogress";
// What {last_offset} reads in an in-progress file's name (its last offset is not known yet).
constexpr std::string_view kOpenMarker = "open";
constexpr std::string_view kStateHeader = "wharf-rolling-file-state 1";
// A state file larger than this is not something this class wrote (it holds one short line per
// partition).
constexpr uint64_t kMaxStateBytes = uint64_t{256} << 20;
constexpr size_t kNameMax = 255;  // NAME_MAX of Linux file systems

absl::Status ErrnoError(int err, std::string_view op, std::string_view path) {
  return file_util::ErrnoError(kWho, err, op, path);
}

// Placeholder name -> the most characters it can render to (for the NAME_MAX check).
struct Placeholder {
  std::string_view name;
  size_t max_width;
};
constexpr Placeholder kPlaceholders[] = {
    {"dataset", 64}, {"partition", 10},    {"date", 10},
    {"hour", 2},     {"first_offset", 20}, {"last_offset", 20},
};

const Placeholder* FindPlaceholder(std::string_view name) {
  for (const Placeholder& p : kPlaceholders) {
    if (p.name == name) return &p;
  }
  return nullptr;
}

std::vector<std::string_view> SplitPath(std::string_view path) {
  std::vector<std::string_view> parts;
  size_t pos = 0;
  while (true) {
    const size_t slash = path.find('/', pos);
    parts.push_back(path.substr(pos, slash == std::string_view::npos ? slash : slash - pos));
    if (slash == std::string_view::npos) return parts;
    pos = slash + 1;
  }
}

// Shape rules shared by templates and stored name patterns: a relative path of non-empty
// components other than "." and "..", without control characters, whose last component is not
// hidden (hidden names are this class's in-progress and state files). Empty string: fine.
std::string PathShapeProblem(std::string_view path) {
  if (path.empty()) return "it is empty";
  for (const char c : path) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) return "it contains a control character";
  }
  if (path.front() == '/') return "it is absolute (it must be relative to the directory)";
  const std::vector<std::string_view> parts = SplitPath(path);
  for (const std::string_view part : parts) {
    if (part.empty()) return "it has an empty path component";
    if (part == "." || part == "..") {
      return absl::StrCat("it has a \"", Absl(part), "\" path component");
    }
  }
  if (parts.back().front() == '.') return "its file name starts with '.' (reserved)";
  return "";
}

// Checks a path template; see RollingFileDestinationOptions::path_template.
absl::Status ValidateTemplate(std::string_view tmpl) {
  auto invalid = [&](std::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat(Absl(kWho), ": invalid path_template \"", Absl(tmpl), "\": ", Absl(why)));
  };
  if (std::string shape = PathShapeProblem(tmpl); !shape.empty()) return invalid(shape);
  const std::vector<std::string_view> parts = SplitPath(tmpl);
  bool has_partition = false;
  bool has_first_offset = false;
  for (size_t i = 0; i < parts.size(); ++i) {
    const std::string_view part = parts[i];
    const bool last = i + 1 == parts.size();
    size_t max_len = 0;
    size_t pos = 0;
    while (pos < part.size()) {
      if (part[pos] == '}') return invalid("unmatched '}'");
      if (part[pos] != '{') {
        ++max_len;
        ++pos;
        continue;
      }
      const size_t close = part.find('}', pos);
      if (close == std::string_view::npos) return invalid("unmatched '{'");
      const std::string_view name = part.substr(pos + 1, close - pos - 1);
      const Placeholder* placeholder = FindPlaceholder(name);
      if (placeholder == nullptr) {
        return invalid(absl::StrCat("unknown placeholder {", Absl(name),
                                    "} (known: {dataset}, {partition}, {date}, {hour}, "
                                    "{first_offset}, {last_offset})"));
      }
      if (name == "last_offset" && !last) {
        // The in-progress file lives in the final file's directory, which must therefore be
        // known when the file is opened.
        return invalid("{last_offset} may only appear in the file name, not in a directory");
      }
      has_partition |= name == "partition";
      has_first_offset |= name == "first_offset";
      max_len += placeholder->max_width;
      pos = close + 1;
    }
    // The in-progress name adds a leading '.' and ".inprogress".
    const size_t reserve = last ? 1 + kInProgressSuffix.size() : 0;
    if (max_len + reserve > kNameMax) {
      return invalid(absl::StrCat("a path component can render to ", max_len,
                                  " characters; the limit is ", kNameMax - reserve));
    }
  }
  if (!has_partition) {
    return invalid("it must contain {partition} (files are per partition)");
  }
  if (!has_first_offset) {
    return invalid("it must contain {first_offset} (file names must be unique)");
  }
  return absl::OkStatus();
}

// Checks a name pattern read from the state file: a path of the same shape as a rendered
// template, with "{last_offset}" as its only braces, in the file name only. Guards against a
// damaged state file making this class create or remove files outside `directory`.
std::string PatternProblem(std::string_view pattern) {
  if (std::string shape = PathShapeProblem(pattern); !shape.empty()) return shape;
  const size_t last_slash = pattern.rfind('/');
  const size_t base_start = last_slash == std::string_view::npos ? 0 : last_slash + 1;
  size_t pos = 0;
  while (pos < pattern.size()) {
    const size_t brace = pattern.find_first_of("{}", pos);
    if (brace == std::string_view::npos) break;
    if (pattern.substr(brace, kLastOffsetPlaceholder.size()) != kLastOffsetPlaceholder ||
        brace < base_start) {
      return "it has an unexpected brace";
    }
    pos = brace + kLastOffsetPlaceholder.size();
  }
  return "";
}

std::string Digits(const char* format, uint64_t value) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), format, value);
  return buf;
}

std::string OffsetDigits(uint64_t offset) { return Digits("%020" PRIu64, offset); }

// Renders every placeholder of the (validated) template except {last_offset}, which stays as is
// until the file rolls.
std::string RenderPattern(std::string_view tmpl, std::string_view dataset, uint32_t partition,
                          uint64_t first_offset, int64_t create_seconds) {
  // Protobuf timestamps are valid for years 1-9999; clamping keeps any stored value renderable
  // (and deterministic) instead of failing the delivery forever.
  constexpr int64_t kMinSeconds = -62135596800;  // 0001-01-01T00:00:00Z
  constexpr int64_t kMaxSeconds = 253402300799;  // 9999-12-31T23:59:59Z
  const time_t seconds = static_cast<time_t>(std::clamp(create_seconds, kMinSeconds, kMaxSeconds));
  struct tm tm {};
  ::gmtime_r(&seconds, &tm);
  char date[32];
  std::snprintf(date, sizeof(date), "%04d-%02d-%02d", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
  char hour[8];
  std::snprintf(hour, sizeof(hour), "%02d", tm.tm_hour);

  std::string out;
  size_t pos = 0;
  while (pos < tmpl.size()) {
    if (tmpl[pos] != '{') {
      out.push_back(tmpl[pos++]);
      continue;
    }
    const size_t close = tmpl.find('}', pos);
    const std::string_view name = tmpl.substr(pos + 1, close - pos - 1);
    if (name == "dataset") {
      out.append(dataset);
    } else if (name == "partition") {
      out.append(Digits("%04" PRIu64, partition));
    } else if (name == "date") {
      out.append(date);
    } else if (name == "hour") {
      out.append(hour);
    } else if (name == "first_offset") {
      out.append(OffsetDigits(first_offset));
    } else {  // last_offset
      out.append(kLastOffsetPlaceholder);
    }
    pos = close + 1;
  }
  return out;
}

std::string ReplaceLastOffset(std::string_view pattern, std::string_view value) {
  std::string out;
  size_t pos = 0;
  while (true) {
    const size_t found = pattern.find(kLastOffsetPlaceholder, pos);
    if (found == std::string_view::npos) break;
    out.append(pattern.substr(pos, found - pos));
    out.append(value);
    pos = found + kLastOffsetPlaceholder.size();
  }
  out.append(pattern.substr(pos));
  return out;
}

// One complete gzip member (RFC 1952) holding `data`. zlib writes no file name and a zero mtime
// into the header, so the same data always compresses to the same bytes.
absl::StatusOr<std::string> GzipMember(std::string_view data) {
  z_stream zs{};
  int rc = ::deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
  if (rc != Z_OK) {
    const std::string message = absl::StrCat(Absl(kWho), ": deflateInit2 failed (zlib ", rc, ")");
    return rc == Z_MEM_ERROR ? absl::UnavailableError(message) : absl::InternalError(message);
  }
  std::string out;
  std::vector<unsigned char> buf(size_t{1} << 16);
  constexpr size_t kMaxInChunk = size_t{1} << 30;  // avail_in is 32 bits
  size_t fed = 0;
  do {
    if (zs.avail_in == 0 && fed < data.size()) {
      const size_t chunk = std::min(data.size() - fed, kMaxInChunk);
      zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data() + fed));
      zs.avail_in = static_cast<uInt>(chunk);
      fed += chunk;
    }
    zs.next_out = buf.data();
    zs.avail_out = static_cast<uInt>(buf.size());
    rc = ::deflate(&zs, fed == data.size() ? Z_FINISH : Z_NO_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR) {
      ::deflateEnd(&zs);
      return absl::InternalError(absl::StrCat(Absl(kWho), ": deflate failed (zlib ", rc, ")"));
    }
    out.append(reinterpret_cast<const char*>(buf.data()), buf.size() - zs.avail_out);
  } while (rc != Z_STREAM_END);
  ::deflateEnd(&zs);
  return out;
}

// OK(true): `path` is a regular file of `size` bytes; OK(false): it does not exist.
// DATA_LOSS: something else is there.
absl::StatusOr<bool> RegularFileOfSize(const std::string& path, uint64_t size,
                                       std::string_view what) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return false;
    return ErrnoError(errno, "stat", path);
  }
  if (!S_ISREG(st.st_mode) || static_cast<uint64_t>(st.st_size) != size) {
    return absl::DataLossError(absl::StrCat(
        Absl(kWho), ": ", path, " exists but is not the expected ", Absl(what),
        " (a regular file of ", size, " bytes; found ",
        S_ISREG(st.st_mode) ? absl::StrCat(st.st_size, " bytes") : std::string("a non-file"),
        "); not overwriting it"));
  }
  return true;
}

// True if both paths hold the same bytes (or are the same inode).
absl::StatusOr<bool> SameFile(const std::string& a, const std::string& b) {
  struct stat sa {};
  struct stat sb {};
  if (::lstat(a.c_str(), &sa) != 0) return ErrnoError(errno, "stat", a);
  if (::lstat(b.c_str(), &sb) != 0) return ErrnoError(errno, "stat", b);
  if (sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino) return true;
  if (!S_ISREG(sa.st_mode) || !S_ISREG(sb.st_mode) || sa.st_size != sb.st_size) return false;
  ScopedFd fa(OpenRetrying(a.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fa.valid()) return ErrnoError(errno, "open", a);
  ScopedFd fb(OpenRetrying(b.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fb.valid()) return ErrnoError(errno, "open", b);
  std::vector<char> ba(size_t{1} << 16);
  std::vector<char> bb(ba.size());
  uint64_t offset = 0;
  while (true) {
    const ssize_t na = ::pread(fa.get(), ba.data(), ba.size(), static_cast<off_t>(offset));
    if (na < 0) {
      if (errno == EINTR) continue;
      return ErrnoError(errno, "read", a);
    }
    ssize_t nb;
    do {
      nb = ::pread(fb.get(), bb.data(), static_cast<size_t>(na), static_cast<off_t>(offset));
    } while (nb < 0 && errno == EINTR);
    if (nb < 0) return ErrnoError(errno, "read", b);
    if (nb != na || std::memcmp(ba.data(), bb.data(), static_cast<size_t>(na)) != 0) {
      return false;
    }
    if (na == 0) return true;
    offset += static_cast<uint64_t>(na);
  }
}

absl::Status FsyncPath(const std::string& path) {
  ScopedFd fd(OpenRetrying(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd.valid()) return ErrnoError(errno, "open", path);
  if (FsyncRetrying(fd.get()) != 0) return ErrnoError(errno, "fsync", path);
  if (const int err = fd.Close(); err != 0) return ErrnoError(err, "close", path);
  return absl::OkStatus();
}

int64_t ToUnixMillis(std::chrono::system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Construction and recovery

RollingFileDestination::RollingFileDestination(RollingFileDestinationOptions options,
                                               std::string path_template, ScopedFd lock_fd)
    : options_(std::move(options)),
      template_(std::move(path_template)),
      state_path_(JoinPath(options_.directory, absl::StrCat(".wharf-", options_.name, ".state"))),
      state_temp_path_(absl::StrCat(state_path_, ".tmp")),
      lock_fd_(std::move(lock_fd)) {}

// Open files stay in progress (like after a crash); the lock is released with lock_fd_.
RollingFileDestination::~RollingFileDestination() = default;

absl::StatusOr<std::unique_ptr<RollingFileDestination>> RollingFileDestination::Create(
    RollingFileDestinationOptions options) {
  if (absl::Status s = storage::ValidateName("destination", options.name); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(Absl(kWho), ": name: ", s.message()));
  }
  if (options.max_age.count() < 0) {
    return absl::InvalidArgumentError(absl::StrCat(Absl(kWho), ": max_age must not be negative"));
  }
  std::string tmpl =
      options.path_template.empty() ? std::string(kDefaultTemplate) : options.path_template;
  if (options.gzip && !tmpl.ends_with(".gz")) tmpl += ".gz";
  if (absl::Status s = ValidateTemplate(tmpl); !s.ok()) return s;

  absl::StatusOr<std::string> directory = file_util::NormalizeDirectory(kWho, options.directory);
  if (!directory.ok()) return directory.status();
  options.directory = *std::move(directory);
  if (absl::Status s = file_util::MakeDirectories(kWho, options.directory, options.fsync);
      !s.ok()) {
    return s;
  }

  // The lock file is never removed (removing it would let a second instance lock a new inode
  // while the first holds the old one). flock locks die with the process, also on kill -9.
  const std::string lock_path =
      JoinPath(options.directory, absl::StrCat(".wharf-", options.name, ".lock"));
  ScopedFd lock_fd(OpenRetrying(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  if (!lock_fd.valid()) return ErrnoError(errno, "create lock file", lock_path);
  if (::flock(lock_fd.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) {
      return absl::FailedPreconditionError(
          absl::StrCat(Absl(kWho), ": ", lock_path, " is locked: another instance named \"",
                       options.name, "\" uses directory ", options.directory));
    }
    return ErrnoError(errno, "flock", lock_path);
  }

  std::unique_ptr<RollingFileDestination> destination(
      new RollingFileDestination(std::move(options), std::move(tmpl), std::move(lock_fd)));
  if (absl::Status s = destination->Recover(); !s.ok()) return s;
  return destination;
}

absl::Status RollingFileDestination::Recover() {
  // A leftover temporary state file is an interrupted state write: the state file proper still
  // holds the previous (committed) state. Only this exact name is ours (we hold the lock).
  if (::unlink(state_temp_path_.c_str()) != 0 && errno != ENOENT) {
    return ErrnoError(errno, "unlink leftover temporary file", state_temp_path_);
  }

  std::map<Key, PartitionRecord> records;
  {
    ScopedFd fd(OpenRetrying(state_path_.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    if (!fd.valid() && errno != ENOENT) {
      // Unreadable is not "missing": never start over silently (it would duplicate data).
      return absl::DataLossError(absl::StrCat(Absl(kWho), ": cannot open state file ", state_path_,
                                              ": ", file_util::ErrnoText(errno)));
    }
    if (fd.valid()) {
      struct stat st {};
      if (::fstat(fd.get(), &st) != 0) return ErrnoError(errno, "fstat", state_path_);
      if (!S_ISREG(st.st_mode) || static_cast<uint64_t>(st.st_size) > kMaxStateBytes) {
        return absl::DataLossError(absl::StrCat(Absl(kWho), ": state file ", state_path_,
                                                " is not a regular file of plausible size"));
      }
      std::string content(static_cast<size_t>(st.st_size), '\0');
      size_t done = 0;
      while (done < content.size()) {
        const ssize_t n = ::read(fd.get(), content.data() + done, content.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return ErrnoError(errno, "read", state_path_);
        if (n == 0) break;
        done += static_cast<size_t>(n);
      }
      content.resize(done);
      if (absl::Status s = ParseState(state_path_, content, &records); !s.ok()) return s;
    }
  }

  // Reconcile every open file with the directory. See the class comment for why each case
  // arises and why the resolution is exactly-once.
  bool changed = false;
  for (auto& [key, r] : records) {
    if (!r.open) continue;
    const std::string in_progress = InProgressPath(r);
    struct stat st {};
    if (::lstat(in_progress.c_str(), &st) == 0) {
      if (!S_ISREG(st.st_mode)) {
        return absl::DataLossError(
            absl::StrCat(Absl(kWho), ": in-progress file ", in_progress, " is not a regular file"));
      }
      if (static_cast<uint64_t>(st.st_size) < r.committed) {
        return absl::DataLossError(
            absl::StrCat(Absl(kWho), ": in-progress file ", in_progress, " has ", st.st_size,
                         " bytes but state file ", state_path_, " records ", r.committed,
                         " bytes of delivered batches in it; it was truncated or replaced"));
      }
      // Longer than committed: a partial or unacknowledged batch, truncated before the next
      // append or the roll. Both in-progress and final present (interrupted link+unlink): the
      // roll resolves it.
      continue;
    }
    if (errno != ENOENT) return ErrnoError(errno, "stat", in_progress);
    if (r.batches == 0) continue;  // Open intent whose file was never created: created on use.
    // In-progress file gone: the roll renamed it, then the process died before the state write.
    const std::string final_path = JoinPath(options_.directory, FinalRelative(r));
    absl::StatusOr<bool> published = RegularFileOfSize(final_path, r.committed, "rolled file");
    if (!published.ok()) return published.status();
    if (!*published) {
      return absl::DataLossError(absl::StrCat(Absl(kWho), ": state file ", state_path_, " records ",
                                              r.batches, " batches (", r.committed, " bytes) in ",
                                              in_progress, " but neither it nor its final file ",
                                              final_path, " exists"));
    }
    // The rename may not be durable yet (the process may have died before the directory fsync):
    // make it so before the state forgets the in-progress file.
    if (options_.fsync) {
      if (absl::Status s = FsyncPath(final_path); !s.ok()) return s;
      if (absl::Status s = file_util::SyncDirectoryAt(kWho, ParentOf(final_path)); !s.ok()) {
        return s;
      }
    }
    spdlog::info("{}: {} was published before a restart; recorded as rolled", kWho, final_path);
    PartitionRecord closed;
    closed.delivered = r.delivered;
    closed.last_delivered = r.last_delivered;
    r = std::move(closed);
    changed = true;
  }

  std::lock_guard<std::mutex> lock(state_mu_);
  records_ = std::move(records);
  if (changed) {
    bool renamed = false;
    if (absl::Status s = WriteStateLocked(&renamed); !s.ok()) return s;
  } else if (options_.fsync) {
    // Fail now if the directory cannot be fsynced (some network and FUSE file systems cannot)
    // rather than on every delivery.
    if (absl::Status s = file_util::SyncDirectoryAt(kWho, options_.directory); !s.ok()) return s;
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// State file

std::string RollingFileDestination::SerializeState(const std::map<Key, PartitionRecord>& records) {
  std::string out = absl::StrCat(Absl(kStateHeader), "\n");
  for (const auto& [key, r] : records) {
    if (!r.delivered && !r.open) continue;
    // The pattern comes last: it is the only field that may contain spaces.
    absl::StrAppend(&out, "p ", key.first, " ", key.second, " ", r.delivered ? 1 : 0, " ",
                    r.last_delivered, " ", r.open ? 1 : 0, " ", r.gzip ? 1 : 0, " ", r.batches, " ",
                    r.committed, " ", r.uncompressed, " ", r.file_last_offset, " ", r.open_time_ms,
                    " ", r.open ? r.pattern : std::string("-"), "\n");
  }
  const uLong crc =
      ::crc32(0L, reinterpret_cast<const Bytef*>(out.data()), static_cast<uInt>(out.size()));
  char trailer[32];
  std::snprintf(trailer, sizeof(trailer), "crc %08lx\n", crc);
  out.append(trailer);
  return out;
}

absl::Status RollingFileDestination::ParseState(const std::string& path, std::string_view content,
                                                std::map<Key, PartitionRecord>* records) {
  auto corrupt = [&](std::string_view why) {
    return absl::DataLossError(absl::StrCat(
        Absl(kWho), ": state file ", path, " is corrupt: ", Absl(why),
        ". Not starting over from an empty state, which could duplicate or lose data; restore "
        "the file, or remove it knowingly"));
  };
  if (content.empty() || content.back() != '\n') return corrupt("it does not end with a newline");
  const size_t trailer_start = content.rfind('\n', content.size() - 2);
  if (trailer_start == std::string_view::npos) return corrupt("it has no checksum line");
  const std::string_view body = content.substr(0, trailer_start + 1);
  const std::string_view trailer =
      content.substr(trailer_start + 1, content.size() - trailer_start - 2);
  const uLong crc =
      ::crc32(0L, reinterpret_cast<const Bytef*>(body.data()), static_cast<uInt>(body.size()));
  char expected[32];
  std::snprintf(expected, sizeof(expected), "crc %08lx", crc);
  if (trailer != expected) return corrupt("checksum mismatch");

  size_t pos = 0;
  bool first = true;
  while (pos < body.size()) {
    const size_t end = body.find('\n', pos);
    const std::string_view line = body.substr(pos, end - pos);
    pos = end + 1;
    if (first) {
      if (line != kStateHeader) return corrupt("unknown header (format version)");
      first = false;
      continue;
    }
    // p <dataset> <partition> <delivered> <last_delivered> <open> <gzip> <batches> <committed>
    //   <uncompressed> <file_last_offset> <open_time_ms> <pattern>
    std::vector<std::string> fields;
    size_t field_pos = 0;
    while (fields.size() < 12) {
      const size_t space = line.find(' ', field_pos);
      if (space == std::string_view::npos) return corrupt("a partition line has too few fields");
      fields.emplace_back(line.substr(field_pos, space - field_pos));
      field_pos = space + 1;
    }
    const std::string pattern(line.substr(field_pos));
    if (fields[0] != "p") return corrupt("unknown line type");
    if (!storage::ValidateName("dataset", fields[1]).ok()) return corrupt("invalid dataset name");
    uint32_t partition = 0;
    int delivered = 0;
    int open = 0;
    int gzip = 0;
    PartitionRecord r;
    if (!absl::SimpleAtoi(fields[2], &partition) || !absl::SimpleAtoi(fields[3], &delivered) ||
        !absl::SimpleAtoi(fields[4], &r.last_delivered) || !absl::SimpleAtoi(fields[5], &open) ||
        !absl::SimpleAtoi(fields[6], &gzip) || !absl::SimpleAtoi(fields[7], &r.batches) ||
        !absl::SimpleAtoi(fields[8], &r.committed) ||
        !absl::SimpleAtoi(fields[9], &r.uncompressed) ||
        !absl::SimpleAtoi(fields[10], &r.file_last_offset) ||
        !absl::SimpleAtoi(fields[11], &r.open_time_ms) || (delivered != 0 && delivered != 1) ||
        (open != 0 && open != 1) || (gzip != 0 && gzip != 1)) {
      return corrupt("a partition line has an invalid number");
    }
    r.delivered = delivered == 1;
    r.open = open == 1;
    r.gzip = gzip == 1;
    if (r.open) {
      if (std::string problem = PatternProblem(pattern); !problem.empty()) {
        return corrupt(absl::StrCat("invalid file name pattern \"", pattern, "\": ", problem));
      }
      r.pattern = pattern;
    } else if (pattern != "-") {
      return corrupt("a partition without open file has a file name pattern");
    }
    if (!records->emplace(Key(fields[1], partition), std::move(r)).second) {
      return corrupt("a partition appears twice");
    }
  }
  if (first) return corrupt("it has no header");
  return absl::OkStatus();
}

absl::Status RollingFileDestination::WriteStateLocked(bool* renamed) {
  *renamed = false;
  // Crash safety: the new state is complete (and, with fsync, on disk) before the atomic rename
  // over the old one, so a kill -9 or power loss leaves the old or the new state, never a mix;
  // the directory fsync makes the rename durable before the caller reports success. A leftover
  // temporary file is removed by the next Create(). The temporary name is fixed: writes are
  // serialised by state_mu_, and the lock file excludes other instances.
  const std::string content = SerializeState(records_);
  {
    ScopedFd fd(
        OpenRetrying(state_temp_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (!fd.valid()) return ErrnoError(errno, "create", state_temp_path_);
    if (const int err = file_util::WriteAll(fd.get(), content); err != 0) {
      return ErrnoError(err, "write", state_temp_path_);
    }
    if (options_.fsync && FsyncRetrying(fd.get()) != 0) {
      return ErrnoError(errno, "fsync", state_temp_path_);
    }
    if (const int err = fd.Close(); err != 0) return ErrnoError(err, "close", state_temp_path_);
  }
  if (::rename(state_temp_path_.c_str(), state_path_.c_str()) != 0) {
    return ErrnoError(errno, "rename to", state_path_);
  }
  *renamed = true;
  state_durable_ = !options_.fsync;
  if (options_.fsync) {
    if (absl::Status s = file_util::SyncDirectoryAt(kWho, options_.directory); !s.ok()) return s;
    state_durable_ = true;
  }
  return absl::OkStatus();
}

absl::Status RollingFileDestination::Persist(const Key& key, const PartitionRecord& record,
                                             bool* applied) {
  std::lock_guard<std::mutex> lock(state_mu_);
  PartitionRecord old;
  const auto it = records_.find(key);
  const bool existed = it != records_.end();
  if (existed) old = it->second;
  records_[key] = record;
  absl::Status s = WriteStateLocked(applied);
  if (!*applied) {  // The state file still holds the old record: so must memory.
    if (existed) {
      records_[key] = std::move(old);
    } else {
      records_.erase(key);
    }
  }
  return s;
}

absl::Status RollingFileDestination::EnsureStateDurable() {
  std::lock_guard<std::mutex> lock(state_mu_);
  if (state_durable_) return absl::OkStatus();
  // An earlier write was renamed into place but its directory fsync failed: what the caller is
  // about to report may rest on it, so write (and sync) it again.
  bool renamed = false;
  return WriteStateLocked(&renamed);
}

// ---------------------------------------------------------------------------------------------
// Names

std::string RollingFileDestination::InProgressRelative(const PartitionRecord& r) {
  const size_t slash = r.pattern.rfind('/');
  const std::string_view base = slash == std::string::npos
                                    ? std::string_view(r.pattern)
                                    : std::string_view(r.pattern).substr(slash + 1);
  const std::string name =
      absl::StrCat(".", ReplaceLastOffset(base, kOpenMarker), Absl(kInProgressSuffix));
  if (slash == std::string::npos) return name;
  return absl::StrCat(r.pattern.substr(0, slash), "/", name);
}

std::string RollingFileDestination::InProgressPath(const PartitionRecord& r) const {
  return JoinPath(options_.directory, InProgressRelative(r));
}

std::string RollingFileDestination::FinalRelative(const PartitionRecord& r) {
  return ReplaceLastOffset(r.pattern, OffsetDigits(r.file_last_offset));
}

std::string RollingFileDestination::CommitIdFor(const PartitionRecord& r) {
  if (r.pattern.find(kLastOffsetPlaceholder) == std::string::npos) return r.pattern;
  return InProgressRelative(r);
}

// ---------------------------------------------------------------------------------------------
// Partitions

RollingFileDestination::Partition* RollingFileDestination::GetPartition(const Key& key) {
  std::lock_guard<std::mutex> lock(partitions_mu_);
  std::unique_ptr<Partition>& slot = partitions_[key];
  if (slot == nullptr) {
    slot = std::make_unique<Partition>();
    std::lock_guard<std::mutex> partition_lock(slot->mu);  // uncontended; satisfies the annotations
    slot->key = key;
    std::lock_guard<std::mutex> state_lock(state_mu_);
    if (const auto it = records_.find(key); it != records_.end()) slot->record = it->second;
    // A file opened before a restart: its steady-clock opening is unknown, so its wall-clock
    // age stands in, clamped so that a clock that stepped backwards (a file opened "in the
    // future") still rolls within max_age.
    const int64_t wall_age_ms =
        ToUnixMillis(std::chrono::system_clock::now()) - slot->record.open_time_ms;
    const int64_t max_age_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(options_.max_age).count();
    slot->opened_steady =
        std::chrono::steady_clock::now() -
        std::chrono::milliseconds(std::clamp<int64_t>(wall_age_ms, 0, max_age_ms));
  }
  return slot.get();
}

std::vector<RollingFileDestination::Partition*> RollingFileDestination::AllPartitions() {
  // Partitions with an open file from before a restart exist only in records_ until touched.
  std::vector<Key> keys;
  {
    std::lock_guard<std::mutex> lock(state_mu_);
    for (const auto& [key, r] : records_) keys.push_back(key);
  }
  std::vector<Partition*> out;
  for (const Key& key : keys) out.push_back(GetPartition(key));
  std::lock_guard<std::mutex> lock(partitions_mu_);
  for (const auto& [key, p] : partitions_) {
    if (std::find(out.begin(), out.end(), p.get()) == out.end()) out.push_back(p.get());
  }
  return out;
}

bool RollingFileDestination::Expired(const Partition& p,
                                     std::chrono::system_clock::time_point now) const {
  const PartitionRecord& r = p.record;
  if (!r.open || options_.max_age.count() == 0) return false;
  const int64_t max_age_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(options_.max_age).count();
  // Due when either clock says so. The steady clock bounds the file's life: by the wall clock
  // alone, a file opened before the clock stepped back an hour stayed open (its records
  // unpublished) for that hour plus max_age. The wall clock still counts, so that a forward step
  // rolls files early (harmless: smaller files) and RollExpired(now) can be given a time.
  return ToUnixMillis(now) - r.open_time_ms >= max_age_ms ||
         std::chrono::steady_clock::now() - p.opened_steady >= options_.max_age;
}

bool RollingFileDestination::SizeReached(const PartitionRecord& r) const {
  return r.open && r.batches > 0 && options_.max_bytes > 0 && r.uncompressed >= options_.max_bytes;
}

// ---------------------------------------------------------------------------------------------
// Delivery

absl::Status RollingFileDestination::Deliver(const wharf::v1::StoredBatch& batch,
                                             DeliveryReport* report) {
  const wharf::v1::BatchManifest& m = batch.manifest();
  // The dataset name becomes part of paths and of the state file: only valid Wharf names.
  if (absl::Status s = storage::ValidateName("dataset", m.dataset()); !s.ok()) {
    // Not INVALID_ARGUMENT: that would quarantine the records; this is a configuration error.
    return absl::FailedPreconditionError(
        absl::StrCat(Absl(kWho), ": batch ", m.batch_id(), ": ", s.message()));
  }
  Partition* p = GetPartition(Key(m.dataset(), m.partition()));
  std::lock_guard<std::mutex> lock(p->mu);
  return DeliverLocked(*p, batch, report);
}

absl::Status RollingFileDestination::SyncDirectoryChain(const std::string& relative_dir) const {
  // The in-progress file's directory and every directory between it and the root directory:
  // a directory created by an earlier (crashed) run may exist without its entry being durable.
  std::string dir = relative_dir;
  while (true) {
    const std::string absolute =
        dir == "." ? options_.directory : JoinPath(options_.directory, dir);
    if (absl::Status s = file_util::SyncDirectoryAt(kWho, absolute); !s.ok()) return s;
    if (dir == ".") return absl::OkStatus();
    dir = ParentOf(dir);
  }
}

absl::Status RollingFileDestination::OpenInProgress(Partition& p) {
  const PartitionRecord& r = p.record;
  const std::string path = InProgressPath(r);
  if (!p.fd.valid()) {
    // O_NOFOLLOW: a symbolic link is not something this destination wrote. No O_TRUNC: the
    // committed bytes are delivered data.
    p.fd = ScopedFd(OpenRetrying(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644));
    if (!p.fd.valid()) return ErrnoError(errno, "open", path);
    p.dir_synced = false;
  }
  struct stat st {};
  if (::fstat(p.fd.get(), &st) != 0) {
    p.fd.Close();
    return ErrnoError(errno, "fstat", path);
  }
  if (!S_ISREG(st.st_mode)) {
    p.fd.Close();
    return absl::DataLossError(
        absl::StrCat(Absl(kWho), ": in-progress file ", path, " is not a regular file"));
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < r.committed) {
    p.fd.Close();
    return absl::DataLossError(
        absl::StrCat(Absl(kWho), ": in-progress file ", path, " has ", size,
                     " bytes but state file ", state_path_, " records ", r.committed,
                     " bytes of delivered batches in it; it was truncated or replaced"));
  }
  if (size > r.committed) {
    // Bytes beyond the committed length were never acknowledged (a partial write, or a batch
    // whose state update did not happen before a crash): drop them so the redelivery appends
    // the batch exactly once. Not fsynced here: should the truncation be lost, the tail is
    // beyond the committed length again and is dropped again; the append's fsync covers it.
    if (::ftruncate(p.fd.get(), static_cast<off_t>(r.committed)) != 0) {
      const int err = errno;
      p.fd.Close();
      return ErrnoError(err, "truncate", path);
    }
  }
  return absl::OkStatus();
}

absl::Status RollingFileDestination::DeliverLocked(Partition& p,
                                                   const wharf::v1::StoredBatch& batch,
                                                   DeliveryReport* report) {
  const wharf::v1::BatchManifest& m = batch.manifest();
  if (p.record.delivered && m.last_offset() <= p.record.last_delivered) {
    report->already_delivered = true;
    return EnsureStateDurable();
  }
  const auto now = std::chrono::system_clock::now();
  // A file due by age rolls before it takes more data; one due by size only if its roll failed
  // after the batch that filled it. A failure here fails the delivery, so it is seen and retried.
  if (Expired(p, now) || SizeReached(p.record)) {
    if (absl::Status s = Roll(p); !s.ok()) return s;
  }

  // Lines of the records not delivered before: a sub-batch or a batch overlapping delivered
  // offsets appends only its new records.
  const bool skip_delivered = p.record.delivered;
  const uint64_t last_delivered = p.record.last_delivered;
  std::string lines;
  uint64_t kept = 0;
  for (const wharf::v1::BatchRecord& record : batch.records()) {
    if (skip_delivered && record.offset() <= last_delivered) continue;
    ++kept;
    const size_t start = lines.size();
    lines.append(record.payload());
    std::replace_if(
        lines.begin() + static_cast<std::ptrdiff_t>(start), lines.end(),
        [](char c) { return c == '\n' || c == '\r'; }, ' ');
    lines.push_back('\n');
  }

  bool applied = false;
  if (kept == 0) {
    // Nothing to append (all records quarantined or delivered before): no file is opened for
    // it, but an open file's range grows to cover it, and the state records it as delivered.
    PartitionRecord next = p.record;
    next.delivered = true;
    next.last_delivered = m.last_offset();
    if (next.open && next.batches > 0) {
      ++next.batches;
      next.file_last_offset = m.last_offset();
      report->commit_id = CommitIdFor(next);
    }
    absl::Status s = Persist(p.key, next, &applied);
    if (applied) p.record = next;
    return s;
  }

  // The file's name derives from this batch if it opens the file: its first undelivered offset.
  const uint64_t first_offset =
      skip_delivered ? std::max(m.first_offset(), last_delivered + 1) : m.first_offset();
  const std::string pattern =
      RenderPattern(template_, m.dataset(), m.partition(), first_offset, m.create_time().seconds());
  if (p.record.open && p.record.batches == 0 &&
      (p.record.pattern != pattern || p.record.gzip != options_.gzip)) {
    // An open intent (no batch committed) from an attempt with a different first batch or
    // configuration: nothing in its file was delivered, so it is discarded and reopened below.
    if (absl::Status s = Roll(p); !s.ok()) return s;
  }
  if (!p.record.open) {
    const std::string directory = ParentOf(JoinPath(options_.directory, pattern));
    if (absl::Status s = file_util::MakeDirectories(kWho, directory, options_.fsync); !s.ok()) {
      return s;
    }
    // The state learns about the file before it exists, so no crash can leave an in-progress
    // file the state does not know (and Create() could not clean up).
    PartitionRecord intent;
    intent.delivered = p.record.delivered;
    intent.last_delivered = p.record.last_delivered;
    intent.open = true;
    intent.gzip = options_.gzip;
    intent.open_time_ms = ToUnixMillis(now);
    intent.pattern = pattern;
    absl::Status s = Persist(p.key, intent, &applied);
    if (applied) {
      p.record = intent;
      p.fd = ScopedFd();
      p.opened_steady = std::chrono::steady_clock::now();
    }
    if (!s.ok()) return s;
    storage::MaybeCrashAt("rolling_file_destination.after_open_intent");
  }

  if (absl::Status s = OpenInProgress(p); !s.ok()) return s;
  const uint64_t uncompressed_size = lines.size();
  std::string data;
  if (p.record.gzip) {
    absl::StatusOr<std::string> member = GzipMember(lines);
    if (!member.ok()) return member.status();
    data = *std::move(member);
  } else {
    data = std::move(lines);
  }
  const std::string path = InProgressPath(p.record);
  // Crash safety: the batch is written beyond the committed length and fsynced before the state
  // counts it. Killed before the state update, the bytes are dropped by the truncation of the
  // redelivery (OpenInProgress). On a failed write or fsync the page cache state is unknown:
  // the descriptor is closed and the next attempt reopens, truncates and rewrites.
  if (const int err = file_util::PwriteAll(p.fd.get(), data, p.record.committed); err != 0) {
    p.fd.Close();
    return ErrnoError(err, "write", path);
  }
  if (options_.fsync) {
    if (FsyncRetrying(p.fd.get()) != 0) {
      const int err = errno;
      p.fd.Close();
      return ErrnoError(err, "fsync", path);
    }
    if (!p.dir_synced) {
      // The file's directory entry (and its directories') must be durable before the state
      // refers to bytes in it.
      if (absl::Status s = SyncDirectoryChain(ParentOf(p.record.pattern)); !s.ok()) return s;
      p.dir_synced = true;
    }
  }
  storage::MaybeCrashAt("rolling_file_destination.after_append");

  PartitionRecord next = p.record;
  next.delivered = true;
  next.last_delivered = m.last_offset();
  ++next.batches;
  next.committed += data.size();
  next.uncompressed += uncompressed_size;
  next.file_last_offset = m.last_offset();
  absl::Status s = Persist(p.key, next, &applied);
  if (applied) p.record = next;
  if (!s.ok()) return s;
  storage::MaybeCrashAt("rolling_file_destination.after_commit");

  report->commit_id = CommitIdFor(next);
  if (SizeReached(p.record)) {
    const std::string final_relative = FinalRelative(p.record);
    if (absl::Status roll = Roll(p); roll.ok()) {
      report->commit_id = final_relative;
    } else {
      // The batch is durably delivered; the roll is retried by the next Deliver() (which fails
      // if the roll still fails) or RollExpired().
      spdlog::warn("{}: rolling {} failed (retried later): {}", kWho, InProgressPath(p.record),
                   std::string(roll.message()));
    }
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// Rolling

absl::Status RollingFileDestination::Roll(Partition& p) {
  const PartitionRecord r = p.record;
  if (!r.open) return absl::OkStatus();
  const std::string in_progress = InProgressPath(r);
  const std::string directory = ParentOf(in_progress);
  PartitionRecord closed;
  closed.delivered = r.delivered;
  closed.last_delivered = r.last_delivered;
  p.fd = ScopedFd();
  bool applied = false;

  if (r.batches == 0) {
    // An open intent without delivered data: discard its file. The removal is made durable
    // before the state forgets the file, so power loss cannot resurrect an unknown file.
    if (::unlink(in_progress.c_str()) != 0 && errno != ENOENT) {
      return ErrnoError(errno, "unlink", in_progress);
    }
    if (options_.fsync) {
      struct stat st {};
      if (::stat(directory.c_str(), &st) == 0) {
        if (absl::Status s = file_util::SyncDirectoryAt(kWho, directory); !s.ok()) return s;
      }
    }
    absl::Status s = Persist(p.key, closed, &applied);
    if (applied) p.record = closed;
    return s;
  }

  const std::string final_path = JoinPath(options_.directory, FinalRelative(r));
  bool published = false;
  {
    // Drop any unacknowledged tail so exactly the committed batches are published.
    ScopedFd fd(OpenRetrying(in_progress.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW));
    if (!fd.valid()) {
      if (errno != ENOENT) return ErrnoError(errno, "open", in_progress);
      // Renamed by an earlier attempt whose state update failed or was cut short by a crash.
      absl::StatusOr<bool> done = RegularFileOfSize(final_path, r.committed, "rolled file");
      if (!done.ok()) return done.status();
      if (!*done) {
        return absl::DataLossError(absl::StrCat(Absl(kWho), ": in-progress file ", in_progress,
                                                " (", r.committed,
                                                " bytes of delivered batches) vanished; its final "
                                                "file ",
                                                final_path, " does not exist"));
      }
      if (options_.fsync) {
        if (absl::Status s = FsyncPath(final_path); !s.ok()) return s;
      }
      published = true;
    } else {
      struct stat st {};
      if (::fstat(fd.get(), &st) != 0) return ErrnoError(errno, "fstat", in_progress);
      if (static_cast<uint64_t>(st.st_size) < r.committed) {
        return absl::DataLossError(
            absl::StrCat(Absl(kWho), ": in-progress file ", in_progress, " has ", st.st_size,
                         " bytes but state file ", state_path_, " records ", r.committed,
                         " bytes of delivered batches in it; it was truncated or replaced"));
      }
      if (static_cast<uint64_t>(st.st_size) > r.committed) {
        if (::ftruncate(fd.get(), static_cast<off_t>(r.committed)) != 0) {
          return ErrnoError(errno, "truncate", in_progress);
        }
        // The published file's size must be durable before its name is.
        if (options_.fsync && FsyncRetrying(fd.get()) != 0) {
          return ErrnoError(errno, "fsync", in_progress);
        }
      }
      if (const int err = fd.Close(); err != 0) return ErrnoError(err, "close", in_progress);
    }
  }

  if (!published) {
    // Crash safety: renameat2(RENAME_NOREPLACE) atomically moves the complete, fsynced file to
    // its final name and never replaces an existing file. After kill -9 or power loss the
    // directory holds the in-progress name or the final name, which Create() and the retried
    // roll both resolve (the state still says "open" until the write below).
    bool exists_already = false;
    if (::renameat2(AT_FDCWD, in_progress.c_str(), AT_FDCWD, final_path.c_str(),
                    RENAME_NOREPLACE) != 0) {
      int err = errno;
      if (err == EINVAL || err == ENOSYS || err == EOPNOTSUPP) {
        // No RENAME_NOREPLACE on this file system: link() never replaces either. A crash
        // between link and unlink leaves both names for one inode, resolved below next time.
        if (::link(in_progress.c_str(), final_path.c_str()) == 0) {
          err = 0;
        } else {
          err = errno;
        }
        if (err == 0 && ::unlink(in_progress.c_str()) != 0) {
          return ErrnoError(errno, "unlink after link", in_progress);
        }
      }
      if (err == EEXIST) {
        exists_already = true;
      } else if (err != 0) {
        return ErrnoError(err, "rename to", final_path);
      }
    }
    if (exists_already) {
      // Either this very file was published by an interrupted link()+unlink(), or a foreign
      // file holds the name. Only identical content counts as published.
      absl::StatusOr<bool> same = SameFile(in_progress, final_path);
      if (!same.ok()) return same.status();
      absl::StatusOr<bool> sized = RegularFileOfSize(final_path, r.committed, "rolled file");
      if (!sized.ok()) return sized.status();
      if (!*same || !*sized) {
        return absl::DataLossError(absl::StrCat(
            Absl(kWho), ": cannot publish ", in_progress, ": ", final_path,
            " exists with different content; not overwriting it (the in-progress file is kept)"));
      }
      if (options_.fsync) {
        if (absl::Status s = FsyncPath(final_path); !s.ok()) return s;
      }
      if (::unlink(in_progress.c_str()) != 0 && errno != ENOENT) {
        return ErrnoError(errno, "unlink", in_progress);
      }
    }
    storage::MaybeCrashAt("rolling_file_destination.after_publish");
  }
  // Makes the rename durable before the state forgets the in-progress file.
  if (options_.fsync) {
    if (absl::Status s = file_util::SyncDirectoryAt(kWho, directory); !s.ok()) return s;
  }
  absl::Status s = Persist(p.key, closed, &applied);
  if (applied) p.record = closed;
  return s;
}

absl::Status RollingFileDestination::RollIfDue(Partition& p, bool force,
                                               std::chrono::system_clock::time_point now) {
  std::lock_guard<std::mutex> lock(p.mu);
  if (!p.record.open || !(force || Expired(p, now) || SizeReached(p.record))) {
    return absl::OkStatus();
  }
  return Roll(p);
}

absl::Status RollingFileDestination::RollExpired() {
  return RollExpired(std::chrono::system_clock::now());
}

absl::Status RollingFileDestination::RollExpired(std::chrono::system_clock::time_point now) {
  absl::Status first = absl::OkStatus();
  for (Partition* p : AllPartitions()) {
    absl::Status s = RollIfDue(*p, /*force=*/false, now);
    if (first.ok()) first = s;
  }
  return first;
}

absl::Status RollingFileDestination::Close() {
  absl::Status first = absl::OkStatus();
  for (Partition* p : AllPartitions()) {
    absl::Status s = RollIfDue(*p, /*force=*/true, std::chrono::system_clock::now());
    if (first.ok()) first = s;
  }
  return first;
}

}  // namespace wharf::pipeline
