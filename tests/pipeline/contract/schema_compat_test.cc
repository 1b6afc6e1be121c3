#include "pipeline/contract/schema_compat.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace wharf::pipeline::contract {
namespace {

using wharf::v1::CompatibilityMode;

constexpr char kNarrowed[] = "(narrowed: values valid before are refused now)";
constexpr char kWidened[] = "(widened: values valid now were refused before)";

// The formatted findings, "" when compatible, "ERROR: ..." when the check failed.
std::string Compat(CompatibilityMode mode, const std::vector<std::string>& previous,
                   const std::string& candidate) {
  auto result = CheckCompatibility(mode, previous, candidate);
  if (!result.ok()) return "ERROR: " + std::string(result.status().message());
  return FormatIncompatibilities(*result);
}

std::string Backward(const std::string& old_schema, const std::string& new_schema) {
  return Compat(wharf::v1::BACKWARD, {old_schema}, new_schema);
}
std::string Forward(const std::string& old_schema, const std::string& new_schema) {
  return Compat(wharf::v1::FORWARD, {old_schema}, new_schema);
}

// Wraps a property schema into an object schema with property "p".
std::string Prop(const std::string& schema) {
  return R"({"type":"object","properties":{"p":)" + schema + "}}";
}

TEST(SchemaCompatTest, MessageFormatForTypeChange) {
  const std::string old_schema = R"({"type":"object","properties":{"amount":{"type":"number"}}})";
  const std::string new_schema = R"({"type":"object","properties":{"amount":{"type":"string"}}})";
  EXPECT_EQ(Backward(old_schema, new_schema),
            std::string(R"(/properties/amount: type "number" -> "string" )") + kNarrowed);
  EXPECT_EQ(Forward(old_schema, new_schema),
            std::string(R"(/properties/amount: type "number" -> "string" )") + kWidened);
  auto list = CheckCompatibility(wharf::v1::BACKWARD, {old_schema}, new_schema);
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].path, "/properties/amount");
  EXPECT_EQ((*list)[0].old_rule, R"(type "number")");
  EXPECT_EQ((*list)[0].new_rule, R"(type "string")");
}

TEST(SchemaCompatTest, FormatterRootAndDifferentKeywords) {
  std::vector<Incompatibility> list = {
      {"", "schema true", "schema false", "narrowed"},
      {"/a", "enum (none)", "const 1", "widened"},
  };
  EXPECT_EQ(FormatIncompatibilities(list),
            "(root): schema true -> false (narrowed)\n/a: enum (none) -> const 1 (widened)");
  EXPECT_EQ(FormatIncompatibilities({}), "");
}

TEST(SchemaCompatTest, IdenticalSchemasAreAlwaysCompatible) {
  // Includes constructs the structural check cannot reason about.
  const std::string schema =
      R"({"$id":"x","type":"object","anyOf":[{"required":["a"]},{"required":["b"]}],)"
      R"("unevaluatedProperties":false,"properties":{"r":{"$ref":"https://ex/remote.json"},)"
      R"js("s":{"type":"string","pattern":"^(?=a)"}}})js";
  for (CompatibilityMode mode :
       {wharf::v1::COMPATIBILITY_MODE_UNSPECIFIED, wharf::v1::NONE, wharf::v1::BACKWARD,
        wharf::v1::BACKWARD_TRANSITIVE, wharf::v1::FORWARD, wharf::v1::FORWARD_TRANSITIVE,
        wharf::v1::FULL, wharf::v1::FULL_TRANSITIVE}) {
    EXPECT_EQ(Compat(mode, {schema, schema}, schema), "") << mode;
  }
}

TEST(SchemaCompatTest, ModesPickDirections) {
  const std::string v1 = R"({"type":"object","properties":{"a":{"type":"integer"}}})";
  const std::string v2 = R"({"type":"object","properties":{"a":{"type":"number"}}})";
  // Widening integer -> number: backward compatible, forward not.
  EXPECT_EQ(Compat(wharf::v1::BACKWARD, {v1}, v2), "");
  EXPECT_EQ(Compat(wharf::v1::COMPATIBILITY_MODE_UNSPECIFIED, {v1}, v2), "");
  EXPECT_EQ(Compat(wharf::v1::FORWARD, {v1}, v2),
            std::string(R"(/properties/a: type "integer" -> "number" )") + kWidened);
  EXPECT_EQ(Compat(wharf::v1::FULL, {v1}, v2),
            std::string(R"(/properties/a: type "integer" -> "number" )") + kWidened);
  // Narrowing number -> integer: the reverse.
  EXPECT_EQ(Compat(wharf::v1::FORWARD, {v2}, v1), "");
  EXPECT_EQ(Compat(wharf::v1::COMPATIBILITY_MODE_UNSPECIFIED, {v2}, v1),
            std::string(R"(/properties/a: type "number" -> "integer" )") + kNarrowed);
  EXPECT_EQ(Compat(wharf::v1::FULL, {v2}, v1),
            std::string(R"(/properties/a: type "number" -> "integer" )") + kNarrowed);
  EXPECT_EQ(Compat(wharf::v1::NONE, {v2}, R"({"type":"string"})"), "");
  EXPECT_EQ(Compat(wharf::v1::BACKWARD, {}, R"({"type":"string"})"), "");
}

TEST(SchemaCompatTest, NonTransitiveModesOnlyCompareTheLatest) {
  // Only the oldest version conflicts with the candidate.
  const std::string v1 = Prop(R"({"type":"number"})");
  const std::string v2 = Prop(R"({"type":"integer"})");
  const std::string v3 = Prop(R"({"type":"integer","minimum":0})");
  const std::string candidate = Prop(R"({"type":"integer"})");
  EXPECT_EQ(Compat(wharf::v1::BACKWARD, {v1, v2, v3}, candidate), "");
  EXPECT_EQ(Compat(wharf::v1::BACKWARD_TRANSITIVE, {v1, v2, v3}, candidate),
            R"(/properties/p: type "number" -> "integer" (narrowed: values valid before are )"
            R"(refused now [previous version 1 of 3]))");
  // Forward: the candidate must fit into every previous version.
  const std::string f1 = Prop(R"({"type":"integer"})");
  const std::string f2 = Prop(R"({"type":"number"})");
  const std::string f3 = Prop(R"({"type":["number","null"]})");
  const std::string fc = Prop(R"({"type":"number"})");
  EXPECT_EQ(Compat(wharf::v1::FORWARD, {f1, f2, f3}, fc), "");
  EXPECT_EQ(Compat(wharf::v1::FORWARD_TRANSITIVE, {f1, f2, f3}, fc),
            R"(/properties/p: type "integer" -> "number" (widened: values valid now were )"
            R"(refused before [previous version 1 of 3]))");
  EXPECT_EQ(Compat(wharf::v1::FULL, {f1, f2, f3}, Prop(R"({"type":["number","null"]})")), "");
  const std::string full = Compat(wharf::v1::FULL_TRANSITIVE, {f1, f2, f3}, fc);
  EXPECT_NE(full.find("[previous version 1 of 3]"), std::string::npos) << full;
  EXPECT_NE(full.find(R"(type ["number","null"] -> "number" (narrowed)"), std::string::npos)
      << full;
  EXPECT_EQ(full.find("[previous version 2 of 3]"), std::string::npos) << full;
}

TEST(SchemaCompatTest, EnumAndConst) {
  const std::string ab = Prop(R"({"enum":["a","b"]})");
  const std::string abc = Prop(R"({"enum":["a","b","c"]})");
  EXPECT_EQ(Backward(ab, abc), "");
  EXPECT_EQ(Forward(ab, abc), std::string(R"(/properties/p: enum ["a","b"] -> ["a","b","c"] )") +
                                  R"((value "c") )" + kWidened);
  EXPECT_EQ(Backward(abc, ab), std::string(R"(/properties/p: enum ["a","b","c"] (value "c") )") +
                                   R"(-> ["a","b"] )" + kNarrowed);
  // Each old value is checked against the new rules.
  EXPECT_EQ(Backward(Prop(R"({"enum":["x","yy"]})"), Prop(R"({"type":"string","maxLength":2})")),
            "");
  EXPECT_EQ(
      Backward(Prop(R"({"enum":["x","yy"]})"), Prop(R"({"type":"string","maxLength":1})")),
      std::string(R"(/properties/p: enum ["x","yy"] (value "yy") -> maxLength 1 )") + kNarrowed);
  EXPECT_EQ(Backward(Prop(R"({"const":5})"), Prop(R"({"type":"integer","minimum":0})")), "");
  EXPECT_EQ(Backward(Prop(R"({"const":5})"), Prop(R"({"const":6})")),
            std::string(R"(/properties/p: const 5 (value 5) -> 6 )") + kNarrowed);
  // A new enum where there was none.
  EXPECT_EQ(Backward(Prop(R"({"type":"string"})"), Prop(R"({"type":"string","enum":["a"]})")),
            std::string(R"(/properties/p: enum (none) -> ["a"] )") + kNarrowed);
  EXPECT_EQ(Backward(Prop(R"({"type":"boolean"})"), Prop(R"({"enum":[true,false,null]})")), "");
  // A format on the new side cannot be evaluated for a value: not proven.
  EXPECT_EQ(Backward(Prop(R"({"enum":["a"]})"), Prop(R"({"format":"email"})")),
            R"(/properties/p: enum ["a"] (value "a") -> format "email" (cannot be proven )"
            R"(compatible))");
}

TEST(SchemaCompatTest, NumericBounds) {
  EXPECT_EQ(
      Backward(Prop(R"({"type":"number","minimum":0})"), Prop(R"({"type":"number","minimum":1})")),
      std::string("/properties/p: minimum 0 -> 1 ") + kNarrowed);
  EXPECT_EQ(
      Backward(Prop(R"({"type":"number","minimum":1})"), Prop(R"({"type":"number","minimum":0})")),
      "");
  EXPECT_EQ(
      Forward(Prop(R"({"type":"number","minimum":1})"), Prop(R"({"type":"number","minimum":0})")),
      std::string("/properties/p: minimum 1 -> 0 ") + kWidened);
  EXPECT_EQ(Backward(Prop(R"({"type":"number"})"), Prop(R"({"type":"number","maximum":10})")),
            std::string("/properties/p: maximum (none) -> 10 ") + kNarrowed);
  EXPECT_EQ(Backward(Prop(R"({"type":"number","maximum":10})"), Prop(R"({"type":"number"})")), "");
  // Exclusive vs inclusive at the same value.
  EXPECT_EQ(Backward(Prop(R"({"minimum":0})"), Prop(R"({"exclusiveMinimum":0})")),
            std::string("/properties/p: minimum 0 -> exclusiveMinimum 0 ") + kNarrowed);
  EXPECT_EQ(Backward(Prop(R"({"exclusiveMaximum":5})"), Prop(R"({"maximum":5})")), "");
  // Draft 4 boolean form.
  EXPECT_EQ(
      Backward(Prop(R"({"minimum":0,"exclusiveMinimum":true})"), Prop(R"({"exclusiveMinimum":0})")),
      "");
  EXPECT_EQ(Backward(Prop(R"({"minimum":0})"), Prop(R"({"minimum":0,"exclusiveMinimum":true})")),
            std::string("/properties/p: minimum 0 -> exclusiveMinimum 0 ") + kNarrowed);
  // multipleOf.
  EXPECT_EQ(Backward(Prop(R"({"multipleOf":4})"), Prop(R"({"multipleOf":2})")), "");
  EXPECT_EQ(Backward(Prop(R"({"multipleOf":2})"), Prop(R"({"multipleOf":4})")),
            std::string("/properties/p: multipleOf 2 -> 4 ") + kNarrowed);
  EXPECT_EQ(Backward(Prop(R"({"multipleOf":0.3})"), Prop(R"({"multipleOf":0.1})")), "");
  EXPECT_EQ(Backward(Prop(R"({"type":"integer"})"), Prop(R"({"multipleOf":0.5})")), "");
  EXPECT_EQ(Backward(Prop(R"({"type":"number"})"), Prop(R"({"multipleOf":0.5})")),
            std::string("/properties/p: multipleOf (none) -> 0.5 ") + kNarrowed);
  // Bounds do not matter when the old side cannot be a number.
  EXPECT_EQ(Backward(Prop(R"({"type":"string"})"), Prop(R"({"minimum":3})")), "");
}

TEST(SchemaCompatTest, StringRules) {
  EXPECT_EQ(Backward(Prop(R"({"type":"string","maxLength":10})"),
                     Prop(R"({"type":"string","maxLength":5})")),
            std::string("/properties/p: maxLength 10 -> 5 ") + kNarrowed);
  EXPECT_EQ(Backward(Prop(R"({"type":"string","maxLength":5})"), Prop(R"({"type":"string"})")), "");
  EXPECT_EQ(Forward(Prop(R"({"type":"string","maxLength":5})"), Prop(R"({"type":"string"})")),
            std::string("/properties/p: maxLength 5 -> (none) ") + kWidened);
  EXPECT_EQ(Backward(Prop(R"({"type":"string"})"), Prop(R"({"type":"string","minLength":1})")),
            std::string("/properties/p: minLength (none) -> 1 ") + kNarrowed);
  EXPECT_EQ(Backward(Prop(R"({"type":"string","minLength":2})"),
                     Prop(R"({"type":"string","minLength":1})")),
            "");
  EXPECT_EQ(Backward(Prop(R"({"type":"string"})"), Prop(R"({"type":"string","pattern":"^a"})")),
            std::string(R"(/properties/p: pattern (none) -> "^a" )") + kNarrowed);
  EXPECT_EQ(Backward(Prop(R"({"type":"string","pattern":"^a"})"),
                     Prop(R"({"type":"string","pattern":"^[ab]"})")),
            R"(/properties/p: pattern "^a" -> "^[ab]" (cannot be proven compatible))");
  EXPECT_EQ(Backward(Prop(R"({"type":"string","pattern":"^a"})"),
                     Prop(R"({"type":"string","pattern":"^a","title":"t"})")),
            "");
  EXPECT_EQ(Backward(Prop(R"({"type":"string","pattern":"^a"})"), Prop(R"({"type":"string"})")),
            "");
  EXPECT_EQ(Backward(Prop(R"({"type":"string"})"), Prop(R"({"type":"string","format":"date"})")),
            std::string(R"(/properties/p: format (none) -> "date" )") + kNarrowed);
}

TEST(SchemaCompatTest, ArrayRules) {
  const std::string old_items = Prop(R"({"type":"array","items":{"type":"string"}})");
  EXPECT_EQ(Backward(old_items, Prop(R"({"type":"array","items":{"type":"integer"}})")),
            std::string(R"(/properties/p/items: type "string" -> "integer" )") + kNarrowed);
  EXPECT_EQ(Backward(old_items, Prop(R"({"type":"array"})")), "");
  EXPECT_EQ(Forward(old_items, Prop(R"({"type":"array"})")),
            std::string(R"(/properties/p/items: type "string" -> (any) )") + kWidened);
  EXPECT_EQ(Backward(Prop(R"({"type":"array","maxItems":3})"),
                     Prop(R"({"type":"array","maxItems":2,"minItems":1})")),
            std::string("/properties/p: minItems (none) -> 1 ") + kNarrowed +
                "\n/properties/p: maxItems 3 -> 2 " + kNarrowed);
  EXPECT_EQ(Backward(Prop(R"({"type":"array"})"), Prop(R"({"type":"array","uniqueItems":true})")),
            std::string("/properties/p: uniqueItems (none) -> true ") + kNarrowed);
  EXPECT_EQ(Backward(Prop(R"({"type":"array","maxItems":1})"),
                     Prop(R"({"type":"array","uniqueItems":true,"maxItems":1})")),
            "");
  // Tuples (2020-12 prefixItems and the older items array + additionalItems).
  const std::string tuple1 = Prop(R"({"type":"array","prefixItems":[{"type":"string"}],)"
                                  R"("items":false})");
  const std::string tuple2 = Prop(R"({"type":"array","prefixItems":[{"type":"string"},)"
                                  R"({"type":"number"}],"items":false})");
  EXPECT_EQ(Backward(tuple1, tuple2), "");
  EXPECT_EQ(
      Forward(tuple1, tuple2),
      std::string(R"(/properties/p/prefixItems/1: schema false -> {"type":"number"} )") + kWidened);
  const std::string old_draft = Prop(R"({"items":[{"type":"string"}],"additionalItems":true})");
  EXPECT_EQ(Backward(old_draft, Prop(R"({"items":[{"type":"string"},{"type":"number"}]})")),
            std::string(R"(/properties/p/items/1: type (any) -> "number" )") + kNarrowed);
}

TEST(SchemaCompatTest, RequiredProperties) {
  const std::string a = R"({"type":"object","properties":{"a":{},"b":{}},"required":["a"]})";
  const std::string ab = R"({"type":"object","properties":{"a":{},"b":{}},"required":["a","b"]})";
  EXPECT_EQ(Backward(a, ab),
            std::string(R"(/properties/b: "b" optional -> required )") + kNarrowed);
  EXPECT_EQ(Forward(a, ab), "");
  EXPECT_EQ(Backward(ab, a), "");
  EXPECT_EQ(Forward(ab, a), std::string(R"(/properties/b: "b" required -> optional )") + kWidened);
}

TEST(SchemaCompatTest, ContentModels) {
  const std::string closed_a =
      R"({"type":"object","properties":{"a":{"type":"string"}},"additionalProperties":false})";
  const std::string closed_ab =
      R"({"type":"object","properties":{"a":{"type":"string"},"b":{"type":"number"}},)"
      R"("additionalProperties":false})";
  const std::string open_a = R"({"type":"object","properties":{"a":{"type":"string"}}})";
  const std::string open_ab =
      R"({"type":"object","properties":{"a":{"type":"string"},"b":{"type":"number"}}})";
  // Adding a property to a closed model: backward compatible, not forward.
  EXPECT_EQ(Backward(closed_a, closed_ab), "");
  EXPECT_EQ(Forward(closed_a, closed_ab),
            std::string(R"(/properties/b: "b" not allowed (additionalProperties false) -> )") +
                "allowed " + kWidened);
  // Adding a property to an open model: not backward compatible (it was any value before).
  EXPECT_EQ(Backward(open_a, open_ab),
            std::string(R"(/properties/b: type (any) -> "number" )") + kNarrowed);
  EXPECT_EQ(Forward(open_a, open_ab), "");
  // Removing a property from an open model: backward compatible, not forward.
  EXPECT_EQ(Backward(open_ab, open_a), "");
  EXPECT_EQ(Forward(open_ab, open_a),
            std::string(R"(/properties/b: type "number" -> (any) )") + kWidened);
  // Removing from a closed model: the reverse.
  EXPECT_EQ(Backward(closed_ab, closed_a),
            std::string(R"(/properties/b: "b" allowed -> not allowed (additionalProperties )") +
                "false) " + kNarrowed);
  // Opening and closing the model.
  EXPECT_EQ(Backward(closed_a, open_a), "");
  EXPECT_EQ(
      Backward(open_a, closed_a),
      std::string("/additionalProperties: additionalProperties (none) -> false ") + kNarrowed);
  EXPECT_EQ(Forward(closed_a, open_a),
            std::string("/additionalProperties: additionalProperties false -> (none) ") + kWidened);
  // additionalProperties as a schema.
  EXPECT_EQ(Backward(R"({"additionalProperties":{"type":"integer"}})",
                     R"({"additionalProperties":{"type":"number"}})"),
            "");
  EXPECT_EQ(Backward(R"({"additionalProperties":{"type":"number"}})",
                     R"({"additionalProperties":{"type":"integer"}})"),
            std::string(R"(/additionalProperties: type "number" -> "integer" )") + kNarrowed);
}

TEST(SchemaCompatTest, NestedObjectsAndPropertyCounts) {
  const std::string v1 =
      R"({"type":"object","properties":{"address":{"type":"object","properties":)"
      R"({"zip":{"type":"string","maxLength":10}}}}})";
  const std::string v2 =
      R"({"type":"object","properties":{"address":{"type":"object","properties":)"
      R"({"zip":{"type":"string","maxLength":5}}}}})";
  EXPECT_EQ(Backward(v1, v2),
            std::string("/properties/address/properties/zip: maxLength 10 -> 5 ") + kNarrowed);
  EXPECT_EQ(Backward(R"({"type":"object"})", R"({"type":"object","maxProperties":3})"),
            std::string("(root): maxProperties (none) -> 3 ") + kNarrowed);
  EXPECT_EQ(
      Backward(R"({"type":"object","minProperties":2})", R"({"type":"object","minProperties":1})"),
      "");
  // Member names with '/' and '~' are escaped in paths.
  EXPECT_EQ(Backward(R"({"properties":{"a/b~":{"type":"number"}}})",
                     R"({"properties":{"a/b~":{"type":"string"}}})"),
            std::string(R"(/properties/a~1b~0: type "number" -> "string" )") + kNarrowed);
}

TEST(SchemaCompatTest, PatternProperties) {
  const std::string p1 = R"({"patternProperties":{"^x_":{"type":"string"}}})";
  EXPECT_EQ(Backward(p1, R"({"patternProperties":{"^x_":{"type":"string"}},"title":"t"})"), "");
  EXPECT_EQ(Backward(p1, R"({"patternProperties":{"^y_":{"type":"string"}}})"),
            R"(/patternProperties: patternProperties {"^x_":{"type":"string"}} -> )"
            R"({"^y_":{"type":"string"}} (cannot be proven compatible))");
  // A new pattern that applies to a declared property.
  EXPECT_EQ(Backward(R"({"properties":{"x_a":{"type":"number"}}})",
                     R"({"properties":{"x_a":{"type":"number"}},"patternProperties":)"
                     R"({"^x_":{"type":"integer"}}})"),
            std::string(R"(/properties/x_a: type "number" -> "integer" )") + kNarrowed + "\n" +
                R"(/patternProperties: patternProperties (none) -> )" +
                R"({"^x_":{"type":"integer"}} (cannot be proven compatible))");
  // Old patterns against a new closed model.
  EXPECT_EQ(Backward(p1, R"({"additionalProperties":false})"),
            std::string(R"(/patternProperties/^x_: patternProperties "^x_": {"type":"string"})") +
                " -> additionalProperties false " + kNarrowed + "\n" +
                "/additionalProperties: additionalProperties (none) -> false " + kNarrowed);
}

TEST(SchemaCompatTest, LocalRefsAreResolved) {
  const std::string v1 =
      R"({"$defs":{"amt":{"type":"number"}},"properties":{"a":{"$ref":"#/$defs/amt"}}})";
  const std::string v2 =
      R"({"$defs":{"amt":{"type":"string"}},"properties":{"a":{"$ref":"#/$defs/amt"}}})";
  const std::string inline_number = R"({"properties":{"a":{"type":"number"}}})";
  // The property's text is identical; only the target differs.
  EXPECT_EQ(Backward(v1, v2),
            std::string(R"(/properties/a: type "number" -> "string" )") + kNarrowed);
  EXPECT_EQ(Backward(v1, inline_number), "");
  EXPECT_EQ(Backward(inline_number, v1), "");
  EXPECT_EQ(Backward(R"({"definitions":{"s":{"type":"string"}},"$ref":"#/definitions/s"})",
                     R"({"type":["string","null"]})"),
            "");
}

TEST(SchemaCompatTest, RecursiveRefsTerminate) {
  auto tree = [](const std::string& value_schema) {
    return R"({"$defs":{"node":{"type":"object","properties":{"v":)" + value_schema +
           R"(,"children":{"type":"array","items":{"$ref":"#/$defs/node"}}}}},)"
           R"("$ref":"#/$defs/node"})";
  };
  EXPECT_EQ(Backward(tree(R"({"type":"integer"})"), tree(R"({"type":"number"})")), "");
  EXPECT_EQ(Backward(tree(R"({"type":"number"})"), tree(R"({"type":"integer"})")),
            std::string(R"(/properties/v: type "number" -> "integer" )") + kNarrowed);
  // A self-referencing ref with nothing else.
  EXPECT_EQ(Backward(R"({"$defs":{"x":{"$ref":"#/$defs/x"}},"$ref":"#/$defs/x"})",
                     R"({"type":"string"})"),
            R"((root): $ref chain too long -> schema (cannot be proven compatible))");
}

TEST(SchemaCompatTest, UnresolvableAndRemoteRefsAreNotProven) {
  EXPECT_EQ(Backward(R"({"type":"string"})", R"({"$ref":"https://example.com/s.json"})"),
            R"((root): schema -> $ref "https://example.com/s.json" to another document )"
            R"((cannot be proven compatible))");
  EXPECT_EQ(Backward(R"({"type":"string"})", R"({"$ref":"#/$defs/missing"})"),
            R"((root): schema -> $ref "#/$defs/missing" does not resolve (cannot be proven )"
            R"(compatible))");
  EXPECT_EQ(Backward(R"({"type":"string"})",
                     R"({"$defs":{"s":{"type":"string"}},"$ref":"#/$defs/s","maxLength":3})"),
            R"((root): schema -> keywords next to $ref (cannot be proven compatible))");
}

TEST(SchemaCompatTest, Combinators) {
  const std::string any1 = R"({"anyOf":[{"type":"string"},{"type":"null"}],"title":"a"})";
  const std::string any2 = R"({"anyOf":[{"type":"string"},{"type":"null"}],"title":"b"})";
  EXPECT_EQ(Backward(any1, any2), "");
  EXPECT_EQ(Backward(R"({"anyOf":[{"type":"string"}]})",
                     R"({"anyOf":[{"type":"string"},{"type":"null"}]})"),
            R"(/anyOf: anyOf [{"type":"string"}] -> [{"type":"string"},{"type":"null"}] )"
            R"((cannot be proven compatible))");
  // Equivalent but differently spelled branches are accepted.
  EXPECT_EQ(
      Backward(R"({"oneOf":[{"type":"integer"},{"type":"string","maxLength":3}]})",
               R"({"oneOf":[{"type":"integer","title":"i"},{"maxLength":3,"type":"string"}]})"),
      "");
  // A combinator only on the subset side only narrows it: accepted.
  EXPECT_EQ(Backward(R"({"type":"string","allOf":[{"maxLength":3}]})", R"({"type":"string"})"), "");
  EXPECT_EQ(Forward(R"({"type":"string","allOf":[{"maxLength":3}]})", R"({"type":"string"})"),
            R"(/allOf: allOf [{"maxLength":3}] -> (none) (cannot be proven compatible))");
  EXPECT_EQ(Backward(R"({"not":{"type":"null"}})", R"({"not":{"type":"null"}})"), "");
  EXPECT_EQ(Backward(R"({"not":{"type":"null"}})", R"({"not":{"type":"string"}})"),
            R"(/not: not {"type":"null"} -> {"type":"string"} (cannot be proven compatible))");
  EXPECT_EQ(Backward(R"({"type":"object"})",
                     R"({"type":"object","if":{"required":["a"]},"then":{"required":["b"]}})"),
            R"(/if: if (none) -> {"required":["a"]} (cannot be proven compatible))");
  // Unknown keywords are only accepted when equal.
  EXPECT_EQ(Backward(R"({"x-custom":1})", R"({"x-custom":1})"), "");
  EXPECT_EQ(Backward(R"({"type":"string"})", R"({"type":"string","x-custom":1})"),
            R"(/x-custom: x-custom (none) -> 1 (cannot be proven compatible))");
  // Array/object-only keywords do not matter when the old side cannot be an array/object.
  EXPECT_EQ(Backward(R"({"type":"string"})", R"({"contains":{"type":"number"}})"), "");
}

TEST(SchemaCompatTest, BooleanAndEmptySchemas) {
  EXPECT_EQ(Backward("true", "false"), std::string("(root): schema true -> false ") + kNarrowed);
  EXPECT_EQ(Backward("false", R"({"type":"string"})"), "");
  EXPECT_EQ(Backward(R"({"type":"string"})", "true"), "");
  EXPECT_EQ(Backward(R"({"type":"string"})", "{}"), "");
  EXPECT_EQ(Forward(R"({"type":"string"})", "true"),
            std::string(R"((root): type "string" -> (any) )") + kWidened);
  // Empty text: no schema, accepts everything.
  EXPECT_EQ(Backward(R"({"type":"string"})", ""), "");
  EXPECT_EQ(Backward("  ", R"({"type":"object"})"),
            std::string(R"((root): type (any) -> "object" )") + kNarrowed);
}

TEST(SchemaCompatTest, MalformedInput) {
  EXPECT_EQ(Compat(wharf::v1::BACKWARD, {"{}"}, "{").substr(0, 48),
            "ERROR: candidate: schema is not valid JSON at of");
  EXPECT_EQ(Compat(wharf::v1::BACKWARD, {"{}"}, "[1]"),
            "ERROR: candidate: a JSON Schema must be an object or a boolean");
  EXPECT_EQ(Compat(wharf::v1::NONE, {}, "{\"a\":}").substr(0, 17), "ERROR: candidate:");
  EXPECT_EQ(Compat(wharf::v1::BACKWARD_TRANSITIVE, {"{}", "{\"type\":", "{}"}, "{}").substr(0, 19),
            "ERROR: previous[1]:");
  EXPECT_EQ(Compat(wharf::v1::BACKWARD, {"{}", "7"}, "{}"),
            "ERROR: previous[1]: a JSON Schema must be an object or a boolean");
  std::string deep;
  for (int i = 0; i < 300; ++i) deep += R"({"items":)";
  deep += "{}";
  for (int i = 0; i < 300; ++i) deep += "}";
  EXPECT_EQ(Compat(wharf::v1::BACKWARD, {"{}"}, deep),
            "ERROR: candidate: schema is nested deeper than 256 levels");
  EXPECT_EQ(Compat(static_cast<CompatibilityMode>(42), {"{}"}, "{}"),
            "ERROR: unknown compatibility mode 42");
  // Malformed keyword values inside valid JSON are not proven rather than refused.
  EXPECT_EQ(Backward(R"({"type":"string"})", R"({"type":"string","maxLength":"5"})"),
            R"((root): maxLength (none) -> "5" (cannot be proven compatible))");
  EXPECT_EQ(Backward(R"({"type":"string"})", R"({"type":"strin"})"),
            R"((root): type "string" -> "strin" (cannot be proven compatible))");
}

TEST(SchemaCompatTest, DeepButAllowedSchemaIsCompared) {
  std::string a, b;
  for (int i = 0; i < 120; ++i) {
    a += R"({"type":"array","items":)";
    b += R"({"type":"array","items":)";
  }
  a += R"({"type":"integer"})";
  b += R"({"type":"number"})";
  for (int i = 0; i < 120; ++i) {
    a += "}";
    b += "}";
  }
  EXPECT_EQ(Backward(a, b), "");
  const std::string result = Backward(b, a);
  EXPECT_NE(result.find(R"(type "number" -> "integer")"), std::string::npos) << result;
}

TEST(SchemaCompatTest, ManyPropertiesAndNestedCombinatorsStayBounded) {
  std::string a = R"({"type":"object","properties":{)";
  std::string b = a;
  for (int i = 0; i < 3000; ++i) {
    const std::string sep = i > 0 ? "," : "";
    a += sep + "\"p" + std::to_string(i) + R"(":{"type":"number"})";
    b += sep + "\"p" + std::to_string(i) + R"(":{"type":"integer"})";
  }
  a += "}}";
  b += "}}";
  auto list = CheckCompatibility(wharf::v1::FULL, {a}, b);
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(list->size(), 3000u);  // backward only: integer fits into number
  // Combinators nested 40 deep whose innermost branches differ: the equivalence probes would
  // multiply without the work budget.
  std::string x, y;
  for (int i = 0; i < 40; ++i) {
    x += R"({"anyOf":[{"type":"null"},)";
    y += R"({"anyOf":[{"type":"null"},)";
  }
  x += R"({"type":"string"})";
  y += R"({"type":"number"})";
  for (int i = 0; i < 40; ++i) {
    x += "]}";
    y += "]}";
  }
  auto nested = CheckCompatibility(wharf::v1::FULL, {x}, y);
  ASSERT_TRUE(nested.ok());
  ASSERT_FALSE(nested->empty());
  EXPECT_EQ((*nested)[0].reason, "cannot be proven compatible");
  EXPECT_LE(nested->size(), 4u);
}

}  // namespace
}  // namespace wharf::pipeline::contract
