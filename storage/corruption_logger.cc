#include "storage/corruption_logger.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "rocksdb/options.h"
#include "rocksdb/sst_file_reader.h"

namespace wharf::storage {
namespace {

constexpr size_t kMaxNoted = 16;

bool AllDigits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return std::isdigit(static_cast<unsigned char>(c));
  });
}

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// True for the base names of the files RocksDB keeps in a store directory.
bool IsStoreFileName(std::string_view base) {
  if (EndsWith(base, ".log")) return AllDigits(base.substr(0, base.size() - 4));
  if (EndsWith(base, ".sst")) return AllDigits(base.substr(0, base.size() - 4));
  if (base.rfind("MANIFEST-", 0) == 0) return AllDigits(base.substr(9));
  if (base.rfind("OPTIONS-", 0) == 0) return AllDigits(base.substr(8));
  return base == "CURRENT" || base == "IDENTITY";
}

bool MentionsCorruption(std::string_view line) {
  return line.find("Corruption") != std::string_view::npos ||
         line.find("corrupt") != std::string_view::npos ||
         line.find("checksum mismatch") != std::string_view::npos;
}

std::string Format(const char* format, va_list ap) {
  char buf[1024];
  va_list copy;
  va_copy(copy, ap);
  const int n = std::vsnprintf(buf, sizeof(buf), format, copy);
  va_end(copy);
  if (n <= 0) return std::string();
  return std::string(buf, std::min<size_t>(static_cast<size_t>(n), sizeof(buf) - 1));
}

}  // namespace

std::vector<std::string> StoreFilesNamedIn(const std::string& text) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
    size_t j = i;
    while (j < text.size() && !std::isspace(static_cast<unsigned char>(text[j]))) ++j;
    std::string token = text.substr(i, j - i);
    i = j;
    // Punctuation RocksDB puts around names: "file: dropping", "(file)", "file,", "file.".
    const std::string_view kTrim = ":;,()[]\"'";
    while (!token.empty() && kTrim.find(token.back()) != std::string_view::npos) token.pop_back();
    while (!token.empty() && kTrim.find(token.front()) != std::string_view::npos) {
      token.erase(token.begin());
    }
    if (!token.empty() && token.back() == '.') token.pop_back();
    const size_t slash = token.rfind('/');
    const std::string base = slash == std::string::npos ? token : token.substr(slash + 1);
    if (IsStoreFileName(base) && std::find(out.begin(), out.end(), token) == out.end()) {
      out.push_back(token);
    }
  }
  return out;
}

std::string DescribeCorruption(const std::string& what, const rocksdb::Status& status,
                               const std::vector<std::string>& noted) {
  const std::string text = status.ToString();
  std::string msg = absl::StrCat(what, ": ", text);
  const std::vector<std::string> named = StoreFilesNamedIn(text);
  std::vector<std::string> extra;
  for (const std::string& f : noted) {
    if (std::find(named.begin(), named.end(), f) == named.end()) extra.push_back(f);
  }
  if (!extra.empty()) absl::StrAppend(&msg, "; damaged file(s): ", absl::StrJoin(extra, ", "));
  return msg;
}

std::vector<std::string> FindDamagedSstFiles(const std::string& store_dir) {
  std::vector<std::string> damaged;
  std::error_code ec;
  std::vector<std::string> paths;
  for (const auto& e : std::filesystem::directory_iterator(store_dir, ec)) {
    if (EndsWith(e.path().filename().string(), ".sst")) paths.push_back(e.path().string());
  }
  std::sort(paths.begin(), paths.end());
  rocksdb::Options options;
  options.paranoid_checks = true;
  for (const std::string& path : paths) {
    rocksdb::SstFileReader reader(options);
    rocksdb::Status s = reader.Open(path);
    if (s.ok()) s = reader.VerifyChecksum();
    if (!s.ok()) damaged.push_back(absl::StrCat(path, " (", s.ToString(), ")"));
  }
  return damaged;
}

std::vector<std::string> DamagedFilesFor(const rocksdb::Status& status,
                                         const CorruptionNotingLogger& logger,
                                         const std::string& store_dir) {
  std::vector<std::string> noted = logger.DamagedFiles();
  std::vector<std::string> all = StoreFilesNamedIn(status.ToString());
  all.insert(all.end(), noted.begin(), noted.end());
  const bool names_data_file = std::any_of(all.begin(), all.end(), [](const std::string& f) {
    return EndsWith(f, ".sst") || EndsWith(f, ".log");
  });
  if (!names_data_file) {
    for (std::string& f : FindDamagedSstFiles(store_dir)) noted.push_back(std::move(f));
  }
  return noted;
}

CorruptionNotingLogger::CorruptionNotingLogger(std::shared_ptr<rocksdb::Logger> inner,
                                               rocksdb::InfoLogLevel level)
    : rocksdb::Logger(level), inner_(std::move(inner)) {}

void CorruptionNotingLogger::Logv(const char* format, va_list ap) {
  Logv(rocksdb::InfoLogLevel::INFO_LEVEL, format, ap);
}

void CorruptionNotingLogger::Logv(const rocksdb::InfoLogLevel level, const char* format,
                                  va_list ap) {
  if (level < GetInfoLogLevel()) return;
  if (level >= rocksdb::InfoLogLevel::WARN_LEVEL) {
    const std::string line = Format(format, ap);
    if (MentionsCorruption(line)) {
      std::lock_guard<std::mutex> lock(mu_);
      for (std::string& f : StoreFilesNamedIn(line)) {
        if (damaged_.size() < kMaxNoted &&
            std::find(damaged_.begin(), damaged_.end(), f) == damaged_.end()) {
          damaged_.push_back(std::move(f));
        }
      }
    }
  }
  if (inner_ != nullptr) inner_->Logv(level, format, ap);
}

void CorruptionNotingLogger::Flush() {
  if (inner_ != nullptr) inner_->Flush();
}

std::vector<std::string> CorruptionNotingLogger::DamagedFiles() const {
  std::lock_guard<std::mutex> lock(mu_);
  return damaged_;
}

rocksdb::Status CorruptionNotingLogger::CloseImpl() {
  if (inner_ != nullptr) return inner_->Close();
  return rocksdb::Status::OK();
}

}  // namespace wharf::storage
