#include "tests/support/checker.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <unordered_map>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "tests/support/postgres_server.h"
#include "tests/support/wharfd_process.h"

namespace wharf::testing {

RequestOutcome ClassifySendResult(const client::SendResult& result) {
  switch (result.status.code()) {
    case absl::StatusCode::kOk:
      return RequestOutcome::kAcked;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kAlreadyExists:
      return RequestOutcome::kFailed;
    default:
      return RequestOutcome::kUnknown;
  }
}

const char* RequestOutcomeName(RequestOutcome outcome) {
  switch (outcome) {
    case RequestOutcome::kAcked:
      return "acked";
    case RequestOutcome::kFailed:
      return "failed";
    case RequestOutcome::kUnknown:
      return "unknown";
  }
  return "?";
}

void History::Log(const std::vector<uint64_t>& ids, const client::SendResult& result) {
  const RequestOutcome outcome = ClassifySendResult(result);
  if (outcome == RequestOutcome::kAcked && result.acks.size() != ids.size()) {
    // An OK answer that does not acknowledge every record is a broken ack: nothing in it can be
    // trusted, so its records count as unknown and the mismatch as a conflict.
    std::lock_guard<std::mutex> lock(mu_);
    ++conflicting_acks_;
    LogOutcome(ids, RequestOutcome::kUnknown, nullptr);
    return;
  }
  std::lock_guard<std::mutex> lock(mu_);
  LogOutcome(ids, outcome, &result);
}

void History::LogRefused(const std::vector<uint64_t>& ids) {
  std::lock_guard<std::mutex> lock(mu_);
  LogOutcome(ids, RequestOutcome::kFailed, nullptr);
}

void History::LogOutcome(const std::vector<uint64_t>& ids, RequestOutcome outcome,
                         const client::SendResult* result) {
  ++requests_;
  for (size_t i = 0; i < ids.size(); ++i) {
    const uint64_t id = ids[i];
    if (id == 0) {
      ++untracked_;
      continue;
    }
    auto [it, inserted] = outcomes_.emplace(id, outcome);
    // Acked beats unknown beats failed: a record acked by any request is durable, and one whose
    // request may have been stored may be delivered.
    if (!inserted &&
        (outcome == RequestOutcome::kAcked ||
         (outcome == RequestOutcome::kUnknown && it->second == RequestOutcome::kFailed))) {
      it->second = outcome;
    }
    if (outcome != RequestOutcome::kAcked || result == nullptr) continue;
    const std::pair<uint32_t, uint64_t> pos(result->acks[i].partition(), result->acks[i].offset());
    acked_.emplace(id, pos);
    auto [by_pos, fresh] = acked_by_position_.emplace(pos, id);
    if (!fresh && by_pos->second != id) ++conflicting_acks_;
  }
}

std::map<uint64_t, RequestOutcome> History::Outcomes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return outcomes_;
}

std::map<uint64_t, std::pair<uint32_t, uint64_t>> History::AckedPositions() const {
  std::lock_guard<std::mutex> lock(mu_);
  return acked_;
}

size_t History::requests() const {
  std::lock_guard<std::mutex> lock(mu_);
  return requests_;
}

size_t History::untracked() const {
  std::lock_guard<std::mutex> lock(mu_);
  return untracked_;
}

size_t History::conflicting_acks() const {
  std::lock_guard<std::mutex> lock(mu_);
  return conflicting_acks_;
}

std::vector<FoundRecord> FileDestinationRecords(const std::string& dir,
                                                const std::string& dataset) {
  std::vector<FoundRecord> out;
  for (const DestinationFile& f : ReadDestination(dir, dataset)) {
    // A batch's file is named after its offset range, quarantined records included but not
    // written: only a file holding its whole range tells each line's offset.
    const bool complete =
        f.last_offset >= f.first_offset && f.lines.size() == f.last_offset - f.first_offset + 1;
    for (size_t i = 0; i < f.lines.size(); ++i) {
      FoundRecord r;
      r.id = LoadPayloadId(f.lines[i]);
      if (complete) r.position = std::make_pair(f.partition, f.first_offset + i);
      out.push_back(r);
    }
  }
  return out;
}

absl::StatusOr<std::vector<FoundRecord>> PostgresRecords(const PostgresServer& pg,
                                                         const std::string& table) {
  auto rows = pg.Query(absl::StrCat("SELECT id, src_partition, src_offset FROM ", table));
  if (!rows.ok()) return rows.status();
  std::vector<FoundRecord> out;
  out.reserve(rows->size());
  for (const auto& row : *rows) {
    if (row.size() != 3) return absl::InternalError("expected 3 columns");
    FoundRecord r;
    uint32_t partition = 0;
    uint64_t offset = 0;
    // A NULL or malformed id stays 0: a row the checker cannot attribute is unexpected.
    if (!absl::SimpleAtoi(row[0], &r.id)) r.id = 0;
    if (absl::SimpleAtoi(row[1], &partition) && absl::SimpleAtoi(row[2], &offset)) {
      r.position = std::make_pair(partition, offset);
    }
    out.push_back(r);
  }
  return out;
}

absl::StatusOr<std::vector<FoundRecord>> QuarantinedRecords(client::ControlClient& control,
                                                            const std::string& dataset,
                                                            uint32_t limit) {
  auto entries = control.ListAllQuarantine(dataset, limit, std::chrono::seconds(30));
  if (!entries.ok()) return entries.status();
  std::vector<FoundRecord> out;
  out.reserve(static_cast<size_t>(entries->entries_size()));
  for (const auto& e : entries->entries()) {
    FoundRecord r;
    r.id = LoadPayloadId(e.original().record().payload());
    r.position = std::make_pair(e.partition(), e.offset());
    out.push_back(r);
  }
  return out;
}

std::vector<FoundRecord> PayloadRecords(const std::vector<std::string>& payloads) {
  std::vector<FoundRecord> out;
  out.reserve(payloads.size());
  for (const auto& p : payloads) out.push_back(FoundRecord{LoadPayloadId(p), std::nullopt});
  return out;
}

std::string CheckerCounts::ToString() const {
  std::string s = absl::StrCat("checker: acked=", acked, " failed=", failed, " unknown=", unknown,
                               " delivered=", delivered, " lost=", lost, " duplicated=", duplicated,
                               " unexpected=", unexpected, " recovered=", recovered,
                               " quarantined=", quarantined, " misplaced=", misplaced);
  if (conflicting_acks > 0) absl::StrAppend(&s, " conflicting_acks=", conflicting_acks);
  if (!exactly_once) s += " (at least once)";
  return s;
}

CheckerCounts Check(const History& history, const std::vector<FoundRecord>& delivered,
                    const std::vector<FoundRecord>& quarantined, CheckOptions options) {
  CheckerCounts c;
  c.exactly_once = options.exactly_once;
  c.conflicting_acks = history.conflicting_acks();
  const std::map<uint64_t, RequestOutcome> outcomes = history.Outcomes();
  const std::map<uint64_t, std::pair<uint32_t, uint64_t>> acked_at = history.AckedPositions();
  for (const auto& [id, outcome] : outcomes) {
    switch (outcome) {
      case RequestOutcome::kAcked:
        ++c.acked;
        break;
      case RequestOutcome::kFailed:
        ++c.failed;
        break;
      case RequestOutcome::kUnknown:
        ++c.unknown;
        break;
    }
  }
  c.delivered = delivered.size();
  c.quarantined = quarantined.size();

  // Copies of each id at the destination and in quarantine.
  std::unordered_map<uint64_t, size_t> at_destination, in_quarantine;
  at_destination.reserve(delivered.size());
  // A record that is neither sent nor failed-definite, wherever it was found.
  auto unexpected = [&](uint64_t id) {
    if (id == 0) return true;
    auto it = outcomes.find(id);
    return it == outcomes.end() || it->second == RequestOutcome::kFailed;
  };
  auto misplaced = [&](const FoundRecord& r) {
    if (!r.position.has_value()) return false;
    auto it = acked_at.find(r.id);
    return it != acked_at.end() && it->second != *r.position;
  };
  for (const FoundRecord& r : delivered) {
    if (unexpected(r.id)) {
      ++c.unexpected;
      continue;
    }
    if (++at_destination[r.id] > 1) ++c.duplicated;
    if (misplaced(r)) ++c.misplaced;
  }
  for (const FoundRecord& r : quarantined) {
    if (unexpected(r.id)) {
      ++c.unexpected;
      continue;
    }
    // A record is either delivered or quarantined (by validation or as refused by the
    // destination); in both places, or twice in quarantine, it is a copy too many.
    if (++in_quarantine[r.id] > 1 || at_destination.count(r.id) > 0) ++c.duplicated;
    if (misplaced(r)) ++c.misplaced;
  }
  for (const auto& [id, outcome] : outcomes) {
    const bool found = at_destination.count(id) > 0 || in_quarantine.count(id) > 0;
    if (outcome == RequestOutcome::kAcked && !found) ++c.lost;
    if (outcome == RequestOutcome::kUnknown && found) ++c.recovered;
  }
  return c;
}

void ExpectCheckerOk(const CheckerCounts& counts, const std::string& what) {
  const std::string line = absl::StrCat(counts.ToString(), " [", what, "]\n");
  std::fputs(line.c_str(), stdout);
  std::fflush(stdout);
  // tests/run.sh collects the lines of every test here (ctest shows a passing test's output
  // only with -V). One short O_APPEND write per line, so that parallel tests do not interleave.
  if (const char* log = std::getenv("WHARF_CHECKER_LOG"); log != nullptr && *log != '\0') {
    const int fd = ::open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd >= 0) {
      if (::write(fd, line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
        ADD_FAILURE() << "writing " << log << " failed";
      }
      ::close(fd);
    }
  }
  EXPECT_EQ(counts.lost, 0u) << what << ": acknowledged records lost";
  if (counts.exactly_once) {
    EXPECT_EQ(counts.duplicated, 0u) << what << ": records delivered more than once";
  }
  EXPECT_EQ(counts.unexpected, 0u) << what << ": records delivered that were never sent";
  EXPECT_EQ(counts.misplaced, 0u) << what << ": records delivered away from their acked position";
  EXPECT_EQ(counts.conflicting_acks, 0u) << what << ": conflicting acknowledgements";
}

}  // namespace wharf::testing
