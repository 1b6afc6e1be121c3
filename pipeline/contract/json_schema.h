#pragma once

// JSON Schema validation for Wharf data contracts (draft 2020-12 and draft-07).
//
// A schema is compiled once into an immutable node table (pre-compiled RE2 objects, resolved
// `$ref`s stored as node indices, one keyword list per schema node) and then validates any number
// of instances without touching the schema JSON again.
//
// What is supported and what is refused, by design:
//  - Validation keywords of both drafts (type, enum, const, the numeric / string / array / object
//    assertions, the applicators, if/then/else, dependentRequired / dependentSchemas and draft-07
//    `dependencies`, boolean schemas).
//  - `$ref` within the schema document only: JSON-pointer fragments, `$id`-based base URIs and
//    `$anchor` (draft-07: `$id: "#name"`). References to other documents are refused at compile
//    time, as Wharf never fetches schemas over the network.
//  - `format` asserts date-time, date, time, email, uuid, ipv4, ipv6 and uri when
//    JsonSchemaOptions::format_assertions is set. Every other format name is an annotation and is
//    ignored (the specification makes `format` an annotation; unknown names must not fail).
//  - Any keyword the validator does not implement (unevaluatedProperties, unevaluatedItems,
//    $dynamicRef, $recursiveRef, typos such as "requried", ...) is refused at compile time, so a
//    contract never silently validates less than its author wrote.
//  - A `$ref` may also point at a location the compiler did not visit as a schema (for example
//    under a draft-07 `$ref` sibling); an object or boolean found there is compiled on demand.
//    A cycle of references that never descends into the instance ({"$ref": "#"}) is refused.
//  - Validation descends into the instance only where keywords apply subschemas to children;
//    beyond kMaxInstanceDepth levels that fails with "nesting too deep". Whole-value comparisons
//    (enum, const, uniqueItems) are iterative and safe at any depth.
//  - `pattern` / `patternProperties` use RE2, which accepts most of the ECMA-262 syntax used in
//    practice; constructs RE2 cannot express (look-around, back-references) are refused at compile
//    time. ECMA-262 escapes for code points and control characters, long Unicode category names
//    in property escapes, and the ECMA-262 meaning of whitespace classes and '.' are translated.

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "rapidjson/document.h"

namespace wharf::pipeline::contract {

struct JsonSchemaOptions {
  // When true, `format` is an assertion for date-time, date, time, email, uuid, ipv4, ipv6 and
  // uri (other format names are always ignored). When false, `format` is an annotation only.
  // Default: true, because a data contract that names a format means it.
  bool format_assertions = true;
};

struct SchemaViolation {
  // RFC 6901 JSON pointer of the offending value in the instance ("" = the root).
  std::string pointer;
  // The keyword that failed, e.g. "minimum", "required", "type".
  std::string keyword;
  // Full text naming pointer, keyword and expectation, e.g. "/amount: minimum 0, got -3" or
  // "/: required property \"id\" is missing" (the root is printed as "/").
  std::string message;
};

// A compiled JSON Schema.
//
// Thread safety: immutable after Compile(); Validate() is const and may be called concurrently
// from any number of threads on one instance (all per-call state lives on the caller's stack).
class JsonSchema {
 public:
  enum class Draft { k7, k202012 };

  // Maximum nesting of the instance that validation descends into; deeper values fail with the
  // keyword "depth" ("nesting too deep") instead of exhausting the stack.
  static constexpr int kMaxInstanceDepth = 512;
  // Maximum nesting of schema evaluations (each subschema or `$ref` hop counts once) for one
  // Validate() call; exceeding it fails with the keyword "depth".
  static constexpr int kMaxEvaluationDepth = 4096;
  // Maximum nesting of the schema document itself; deeper schemas are refused at compile time.
  static constexpr int kMaxSchemaDepth = 512;

  // Parses `schema_json` (RapidJSON, iterative parser) and compiles it. Errors are
  // InvalidArgument with a message naming the schema location, e.g. malformed JSON (with the
  // byte offset), an unsupported keyword or `$schema`, a bad regular expression, a dangling or
  // remote `$ref`, or a keyword value of the wrong type.
  static absl::StatusOr<std::shared_ptr<const JsonSchema>> Compile(
      std::string_view schema_json, const JsonSchemaOptions& options = {});
  // As above for an already parsed schema (the value is copied; the caller keeps ownership).
  static absl::StatusOr<std::shared_ptr<const JsonSchema>> Compile(
      const rapidjson::Value& schema, const JsonSchemaOptions& options = {});

  // True if `instance` is valid. Otherwise false, and `*violation` (may be null) describes the
  // first failure found.
  bool Validate(const rapidjson::Value& instance, SchemaViolation* violation) const;

  Draft draft() const { return draft_; }

  ~JsonSchema();
  JsonSchema(const JsonSchema&) = delete;
  JsonSchema& operator=(const JsonSchema&) = delete;

  // Opaque compiled representation (defined in json_schema.cc).
  struct Compiled;

 private:
  JsonSchema(Draft draft, std::unique_ptr<Compiled> compiled);

  Draft draft_;
  std::unique_ptr<Compiled> compiled_;
};

}  // namespace wharf::pipeline::contract
