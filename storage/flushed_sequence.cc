#include "storage/flushed_sequence.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "spdlog/spdlog.h"

namespace wharf::storage {
namespace {

std::string Slurp(const std::string& path, bool* exists) {
  std::ifstream in(path, std::ios::binary);
  *exists = in.good();
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

absl::Status Errno(const std::string& what) {
  return absl::UnavailableError(absl::StrCat(what, ": ", std::strerror(errno)));
}

// Replaces <store_dir>/<name> with `text` atomically.
absl::Status ReplaceFile(const std::string& store_dir, const char* name, const std::string& text) {
  const std::string path = absl::StrCat(store_dir, "/", name);
  const std::string tmp = path + ".tmp";
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Errno("creating " + tmp);
  const bool written = write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  // Durability: synced before the rename, and the directory after it, so that after a crash
  // the file holds either the old or the new value, never a torn one.
  const bool synced = written && fsync(fd) == 0;
  close(fd);
  if (!synced) return Errno("writing " + tmp);
  if (rename(tmp.c_str(), path.c_str()) != 0) return Errno("renaming " + tmp);
  int dfd = open(store_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return Errno("opening " + store_dir);
  const bool dir_synced = fsync(dfd) == 0;
  close(dfd);
  if (!dir_synced) return Errno("syncing " + store_dir);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<uint64_t> ReadFlushedSequence(const std::string& store_dir) {
  const std::string path = absl::StrCat(store_dir, "/", kFlushedSequenceFile);
  bool exists = false;
  const std::string text = Slurp(path, &exists);
  if (!exists) return 0;
  uint64_t seq = 0;
  if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(text), &seq)) {
    return absl::DataLossError(absl::StrCat(path, " is damaged (does not hold a number)"));
  }
  return seq;
}

absl::Status WriteFlushedSequence(const std::string& store_dir, uint64_t sequence) {
  return ReplaceFile(store_dir, kFlushedSequenceFile, absl::StrCat(sequence, "\n"));
}

absl::StatusOr<std::vector<std::string>> ReadColumnFamilyList(const std::string& store_dir) {
  const std::string path = absl::StrCat(store_dir, "/", kColumnFamiliesFile);
  bool exists = false;
  const std::string text = Slurp(path, &exists);
  std::vector<std::string> names;
  if (!exists) return names;
  if (text.empty() || text.back() != '\n') {
    return absl::DataLossError(absl::StrCat(path, " is damaged (not a list of names)"));
  }
  for (absl::string_view line : absl::StrSplit(absl::string_view(text), '\n')) {
    if (line.empty()) continue;
    for (char c : line) {
      if (static_cast<unsigned char>(c) < 0x20) {
        return absl::DataLossError(absl::StrCat(path, " is damaged (not a list of names)"));
      }
    }
    names.emplace_back(line);
  }
  return names;
}

absl::Status WriteColumnFamilyList(const std::string& store_dir,
                                   const std::vector<std::string>& names) {
  std::string text;
  for (const std::string& n : names) absl::StrAppend(&text, n, "\n");
  return ReplaceFile(store_dir, kColumnFamiliesFile, text);
}

std::string CurrentManifestName(const std::string& store_dir) {
  bool exists = false;
  std::string name(absl::StripAsciiWhitespace(Slurp(store_dir + "/CURRENT", &exists)));
  if (!exists || name.rfind("MANIFEST-", 0) != 0) return "MANIFEST";
  return name;
}

void FlushedSequenceRecorder::OnFlushCompleted(rocksdb::DB* /*db*/,
                                               const rocksdb::FlushJobInfo& info) {
  std::lock_guard<std::mutex> lock(mu_);
  if (info.largest_seqno <= recorded_) return;
  if (absl::Status st = WriteFlushedSequence(store_dir_, info.largest_seqno); !st.ok()) {
    // Only the guard is weaker until the next flush; the store itself is fine.
    spdlog::warn("cannot record the flushed sequence: {}", st.ToString());
    return;
  }
  recorded_ = info.largest_seqno;
}

}  // namespace wharf::storage
