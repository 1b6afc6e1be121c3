#include "storage/failpoint.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"

namespace wharf::storage {
namespace {

struct Failpoints {
  std::mutex mu;
  std::map<std::string, long, std::less<>> remaining;  // hits left before the crash
};

Failpoints* Load() {
  auto* fp = new Failpoints;  // Intentionally leaked: used until the process ends.
  const char* env = std::getenv("WHARF_FAILPOINTS");
  if (env == nullptr) return fp;
  for (absl::string_view entry : absl::StrSplit(env, ',', absl::SkipEmpty())) {
    std::pair<std::string, std::string> kv = absl::StrSplit(entry, absl::MaxSplits(':', 1));
    long n = 1;
    if (!kv.second.empty() && !absl::SimpleAtoi(kv.second, &n)) continue;
    if (n >= 1) fp->remaining[kv.first] = n;
  }
  return fp;
}

std::atomic<bool> g_any_armed{std::getenv("WHARF_FAILPOINTS") != nullptr};

}  // namespace

void MaybeCrashAt(std::string_view name) {
  if (!g_any_armed.load(std::memory_order_relaxed)) return;
  static Failpoints* fp = Load();
  std::lock_guard<std::mutex> lock(fp->mu);
  auto it = fp->remaining.find(name);
  if (it == fp->remaining.end()) return;
  if (--it->second == 0) {
    ::kill(::getpid(), SIGKILL);
    ::pause();  // SIGKILL cannot be caught; never return into the code after the crash point.
  }
}

}  // namespace wharf::storage
