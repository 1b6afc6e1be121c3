#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "wharf/v1/contract.pb.h"

namespace wharf::pipeline::contract {

// One reason a candidate schema is not (provably) compatible with a previous version.
struct Incompatibility {
  // Schema location as a JSON pointer built from keywords, walked in parallel through both
  // versions: "" is the root, "/properties/amount" the schema of member "amount",
  // "/items/properties/id", "/additionalProperties", "/prefixItems/0". Rules on a schema's own
  // value (type, bounds, lengths, enum) are reported at that schema's location, the rule text
  // naming the keyword; keywords the check can only compare for equivalence (anyOf, not, if,
  // patternProperties, unknown ones) at the keyword itself ("/properties/a/anyOf"); required
  // at the property ("/properties/zip"). $ref is followed transparently, so the path is where
  // the rule applies to instances, not the $defs entry that spells it out.
  std::string path;
  // The rule in the previous and in the candidate version, as "<keyword> <value>", for example
  // `type "number"`, `maxLength (none)`, `"zip" optional`.
  std::string old_rule;
  std::string new_rule;
  // "narrowed: values valid before are refused now" (breaks BACKWARD),
  // "widened: values valid now were refused before" (breaks FORWARD), or
  // "cannot be proven compatible" (the check could not decide; see below). In transitive modes
  // with several previous versions " [previous version <i> of <n>]" follows (1 = oldest).
  std::string reason;
};

// Checks `candidate` (JSON Schema text) against `previous` versions (oldest first) under
// `mode`, following Confluent Schema Registry's JSON Schema rules:
//   BACKWARD (and UNSPECIFIED): every instance valid under the latest previous version is valid
//     under the candidate. FORWARD: every instance valid under the candidate is valid under the
//     latest previous version. FULL: both. *_TRANSITIVE: the same against every previous
//     version. NONE: nothing is compared (the candidate must still parse).
// Empty (or whitespace-only) schema text means "no schema" and is treated as `true`. With no
// previous version everything is compatible.
//
// The check is a structural "every instance of A is an instance of B" proof, sound but
// conservative: where it cannot prove compatibility it reports "cannot be proven compatible",
// never silently accepts. It understands boolean schemas, type (integer within number),
// enum/const (each value is checked against the other schema), numeric bounds and multipleOf,
// string lengths, pattern and format (equal or absent), array lengths, uniqueItems, items /
// prefixItems / additionalItems, object properties, patternProperties, additionalProperties
// (Confluent's open and closed content models), required, min/maxProperties and local $ref
// ("#", "#/json/pointer"; recursion is handled by assuming a pair under comparison holds, which
// is sound for finite instances). allOf/anyOf/oneOf/not/if-then-else, contains, propertyNames,
// dependencies and unknown keywords are accepted only where the previous version has an
// equivalent one (or the constraint only narrows the side that must be the subset);
// unevaluated* and remote $ref only in identical subschemas. Identical schemas are always
// compatible.
//
// Errors: InvalidArgument for schema text that is not JSON, is neither an object nor a boolean,
// or is nested deeper than 256 levels (the message names "candidate" or "previous[<i>]"), and
// for an unknown mode.
//
// Thread safety: thread-safe (no shared state).
absl::StatusOr<std::vector<Incompatibility>> CheckCompatibility(
    wharf::v1::CompatibilityMode mode, const std::vector<std::string>& previous,
    std::string_view candidate);

// One line per item, joined by '\n' (no trailing newline), the root shown as "(root)":
//   /properties/amount: type "number" -> "string" (narrowed: values valid before are refused now)
// When both rules start with the same keyword it is written once.
std::string FormatIncompatibilities(const std::vector<Incompatibility>& incompatibilities);

}  // namespace wharf::pipeline::contract
