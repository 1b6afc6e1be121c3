#pragma once

// The transform chain of a data contract: an ordered list of steps (TransformSpec) applied to
// every record that passed validation, before it is delivered.
//
// Paths are JSON pointers (RFC 6901): "/customer/email", "/items/0/sku", "/a~1b" for key "a/b".
// Reading a path that does not exist finds nothing; writing one creates missing parent
// *objects* (never arrays); writing through an existing non-container value, or to an array
// index past the end ("-" appends), fails the record instead of clobbering data.
//
// Steps (fields other than those listed for an op must be left empty; such a step is refused):
//   rename       path, to        moves the value; missing source: nothing happens
//   drop         paths           removes each pointer; missing ones are ignored
//   keep         paths           projection: only these pointers survive (with their parent
//                                objects). A pointer that runs into an array keeps that whole
//                                array (partial arrays are not kept).
//   set          path, and value_json (a constant) or expr (an Expression, see expression.h,
//                evaluated on the record as it is at this step; null results are written as null)
//   default      path, value_json   writes the constant only when the field is absent or null
//   cast         path, type, [input_formats]   type is int, float, string, bool or timestamp:
//                  int:    integers; integral floats; strings holding a clean integer ("12",
//                          "-3"; not "12.5", " 12", "12abc"); true/false -> 1/0
//                  float:  numbers; strings holding a number; true/false -> 1.0/0.0
//                  string: numbers and bools as their JSON text, objects/arrays as compact JSON
//                  bool:   true/false, "true"/"false", 0/1
//                  timestamp: per input_formats (see transform_timestamp.h), written as an
//                          RFC 3339 UTC string with milliseconds ("2024-05-01T12:00:00.000Z")
//                A value that cannot be cast fails the record. null stays null.
//   timestamp    path, [input_formats], [output_format]   normalises a timestamp; output_format
//                rfc3339 (default; as for cast) or epoch_millis (an integer)
//   mask         path, [length]  replaces each character (code point) by '*', keeping the last
//                `length` (default 0) in clear; numbers/bools are masked as their text
//   hash         path            hex HMAC-SHA256 under the daemon's hash key of the string (or,
//                                for other values, of their compact JSON text)
//   redact       path            replaces the value by the string "[REDACTED]"
//   truncate     path, length    cuts strings to at most `length` (> 0) code points
//   lowercase    path            ASCII lower-casing of a string
//   trim         path            strips leading/trailing ASCII whitespace of a string
//   flatten      [path], [separator]   {"a":{"b":1}} -> {"a.b":1} for the object at path (empty:
//                the whole record); arrays and empty objects stay values; separator default "."
//   add_metadata fields          metadata name -> target pointer. Names: ingest_time (RFC 3339),
//                                event_time (RFC 3339 or null), partition, offset, producer_id,
//                                dataset, schema_version, transform_version
//   filter       expr            drops the record (Result::kFiltered) when expr is true
// For cast, timestamp, mask, hash, redact, truncate, lowercase, trim and flatten, an absent field
// or a null value means the step does nothing (null has nothing to convert or hide). Wrong
// value types (e.g. lowercase of a number) fail the record.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "google/protobuf/repeated_field.h"
#include "rapidjson/document.h"
#include "wharf/v1/contract.pb.h"

namespace wharf::pipeline::contract {

// What add_metadata can write. The string_views must outlive the Apply call.
struct RecordMetadata {
  std::string_view dataset;
  uint32_t partition = 0;
  uint64_t offset = 0;
  std::string_view producer_id;
  int64_t ingest_time_millis = 0;
  std::optional<int64_t> event_time_millis;  // absent: event_time is written as null
  uint32_t schema_version = 0;
  uint32_t transform_version = 0;
};

// Why Apply returned kFailed.
struct TransformFailure {
  size_t step = 0;   // 1-based number of the failing step, as in the message
  std::string op;    // the step's op ("cast")
  std::string path;  // the step's path, empty for ops without one
  // The full message: "step 3 (cast /amount): cannot cast \"abc\" to int".
  std::string message;
};

class HmacSha256;

namespace transform_internal {
struct Step;
}  // namespace transform_internal

// A compiled transform chain.
//
// Thread safety: immutable after Compile; Apply is const and may run on any number of threads
// at once, each on its own record.
class TransformChain {
 public:
  // Compiles every step. On errors returns InvalidArgument listing every bad step, e.g.
  // "step 2 (cast): unknown type \"integer\"; step 4 (set): position 3: ...". `hash_key` is
  // the HMAC key for hash steps (required when there is one).
  static absl::StatusOr<std::shared_ptr<const TransformChain>> Compile(
      const google::protobuf::RepeatedPtrField<wharf::v1::TransformSpec>& steps,
      std::string hash_key);

  enum class Result { kKeep, kFiltered, kFailed };

  // Runs the steps in order on `record` (a JSON object). kFiltered: a filter step matched (the
  // remaining steps did not run). kFailed: `failure` (if not null) says which step and why; the
  // record may have been partly transformed and must be discarded. Never throws.
  Result Apply(rapidjson::Document* record, const RecordMetadata& meta,
               TransformFailure* failure) const;

  bool empty() const { return steps_.empty(); }

  ~TransformChain();
  TransformChain(const TransformChain&) = delete;
  TransformChain& operator=(const TransformChain&) = delete;

 private:
  TransformChain();

  std::vector<std::unique_ptr<const transform_internal::Step>> steps_;
  // Keyed once at compile time rather than per hashed value (see HmacSha256).
  std::unique_ptr<const HmacSha256> hasher_;
};

}  // namespace wharf::pipeline::contract
