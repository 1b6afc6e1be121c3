#pragma once

// The reliability checker shared by the crash, fault-injection and destination tests.
//
// Producers log every request's outcome in a History (acked with the acknowledged positions,
// failed, or unknown); the checker then compares that history with what a destination holds and
// what sits in quarantine, in the classes Jepsen's and Kafka's tests use:
//
//   lost        acknowledged, but neither delivered nor quarantined
//   duplicated  delivered more than once (copies beyond the first) at an exactly-once destination
//   unexpected  delivered or quarantined although never sent, or although its request failed
//               definitely (a definite failure promises "not stored")
//   recovered   outcome unknown to the producer (timeout, broken stream, killed daemon), delivered
//               or quarantined: allowed, the producer just did not learn it
//   misplaced   acknowledged at (partition, offset) but delivered elsewhere (only where the
//               destination tells positions)
//
// A correct run has lost == duplicated == unexpected == misplaced == 0.
//
// Records are identified by a unique non-zero id carried in the payload (LoadPayload() in
// tests/support/wharfd_process.h: producer * 10^9 + sequence + 1).

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "client/control_client.h"
#include "client/producer.h"

namespace wharf::testing {

class PostgresServer;

// What a producer knows about one request.
enum class RequestOutcome {
  kAcked,    // the server acknowledged it: the records are durable
  kFailed,   // the server refused it (or the producer never queued it): nothing was stored
  kUnknown,  // no answer (producer closed, retry timeout, broken stream): maybe stored
};

// The outcome of a Send() result, classified honestly from what client::Producer reports:
//  - OK: kAcked.
//  - Codes the server only answers a request with when it refused it without storing anything
//    (INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED, FAILED_PRECONDITION, OUT_OF_RANGE,
//    ALREADY_EXISTS): kFailed. The producer also reports a message larger than the server's
//    limit as INVALID_ARGUMENT; the server never received it.
//  - Everything else (CANCELLED when the producer was closed first, DEADLINE_EXCEEDED when its
//    retry timeout expired, UNAVAILABLE, ABORTED, UNKNOWN, INTERNAL, ...): kUnknown, because an
//    earlier attempt may have been stored before its stream broke.
// The producer also ends a stream that gRPC closed with INVALID_ARGUMENT / NOT_FOUND /
// PERMISSION_DENIED by failing every unanswered request with that code; wharfd never closes a
// Produce stream that way, and if it did, a record then delivered is counted as unexpected: a
// misclassification can only make a check fail, never hide a loss.
RequestOutcome ClassifySendResult(const client::SendResult& result);
const char* RequestOutcomeName(RequestOutcome outcome);

// Every request of one or more producers and what became of it.
//
// Thread safety: thread-safe; Log*() may be called from producer callbacks concurrently with
// each other and with the accessors.
class History {
 public:
  // Logs the outcome of a request that carried the records `ids` (in order; 0 entries are
  // records without an id and are not tracked). For an acked result, result.acks must hold one
  // ack per id; the positions are kept for the misplaced check.
  void Log(const std::vector<uint64_t>& ids, const client::SendResult& result);
  // Logs a request whose Send() was refused outright: never queued, so never stored.
  void LogRefused(const std::vector<uint64_t>& ids);

  // Per tracked record id, its final outcome: acked if any request carrying it was acked, else
  // unknown if any outcome was unknown, else failed.
  std::map<uint64_t, RequestOutcome> Outcomes() const;
  // Id -> (partition, offset) of every acked record (the first ack when a retry acked again).
  std::map<uint64_t, std::pair<uint32_t, uint64_t>> AckedPositions() const;
  size_t requests() const;
  // Records whose request reported an outcome and that carried no id (not tracked).
  size_t untracked() const;
  // Acks at the same (partition, offset) for two different ids: a broken ack, counted by the
  // checker as an error of its own.
  size_t conflicting_acks() const;

 private:
  void LogOutcome(const std::vector<uint64_t>& ids, RequestOutcome outcome,
                  const client::SendResult* result);

  mutable std::mutex mu_;
  std::map<uint64_t, RequestOutcome> outcomes_;                          // guarded by mu_
  std::map<uint64_t, std::pair<uint32_t, uint64_t>> acked_;              // guarded by mu_
  std::map<std::pair<uint32_t, uint64_t>, uint64_t> acked_by_position_;  // guarded by mu_
  size_t requests_ = 0;                                                  // guarded by mu_
  size_t untracked_ = 0;                                                 // guarded by mu_
  size_t conflicting_acks_ = 0;                                          // guarded by mu_
};

// One record found at a destination or in quarantine.
struct FoundRecord {
  uint64_t id = 0;  // 0: the record carries no id (counted as unexpected)
  // Where the destination says it came from, when it tells (file names, $partition / $offset
  // columns, quarantine entries).
  std::optional<std::pair<uint32_t, uint64_t>> position;
};

// The records of `dataset` in the file destination directory `dir` (ReadDestination()), with the
// positions given by the file names (none for the lines of a file that holds fewer lines than its
// offset range: its batch had quarantined records).
std::vector<FoundRecord> FileDestinationRecords(const std::string& dir, const std::string& dataset);
// The rows of a PostgresDestinationYaml() table (columns id, src_partition, src_offset).
absl::StatusOr<std::vector<FoundRecord>> PostgresRecords(const PostgresServer& pg,
                                                         const std::string& table);
// The records of `dataset` in quarantine (at most `limit` entries), by their original payloads.
absl::StatusOr<std::vector<FoundRecord>> QuarantinedRecords(client::ControlClient& control,
                                                            const std::string& dataset,
                                                            uint32_t limit = 100000);
// Records of arbitrary payloads (e.g. what an HTTP test server received), by LoadPayloadId().
std::vector<FoundRecord> PayloadRecords(const std::vector<std::string>& payloads);

struct CheckerCounts {
  size_t acked = 0;        // tracked records whose final outcome is acked
  size_t failed = 0;       // ... failed
  size_t unknown = 0;      // ... unknown
  size_t delivered = 0;    // records at the destination, copies included
  size_t quarantined = 0;  // records in quarantine, copies included
  size_t lost = 0;
  size_t duplicated = 0;
  size_t unexpected = 0;
  size_t recovered = 0;
  size_t misplaced = 0;
  size_t conflicting_acks = 0;  // see History::conflicting_acks()
  bool exactly_once = true;     // CheckOptions::exactly_once of the check
  // No loss, no unexpected or misplaced record, no conflicting ack, and at an exactly-once
  // destination no duplicate.
  bool ok() const {
    return lost == 0 && (duplicated == 0 || !exactly_once) && unexpected == 0 && misplaced == 0 &&
           conflicting_acks == 0;
  }
  // "checker: acked=N failed=N unknown=N delivered=N lost=N duplicated=N unexpected=N
  // recovered=N quarantined=N misplaced=N" (plus conflicting_acks=N when not 0).
  std::string ToString() const;
};

struct CheckOptions {
  // false for at-least-once destinations (HTTP): copies are counted in `duplicated` but ok()
  // ignores them. Default true.
  bool exactly_once = true;
};

// Compares `history` with what the destination holds (`delivered`) and what sits in quarantine.
CheckerCounts Check(const History& history, const std::vector<FoundRecord>& delivered,
                    const std::vector<FoundRecord>& quarantined, CheckOptions options = {});

// Prints counts.ToString() and `what` on one line of stdout, and appends the line to the file
// named by the environment variable WHARF_CHECKER_LOG when it is set (tests/run.sh prints that
// file). Adds a GoogleTest failure for every violated class (duplicates only for an exactly-once
// check).
void ExpectCheckerOk(const CheckerCounts& counts, const std::string& what);

}  // namespace wharf::testing
